//! One reconcile of the daemon: ask the remote, take a new commit in (it
//! must verify, validate and render, or it is rejected and the last good
//! commit stays in force), plan the commit in force against the live
//! systems, hold back what may not run now, apply the rest, and report.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::config::Config;
use super::metrics::Metrics;
use super::status::{EnvironmentStatus, Pending, Status, Trigger};
use super::DaemonError;
use crate::apply::{Event, Outcome};
use crate::machine::Machine;
use crate::model::secret::SecretStore;
use crate::model::DriftMode;
use crate::plan::{hold_back, Held, ResourceId, Summary};
use crate::providers::host::HostSpec;
use crate::providers::registry::{endangers, AnyChange};
use crate::providers::OwnHost;
use crate::reconcile::{self, Plan, Prepared, ReconcileError};
use crate::source::git::{CommitId, GitSource, SignaturePolicy};
use crate::source::scenarios::SourceCache;
use crate::state::LockedStore;

/// Write-only or unread values vouched for by fingerprints (InfluxDB
/// passwords, Grafana dashboards) a drift pass checks anyway, per
/// provider: every one within `ceil(n / PROBE_BUDGET)` passes.
pub const PROBE_BUDGET: usize = 100;

/// The commit in force, prepared once (and again only when the secrets
/// change).
struct InForce {
    commit: CommitId,
    secrets: String,
    prepared: Arc<Prepared>,
}

pub(super) struct Worker {
    pub(super) config: Config,
    pub(super) source: Arc<Mutex<GitSource>>,
    /// Where scenario repositories are fetched and cached.
    pub(super) scenario_sources: SourceCache,
    pub(super) signatures: SignaturePolicy,
    pub(super) status: Arc<RwLock<Status>>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) stop: CancellationToken,
    in_force: Option<InForce>,
    rejected: Option<CommitId>,
    /// A commit of the followed scenario branch refused with the commit in force.
    rejected_scenarios: Option<CommitId>,
    /// Whether the last full reconcile of the commit in force succeeded.
    converged: bool,
    /// Changes the commit in force asks for that are not applied yet:
    /// never mistaken for drift (`hold::Policy`).
    merged: BTreeSet<ResourceId>,
    /// Whether a change waits for a maintenance window to open.
    waiting_for_window: bool,
    /// Drift passes so far: which slice of passwords the next one checks.
    drift_passes: u64,
    /// Pending changes operators approved (`POST /approve`).
    pub(super) approvals: Arc<std::sync::Mutex<super::approvals::Approvals>>,
    /// The newest commit, held because it widens apimon's authority, and
    /// the digest an approval of it names.
    held: Option<(CommitId, String)>,
    /// The last hand-over to new daemon files, rolled back: what would
    /// write the same files again is held.
    pub(super) rolled_back: Option<super::rollback::RolledBack>,
    /// Changes that failed, each waiting for its own backoff.
    retries: super::retries::Retries,
    /// The last observation, for a commit's pass to take what it did not change.
    observation: Option<super::observation::Cache>,
}

mod authority;
mod intake;

impl Worker {
    pub(super) fn new(
        config: Config,
        source: GitSource,
        scenario_sources: SourceCache,
        signatures: SignaturePolicy,
        status: Arc<RwLock<Status>>,
        metrics: Arc<Metrics>,
        stop: CancellationToken,
    ) -> Self {
        Self {
            config,
            source: Arc::new(Mutex::new(source)),
            scenario_sources,
            signatures,
            status,
            metrics,
            stop,
            in_force: None,
            rejected: None,
            rejected_scenarios: None,
            converged: false,
            merged: BTreeSet::new(),
            waiting_for_window: false,
            drift_passes: 0,
            approvals: Arc::default(),
            held: None,
            rolled_back: None,
            retries: super::retries::Retries::default(),
            observation: None,
        }
    }

    pub(super) fn update_status(&self, f: impl FnOnce(&mut Status)) {
        if let Ok(mut status) = self.status.write() {
            f(&mut status);
        }
    }

    fn commit_dir(&self, commit: &CommitId) -> PathBuf {
        self.config.raw.state_dir.join("commits").join(&commit.0)
    }

    fn last_good(&self) -> Option<&CommitId> {
        self.in_force.as_ref().map(|f| &f.commit)
    }

    /// The commit in force, as a hand-over records it.
    pub(super) fn last_good_commit(&self) -> Option<String> {
        self.last_good().map(|c| c.0.clone())
    }

