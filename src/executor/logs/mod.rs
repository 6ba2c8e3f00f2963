//! Job logs in object storage: when a playbook run ends, its `output.log`
//! (and `cleanup.log`) goes to a Swift container of a monitored cloud,
//! every secret the executor knows replaced by `***`, with Swift's
//! `X-Delete-After` as the retention. The run directory is the disk
//! buffer: a log is uploaded from it, with retries, until Swift took it
//! (a `.uploaded` mark), so an unreachable store never blocks runs and
//! loses nothing the executor still keeps (`keep_runs`). The run's point
//! carries the log's link (a temp URL signed locally, or the plain URL of
//! a public container), known before the upload is done.

pub mod redact;
pub mod swift;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::keystone::{CloudAuth, Session};
use crate::model::Sensitive;

/// `logs:` of executor.yaml.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogsConfig {
    /// The clouds.yaml entry of the object store.
    pub cloud: String,
    /// Container.
    pub container: String,
    /// `X-Delete-After`, and how long links stay valid.
    pub retention: Duration,
    /// Readable by anyone; else through temp URLs.
    pub public: bool,
    /// The container's temp-URL key.
    pub temp_url_key: Sensitive<String>,
}

/// The mark of a run directory whose logs Swift took.
const UPLOADED: &str = ".uploaded";
/// The logs of a run, as uploaded.
const LOGS: [&str; 2] = ["output.log", "cleanup.log"];
/// Between two attempts at what is pending.
const RETRY: Duration = Duration::from_secs(10);

/// Counters, shared with the health point and `/metrics`.
#[derive(Debug, Default)]
pub struct LogCounters {
    /// Logs Swift took.
    pub uploaded: AtomicU64,
    /// Attempts that failed (each is retried).
    pub failures: AtomicU64,
    /// Run directories waiting for an upload.
    pub pending: AtomicU64,
}

/// The log store of a running executor: hands out links, takes finished
/// runs.
pub struct LogStore {
    config: LogsConfig,
    environment: String,
    /// The storage URL, once a token said it (links need it).
    storage: Mutex<Option<String>>,
    runs: mpsc::UnboundedSender<PathBuf>,
}

impl LogStore {
    /// The link of run directory `dir`'s output log, valid for the
    /// retention; `None` until the storage URL is known.
    pub fn link(&self, dir: &Path, scenario: &str) -> Option<String> {
        let storage = self.storage.lock().ok()?.clone()?;
        let object = object_name(&self.environment, scenario, dir, LOGS[0]);
        if self.config.public {
            return Some(format!("{storage}/{}/{object}", self.config.container));
        }
        let expires = chrono::Utc::now().timestamp()
            + i64::try_from(self.config.retention.as_secs()).unwrap_or(i64::MAX / 2);
        Some(swift::temp_url(
            &storage,
            &self.config.container,
            &object,
            self.config.temp_url_key.expose(),
            expires,
        ))
    }

    /// A run of `scenario` ended in `dir`: upload its logs.
    pub fn finished(&self, dir: PathBuf) {
        let _ = self.runs.send(dir);
    }
}

/// `<environment>/<scenario>/<run directory>/<file>`, each part kept to
/// characters that need no escaping (the signed path is the sent path).
fn object_name(environment: &str, scenario: &str, dir: &Path, file: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(
                |c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' },
            )
            .collect()
    };
    let run = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    format!("{}/{}/{}/{file}", clean(environment), clean(scenario), clean(&run))
}

/// What the uploader needs from the executor.
pub struct Context {
    /// The executor's clouds.yaml.
    pub clouds_file: PathBuf,
    /// Where run directories are.
    pub runs_dir: PathBuf,
    /// The executor's environment.
    pub environment: String,
    /// Secrets to keep out of the logs.
    pub secrets: Vec<String>,
    /// Counters.
    pub counters: Arc<LogCounters>,
}

