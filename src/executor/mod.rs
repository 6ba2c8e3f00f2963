//! `apimon executor`: runs the scenarios of one environment on their cron
//! schedules and writes one InfluxDB point per run.
//!
//! One scheduler task per scenario sleeps until its next cron instant and
//! sends a *fire* to the main loop, which starts the run unless the
//! previous run of that scenario is still going (then the fire is counted,
//! logged and written as `skipped`). A semaphore bounds runs over all
//! scenarios. The configuration is reloaded on SIGHUP and when the file
//! changes: new scenarios start, removed ones stop, running ones finish.
//! On SIGTERM the schedulers stop and running scenarios get a grace period;
//! a second SIGTERM (or the end of the grace period) kills them.
//!
//! Besides one point per run, runs send points of their own (openstacksdk's
//! per-request metrics, the callback's per-task points) through
//! [`ingest`], and the executor reports its own [`health`].

pub mod ansible;
mod background;
pub mod config;
pub mod health;
pub mod ingest;
pub use crate::providers::keystone;
pub mod lineproto;
pub mod load;
pub mod logs;
pub mod probe;
pub mod results;
pub mod rundir;
pub mod runner;
mod scheduler;
pub mod sweeper;
pub mod syntax;
pub mod zone;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

use config::{Config, ConfigError, ScenarioConfig};
use results::{Point, RunResult, Writer};

/// Wall-clock time for the schedulers.
#[derive(Debug, Clone, Copy)]
pub enum Clock {
    /// The system clock.
    System,
    /// `wall` at tokio instant `at`, advancing with tokio time: lets tests
    /// run schedules under tokio's paused clock.
    Anchored {
        /// Wall time at `at`.
        wall: DateTime<Utc>,
        /// The tokio instant of `wall`.
        at: tokio::time::Instant,
    },
}

impl Clock {
    /// Now.
    pub fn now(&self) -> DateTime<Utc> {
        match self {
            Self::System => Utc::now(),
            Self::Anchored { wall, at } => {
                let elapsed = tokio::time::Instant::now().saturating_duration_since(*at);
                *wall + chrono::Duration::from_std(elapsed).unwrap_or_default()
            }
        }
    }
}

/// A run (or a skipped fire), reported to observers.
#[derive(Debug, Clone)]
pub struct RunRecord {
    /// Scenario.
    pub scenario: String,
    /// The cron instant.
    pub scheduled_at: DateTime<Utc>,
    /// When the process started (or the request was sent); the cron
    /// instant for skipped fires.
    pub started_at: DateTime<Utc>,
    /// Result.
    pub result: RunResult,
    /// Exit code or HTTP status.
    pub return_code: i64,
    /// Duration.
    pub duration: Duration,
    /// The run's job id (playbook runs; its directory and log carry it).
    pub job_id: Option<String>,
    /// The end of the output of a run that did not pass.
    pub output: Option<String>,
    /// How the cleanup playbook ended, when one ran.
    pub cleanup: Option<RunResult>,
    /// Why it was skipped, or why it says nothing about the cloud.
    pub reason: Option<&'static str>,
    /// Where its log is kept (object storage), when logs are uploaded.
    pub log_url: Option<String>,
}

/// Characters of a failed run's output that travel with its point.
const POINT_OUTPUT_CHARS: usize = 1024;

/// Controls a running executor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Re-read the configuration (SIGHUP).
    Reload,
    /// Stop scheduling, let running scenarios finish within the grace period (SIGTERM).
    Shutdown,
}

/// Knobs that are not part of the configuration file.
#[derive(Debug, Clone)]
pub struct Options {
    /// How often the configuration file is checked for changes.
    pub reload_poll: Duration,
    /// How often buffered results are retried while the target is down.
    pub flush_retry: Duration,
    /// Clock for the schedulers.
    pub clock: Clock,
    /// Receives every run and skipped fire.
    pub events: Option<mpsc::UnboundedSender<RunRecord>>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            reload_poll: Duration::from_secs(2),
            flush_retry: Duration::from_secs(5),
            clock: Clock::System,
            events: None,
        }
    }
}

/// Counts for the final log line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Runs finished.
    pub runs: u64,
    /// Fires skipped because the previous run was still going.
    pub skipped: u64,
    /// Runs killed at shutdown.
    pub killed: u64,
}