    /// The secrets, read again every run: a rotated secret takes effect
    /// without a restart.
    fn secrets(&self) -> Result<SecretStore, DaemonError> {
        Ok(SecretStore::load(self.config.raw.secrets_file.as_deref(), std::env::vars())?)
    }

    fn machine(&self) -> Machine {
        let defaults = Machine::from_env();
        Machine {
            ssh_key: self.config.raw.ssh_key.clone().unwrap_or(defaults.ssh_key),
            known_hosts: self.config.raw.ssh_known_hosts.clone().unwrap_or(defaults.known_hosts),
            executor_binary: defaults.executor_binary,
            clouds_file: self.config.raw.clouds_file.clone().or(defaults.clouds_file),
            // The trust store's release key, while installed.
            release_key: self
                .config
                .raw
                .release_key_file
                .clone()
                .filter(|file| crate::fsutil::anchor_installed(file)),
            // The daemon runs on the bastion: its endpoints are direct.
            on_bastion: true,
        }
    }

    /// One loop run, unless the last failure was permanent and nothing
    /// changed since (same commit, same secrets) and the trigger is only a
    /// poll or a webhook: then `Ok(true)`, still waiting.
    pub(super) async fn reconcile_unless_parked(
        &mut self,
        trigger: Trigger,
        parked: bool,
    ) -> Result<bool, DaemonError> {
        if parked && matches!(trigger, Trigger::Poll | Trigger::Webhook) {
            let commit = self.sync().await?;
            let known =
                Some(&commit) == self.last_good() || Some(&commit) == self.rejected.as_ref();
            let secrets = self.secrets()?.fingerprint();
            if known
                && self.in_force.as_ref().is_some_and(|f| f.secrets == secrets)
                && self.scenario_branch_moved().await.is_none()
            {
                return Ok(true);
            }
        }
        self.reconcile(trigger).await.map(|()| false)
    }

    /// One loop run.
    pub(super) async fn reconcile(&mut self, trigger: Trigger) -> Result<(), DaemonError> {
        let started = Instant::now();
        let commit = match self.sync().await {
            Ok(commit) => commit,
            Err(error) => {
                self.metrics.failure("source");
                return Err(error);
            }
        };
        crate::progress::tick();
        self.update_status(|s| s.last_seen_commit = Some(commit.clone()));
        if Some(&commit) != self.last_good()
            && Some(&commit) != self.rejected.as_ref()
            && !self.still_held(&commit)
        {
            self.take_in(&commit, None).await?;
            crate::progress::tick();
        } else if Some(&commit) == self.last_good() {
            if let Some(head) = self.scenario_branch_moved().await {
                self.take_in(&commit, Some(head)).await?;
                crate::progress::tick();
            }
        }
        if self.in_force.is_none() {
            return Ok(()); // Nothing valid yet: wait for a better commit.
        }
        let needed = !self.converged
            || matches!(
                trigger,
                Trigger::Drift
                    | Trigger::Manual
                    | Trigger::Retry
                    | Trigger::Start
                    | Trigger::Approval
            );
        if !needed {
            return Ok(());
        }
        let result = self.converge(trigger).await;
        self.metrics.reconcile_duration(started.elapsed().as_secs_f64());
        result
    }

    /// The commit in force, prepared again if the secrets changed.
    async fn prepared(&mut self) -> Result<Arc<Prepared>, DaemonError> {
        let secrets = self.secrets()?;
        let fingerprint = secrets.fingerprint();
        let Some(in_force) = &self.in_force else {
            return Err(DaemonError::Task("no commit in force".into()));
        };
        if in_force.secrets == fingerprint {
            return Ok(Arc::clone(&in_force.prepared));
        }
        let commit = in_force.commit.clone();
        let prepared = Arc::new(self.prepare(&commit, secrets).await?);
        self.in_force =
            Some(InForce { commit, secrets: fingerprint, prepared: Arc::clone(&prepared) });
        Ok(prepared)
    }

