//! Running one scenario: `ansible-playbook` in its own process group (so a
//! timeout kills everything it started), or the built-in HTTP probe.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::watch;

use std::sync::Arc;

use super::ansible;
use super::config::{RunnerConfig, RunnerSettings, ScenarioConfig};
use super::ingest::Ingest;
use super::results::RunResult;
use super::rundir::{self, LogWriter, RunDir};

/// How long a process group gets between SIGTERM and SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(5);

/// Output kept from a run, for the log of a failed one.
const OUTPUT_TAIL: usize = 4096;

/// What a run did.
#[derive(Debug, Clone)]
pub struct Report {
    /// Result.
    pub result: RunResult,
    /// Exit code, HTTP status, or -1 when killed or not started.
    pub return_code: i64,
    /// From start to end.
    pub duration: Duration,
    /// When the process was started (or the request sent).
    pub started_at: DateTime<Utc>,
    /// The end of stdout and stderr, or the error.
    pub output: String,
    /// The run's job id (playbook runs).
    pub job_id: Option<String>,
    /// The run's directory (playbook runs).
    pub run_dir: Option<PathBuf>,
    /// How the cleanup playbook ended, when one ran.
    pub cleanup: Option<RunResult>,
    /// Why a run is an [`RunResult::Error`]: `runner`, `run_directory`,
    /// `playbook`.
    pub reason: Option<&'static str>,
}

impl Report {
    /// Marks the run apimon's own error (or its content's), not the cloud's.
    fn error(mut self, reason: &'static str) -> Self {
        self.result = RunResult::Error;
        self.reason = Some(reason);
        self
    }

    /// A report of a run without a directory (not started, an HTTP probe,
    /// or before the playbook runner adds its own).
    fn new(
        result: RunResult,
        return_code: i64,
        duration: Duration,
        started_at: DateTime<Utc>,
        output: String,
    ) -> Self {
        Self {
            result,
            return_code,
            duration,
            started_at,
            output,
            job_id: None,
            run_dir: None,
            cleanup: None,
            reason: None,
        }
    }
}

/// Runs `scenario`; `abort` turning true kills it (shutdown past grace).
pub async fn run(
    scenario: &ScenarioConfig,
    settings: &RunnerSettings,
    http: &reqwest::Client,
    abort: watch::Receiver<bool>,
    ingest: &Arc<Ingest>,
) -> Report {
    match &scenario.runner {
        RunnerConfig::Ansible { playbook, base_dir, cloud, extra_vars, vars, cleanup } => {
            let run_dir = match RunDir::create(&settings.runs_dir, &scenario.name, Utc::now()) {
                Ok(run_dir) => run_dir,
                Err(error) => {
                    let output = format!(
                        "cannot create a run directory under {}: {error}",
                        settings.runs_dir.display()
                    );
                    return Report::new(RunResult::Failed, -1, Duration::ZERO, Utc::now(), output)
                        .error("run_directory");
                }
            };
            let plugins = settings.plugins_dir();
            if let Err(error) = ansible::ensure_callback_plugin(&plugins) {
                tracing::warn!(dir = %plugins.display(), %error, "Cannot write the callback plugin; the tasks of this run are not recorded.");
            }
            // The run's ingest credential, valid while it (and its cleanup) runs.
            let admission = ingest.admit(&scenario.name, &run_dir.job_id);
            let metrics_config = settings.metrics_endpoint.and_then(|endpoint| {
                ansible::write_metrics_config(&run_dir, &scenario.name, endpoint, &admission.token)
                    .map_err(|error| tracing::warn!(dir = %run_dir.path.display(), %error, "Cannot write the run's openstacksdk metrics configuration; its API requests are not recorded."))
                    .ok()
            });
            let inventory = (!vars.is_empty()).then(|| {
                ansible::write_inventory(&run_dir, vars)
                    .map_err(|error| tracing::warn!(dir = %run_dir.path.display(), %error, "Cannot write the run's inventory; its vars are missing."))
                    .ok()
            }).flatten();
            let command = |playbook: &str| {
                ansible::command(
                    settings,
                    &scenario.name,
                    playbook,
                    &ansible::Variables {
                        cloud: cloud.as_deref(),
                        extra_vars,
                        inventory: inventory.as_deref(),
                        base_dir: base_dir.as_deref().map(std::path::Path::new),
                    },
                    &run_dir,
                    metrics_config.as_deref(),
                )
            };
            let log = run_dir.log_path();
            let mut report =
                run_process(command(playbook), scenario.timeout, abort, Some(&log)).await;
            // Ansible's parser error (an unknown module or collection, bad
            // syntax) and bad options end it before any task: the
            // playbook or its runtime, not the cloud.
            if report.result == RunResult::Failed && matches!(report.return_code, 4 | 5) {
                report = report.error("playbook");
            }
            if let (Some(cleanup), RunResult::Timeout | RunResult::Aborted) =
                (cleanup, report.result)
            {
                // Not ended by the stop that ended the run: bounded by its own timeout.
                let (_never, not_aborted) = watch::channel(false);
                let log = run_dir.path.join("cleanup.log");
                let cleaned = run_process(
                    command(&cleanup.playbook),
                    cleanup.timeout,
                    not_aborted,
                    Some(&log),
                )
                .await;
                report.cleanup = Some(cleaned.result);
            }
            drop(admission);
            report.job_id = Some(run_dir.job_id.clone());
            report.run_dir = Some(run_dir.path.clone());
            rundir::prune(&settings.runs_dir, &scenario.name, settings.keep_runs);
            report
        }
        RunnerConfig::Http { url, method, expect_status } => {
            probe(http, url, method, *expect_status, scenario.timeout).await
        }
    }
}