/// The executor could not start.
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The ingest listener cannot be bound.
    #[error("cannot listen on {address} (ingest_listen)")]
    Listen {
        /// Address.
        address: std::net::SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

struct Fire {
    scenario: String,
    scheduled_at: DateTime<Utc>,
}

impl Fire {
    fn new(scenario: String, scheduled_at: DateTime<Utc>) -> Self {
        Self { scenario, scheduled_at }
    }
}

struct Finished {
    scenario: ScenarioConfig,
    scheduled_at: DateTime<Utc>,
    report: runner::Report,
}

fn file_digest(path: &std::path::Path) -> Option<Vec<u8>> {
    std::fs::read(path).ok().map(|bytes| Sha256::digest(bytes).to_vec())
}

/// The executor's state between events.
struct Executor {
    path: PathBuf,
    options: Options,
    config: Config,
    digest: Option<Vec<u8>>,
    schedulers: BTreeMap<String, (ScenarioConfig, JoinHandle<()>)>,
    /// Catalog probes, sweepers, the log uploader, the syntax check.
    background: background::Background,
    fires: mpsc::UnboundedSender<Fire>,
    writer: Writer,
    slots: Arc<Semaphore>,
    busy: BTreeSet<String>,
    runs: JoinSet<Finished>,
    abort: watch::Sender<bool>,
    http: reqwest::Client,
    totals: Totals,
    ingest: Arc<ingest::Ingest>,
    health: Arc<health::Health>,
}

/// Most bytes of a run's task points read back (a runaway playbook must
/// not fill the executor's memory).
const MAX_TASK_POINTS_BYTES: u64 = 16 * 1024 * 1024;

impl Executor {
    fn reschedule(&mut self) {
        let wanted = &self.config.scenarios;
        self.schedulers.retain(|name, (old, handle)| {
            let keep = wanted.get(name).is_some_and(|new| new.cron == old.cron);
            if !keep {
                handle.abort();
                tracing::info!(scenario = %name, "Scenario unscheduled.");
            }
            keep
        });
        for (name, scenario) in wanted {
            if !self.schedulers.contains_key(name) {
                let handle =
                    scheduler::spawn_scheduler(scenario, self.options.clock, self.fires.clone());
                tracing::info!(scenario = %name, cron = %scenario.cron, runner = scenario.runner.kind(), "Scenario scheduled.");
                self.schedulers.insert(name.clone(), (scenario.clone(), handle));
            }
        }
    }

    /// Starts, stops and restarts the catalog probes and sweepers to match
    /// the configuration.
    fn reprobe(&mut self, restart_all: bool) {
        let shared = background::Shared {
            config: &self.config,
            writer: &self.writer,
            health: &self.health,
            ingest: &self.ingest,
        };
        self.background.sync(&shared, restart_all);
    }

    async fn reload(&mut self) {
        self.digest = file_digest(&self.path);
        match config::load(&self.path) {
            Ok(mut config) => {
                zone::resolve(&mut config, self.config.results.zone.as_deref()).await;
                let new_writer = config.results.url != self.config.results.url
                    || config.results.zone != self.config.results.zone
                    || config.results.database != self.config.results.database
                    || config.results.buffer_dir != self.config.results.buffer_dir
                    || config.results.credentials.as_ref().map(|c| (&c.0, c.1.expose()))
                        != self.config.results.credentials.as_ref().map(|c| (&c.0, c.1.expose()));
                let restart_probes = new_writer
                    || config.environment != self.config.environment
                    || config.runners.clouds_file != self.config.runners.clouds_file
                    || config.runners.runs_dir != self.config.runners.runs_dir;
                if new_writer {
                    self.writer.stop().await;
                    self.writer = results::spawn(
                        config.results.clone(),
                        self.options.flush_retry,
                        Arc::clone(&self.health.results),
                    );
                }
                self.ingest.reconfigure(&config.environment, self.writer.clone());
                if config.ingest_listen != self.config.ingest_listen {
                    tracing::warn!(
                        old = ?self.config.ingest_listen,
                        new = ?config.ingest_listen,
                        "ingest_listen changed; it takes effect when the executor restarts."
                    );
                }
                if config.concurrency != self.config.concurrency {
                    self.slots = Arc::new(Semaphore::new(config.concurrency));
                }
                self.config = config;
                self.reschedule();
                self.reprobe(restart_probes);
                tracing::info!(path = %self.path.display(), scenarios = self.config.scenarios.len(), "Configuration reloaded.");
            }
            Err(error) => {
                tracing::error!(path = %self.path.display(), error = %error, "New configuration is invalid; keeping the previous one.");
            }
        }
    }

    fn fire(&mut self, fire: Fire) {
        let Some(scenario) = self.config.scenarios.get(&fire.scenario).cloned() else { return };
        let skip = if self.busy.contains(&scenario.name) {
            tracing::warn!(scenario = %scenario.name, scheduled_at = %fire.scheduled_at, "Previous run still going; this run is skipped.");
            Some("busy")
        } else if let Some(load) =
            load::overloaded(load::one_minute(), self.config.load_limit, load::cpus())
        {
            tracing::warn!(scenario = %scenario.name, scheduled_at = %fire.scheduled_at, load, limit = self.config.load_limit, cpus = load::cpus(), "The host is overloaded; this run is skipped.");
            Some("overloaded")
        } else {
            None
        };
        if let Some(reason) = skip {
            self.totals.skipped += 1;
            let record = RunRecord {
                scenario: scenario.name.clone(),
                scheduled_at: fire.scheduled_at,
                started_at: fire.scheduled_at,
                result: RunResult::Skipped,
                return_code: 0,
                duration: Duration::ZERO,
                job_id: None,
                output: None,
                cleanup: None,
                reason: Some(reason),
                log_url: None,
            };
            self.record(&scenario, &record);
            return;
        }
        self.busy.insert(scenario.name.clone());
        self.health.started();
        let slots = Arc::clone(&self.slots);
        let settings = self.config.runners.clone();
        let http = self.http.clone();
        let abort = self.abort.subscribe();
        let ingest = Arc::clone(&self.ingest);
        self.runs.spawn(async move {
            let _slot = slots.acquire_owned().await;
            let report = runner::run(&scenario, &settings, &http, abort, &ingest).await;
            Finished { scenario, scheduled_at: fire.scheduled_at, report }
        });
    }

    fn finished(&mut self, finished: Finished) {
        let Finished { scenario, scheduled_at, report } = finished;
        self.busy.remove(&scenario.name);
        self.totals.runs += 1;
        let duration_ms = u64::try_from(report.duration.as_millis()).unwrap_or(u64::MAX);
        let span = tracing::info_span!("run", scenario = %scenario.name, environment = %self.config.environment);
        let _entered = span.enter();
        match report.result {
            RunResult::Passed => tracing::info!(
                result = report.result.as_str(),
                duration_ms,
                return_code = report.return_code,
                "Scenario finished."
            ),
            _ => {
                tracing::warn!(result = report.result.as_str(), duration_ms, return_code = report.return_code, output = %report.output, "Scenario did not pass.")
            }
        }
        drop(_entered);
        if let (Some(dir), Some(job_id)) = (&report.run_dir, &report.job_id) {
            self.ingest_task_points(&dir.join("tasks.lp"), &scenario.name, job_id);
        }
        let log_url = match (self.background.logs(), &report.run_dir) {
            (Some(store), Some(dir)) => {
                store.finished(dir.clone());
                store.link(dir, &scenario.name)
            }
            _ => None,
        };
        let record = RunRecord {
            scenario: scenario.name.clone(),
            scheduled_at,
            started_at: report.started_at,
            result: report.result,
            return_code: report.return_code,
            duration: report.duration,
            job_id: report.job_id,
            output: (report.result != RunResult::Passed).then(|| {
                let chars: Vec<char> = report.output.trim_end().chars().collect();
                chars[chars.len().saturating_sub(POINT_OUTPUT_CHARS)..].iter().collect()
            }),
            cleanup: report.cleanup,
            reason: report.reason,
            log_url,
        };
        self.record(&scenario, &record);
    }

    /// Sends the points the callback wrote during a run.
    fn ingest_task_points(&self, path: &std::path::Path, scenario: &str, job_id: &str) {
        let text = match crate::fsutil::read_text_limited(path, MAX_TASK_POINTS_BYTES) {
            Ok(text) => text,
            Err(error) => {
                // No file: the playbook never got to a task (or the plugin was not loaded).
                if path.exists() {
                    tracing::warn!(file = %path.display(), %error, "Cannot read the run's task points.");
                }
                return;
            }
        };
        let run = ingest::RunTags { job_id, scenario: Some(scenario), task: Vec::new() };
        let accepted = self.ingest.accept(
            &text,
            Some(&run),
            lineproto::Precision::Nanoseconds,
            ingest::now_ns(),
        );
        if let Some((line, error)) = accepted.first_error {
            tracing::warn!(file = %path.display(), line, %error, "A task point is malformed; it was dropped.");
        }
    }

    fn record(&self, scenario: &ScenarioConfig, record: &RunRecord) {
        self.writer.write(&Point {
            scenario: scenario.name.clone(),
            environment: self.config.environment.clone(),
            runner: scenario.runner.kind(),
            result: record.result,
            duration_ms: u64::try_from(record.duration.as_millis()).unwrap_or(u64::MAX),
            return_code: record.return_code,
            time: record.scheduled_at,
            job_id: record.job_id.clone(),
            output: record.output.clone(),
            cleanup: record.cleanup,
            reason: record.reason,
            log_url: record.log_url.clone(),
        });
        self.health.finished(&scenario.name, record.result, record.scheduled_at.timestamp());
        if let Some(events) = &self.options.events {
            let _ = events.send(record.clone());
        }
    }

    /// Lets running scenarios finish within the grace period, then kills them.
    async fn drain(&mut self, controls: &mut mpsc::UnboundedReceiver<Control>) {
        for (_, (_, handle)) in std::mem::take(&mut self.schedulers) {
            handle.abort();
        }
        self.background.stop();
        if !self.runs.is_empty() {
            tracing::info!(
                running = self.runs.len(),
                grace_s = self.config.grace_period.as_secs(),
                "Waiting for running scenarios."
            );
        }
        let deadline = tokio::time::sleep(self.config.grace_period);
        tokio::pin!(deadline);
        let mut killing = false;
        while !self.runs.is_empty() {
            tokio::select! {
                Some(joined) = self.runs.join_next() => {
                    if let Ok(finished) = joined {
                        if killing {
                            self.totals.killed += 1;
                        }
                        self.finished(finished);
                    }
                }
                () = &mut deadline, if !killing => {
                    tracing::warn!(running = self.runs.len(), "Grace period over; killing running scenarios.");
                    killing = true;
                    let _ = self.abort.send(true);
                }
                Some(Control::Shutdown) = controls.recv(), if !killing => {
                    tracing::warn!(running = self.runs.len(), "Second shutdown request; killing running scenarios.");
                    killing = true;
                    let _ = self.abort.send(true);
                }
            }
        }
        self.writer.stop().await;
    }
}

/// Runs the executor until [`Control::Shutdown`] (or the sender is dropped).
///
/// # Errors
/// The configuration cannot be used at start. Later invalid
/// configurations are logged and ignored.
pub async fn run(
    path: PathBuf,
    options: Options,
    mut controls: mpsc::UnboundedReceiver<Control>,
) -> Result<Totals, ExecutorError> {
    let mut config = config::load(&path)?;
    zone::resolve(&mut config, None).await;
    let (fires, mut fire_rx) = mpsc::unbounded_channel();
    let health = Arc::new(health::Health::default());
    let writer =
        results::spawn(config.results.clone(), options.flush_retry, Arc::clone(&health.results));
    let ingest =
        ingest::Ingest::new(config.environment.clone(), writer.clone(), Arc::clone(&health));
    let stop_listener = tokio_util::sync::CancellationToken::new();
    if let Some(address) = config.ingest_listen {
        ingest::serve(address, Arc::clone(&ingest), stop_listener.clone())
            .await
            .map_err(|source| ExecutorError::Listen { address, source })?;
        tracing::info!(%address, "Taking points from runs and serving /metrics.");
    }
    let _stop_listener = stop_listener.drop_guard();
    let mut executor = Executor {
        ingest,
        health,
        digest: file_digest(&path),
        path,
        slots: Arc::new(Semaphore::new(config.concurrency)),
        config,
        schedulers: BTreeMap::new(),
        background: background::Background::default(),
        fires,
        writer,
        busy: BTreeSet::new(),
        runs: JoinSet::new(),
        abort: watch::channel(false).0,
        http: reqwest::Client::builder().build().unwrap_or_default(),
        totals: Totals::default(),
        options,
    };
    tracing::info!(environment = %executor.config.environment, scenarios = executor.config.scenarios.len(), "Executor started.");
    executor.reschedule();
    executor.reprobe(false);
    let mut poll = tokio::time::interval(executor.options.reload_poll);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut health_tick = tokio::time::interval(executor.config.health_interval);
    health_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            Some(fire) = fire_rx.recv() => executor.fire(fire),
            Some(joined) = executor.runs.join_next(), if !executor.runs.is_empty() => {
                if let Ok(finished) = joined {
                    executor.finished(finished);
                }
            }
            control = controls.recv() => match control {
                Some(Control::Reload) => executor.reload().await,
                Some(Control::Shutdown) | None => break,
            },
            _ = poll.tick() => {
                if file_digest(&executor.path) != executor.digest {
                    executor.reload().await;
                } else {
                    // A playbook changed without executor.yaml: check again.
                    executor.reprobe(false);
                }
            }
            _ = health_tick.tick() => {
                let point = executor.health.point(
                    &executor.config.environment,
                    &executor.config.executor,
                    ingest::now_ns(),
                );
                executor.writer.write_line(point);
            }
        }
    }
    tracing::info!("Shutting down.");
    executor.drain(&mut controls).await;
    tracing::info!(
        runs = executor.totals.runs,
        skipped = executor.totals.skipped,
        killed = executor.totals.killed,
        "Executor stopped."
    );
    Ok(executor.totals)
}
