//! `apimon daemon`: follows the repository and keeps the platform converged.
//!
//! One loop, one reconcile at a time (kube-rs's rule). It wakes on the poll
//! interval, a push webhook, the drift schedule, an explicit trigger, or a
//! retry after a failure; `reconcile` does the work and `error_policy`
//! picks the retry delay (exponential backoff with jitter). A new commit is
//! exported to its own directory and applied only if it validates and
//! renders; otherwise it is reported and the last good commit stays in
//! force. Destructive changes outside a maintenance window, and drift in
//! report-only environments, are held back and shown as pending.

pub mod backoff;
pub mod config;
pub mod http;
pub mod metrics;
pub mod notify;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::apply::Event;
use crate::engine::Plan;
use crate::model::secret::SecretStore;
use crate::model::{DriftMode, Secrets, Sensitive};
use crate::plan::{dependency_graph, Op, Summary};
use crate::reconcile::{self, ReconcileError};
use crate::source::git::{CommitId, GitAuth, GitError, GitSource, SignaturePolicy};
use crate::state::LockedStore;
use backoff::Backoff;
use config::Config;
use metrics::Metrics;

/// Why the loop woke up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// The first run after start.
    Start,
    /// The poll interval passed.
    Poll,
    /// A push webhook arrived.
    Webhook,
    /// The drift schedule fired.
    Drift,
    /// POST /trigger.
    Manual,
    /// Retrying after a failure.
    Retry,
}

/// A change held back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pending {
    /// Resource.
    pub id: String,
    /// Operation symbol and reason.
    pub change: String,
    /// Why it waits.
    pub waiting_for: String,
}

/// One environment's status.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EnvironmentStatus {
    /// Commit last applied there.
    pub commit: Option<CommitId>,
    /// End of the last run that touched it.
    pub last_run: Option<DateTime<Utc>>,
    /// `no_changes`, `success`, `partial`, `failed`, `pending`.
    pub outcome: Option<String>,
    /// Planned changes in the last run.
    pub planned: Summary,
    /// Failed changes with their errors.
    pub failed: BTreeMap<String, String>,
    /// Changes held back.
    pub pending: Vec<Pending>,
    /// Resources the last drift check found changed.
    pub drift_found: usize,
}

/// A commit that was not applied.
#[derive(Debug, Clone, Serialize)]
pub struct Rejection {
    /// The commit.
    pub commit: CommitId,
    /// When it was seen.
    pub at: DateTime<Utc>,
    /// Why: signature, or each validation error (file:line:column).
    pub errors: Vec<String>,
}

/// What `/status` shows.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    /// Daemon start.
    pub started_at: Option<DateTime<Utc>>,
    /// Latest commit seen on the remote branch.
    pub last_seen_commit: Option<CommitId>,
    /// The commit in force.
    pub last_good_commit: Option<CommitId>,
    /// The latest commit that was refused, if it is still the newest.
    pub rejected: Option<Rejection>,
    /// The last error that stopped a reconcile.
    pub last_error: Option<String>,
    /// Last reconcile: trigger and end.
    pub last_trigger: Option<Trigger>,
    /// End of the last reconcile.
    pub last_reconcile_at: Option<DateTime<Utc>>,
    /// By environment.
    pub environments: BTreeMap<String, EnvironmentStatus>,
}

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
    /// Secrets could not be loaded.
    #[error(transparent)]
    Secrets(#[from] crate::model::secret::SecretError),
    /// Planning or applying failed.
    #[error(transparent)]
    Reconcile(#[from] ReconcileError),
    /// Some changes failed; they are retried.
    #[error("{0}")]
    Incomplete(String),
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
}

/// How the caller asks the daemon to stop.
#[derive(Debug, Clone)]
pub struct Shutdown {
    /// Set on the first request: finish the change in progress, start no more.
    pub requested: Arc<AtomicBool>,
    /// Notified on the first request.
    pub notify: Arc<tokio::sync::Notify>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self {
            requested: Arc::new(AtomicBool::new(false)),
            notify: Arc::new(tokio::sync::Notify::new()),
        }
    }
}