async fn run_process(
    mut command: tokio::process::Command,
    timeout: Duration,
    mut abort: watch::Receiver<bool>,
    log: Option<&Path>,
) -> Report {
    let started_at = Utc::now();
    let start = Instant::now();
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) => {
            return Report::new(
                RunResult::Failed,
                -1,
                start.elapsed(),
                started_at,
                cannot_start(command.as_std().get_program(), &error),
            )
            .error("runner");
        }
    };
    let group = child.id().and_then(|id| i32::try_from(id).ok()).map(Pid::from_raw);
    let collect =
        tokio::spawn(collect(child.stdout.take(), child.stderr.take(), log.map(Path::to_owned)));
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let (result, return_code) = tokio::select! {
        status = child.wait() => match status {
            Ok(status) if status.success() => (RunResult::Passed, 0),
            Ok(status) => (RunResult::Failed, i64::from(status.code().unwrap_or(-1))),
            Err(_) => (RunResult::Failed, -1),
        },
        () = &mut deadline => {
            kill_group(group, &mut child).await;
            (RunResult::Timeout, -1)
        }
        () = aborted(&mut abort) => {
            kill_group(group, &mut child).await;
            (RunResult::Aborted, -1)
        }
    };
    let duration = start.elapsed();
    // The group is gone (or finished); pipes close, so this cannot hang on
    // grandchildren that kept them open past the kill.
    let output = match tokio::time::timeout(Duration::from_secs(2), collect).await {
        Ok(Ok(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
        _ => String::new(),
    };
    Report::new(result, return_code, duration, started_at, output)
}

/// Reads stdout and stderr as they come (both at once: a process blocked
/// on a full stderr pipe would otherwise never close stdout) into the run's
/// log; returns the last [`OUTPUT_TAIL`] bytes.
async fn collect(
    mut stdout: Option<tokio::process::ChildStdout>,
    mut stderr: Option<tokio::process::ChildStderr>,
    log: Option<PathBuf>,
) -> Vec<u8> {
    let mut log = LogWriter::open(log.as_deref()).await;
    let mut tail = Vec::new();
    let (mut out_buffer, mut err_buffer) = (vec![0u8; 8192], vec![0u8; 8192]);
    while stdout.is_some() || stderr.is_some() {
        let (read, from_stdout) = tokio::select! {
            read = read_some(&mut stdout, &mut out_buffer), if stdout.is_some() => (read, true),
            read = read_some(&mut stderr, &mut err_buffer), if stderr.is_some() => (read, false),
        };
        let buffer = if from_stdout { &out_buffer } else { &err_buffer };
        match read {
            Ok(n) if n > 0 => {
                log.write(&buffer[..n]).await;
                tail.extend_from_slice(&buffer[..n]);
                if tail.len() > OUTPUT_TAIL {
                    tail.drain(..tail.len() - OUTPUT_TAIL);
                }
            }
            _ if from_stdout => stdout = None,
            _ => stderr = None,
        }
    }
    log.finish().await;
    tail
}

async fn read_some<R: AsyncRead + Unpin>(
    reader: &mut Option<R>,
    buffer: &mut [u8],
) -> std::io::Result<usize> {
    match reader {
        Some(reader) => reader.read(buffer).await,
        None => Ok(0),
    }
}

/// Why `program` did not start, naming it and, for a bare name, the PATH
/// searched (the executor's unit sets its own PATH).
fn cannot_start(program: &std::ffi::OsStr, error: &std::io::Error) -> String {
    let program = std::path::Path::new(program);
    if program.components().count() > 1 {
        format!("cannot start {}: {error}", program.display())
    } else {
        let path = std::env::var("PATH").unwrap_or_default();
        format!("cannot start {}: {error} (searched PATH={path})", program.display())
    }
}

/// Resolves once `abort` is true; never if its sender is gone.
async fn aborted(abort: &mut watch::Receiver<bool>) {
    loop {
        if *abort.borrow_and_update() {
            return;
        }
        if abort.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// SIGTERM to the whole group, SIGKILL after a grace period.
async fn kill_group(group: Option<Pid>, child: &mut tokio::process::Child) {
    if let Some(group) = group {
        let _ = killpg(group, Signal::SIGTERM);
        if tokio::time::timeout(KILL_GRACE, child.wait()).await.is_err() {
            let _ = killpg(group, Signal::SIGKILL);
        } else {
            // The leader is gone; make sure nothing it started lingers.
            let _ = killpg(group, Signal::SIGKILL);
        }
    }
    let _ = child.kill().await;
}

async fn probe(
    http: &reqwest::Client,
    url: &str,
    method: &str,
    expect_status: u16,
    timeout: Duration,
) -> Report {
    let started_at = Utc::now();
    let start = Instant::now();
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::GET);
    let outcome = http.request(method, url).timeout(timeout).send().await;
    let duration = start.elapsed();
    match outcome {
        Ok(response) => {
            let status = response.status().as_u16();
            let result =
                if status == expect_status { RunResult::Passed } else { RunResult::Failed };
            let output = if result == RunResult::Passed {
                String::new()
            } else {
                format!("HTTP {status}, expected {expect_status}")
            };
            Report::new(result, i64::from(status), duration, started_at, output)
        }
        Err(error) if error.is_timeout() => {
            Report::new(RunResult::Timeout, -1, duration, started_at, error.to_string())
        }
        Err(error) => Report::new(RunResult::Failed, 0, duration, started_at, error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_program_that_cannot_start_is_named_with_the_path_searched() {
        let command = tokio::process::Command::new("apimon-no-such-playbook-runner");
        let (_abort, receiver) = watch::channel(false);
        let report = run_process(command, Duration::from_secs(5), receiver, None).await;
        // apimon's fault, not the cloud's.
        assert_eq!((report.result, report.reason), (RunResult::Error, Some("runner")));
        assert!(
            report.output.starts_with("cannot start apimon-no-such-playbook-runner: ")
                && report.output.contains("searched PATH="),
            "{}",
            report.output
        );
    }

    #[tokio::test]
    async fn a_run_stopped_by_apimon_is_aborted() {
        let mut command = tokio::process::Command::new("sleep");
        command.arg("3003").process_group(0).kill_on_drop(true);
        let (abort, receiver) = watch::channel(false);
        let _ = abort.send(true);
        let report = run_process(command, Duration::from_secs(60), receiver, None).await;
        assert_eq!((report.result, report.return_code), (RunResult::Aborted, -1));
    }
}
