//! Running one scenario: `ansible-playbook` in its own process group (so a
//! timeout kills everything it started), or the built-in HTTP probe.

use std::process::Stdio;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio::sync::watch;

use super::config::{RunnerConfig, RunnerSettings, ScenarioConfig};
use super::results::RunResult;

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
}

/// Runs `scenario`; `abort` turning true kills it (shutdown past grace).
pub async fn run(
    scenario: &ScenarioConfig,
    settings: &RunnerSettings,
    http: &reqwest::Client,
    abort: watch::Receiver<bool>,
) -> Report {
    match &scenario.runner {
        RunnerConfig::Ansible { playbook, cloud, extra_vars } => {
            let mut command = tokio::process::Command::new(&settings.ansible_playbook);
            command
                .arg(settings.scenarios_dir.join(playbook))
                .env("OS_CLIENT_CONFIG_FILE", &settings.clouds_file)
                .env("ANSIBLE_NOCOLOR", "1")
                .env("ANSIBLE_RETRY_FILES_ENABLED", "0")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .process_group(0)
                .kill_on_drop(true);
            if let Some(cloud) = cloud {
                command.env("OS_CLOUD", cloud);
            }
            if !extra_vars.is_empty() {
                command.arg("-e").arg(serde_json::to_string(extra_vars).unwrap_or_default());
            }
            run_process(command, scenario.timeout, abort).await
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
) -> Report {
    let started_at = Utc::now();
    let start = Instant::now();
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) => {
            return Report {
                result: RunResult::Failed,
                return_code: -1,
                duration: start.elapsed(),
                started_at,
                output: cannot_start(command.as_std().get_program(), &error),
            };
        }
    };
    let group = child.id().and_then(|id| i32::try_from(id).ok()).map(Pid::from_raw);
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    // Both pipes at once: a process blocked on a full stderr pipe would
    // otherwise never close stdout.
    let collect = tokio::spawn(async move {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let read_out = async {
            if let Some(mut stdout) = stdout {
                let _ = stdout.read_to_end(&mut out).await;
            }
        };
        let read_err = async {
            if let Some(mut stderr) = stderr {
                let _ = stderr.read_to_end(&mut err).await;
            }
        };
        tokio::join!(read_out, read_err);
        out.extend_from_slice(&err);
        out
    });
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
        Ok(Ok(bytes)) => tail(&bytes),
        _ => String::new(),
    };
    Report { result, return_code, duration, started_at, output }
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

fn tail(bytes: &[u8]) -> String {
    let start = bytes.len().saturating_sub(OUTPUT_TAIL);
    String::from_utf8_lossy(&bytes[start..]).into_owned()
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
            Report { result, return_code: i64::from(status), duration, started_at, output }
        }
        Err(error) if error.is_timeout() => Report {
            result: RunResult::Timeout,
            return_code: -1,
            duration,
            started_at,
            output: error.to_string(),
        },
        Err(error) => Report {
            result: RunResult::Failed,
            return_code: 0,
            duration,
            started_at,
            output: error.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_program_that_cannot_start_is_named_with_the_path_searched() {
        let command = tokio::process::Command::new("apimon-no-such-playbook-runner");
        let (_abort, receiver) = watch::channel(false);
        let report = run_process(command, Duration::from_secs(5), receiver).await;
        assert_eq!(report.result, RunResult::Failed);
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
        let report = run_process(command, Duration::from_secs(60), receiver).await;
        assert_eq!((report.result, report.return_code), (RunResult::Aborted, -1));
    }
}