impl Shutdown {
    /// Asks the daemon to stop after the change in progress.
    pub fn request(&self) {
        self.requested.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
        self.notify.notify_one();
    }
}

struct Daemon {
    config: Config,
    source: Arc<Mutex<GitSource>>,
    signatures: SignaturePolicy,
    status: Arc<RwLock<Status>>,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
    last_good: Option<CommitId>,
    rejected: Option<CommitId>,
    /// Whether the last full reconcile of `last_good` succeeded.
    converged: bool,
}

fn read_secret_file(
    what: &'static str,
    path: &std::path::Path,
) -> Result<Sensitive<String>, DaemonError> {
    std::fs::read_to_string(path)
        .map(|text| Sensitive::new(text.trim().to_owned()))
        .map_err(|source| DaemonError::SecretFile { what, path: path.to_owned(), source })
}

impl Daemon {
    fn update_status(&self, f: impl FnOnce(&mut Status)) {
        if let Ok(mut status) = self.status.write() {
            f(&mut status);
        }
    }

    fn commit_dir(&self, commit: &CommitId) -> PathBuf {
        self.config.raw.state_dir.join("commits").join(&commit.0)
    }

    /// Asks the remote, fetches if it moved, exports a new commit. Blocking.
    async fn sync(&self) -> Result<CommitId, DaemonError> {
        let source = Arc::clone(&self.source);
        let known: Vec<CommitId> = self.last_good.iter().chain(&self.rejected).cloned().collect();
        let dir_of = {
            let base = self.config.raw.state_dir.join("commits");
            move |c: &CommitId| base.join(&c.0)
        };
        tokio::task::spawn_blocking(move || -> Result<CommitId, DaemonError> {
            let source =
                source.lock().map_err(|_| DaemonError::Task("git source lock poisoned".into()))?;
            let remote = source.remote_head()?;
            let commit = if source.cached_head().as_ref() == Some(&remote) {
                remote
            } else {
                source.fetch()?
            };
            if !known.contains(&commit) && !dir_of(&commit).exists() {
                source.export(&commit, &dir_of(&commit))?;
            }
            Ok(commit)
        })
        .await
        .map_err(|e| DaemonError::Task(e.to_string()))?
    }

    async fn verify(&self, commit: &CommitId) -> Result<(), DaemonError> {
        if !self.signatures.required() {
            return Ok(());
        }
        let source = Arc::clone(&self.source);
        let policy = self.signatures.clone();
        let commit = commit.clone();
        tokio::task::spawn_blocking(move || {
            let source =
                source.lock().map_err(|_| DaemonError::Task("git source lock poisoned".into()))?;
            source.verify(&commit, &policy).map_err(DaemonError::from)
        })
        .await
        .map_err(|e| DaemonError::Task(e.to_string()))?
    }

    fn secrets(&self) -> Result<Secrets, DaemonError> {
        // Re-read every run: a rotated secret takes effect without a restart.
        Ok(Secrets::Resolved(SecretStore::load(
            self.config.raw.secrets_file.as_deref(),
            std::env::vars(),
        )?))
    }

    fn machine(&self) -> reconcile::Machine {
        let defaults = reconcile::Machine::from_env();
        reconcile::Machine {
            ssh_key: self.config.raw.ssh_key.clone().unwrap_or(defaults.ssh_key),
            known_hosts: self.config.raw.ssh_known_hosts.clone().unwrap_or(defaults.known_hosts),
            executor_binary: defaults.executor_binary,
            clouds_file: self.config.raw.clouds_file.clone().or(defaults.clouds_file),
        }
    }

