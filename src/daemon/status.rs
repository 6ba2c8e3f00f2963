//! What `/status` shows: the commit in force, the last rejection, and per
//! environment the outcome of the last run with its failed and pending
//! changes.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::plan::{Held, Summary};
use crate::source::git::CommitId;

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
    /// A maintenance window opened while destructive changes wait for one.
    Window,
    /// `POST /approve`: pending changes approved.
    Approval,
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
    /// What an approval of it names (with `id`): it lapses when the
    /// change or the commit in force moves.
    pub digest: String,
}

impl Pending {
    /// `held`, under the commit in force `commit`.
    pub fn of(held: &Held, commit: &str) -> Self {
        Self {
            id: held.id.to_string(),
            change: held.change.clone(),
            waiting_for: held.waiting_for.clone(),
            digest: super::approvals::change_digest(commit, &held.id, &held.change),
        }
    }
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
    /// What the last observation of the environment's hosts found beyond
    /// resources: each executor's scheduled playbooks its runtime cannot
    /// load, with Ansible's complaint.
    pub findings: Vec<crate::providers::Finding>,
}

/// A commit that was not applied.
#[derive(Debug, Clone, Serialize)]
pub struct Rejection {
    /// The commit.
    pub commit: CommitId,
    /// When it was seen.
    pub at: DateTime<Utc>,
    /// The scenario repository's commit that was refused with it, when
    /// only that moved (its followed branch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scenario_commit: Option<CommitId>,
    /// Why: signature, or each validation error (file:line:column).
    pub errors: Vec<String>,
}

/// A commit that widens apimon's authority, waiting for an operator
/// (`apimon approve --commit`); the commit in force stays meanwhile.
#[derive(Debug, Clone, Serialize)]
pub struct HeldCommit {
    /// The commit.
    pub commit: CommitId,
    /// What an approval names with it.
    pub digest: String,
    /// What it widens, one `path: change` each.
    pub widenings: Vec<String>,
    /// When it was first held.
    pub since: DateTime<Utc>,
}

/// What `/status` shows.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    /// Daemon start.
    pub started_at: Option<DateTime<Utc>>,
    /// Reconcile runs finished since the start: tests and operators can
    /// wait for the next one instead of guessing how long it takes.
    pub reconciles: u64,
    /// Latest commit seen on the remote branch.
    pub last_seen_commit: Option<CommitId>,
    /// The commit in force.
    pub last_good_commit: Option<CommitId>,
    /// The scenario repository's commit in force, when apimon.yaml names one.
    pub scenario_repository_commit: Option<CommitId>,
    /// The latest commit that was refused, if it is still the newest.
    pub rejected: Option<Rejection>,
    /// The newest commit, when it waits for an operator's approval.
    pub held: Option<HeldCommit>,
    /// The last hand-over to new daemon files that was rolled back (they
    /// did not report ready), until a later one succeeds.
    pub rollback: Option<super::rollback::RolledBack>,
    /// The last error that stopped a reconcile.
    pub last_error: Option<String>,
    /// Whether the daemon waits for a new commit, a drift pass or an
    /// operator before trying again (the last failure was permanent).
    pub waiting_for_change: bool,
    /// Last reconcile: trigger and end.
    pub last_trigger: Option<Trigger>,
    /// End of the last reconcile.
    pub last_reconcile_at: Option<DateTime<Utc>>,
    /// By environment.
    pub environments: BTreeMap<String, EnvironmentStatus>,
    /// What the last pass observed, and what that cost.
    pub last_observation: Option<Observation>,
}

/// What one pass observed: every provider, or (a commit's pass) only those
/// the commit changed, the others as last observed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Observation {
    /// Why the pass ran.
    pub trigger: Option<Trigger>,
    /// The providers read.
    pub observed: Vec<String>,
    /// The providers taken from the last observation.
    pub cached: Vec<String>,
    /// Requests sent to each provider while observing.
    pub requests: BTreeMap<String, usize>,
}

impl Observation {
    /// The report of a pass woken by `trigger` that observed `only` (all
    /// when `None`), with each provider's request counts before and after.
    pub fn of(
        trigger: Trigger,
        only: Option<&std::collections::BTreeSet<crate::plan::ProviderKind>>,
        before: &[(crate::plan::ProviderKind, usize)],
        after: &[(crate::plan::ProviderKind, usize)],
    ) -> Self {
        let mut report = Self { trigger: Some(trigger), ..Self::default() };
        for (kind, now) in after {
            let was = before.iter().find(|(k, _)| k == kind).map_or(0, |(_, n)| *n);
            let name = kind.as_str().to_owned();
            report.requests.insert(name.clone(), now.saturating_sub(was));
            if only.is_none_or(|only| only.contains(kind)) {
                report.observed.push(name);
            } else {
                report.cached.push(name);
            }
        }
        report
    }
}