    /// Plans the commit in force against the live systems and applies what may run now.
    async fn converge(&mut self, trigger: Trigger) -> Result<(), DaemonError> {
        let prepared = self.prepared().await?;
        let store = LockedStore::open(&self.config.raw.state_dir).map_err(ReconcileError::from)?;
        let state = store.load().map_err(ReconcileError::from)?;
        // A drift pass also checks a slice of the passwords whose
        // fingerprints match (someone may have changed one by hand).
        let probe = if trigger == Trigger::Drift {
            self.drift_passes += 1;
            crate::providers::Probe { round: self.drift_passes, budget: PROBE_BUDGET }
        } else {
            crate::providers::Probe::default()
        };
        let secrets = self.in_force.as_ref().map(|f| f.secrets.clone()).unwrap_or_default();
        let (observed, plan) =
            match self.observe_and_plan(&prepared, &state, probe, trigger, &secrets).await {
                Ok(planned) => planned,
                Err(error) => {
                    self.metrics.failure("observe");
                    return Err(error.into());
                }
            };
        crate::progress::tick();
        for line in reconcile::destroys(&plan) {
            tracing::warn!(commit = %self.last_good().map(|c| c.0.as_str()).unwrap_or_default(), "{line}");
        }
        // An approval holds what a drift check holds, except what it approves.
        let holds_drift = matches!(trigger, Trigger::Drift | Trigger::Approval) && self.converged;
        let approved = self.approvals.lock().map(|a| a.clone()).unwrap_or_default();
        let retry_now = trigger == Trigger::Manual;
        let (plan, pending) = self.hold(&prepared, plan, holds_drift, &approved, retry_now);
        if trigger == Trigger::Drift && self.converged {
            self.report_drift(&prepared, &plan, &pending);
        }
        let metrics = Arc::clone(&self.metrics);
        let report = |event: Event<'_>| {
            crate::progress::tick();
            if let Event::Applied(id, op) = event {
                metrics.change_applied(id.provider.as_str(), &id.kind, op.name());
                tracing::info!(resource = %id, op = op.name(), "Applied change.");
            }
        };
        self.observation = None; // Unknown until the apply ends.
        let outcome =
            reconcile::apply(&store, &prepared, &plan, &self.config.apply, report, &self.stop)
                .await?;
        drop(store);
        self.observation =
            Some(super::observation::Cache::after(&prepared, observed, &plan, &outcome, &secrets));
        super::hold::applied(&mut self.merged, &outcome.applied);
        let now = Instant::now();
        let planned: BTreeSet<&ResourceId> =
            plan.changes.iter().map(|c| &c.id).chain(pending.iter().map(|h| &h.id)).collect();
        self.retries.retain_planned(&planned);
        for id in &outcome.applied {
            self.retries.applied(id);
        }
        // A permanent failure waits for a new commit (the loop parks);
        // a transient one for its own backoff.
        for (id, error) in &outcome.failed {
            if error.kind == crate::providers::FailureKind::Transient {
                self.retries.failed(id, error.to_string(), now);
            } else {
                self.retries.applied(id);
            }
        }
        if let Ok(mut approvals) = self.approvals.lock() {
            approvals.forget(&approved);
        }
        self.report(&prepared, &plan, &pending, &outcome);
        if outcome.is_success() {
            // A change waiting for its retry is not converged yet.
            self.converged = !self.retries.any();
            Ok(())
        } else {
            self.metrics.failure("apply");
            Err(DaemonError::Incomplete(outcome))
        }
    }

    /// Observes what this pass must (a commit's pass: only what the
    /// commit changed, the rest from the last observation) and plans;
    /// `/status` says what was observed and what it cost.
    async fn observe_and_plan(
        &self,
        prepared: &Prepared,
        state: &crate::state::State,
        probe: crate::providers::Probe,
        trigger: Trigger,
        secrets: &str,
    ) -> Result<(crate::providers::registry::Observed, Plan), ReconcileError> {
        use super::observation::{Cache, Scope};
        let scope = Cache::scope(self.observation.as_ref(), trigger, prepared, secrets);
        let partial = match (&scope, &self.observation) {
            (Scope::Only(only), Some(cache)) => Some((only, cache.observed())),
            _ => None,
        };
        let requests =
            |prepared: &Prepared| prepared.live.as_ref().map(|l| l.requests()).unwrap_or_default();
        let before = requests(prepared);
        let observed = reconcile::observe(prepared, state, probe, partial).await?;
        let after = requests(prepared);
        let plan = reconcile::plan_observed(prepared, &observed, self.config.raw.allow_deletes)?;
        let only = match &scope {
            Scope::Only(only) => Some(only),
            Scope::Everything => None,
        };
        let report = super::status::Observation::of(trigger, only, &before, &after);
        // Only what this pass observed: a cached provider's stand.
        let found = prepared.live.as_ref().map(|l| l.findings()).unwrap_or_default();
        for (env, findings) in &found {
            let by_host: Vec<(String, u64)> =
                findings.iter().map(|f| (f.subject.clone(), f.items.len() as u64)).collect();
            self.metrics.unloadable(env, &by_host);
        }
        self.update_status(|s| {
            s.last_observation = Some(report);
            for (env, findings) in found {
                s.environments.entry(env).or_default().findings = findings;
            }
        });
        Ok((observed, plan))
    }

    /// Holds back what may not run now (`hold::Policy`) and what depends
    /// on it; remembers which changes the commit in force asks for.
    fn hold(
        &mut self,
        prepared: &Prepared,
        plan: Plan,
        drift_check: bool,
        approved: &super::approvals::Approvals,
        retry_now: bool,
    ) -> (Plan, Vec<Held>) {
        let report_only: BTreeSet<String> = prepared
            .policies
            .iter()
            .filter(|(_, p)| p.drift == DriftMode::Report)
            .map(|(env, _)| env.clone())
            .collect();
        let own = self.own_host(prepared).map(|(env, host)| OwnHost { env, host });
        let deleted: BTreeSet<ResourceId> = plan
            .actions()
            .filter(|c| c.op == crate::plan::Op::Delete)
            .map(|c| c.id.clone())
            .collect();
        // The providers say what their resources mean to the daemon's host.
        let endangers =
            |id: &ResourceId| own.as_ref().is_some_and(|own| endangers(own, id, &deleted));
        let commit = self.last_good().map(|c| c.0.clone()).unwrap_or_default();
        let approves = |id: &ResourceId, change: &str| {
            approved.approves(id, &super::approvals::change_digest(&commit, id, change))
        };
        let merged =
            super::hold::merged_after(&self.merged, plan.actions().map(|c| &c.id), drift_check);
        let rewrites = self.rewrites_rolled_back(&plan, own.as_ref());
        if rewrites.is_empty() && self.rolled_back.is_some() {
            self.forget_roll_back();
        }
        let rolled_back = |id: &ResourceId| rewrites.contains(id);
        let now = Instant::now();
        let retrying = |id: &ResourceId| !retry_now && self.retries.waiting(id, now);
        let policy = super::hold::Policy {
            drift_check,
            in_window: self.config.in_maintenance_window(Utc::now()),
            report_only: &report_only,
            merged: &self.merged,
            approved: &approves,
            endangers_own_host: &endangers,
            rolled_back: &rolled_back,
            retrying: &retrying,
        };
        let (plan, pending) =
            hold_back(plan, |change| policy.wait(change).map(|w| w.reason().to_owned()));
        let window = super::hold::Wait::Window.reason();
        self.waiting_for_window = pending.iter().any(|p| p.waiting_for.starts_with(window));
        self.merged = merged;
        (plan, pending)
    }

    /// The commit in force no longer asks for the files that were rolled
    /// back: the record goes.
    fn forget_roll_back(&mut self) {
        match super::rollback::forget(&self.config.raw.state_dir) {
            Ok(()) => {
                tracing::info!("The commit in force no longer asks for the daemon files that were rolled back; the record is gone.");
                self.rolled_back = None;
                self.update_status(|s| s.rollback = None);
            }
            Err(error) => {
                tracing::warn!(error = %crate::error::chain(&error), "Cannot remove the roll-back record.");
            }
        }
    }

    /// The changes that would write the daemon's own configuration or
    /// binary on its host with the very content that was rolled back.
    fn rewrites_rolled_back(&self, plan: &Plan, own: Option<&OwnHost<'_>>) -> BTreeSet<ResourceId> {
        let (Some(record), Some(own)) = (&self.rolled_back, own) else { return BTreeSet::new() };
        let pending = &record.pending;
        plan.actions()
            .filter(|change| *change.id.env == own.env.name)
            .filter(|change| {
                let AnyChange::Host(item) = &change.change else { return false };
                let Some(HostSpec::File { host, path, sha256, .. }) = &item.desired else {
                    return false;
                };
                let rolled = match path.as_str() {
                    crate::render::DAEMON_CONFIG_PATH => pending.config_sha256.as_ref(),
                    crate::providers::host::BINARY_PATH => pending.binary_sha256.as_ref(),
                    _ => None,
                };
                *host == own.host.name && rolled == Some(sha256)
            })
            .map(|change| change.id.clone())
            .collect()
    }

    /// The host this daemon runs on, among the environments it manages:
    /// `runs_on` from its configuration, else the one named like this
    /// machine.
    fn own_host<'a>(
        &self,
        prepared: &'a Prepared,
    ) -> Option<(&'a crate::model::Environment, &'a crate::model::Host)> {
        let wanted = match &self.config.raw.runs_on {
            Some(text) => text.split_once('/').map(|(e, h)| (Some(e.to_owned()), h.to_owned()))?,
            None => {
                let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
                (None, name.trim().to_owned())
            }
        };
        // The hostname is the host's name, or its first label.
        let short = wanted.1.split('.').next().unwrap_or_default().to_owned();
        prepared
            .state
            .environments
            .values()
            .filter(|env| prepared.environments.contains(&env.name))
            .filter(|env| wanted.0.as_ref().is_none_or(|e| *e == env.name))
            .find_map(|env| {
                let host =
                    env.hosts.iter().find(|h| h.name == wanted.1).or_else(|| {
                        env.hosts.iter().find(|h| h.name == short && wanted.0.is_none())
                    })?;
                Some((env, host))
            })
    }

    /// How long until a failed change's next attempt is due, if any.
    pub(super) fn next_retry(&self) -> Option<std::time::Duration> {
        self.retries.next_due(Instant::now())
    }

    /// When the daemon should look again for changes waiting for a window.
    pub(super) fn next_window(&self) -> Option<chrono::DateTime<Utc>> {
        if !self.waiting_for_window {
            return None;
        }
        self.config.next_window_opening(Utc::now())
    }

    fn report_drift(&self, prepared: &Prepared, plan: &Plan, pending: &[Held]) {
        for env in &prepared.environments {
            let count = plan.actions().filter(|c| *c.id.env == **env).count()
                + pending.iter().filter(|p| *p.id.env == **env).count();
            if count > 0 {
                tracing::warn!(environment = %env, resources = count, "Drift found.");
                self.metrics.drift_found(env, count as u64);
            }
            self.update_status(|s| {
                s.environments.entry(env.clone()).or_default().drift_found = count
            });
        }
    }

    /// Per environment: outcome, failures, pending changes, metrics.
    fn report(&self, prepared: &Prepared, plan: &Plan, pending: &[Held], outcome: &Outcome) {
        let now = Utc::now();
        let commit = self.last_good().cloned();
        for env in &prepared.environments {
            // Failing changes waiting for their retry are failed still.
            let failed: BTreeMap<String, String> = self
                .retries
                .errors_in(env)
                .chain(
                    outcome
                        .failed
                        .iter()
                        .filter(|(id, _)| *id.env == **env)
                        .map(|(id, e)| (id.to_string(), e.to_string())),
                )
                .collect();
            let troubled = !failed.is_empty()
                || outcome.skipped.keys().chain(&outcome.not_started).any(|id| *id.env == **env);
            let shown_commit = commit.as_ref().map(|c| c.0.as_str()).unwrap_or_default();
            let env_pending: Vec<Pending> = pending
                .iter()
                .filter(|p| *p.id.env == **env)
                .map(|held| Pending::of(held, shown_commit))
                .collect();
            let mine: Vec<_> =
                plan.changes.iter().filter(|c| *c.id.env == **env).cloned().collect();
            let planned = Summary::of(&mine);
            let outcome_name = match (troubled, failed.is_empty()) {
                (true, true) => "partial",
                (true, false) => "failed",
                _ if !env_pending.is_empty() => "pending",
                _ if planned.has_changes() => "success",
                _ => "no_changes",
            };
            if !troubled {
                self.metrics.applied(env, now.timestamp() as f64);
            }
            if let Some(environment) = prepared.state.environments.get(env) {
                let reconciled = super::points::Reconciled {
                    outcome: outcome_name,
                    commit: shown_commit,
                    failed: failed.len(),
                    pending: env_pending.len(),
                };
                let line = super::points::line(
                    env,
                    &reconciled,
                    now.timestamp_nanos_opt().unwrap_or_default(),
                );
                if let Ok(store) = self.secrets() {
                    let secrets = crate::model::Secrets::Resolved(store);
                    let on_bastion = self.machine().on_bastion;
                    super::points::send(environment, &secrets, on_bastion, line, &self.metrics);
                }
            }
            self.metrics.pending(env, env_pending.len() as u64);
            self.update_status(|s| {
                let status: &mut EnvironmentStatus = s.environments.entry(env.clone()).or_default();
                if !troubled {
                    status.commit.clone_from(&commit);
                }
                status.last_run = Some(now);
                status.outcome = Some(outcome_name.to_owned());
                status.planned = planned;
                status.failed = failed;
                status.pending = env_pending;
            });
        }
    }
}

/// Runs blocking work (libgit2, validation) on the blocking pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, DaemonError> + Send + 'static,
) -> Result<T, DaemonError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| DaemonError::Task(e.to_string()))?
}