    fn reject(&mut self, commit: &CommitId, errors: Vec<String>, stage: &str) {
        tracing::error!(%commit, errors = %errors.join("; "), "Commit refused; the last good commit stays in force.");
        self.metrics.failure(stage);
        self.rejected = Some(commit.clone());
        let _ = std::fs::remove_dir_all(self.commit_dir(commit));
        self.update_status(|s| {
            s.rejected = Some(Rejection { commit: commit.clone(), at: Utc::now(), errors })
        });
    }

    /// One loop run.
    async fn reconcile(&mut self, trigger: Trigger) -> Result<(), DaemonError> {
        let started = Instant::now();
        let commit = match self.sync().await {
            Ok(commit) => commit,
            Err(error) => {
                self.metrics.failure("source");
                return Err(error);
            }
        };
        self.update_status(|s| s.last_seen_commit = Some(commit.clone()));
        let new_commit =
            Some(&commit) != self.last_good.as_ref() && Some(&commit) != self.rejected.as_ref();
        if new_commit {
            tracing::info!(%commit, "New commit.");
            if let Err(error) = self.verify(&commit).await {
                self.reject(&commit, vec![error.to_string()], "signature");
            } else {
                // Validate and render before anything else: a bad commit never applies.
                let secrets = self.secrets()?;
                match reconcile::prepare_with(
                    &self.commit_dir(&commit),
                    &self.config.raw.environments,
                    &secrets,
                    &self.machine(),
                ) {
                    Ok(_) => {
                        if let Some(previous) = self.last_good.replace(commit.clone()) {
                            let _ = std::fs::remove_dir_all(self.commit_dir(&previous));
                        }
                        self.rejected = None;
                        self.converged = false;
                        self.update_status(|s| {
                            s.last_good_commit = Some(commit.clone());
                            s.rejected = None;
                        });
                    }
                    Err(ReconcileError::Invalid(diagnostics)) => {
                        self.reject(
                            &commit,
                            diagnostics.0.iter().map(ToString::to_string).collect(),
                            "validate",
                        );
                    }
                    Err(ReconcileError::Render(error)) => {
                        self.reject(&commit, vec![error.to_string()], "validate")
                    }
                    Err(error) => return Err(error.into()),
                }
            }
        }
        let Some(good) = self.last_good.clone() else {
            return Ok(()); // Nothing valid yet: wait for a better commit.
        };
        let needed = !self.converged
            || matches!(
                trigger,
                Trigger::Drift | Trigger::Manual | Trigger::Retry | Trigger::Start
            );
        if !needed {
            return Ok(());
        }
        let result = self.converge(&good, trigger).await;
        self.metrics.reconcile_duration(started.elapsed().as_secs_f64());
        result
    }