/// Starts the uploader: the store for the executor, the task to abort.
pub fn spawn(config: LogsConfig, context: Context) -> (Arc<LogStore>, JoinHandle<()>) {
    let (runs, mut finished) = mpsc::unbounded_channel::<PathBuf>();
    let store = Arc::new(LogStore {
        config: config.clone(),
        environment: context.environment.clone(),
        storage: Mutex::new(None),
        runs,
    });
    let shared = Arc::clone(&store);
    let handle = tokio::spawn(async move {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        // Left from before a restart: every run directory not yet marked.
        let mut pending: BTreeSet<(String, PathBuf)> = unmarked(&context.runs_dir);
        let mut session: Option<Session> = None;
        let mut ensured = false;
        let mut retry = tokio::time::interval(RETRY);
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            context.counters.pending.store(pending.len() as u64, Ordering::Relaxed);
            tokio::select! {
                dir = finished.recv() => match dir {
                    Some(dir) => { pending.insert((scenario_of(&dir), dir)); }
                    None => return,
                },
                _ = retry.tick() => {}
            }
            // Once the container is there (its storage URL makes the
            // links), a tick with nothing pending has nothing to do.
            if ensured && pending.is_empty() {
                continue;
            }
            if session.is_none() {
                match CloudAuth::load(&context.clouds_file, &config.cloud) {
                    Ok(auth) => session = Some(Session::new(auth, http.clone())),
                    Err(error) => {
                        context.counters.failures.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(error = %error, "Job logs cannot be uploaded.");
                        continue;
                    }
                }
            }
            // Read again at every attempt: a rotated password is masked
            // at once. Without the clouds file's secrets nothing leaves.
            let Some(cloud_secrets) = redact::clouds_file_secrets(&context.clouds_file) else {
                context.counters.failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(file = %context.clouds_file.display(), "Cannot read the clouds file's secrets; no log is uploaded unmasked.");
                continue;
            };
            let mut redactor = redact::Redactor::new(
                context.secrets.iter().cloned().chain([config.temp_url_key.expose().clone()]),
            );
            redactor.extend(cloud_secrets);
            let Some(current) = session.as_mut() else { continue };
            let mut container =
                swift::Container { session: current, http: &http, name: &config.container };
            if !ensured {
                match container.check().await {
                    Ok(storage) => {
                        if let Ok(mut known) = shared.storage.lock() {
                            *known = Some(storage);
                        }
                        ensured = true;
                    }
                    Err(error) => {
                        context.counters.failures.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(container = %config.container, error = %error, pending = pending.len(), "The log container cannot be reached; logs wait on disk.");
                        if matches!(error, swift::SwiftError::Auth(_)) {
                            // Read the credentials again next time (rotated?).
                            session = None;
                        }
                        continue;
                    }
                }
            }
            // One log Swift refuses does not hold the others back; three
            // failures in a row say the store is away: wait for the next try.
            let mut failures_in_a_row = 0;
            let mut stale_session = false;
            for (scenario, dir) in pending.clone() {
                let uploaded = upload(
                    &mut container,
                    &config,
                    &context.environment,
                    &scenario,
                    &dir,
                    &redactor,
                )
                .await;
                match uploaded {
                    Ok(count) => {
                        failures_in_a_row = 0;
                        pending.remove(&(scenario, dir));
                        context.counters.uploaded.fetch_add(count, Ordering::Relaxed);
                    }
                    Err(error) => {
                        failures_in_a_row += 1;
                        stale_session |= matches!(error, swift::SwiftError::Auth(_));
                        context.counters.failures.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(dir = %dir.display(), error = %error, pending = pending.len(), "A job log could not be uploaded; it is retried.");
                        if failures_in_a_row >= 3 || stale_session {
                            break;
                        }
                    }
                }
            }
            if stale_session {
                session = None;
            }
        }
    });
    (store, handle)
}

/// The scenario of a run directory (its parent's name).
fn scenario_of(dir: &Path) -> String {
    dir.parent()
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Run directories with a log and without the uploaded mark.
fn unmarked(runs_dir: &Path) -> BTreeSet<(String, PathBuf)> {
    let mut found = BTreeSet::new();
    let Ok(scenarios) = std::fs::read_dir(runs_dir) else { return found };
    for scenario in scenarios.filter_map(Result::ok) {
        let name = scenario.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let Ok(runs) = std::fs::read_dir(scenario.path()) else { continue };
        for run in runs.filter_map(Result::ok).map(|r| r.path()) {
            if run.join(LOGS[0]).is_file() && !run.join(UPLOADED).exists() {
                found.insert((name.clone(), run));
            }
        }
    }
    found
}

/// Uploads the logs of `dir`, redacted, then marks it; the logs uploaded.
/// A directory pruned meanwhile has nothing left to upload: done.
async fn upload(
    container: &mut swift::Container<'_>,
    config: &LogsConfig,
    environment: &str,
    scenario: &str,
    dir: &Path,
    redactor: &redact::Redactor,
) -> Result<u64, swift::SwiftError> {
    let mut count = 0;
    for file in LOGS {
        let path = dir.join(file);
        let Ok(bytes) = crate::fsutil::read_limited(&path, super::rundir::MAX_LOG_BYTES + 4096)
        else {
            continue;
        };
        let text = redactor.redact(&String::from_utf8_lossy(&bytes));
        container
            .put(
                &object_name(environment, scenario, dir, file),
                text.into_bytes(),
                config.retention,
            )
            .await?;
        count += 1;
    }
    if dir.is_dir() {
        if let Err(error) = std::fs::write(dir.join(UPLOADED), b"") {
            tracing::warn!(dir = %dir.display(), %error, "Cannot mark a run's logs as uploaded; they may be sent again.");
        }
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_keep_to_safe_characters() {
        let dir = Path::new("/var/lib/apimon/runs/list servers/20261207T193000.000Z-abc");
        assert_eq!(
            object_name("outside", "list servers", dir, "output.log"),
            "outside/list_servers/20261207T193000.000Z-abc/output.log"
        );
    }
}
