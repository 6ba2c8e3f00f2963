//! `apimon daemon`: follows the repository and keeps the platform converged.
//!
//! One loop, one reconcile at a time (kube-rs's rule). It wakes on the poll
//! interval, a push webhook, the drift schedule, an explicit trigger, or a
//! retry after a failure; [`worker`] does the work and [`error_policy`]
//! decides by the failure's kind what comes next: a transient failure is
//! retried after an exponential backoff with jitter, a permanent one (an
//! API refusal, a refused plan, missing secrets) waits for a new commit, a
//! drift pass or an operator instead of retrying in a storm. A new commit
//! is applied only if it validates and renders; otherwise it is reported
//! and the last good commit stays in force. Destructive changes outside a
//! maintenance window, and drift in report-only environments, are held
//! back and shown as pending.

pub mod approvals;
pub mod backoff;
pub mod config;
mod hold;
pub mod http;
pub mod metrics;
pub mod notify;
mod observation;
mod points;
mod retries;
pub mod rollback;
pub mod self_image;
pub mod status;
mod watchdog;
mod worker;

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::apply::Outcome;
use crate::error::FailureKind;
use crate::machine::Machine;
use crate::model::Sensitive;
use crate::reconcile::ReconcileError;
use crate::source::git::{FetchLimits, GitAuth, GitError, GitSource, SignaturePolicy};
use crate::source::scenarios::{ScopedAuth, SourceCache};
use crate::url::url_host;
use backoff::Backoff;
use config::Config;
use metrics::Metrics;
pub use status::{EnvironmentStatus, Pending, Rejection, Status, Trigger};
use worker::Worker;