    /// Plans `commit` against the live systems and applies what may run now.
    async fn converge(&mut self, commit: &CommitId, trigger: Trigger) -> Result<(), DaemonError> {
        let secrets = self.secrets()?;
        let prepared = reconcile::prepare_with(
            &self.commit_dir(commit),
            &self.config.raw.environments,
            &secrets,
            &self.machine(),
        )?;
        let store = LockedStore::open(&self.config.raw.state_dir).map_err(ReconcileError::from)?;
        let state = store.load().map_err(ReconcileError::from)?;
        let plan = match reconcile::plan(&prepared, &state, self.config.raw.allow_deletes).await {
            Ok(plan) => plan,
            Err(error) => {
                self.metrics.failure("observe");
                return Err(error.into());
            }
        };
        let drift_modes: BTreeMap<String, DriftMode> =
            prepared.policies.iter().map(|(env, p)| (env.clone(), p.drift)).collect();
        let is_drift_check = trigger == Trigger::Drift && self.converged;
        let (plan, pending) = hold_back(plan, |change| {
            if is_drift_check && drift_modes.get(&change.id.env) == Some(&DriftMode::Report) {
                Some("report-only drift: an operator decides")
            } else if change.op.is_destructive() && !self.config.in_maintenance_window(Utc::now()) {
                Some("maintenance window")
            } else {
                None
            }
        });
        if is_drift_check {
            for env in &prepared.environments {
                let count = plan.actions().filter(|c| &c.id.env == env).count()
                    + pending.iter().filter(|p| p.0 == *env).count();
                if count > 0 {
                    tracing::warn!(environment = %env, resources = count, "Drift found.");
                    self.metrics.drift_found(env, count as u64);
                }
                self.update_status(|s| {
                    s.environments.entry(env.clone()).or_default().drift_found = count
                });
            }
        }
        let metrics = Arc::clone(&self.metrics);
        let report = |event: Event<'_>| {
            if let Event::Applied(id, op) = event {
                let op = match op {
                    Op::Create => "create",
                    Op::Update { .. } => "update",
                    Op::Replace { .. } => "replace",
                    Op::Delete => "delete",
                    Op::NoOp => "noop",
                };
                metrics.change_applied(id.provider.as_str(), &id.kind, op);
                tracing::info!(resource = %id, op, "Applied change.");
            }
        };
        let outcome =
            reconcile::apply(&store, &prepared, &plan, &self.config.apply, report, &self.stop)
                .await?;
        drop(store);
        let now = Utc::now();
        for env in &prepared.environments {
            let failed: BTreeMap<String, String> = outcome
                .failed
                .iter()
                .filter(|(id, _)| &id.env == env)
                .map(|(id, e)| (id.to_string(), e.clone()))
                .collect();
            let troubled = !failed.is_empty()
                || outcome.skipped.keys().chain(&outcome.not_started).any(|id| &id.env == env);
            let env_pending: Vec<Pending> =
                pending.iter().filter(|p| p.0 == *env).map(|p| p.1.clone()).collect();
            let planned = Summary::of(
                &plan.changes.iter().filter(|c| &c.id.env == env).cloned().collect::<Vec<_>>(),
            );
            let outcome_name = if troubled {
                if failed.is_empty() {
                    "partial"
                } else {
                    "failed"
                }
            } else if !env_pending.is_empty() {
                "pending"
            } else if planned.has_changes() {
                "success"
            } else {
                "no_changes"
            };
            if !troubled {
                self.metrics.applied(env, now.timestamp() as f64);
            }
            self.metrics.pending(env, env_pending.len() as u64);
            self.update_status(|s| {
                let status = s.environments.entry(env.clone()).or_default();
                if !troubled {
                    status.commit = Some(commit.clone());
                }
                status.last_run = Some(now);
                status.outcome = Some(outcome_name.to_owned());
                status.planned = planned;
                status.failed = failed;
                status.pending = env_pending;
            });
        }
        if outcome.is_success() {
            self.converged = true;
            Ok(())
        } else {
            self.metrics.failure("apply");
            Err(DaemonError::Incomplete(outcome.to_string()))
        }
    }
}

/// Removes the changes `hold` names a reason for, and everything that
/// depends on them, from `plan`; returns what is left and what waits.
fn hold_back(
    plan: Plan,
    hold: impl Fn(&crate::plan::Planned<crate::engine::AnyChange>) -> Option<&'static str>,
) -> (Plan, Vec<(String, Pending)>) {
    let actions: Vec<_> = plan.changes.iter().filter(|c| c.op != Op::NoOp).cloned().collect();
    let (successors, _) = dependency_graph(&actions);
    let mut held: BTreeMap<usize, String> = BTreeMap::new();
    for (i, change) in actions.iter().enumerate() {
        if let Some(reason) = hold(change) {
            let mut stack = vec![i];
            while let Some(j) = stack.pop() {
                if let std::collections::btree_map::Entry::Vacant(slot) = held.entry(j) {
                    slot.insert(if j == i {
                        reason.to_owned()
                    } else {
                        format!("{reason} (depends on {})", change.id)
                    });
                    stack.extend(successors[j].iter().copied());
                }
            }
        }
    }
    let held_ids: BTreeSet<_> = held.keys().map(|i| actions[*i].id.clone()).collect();
    let pending = held
        .iter()
        .map(|(i, why)| {
            let change = &actions[*i];
            (
                change.id.env.clone(),
                Pending {
                    id: change.id.to_string(),
                    change: format!("{} {}", change.op.symbol(), change.op.reason()),
                    waiting_for: why.clone(),
                },
            )
        })
        .collect();
    let changes: Vec<_> = plan.changes.into_iter().filter(|c| !held_ids.contains(&c.id)).collect();
    let summary = Summary::of(&changes);
    (Plan { changes, summary }, pending)
}

/// Time until the next drift check.
fn until_next(schedule: Option<&cron::Schedule>) -> Option<std::time::Duration> {
    let next = schedule?.upcoming(Utc).next()?;
    (next - Utc::now()).to_std().ok()
}

/// Runs the daemon until `shutdown` is requested.
///
/// # Errors
/// The configuration, the git cache or the HTTP address cannot be used.
/// Failures of single reconciles are retried and reported, never returned.
pub async fn run(config: Config, shutdown: Shutdown) -> Result<(), DaemonError> {
    let raw = &config.raw;
    let auth = match (&raw.repository.ssh_key, &raw.repository.token_file) {
        (Some(key), _) => GitAuth::SshKey { user: "git".to_owned(), key: key.clone() },
        (None, Some(file)) => GitAuth::Token {
            user: "apimon".to_owned(),
            token: read_secret_file("repository token file", file)?,
        },
        (None, None) => GitAuth::None,
    };
    let secret = match &raw.webhook_secret_file {
        Some(path) => Some(Sensitive::new(
            read_secret_file("webhook secret file", path)?.expose().as_bytes().to_vec(),
        )),
        None => None,
    };
    let cache = raw.state_dir.join("repository.git");
    let known_hosts =
        raw.ssh_known_hosts.clone().unwrap_or_else(|| reconcile::Machine::from_env().known_hosts);
    let source = GitSource::open(&raw.repository.url, &raw.repository.branch, auth, &cache)?
        .with_known_hosts(known_hosts);
    let status =
        Arc::new(RwLock::new(Status { started_at: Some(Utc::now()), ..Status::default() }));
    let metrics = Arc::new(Metrics::default());
    let (triggers, mut trigger_rx) = mpsc::channel(16);
    let listener = tokio::net::TcpListener::bind(&raw.listen)
        .await
        .map_err(|source| DaemonError::Listen { address: raw.listen.clone(), source })?;
    let app = http::router(http::AppState {
        status: Arc::clone(&status),
        metrics: Arc::clone(&metrics),
        triggers: triggers.clone(),
        secret,
        branch: raw.repository.branch.clone(),
    });
    let http_shutdown = shutdown.clone();
    let server = tokio::spawn(async move {
        let wait = async move {
            while !http_shutdown.requested.load(Ordering::SeqCst) {
                http_shutdown.notify.notified().await;
            }
        };
        if let Err(error) = axum::serve(listener, app).with_graceful_shutdown(wait).await {
            tracing::error!(%error, "HTTP endpoint failed.");
        }
    });
    tracing::info!(listen = %raw.listen, repository = %raw.repository.url, branch = %raw.repository.branch, "Daemon started.");
    notify::notify("READY=1");
    if let Some(interval) = notify::watchdog_interval() {
        tokio::spawn(async move {
            loop {
                notify::notify("WATCHDOG=1");
                tokio::time::sleep(interval).await;
            }
        });
    }

    let mut daemon = Daemon {
        signatures: SignaturePolicy {
            ssh_allowed_signers: raw.repository.ssh_allowed_signers.clone(),
            gnupg_home: raw.repository.gnupg_home.clone(),
        },
        source: Arc::new(Mutex::new(source)),
        status,
        metrics,
        stop: Arc::clone(&shutdown.requested),
        last_good: None,
        rejected: None,
        converged: false,
        config,
    };
    let mut backoff = Backoff::default();
    let mut retry_in: Option<std::time::Duration> = None;
    let mut next_trigger = Some(Trigger::Start);
    loop {
        let trigger = match next_trigger.take() {
            Some(trigger) => trigger,
            None => {
                let drift = until_next(daemon.config.drift.as_ref());
                tokio::select! {
                    () = shutdown.notify.notified() => break,
                    Some(trigger) = trigger_rx.recv() => trigger,
                    () = tokio::time::sleep(daemon.config.poll_interval) => Trigger::Poll,
                    () = tokio::time::sleep(drift.unwrap_or(std::time::Duration::MAX)), if drift.is_some() => Trigger::Drift,
                    () = tokio::time::sleep(retry_in.unwrap_or_default()), if retry_in.is_some() => Trigger::Retry,
                }
            }
        };
        if shutdown.requested.load(Ordering::SeqCst) {
            break;
        }
        let span = tracing::info_span!("reconcile", trigger = ?trigger);
        let result = {
            let _entered = span.enter();
            tracing::debug!("Reconciling.");
            drop(_entered);
            daemon.reconcile(trigger).await
        };
        retry_in = match result {
            Ok(()) => {
                backoff.success();
                daemon.update_status(|s| s.last_error = None);
                None
            }
            Err(error) => error_policy(&error, &mut backoff, &daemon),
        };
        daemon.update_status(|s| {
            s.last_trigger = Some(trigger);
            s.last_reconcile_at = Some(Utc::now());
        });
        if shutdown.requested.load(Ordering::SeqCst) {
            break;
        }
    }
    notify::notify("STOPPING=1");
    tracing::info!("Daemon stopping.");
    shutdown.request();
    let _ = server.await;
    Ok(())
}