/// A reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The git source failed.
    #[error(transparent)]
    Git(#[from] GitError),
    /// A secret or token file cannot be read.
    #[error("cannot read {what} {path}")]
    SecretFile {
        /// Which file.
        what: &'static str,
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A secret file others can read.
    #[error("{what} {} has mode {mode:04o}; it must be 0600 or stricter (run: chmod 600 {})", path.display(), path.display())]
    Readable {
        /// Which file.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The webhook secret is unusable.
    #[error("webhook secret file {path} {message}")]
    WebhookSecret {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Secrets could not be loaded.
    #[error(transparent)]
    Secrets(#[from] crate::model::secret::SecretError),
    /// Planning or applying failed.
    #[error(transparent)]
    Reconcile(#[from] ReconcileError),
    /// Some changes failed.
    #[error("{}", failures(.0))]
    Incomplete(Outcome),
    /// The HTTP endpoint could not be bound.
    #[error("cannot listen on {address}")]
    Listen {
        /// Address.
        address: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A blocking task failed.
    #[error("internal task failed: {0}")]
    Task(String),
    /// A shutdown interrupted the run.
    #[error("stopped by a shutdown request")]
    Stopped,
}

impl DaemonError {
    /// Whether retrying the same commit may help.
    pub fn kind(&self) -> FailureKind {
        match self {
            // Refused credentials, host keys, trees; a repository that is
            // not there: the same every time until something changes.
            Self::Git(error) if error.failure().is_permanent() => FailureKind::Permanent,
            Self::Git(_) | Self::Task(_) | Self::Stopped => FailureKind::Transient,
            Self::Reconcile(ReconcileError::Observe(error)) => error.kind,
            Self::Reconcile(ReconcileError::State(_)) => FailureKind::Transient,
            Self::Reconcile(ReconcileError::Load(crate::model::LoadError::Fetch {
                kind, ..
            })) => *kind,
            Self::Incomplete(outcome) if !outcome.only_permanent_failures() => {
                FailureKind::Transient
            }
            _ => FailureKind::Permanent,
        }
    }
}

/// The outcome's summary and its first failures.
fn failures(outcome: &Outcome) -> String {
    let mut text = outcome.to_string();
    for (id, error) in outcome.failed.iter().take(3) {
        text.push_str(&format!(" {id}: {error}."));
    }
    if outcome.failed.len() > 3 {
        text.push_str(&format!(" ({} more failed)", outcome.failed.len() - 3));
    }
    text
}

pub use crate::model::daemon::MIN_WEBHOOK_SECRET;

/// The webhook secret: a file only its owner can read, holding at least
/// [`MIN_WEBHOOK_SECRET`] bytes (an empty one would accept an empty token).
fn read_webhook_secret(path: &std::path::Path) -> Result<Sensitive<Vec<u8>>, DaemonError> {
    let refuse = |message: String| DaemonError::WebhookSecret { path: path.to_owned(), message };
    let secret = read_secret_file("webhook secret file", path)?;
    if secret.expose().len() < MIN_WEBHOOK_SECRET {
        return Err(refuse(format!(
            "holds {} bytes; it must hold at least {MIN_WEBHOOK_SECRET} (e.g. openssl rand -hex 32)",
            secret.expose().len()
        )));
    }
    Ok(Sensitive::new(secret.expose().as_bytes().to_vec()))
}

/// Reads a secret file that only its owner can read.
pub(crate) fn read_secret_file(
    what: &'static str,
    path: &std::path::Path,
) -> Result<Sensitive<String>, DaemonError> {
    use std::os::unix::fs::PermissionsExt;
    let metadata = std::fs::metadata(path).map_err(|source| DaemonError::SecretFile {
        what,
        path: path.to_owned(),
        source,
    })?;
    let mode = metadata.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(DaemonError::Readable { what, path: path.to_owned(), mode });
    }
    crate::fsutil::read_text_limited(path, crate::fsutil::MAX_CONFIG_BYTES)
        .map(|text| Sensitive::new(text.trim().to_owned()))
        .map_err(|e| DaemonError::SecretFile { what, path: path.to_owned(), source: e.into() })
}

/// What the loop does after a reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// Wait for the usual triggers.
    Wait,
    /// Retry after this long (a transient failure).
    Retry(Duration),
    /// Wait for a new commit, a drift pass or an operator (a permanent
    /// failure): polls that find the same commit do not reconcile.
    WaitForChange,
}

/// How the loop goes on after `error`: by its kind.
fn error_policy(error: &DaemonError, backoff: &mut Backoff) -> Next {
    match error.kind() {
        FailureKind::Transient => Next::Retry(backoff.failure(Instant::now())),
        FailureKind::Permanent => Next::WaitForChange,
    }
}

/// The error with its causes, on one line.
fn message(error: &DaemonError) -> String {
    crate::error::chain(error)
}

/// Time until the next drift check.
fn until_next(schedule: Option<&crate::cron::Schedule>) -> Option<Duration> {
    let next = schedule?.next_after(&Utc::now())?;
    (next - Utc::now()).to_std().ok()
}

/// Reads the git credentials and opens the cache of the repository and
/// the one of scenario repositories (the same credentials, sent only to
/// the repository's own host).
fn open_source(config: &Config) -> Result<(GitSource, SourceCache), DaemonError> {
    let raw = &config.raw;
    let auth = match (&raw.repository.ssh_key, &raw.repository.token_file) {
        (Some(key), _) => GitAuth::SshKey { user: "git".to_owned(), key: key.clone() },
        (None, Some(file)) => GitAuth::Token {
            user: "apimon".to_owned(),
            token: read_secret_file("repository token file", file)?,
        },
        (None, None) => GitAuth::None,
    };
    let cache = raw.state_dir.join("repository.git");
    let known_hosts =
        raw.ssh_known_hosts.clone().unwrap_or_else(|| Machine::from_env().known_hosts);
    let limits = FetchLimits {
        max_bytes: raw.repository.max_fetch_bytes.unwrap_or(crate::limits::DEFAULT_MAX_FETCH_BYTES),
        ..FetchLimits::default()
    };
    let scenarios = SourceCache::new(
        raw.state_dir.join("scenario-repositories"),
        ScopedAuth { host: url_host(&raw.repository.url), auth: auth.clone() },
        Some(known_hosts.clone()),
    )
    .with_fetch_limits(limits)
    .with_required_signers(raw.scenario_allowed_signers_file.clone());
    let source = GitSource::open(&raw.repository.url, &raw.repository.branch, auth, &cache)?
        .with_known_hosts(known_hosts)
        .with_fetch_limits(limits);
    Ok((source, scenarios))
}

/// Why [`run`] returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stopped {
    /// `shutdown` was cancelled.
    Shutdown,
    /// The daemon's own binary or configuration changed on disk (what, in
    /// words): the service manager is to start the new one.
    Restart(String),
}

/// Whether the daemon's own binary or configuration changed into one that
/// can start a daemon (what changed, in words). A file that cannot is
/// logged and accepted, so it is reported once.
async fn restart_due(
    image: Option<&mut self_image::SelfImage>,
    state_dir: &std::path::Path,
    commit: Option<String>,
) -> Option<String> {
    let image = image?;
    // Looked at once: what is checked is what is accepted or handed over.
    let changes = image.changes();
    let change = changes.first()?.clone();
    // Every changed file must start a daemon, not only the first seen.
    let mut checked = Ok(());
    for each in &changes {
        if checked.is_ok() {
            checked = self_image::check(each).await;
        }
    }
    match checked {
        Ok(()) => {
            // The way back first: without it, no hand-over.
            if let Err(error) = self_image::hand_over(image, &change, state_dir, commit) {
                tracing::error!(changed = %change, error = %crate::error::chain(&error), "Not restarting: the previous files cannot be kept for a roll-back; running on as started.");
                for each in &changes {
                    image.accept(each);
                }
                return None;
            }
            tracing::info!(changed = %change, exit_status = self_image::RESTART_EXIT_STATUS, "Restarting: the daemon's own files changed; the new process takes over (rolled back if it does not report ready).");
            Some(change.to_string())
        }
        Err(why) => {
            tracing::error!(changed = %change, error = %crate::error::chain(&why), "Not restarting: the new file could not start a daemon; running on as started.");
            for each in &changes {
                image.accept(each);
            }
            None
        }
    }
}

/// Once ready: a hand-over to this process is done; an earlier roll-back
/// (if no hand-over confirmed since) is reported, and returned for the holds.
fn after_ready(
    state_dir: &std::path::Path,
    status: &RwLock<Status>,
) -> Option<rollback::RolledBack> {
    match rollback::confirm(state_dir) {
        Ok(Some(pending)) => {
            tracing::info!(commit = ?pending.commit, "Took over from the previous process: the new files reported ready.")
        }
        Ok(None) => {}
        Err(error) => {
            tracing::error!(error = %crate::error::chain(&error), "Cannot confirm the hand-over; the next start may roll it back.")
        }
    }
    let record = match rollback::rolled_back(state_dir) {
        Ok(record) => record,
        Err(error) => {
            tracing::error!(error = %crate::error::chain(&error), "Cannot read the roll-back record.");
            None
        }
    };
    if let Some(record) = &record {
        tracing::error!(at = %record.at, commit = ?record.pending.commit, reason = %record.reason, "The last hand-over to new daemon files was rolled back; changes that would write them again are held until a commit changes them.");
        if let Ok(mut status) = status.write() {
            status.rollback = Some(record.clone());
        }
    }
    record
}

/// Runs the daemon until `shutdown` is cancelled (the change in progress
/// finishes, no new one starts), or until, after a reconcile, its own
/// binary or configuration has changed on disk.
///
/// # Errors
/// The configuration, the git cache or the HTTP address cannot be used.
/// Failures of single reconciles are retried and reported, never returned.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<Stopped, DaemonError> {
    let mut image = self_image::supervised().then(|| self_image::SelfImage::capture(&config.path));
    let raw = &config.raw;
    let secret = match &raw.webhook_secret_file {
        Some(path) => Some(read_webhook_secret(path)?),
        None => None,
    };
    let (source, scenario_sources) = open_source(&config)?;
    let status =
        Arc::new(RwLock::new(Status { started_at: Some(Utc::now()), ..Status::default() }));
    let metrics = Arc::new(Metrics::default());
    let (triggers, mut trigger_rx) = mpsc::channel(16);
    let approvals = Arc::new(std::sync::Mutex::new(approvals::Approvals::default()));
    let app_state = http::AppState {
        status: Arc::clone(&status),
        metrics: Arc::clone(&metrics),
        triggers: triggers.clone(),
        secret,
        branch: raw.repository.branch.clone(),
        deliveries: Arc::default(),
        approvals: Arc::clone(&approvals),
        approval_token_file: raw.approval_token_file.clone(),
    };
    let webhook_server = match &raw.webhook {
        Some(webhook) => Some(
            crate::serve::serve(
                &webhook.listen,
                &webhook.allow_from,
                http::webhook_router(app_state.clone()),
                shutdown.clone(),
            )
            .await
            .map_err(|source| DaemonError::Listen { address: webhook.listen.clone(), source })?,
        ),
        None => None,
    };
    let server = crate::serve::serve(&raw.listen, &[], http::router(app_state), shutdown.clone())
        .await
        .map_err(|source| DaemonError::Listen { address: raw.listen.clone(), source })?;
    let repository = crate::url::redact_url(&raw.repository.url);
    tracing::info!(listen = %raw.listen, %repository, branch = %raw.repository.branch, "Daemon started.");
    notify::notify("READY=1");
    let rolled_back = after_ready(&raw.state_dir, &status);
    let idle = watchdog::Idle::default();
    if let Some(limit) = notify::watchdog_limit() {
        tokio::spawn(watchdog::feed(limit, idle.clone(), shutdown.clone()));
    }

    let signatures = SignaturePolicy {
        ssh_allowed_signers: raw.repository.ssh_allowed_signers.clone(),
        gnupg_home: raw.repository.gnupg_home.clone(),
    };
    let mut worker = Worker::new(
        config,
        source,
        scenario_sources,
        signatures,
        status,
        metrics,
        shutdown.clone(),
    );
    worker.approvals = approvals;
    worker.rolled_back = rolled_back;
    let mut backoff = Backoff::default();
    let mut next = Next::Wait;
    let mut trigger = Trigger::Start;
    let mut stopped = Stopped::Shutdown;
    loop {
        let waiting_for_change = next == Next::WaitForChange;
        let span = tracing::info_span!("reconcile", trigger = ?trigger);
        let result = {
            let _entered = span.enter();
            tracing::debug!("Reconciling.");
            drop(_entered);
            crate::progress::tick();
            worker.reconcile_unless_parked(trigger, waiting_for_change).await
        };
        next = match result {
            Ok(parked) if parked => Next::WaitForChange,
            Ok(_) => {
                backoff.success();
                worker.update_status(|s| s.last_error = None);
                Next::Wait
            }
            Err(DaemonError::Stopped) => break,
            Err(error) => {
                let next = error_policy(&error, &mut backoff);
                let message = message(&error);
                match next {
                    Next::Retry(delay) => {
                        tracing::warn!(error = %message, retry_in_ms = delay.as_millis() as u64, "Reconcile failed; retrying.")
                    }
                    _ => {
                        tracing::error!(error = %message, "Reconcile failed; waiting for a new commit, a drift pass or an operator.")
                    }
                }
                worker.update_status(|s| s.last_error = Some(message));
                next
            }
        };
        worker.update_status(|s| {
            s.last_trigger = Some(trigger);
            s.last_reconcile_at = Some(Utc::now());
            s.reconciles += 1;
            s.waiting_for_change = next == Next::WaitForChange;
        });
        if shutdown.is_cancelled() {
            break;
        }
        // Between reconciles only: an apply in progress always finishes.
        let commit = worker.last_good_commit();
        if let Some(change) =
            restart_due(image.as_mut(), &worker.config.raw.state_dir, commit).await
        {
            stopped = Stopped::Restart(change);
            break;
        }
        let drift = until_next(worker.config.drift.as_ref());
        let window = worker.next_window().and_then(|at| (at - Utc::now()).to_std().ok());
        // The loop's own backoff, or a failed change's, whichever is first.
        let retry = match next {
            Next::Retry(delay) => Some(delay),
            _ => None,
        };
        let retry = match (retry, worker.next_retry()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        idle.set(true);
        trigger = tokio::select! {
            () = shutdown.cancelled() => break,
            Some(trigger) = trigger_rx.recv() => trigger,
            () = tokio::time::sleep(worker.config.poll_interval) => Trigger::Poll,
            () = tokio::time::sleep(drift.unwrap_or(Duration::MAX)), if drift.is_some() => Trigger::Drift,
            () = tokio::time::sleep(retry.unwrap_or_default()), if retry.is_some() => Trigger::Retry,
            () = tokio::time::sleep(window.unwrap_or_default()), if window.is_some() => Trigger::Window,
        };
        idle.set(false);
        // Files replaced while idle: the new process reconciles, not this
        // one (which would put its own, older binary back on its host).
        let commit = worker.last_good_commit();
        if let Some(change) =
            restart_due(image.as_mut(), &worker.config.raw.state_dir, commit).await
        {
            stopped = Stopped::Restart(change);
            break;
        }
    }
    notify::notify("STOPPING=1");
    tracing::info!("Daemon stopping.");
    shutdown.cancel();
    let _ = server.await;
    if let Some(webhook_server) = webhook_server {
        let _ = webhook_server.await;
    }
    Ok(stopped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::LoadError;

    fn fetch(kind: FailureKind) -> DaemonError {
        let url = "https://git.example/s.git".to_owned();
        DaemonError::Reconcile(ReconcileError::Load(LoadError::Fetch {
            url,
            message: "x".into(),
            kind,
        }))
    }

    #[test]
    fn the_error_policy_goes_by_the_failures_kind() {
        let mut backoff = Backoff::default();
        assert!(matches!(
            error_policy(&fetch(FailureKind::Transient), &mut backoff),
            Next::Retry(_)
        ));
        assert_eq!(error_policy(&fetch(FailureKind::Permanent), &mut backoff), Next::WaitForChange);
        let refused = DaemonError::Git(GitError::HostKey {
            action: "connect to",
            url: "ssh://git.example/r.git".into(),
            reason: "refusing SSH host key".into(),
        });
        assert_eq!(error_policy(&refused, &mut backoff), Next::WaitForChange);
        let unreachable = DaemonError::Git(GitError::Git {
            action: "fetch from",
            url: "ssh://git.example/r.git".into(),
            source: git2::Error::from_str("failed to connect: Connection refused"),
        });
        assert!(matches!(error_policy(&unreachable, &mut backoff), Next::Retry(_)));
    }
}