/// How long to wait after a failed reconcile.
fn error_policy(
    error: &DaemonError,
    backoff: &mut Backoff,
    daemon: &Daemon,
) -> Option<std::time::Duration> {
    let mut message = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    let delay = backoff.failure(Instant::now());
    tracing::warn!(error = %message, retry_in_ms = delay.as_millis() as u64, "Reconcile failed; retrying.");
    daemon.update_status(|s| s.last_error = Some(message));
    Some(delay)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::AnyChange;
    use crate::plan::{ItemChange, Planned, ProviderKind, ResourceId};
    use crate::providers::influxdb::InfluxdbSpec;

    fn change(name: &str, op: Op, deps: &[&str]) -> Planned<AnyChange> {
        Planned {
            id: ResourceId::new("e", ProviderKind::Influxdb, "x", name),
            op,
            depends_on: deps
                .iter()
                .map(|d| ResourceId::new("e", ProviderKind::Influxdb, "x", *d))
                .collect(),
            owned: true,
            change: AnyChange::Influxdb(ItemChange::<InfluxdbSpec> {
                desired: None,
                observed: None,
            }),
        }
    }

    #[test]
    fn destructive_changes_and_their_dependents_wait_and_the_rest_runs() {
        let changes = vec![
            change("old", Op::Replace { reason: "image changed".into() }, &[]),
            change("uses-old", Op::Create, &["old"]),
            change("independent", Op::Create, &[]),
            change("same", Op::NoOp, &[]),
        ];
        let plan = Plan { summary: Summary::of(&changes), changes };
        let (left, pending) =
            hold_back(plan, |c| c.op.is_destructive().then_some("maintenance window"));
        let left: Vec<&str> = left.changes.iter().map(|c| c.id.name.as_str()).collect();
        assert_eq!(left, ["independent", "same"]);
        let waiting: Vec<(&str, &str)> =
            pending.iter().map(|(_, p)| (p.id.as_str(), p.waiting_for.as_str())).collect();
        assert_eq!(
            waiting,
            [
                ("e/influxdb.x/old", "maintenance window"),
                ("e/influxdb.x/uses-old", "maintenance window (depends on e/influxdb.x/old)")
            ]
        );
    }
}
