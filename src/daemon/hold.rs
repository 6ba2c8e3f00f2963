//! Why a planned change waits, decided purely: the daemon's hold policy.
//!
//! Every change has an origin. A change the commit in force asks for (it
//! was in the plan of the commit's own pass, and is still planned) comes
//! from the commit; a change that first appears in a drift check comes
//! from drift. Only drift is subject to an environment's report-only mode:
//! a merged change held for its maintenance window stays a merged change,
//! and applies when the window opens, whichever pass comes first.

use std::collections::BTreeSet;

use crate::plan::{Planned, ResourceId};

/// Why a change waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wait {
    /// It would destroy or cut off the host the daemon runs on.
    OwnHost,
    /// Drift in an environment whose drift an operator decides on.
    ReportOnly,
    /// Destructive, and no maintenance window is open.
    Window,
    /// It would write the daemon's own files that were just rolled back
    /// (they did not bring up a daemon that reported ready).
    RolledBack,
    /// Its last attempt failed; it waits for its backoff (`retries`).
    Retry,
}

impl Wait {
    /// As `/status` shows it.
    pub(super) fn reason(self) -> &'static str {
        match self {
            Self::OwnHost => "the daemon's own host: apply it with `apimon bootstrap` from a workstation (docs/operations.md, \"Changing the bastion\")",
            Self::ReportOnly => "report-only drift: an operator decides",
            Self::Window => "maintenance window",
            Self::Retry => "its last attempt failed: retried after its backoff (a new commit or POST /trigger retries at once)",
            Self::RolledBack => "rolled back: the daemon did not report ready with this file; a commit that changes it is tried again (/status rollback)",
        }
    }
}

/// Where a planned change came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Origin {
    /// The commit in force asks for it.
    Commit,
    /// It appeared in a drift check.
    Drift,
}

/// What the decision depends on, for one pass.
pub(super) struct Policy<'a> {
    /// This pass is a drift check of a converged commit (else the commit's
    /// own pass: everything planned is what the commit asks for).
    pub drift_check: bool,
    /// A maintenance window is open (or none is configured).
    pub in_window: bool,
    /// Environments in `policy: {drift: report}`.
    pub report_only: &'a BTreeSet<String>,
    /// Changes of the commit in force not applied yet ([`merged_after`]).
    pub merged: &'a BTreeSet<ResourceId>,
    /// Changes operators approved: by id and the change as shown
    /// ([`shown`](crate::plan::hold::shown)).
    pub approved: &'a dyn Fn(&ResourceId, &str) -> bool,
    /// Whether destroying this resource would cut the daemon off.
    pub endangers_own_host: &'a dyn Fn(&ResourceId) -> bool,
    /// Whether this change writes daemon files that were rolled back.
    pub rolled_back: &'a dyn Fn(&ResourceId) -> bool,
    /// Whether this change failed and waits for its next attempt.
    pub retrying: &'a dyn Fn(&ResourceId) -> bool,
}

impl Policy<'_> {
    /// Where the change to `id` came from.
    pub(super) fn origin(&self, id: &ResourceId) -> Origin {
        if self.drift_check && !self.merged.contains(id) {
            Origin::Drift
        } else {
            Origin::Commit
        }
    }

    /// Why `change` waits, if it does.
    pub(super) fn wait<C>(&self, change: &Planned<C>) -> Option<Wait> {
        let destructive = change.op.is_destructive();
        // Never approvable here: the daemon would cut the branch it sits on.
        if destructive && (self.endangers_own_host)(&change.id) {
            return Some(Wait::OwnHost);
        }
        // An approval does not make them start.
        if (self.rolled_back)(&change.id) {
            return Some(Wait::RolledBack);
        }
        if (self.retrying)(&change.id) {
            return Some(Wait::Retry);
        }
        if (self.approved)(&change.id, &crate::plan::hold::shown(change)) {
            return None;
        }
        if self.origin(&change.id) == Origin::Drift && self.report_only.contains(&*change.id.env) {
            return Some(Wait::ReportOnly);
        }
        (destructive && !self.in_window).then_some(Wait::Window)
    }
}

/// The changes of the commit in force still to apply after a pass that
/// planned `planned` (every change, held or not): on the commit's own pass
/// all of them; on a drift check those that were the commit's before and
/// are still planned. What the pass then applies drops out ([`applied`]):
/// needed again later, that is drift.
pub(super) fn merged_after<'a>(
    merged: &BTreeSet<ResourceId>,
    planned: impl IntoIterator<Item = &'a ResourceId>,
    drift_check: bool,
) -> BTreeSet<ResourceId> {
    planned.into_iter().filter(|id| !drift_check || merged.contains(*id)).cloned().collect()
}

/// Forgets the changes a pass applied: they are the commit's no longer.
pub(super) fn applied<'a>(
    merged: &mut BTreeSet<ResourceId>,
    applied: impl IntoIterator<Item = &'a ResourceId>,
) {
    for id in applied {
        merged.remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{hold_back, Op, Plan, ProviderKind, Summary};

    fn id(env: &str, name: &str) -> ResourceId {
        ResourceId::new(env, ProviderKind::named("influxdb"), "user", name)
    }

    fn change(env: &str, name: &str, op: Op, deps: &[&str]) -> Planned<()> {
        Planned::bare(id(env, name), op, deps.iter().map(|d| id(env, d)).collect(), ())
    }

    /// One decision, by its inputs.
    struct Case {
        drift_check: bool,
        report_only: bool,
        merged: bool,
        destructive: bool,
        in_window: bool,
        approved: bool,
        own_host: bool,
        rolled_back: bool,
        retrying: bool,
    }

    fn decide(case: &Case) -> Option<Wait> {
        let report_only: BTreeSet<String> =
            case.report_only.then(|| "outside".to_owned()).into_iter().collect();
        let merged: BTreeSet<ResourceId> =
            case.merged.then(|| id("outside", "u")).into_iter().collect();
        let approved = |_: &ResourceId, _: &str| case.approved;
        let own = |_: &ResourceId| case.own_host;
        let rolled_back = |_: &ResourceId| case.rolled_back;
        let retrying = |_: &ResourceId| case.retrying;
        let policy = Policy {
            drift_check: case.drift_check,
            in_window: case.in_window,
            report_only: &report_only,
            merged: &merged,
            approved: &approved,
            endangers_own_host: &own,
            rolled_back: &rolled_back,
            retrying: &retrying,
        };
        let op = if case.destructive { Op::Delete } else { Op::Create };
        policy.wait(&change("outside", "u", op, &[]))
    }

    macro_rules! holds {
        ($($test:ident: [$drift:expr, $report:expr, $merged:expr, $destructive:expr, $window:expr, $approved:expr, $own:expr, $rolled_back:expr, $retrying:expr] => $expected:expr;)*) => {$(
            #[test]
            fn $test() {
                let case = Case {
                    drift_check: $drift,
                    report_only: $report,
                    merged: $merged,
                    destructive: $destructive,
                    in_window: $window,
                    approved: $approved,
                    own_host: $own,
                    rolled_back: $rolled_back,
                    retrying: $retrying,
                };
                assert_eq!(decide(&case), $expected);
            }
        )*};
    }

    // [drift check, report-only env, merged, destructive, window open, approved, own host, rolled back, retrying]
    holds! {
        a_commits_create_runs: [false, false, false, false, false, false, false, false, false] => None;
        a_commits_delete_waits_for_its_window: [false, false, false, true, false, false, false, false, false] => Some(Wait::Window);
        a_commits_delete_runs_in_its_window: [false, false, false, true, true, false, false, false, false] => None;
        a_commits_delete_in_report_mode_waits_for_its_window: [false, true, false, true, false, false, false, false, false] => Some(Wait::Window);
        a_merged_delete_in_report_mode_runs_when_a_drift_pass_finds_the_window_open: [true, true, true, true, true, false, false, false, false] => None;
        a_merged_delete_in_report_mode_still_waits_outside_the_window: [true, true, true, true, false, false, false, false, false] => Some(Wait::Window);
        drift_in_report_mode_waits_for_an_operator_even_in_a_window: [true, true, false, true, true, false, false, false, false] => Some(Wait::ReportOnly);
        a_created_drift_in_report_mode_waits_too: [true, true, false, false, true, false, false, false, false] => Some(Wait::ReportOnly);
        drift_in_repair_mode_is_repaired: [true, false, false, false, false, false, false, false, false] => None;
        destructive_drift_in_repair_mode_waits_for_a_window: [true, false, false, true, false, false, false, false, false] => Some(Wait::Window);
        approved_drift_runs: [true, true, false, true, false, true, false, false, false] => None;
        an_approved_delete_runs_outside_the_window: [false, false, false, true, false, true, false, false, false] => None;
        the_own_host_waits_even_approved: [false, false, false, true, true, true, true, false, false] => Some(Wait::OwnHost);
        a_create_near_the_own_host_runs: [false, false, false, false, true, false, true, false, false] => None;
        rolled_back_daemon_files_wait_even_approved: [false, false, false, false, true, true, false, true, false] => Some(Wait::RolledBack);
        rolled_back_daemon_files_wait_in_a_drift_pass_too: [true, false, false, false, true, false, false, true, false] => Some(Wait::RolledBack);
        a_failing_change_waits_for_its_backoff: [false, false, false, false, true, false, false, false, true] => Some(Wait::Retry);
        a_failing_drift_repair_waits_for_its_backoff_too: [true, false, false, false, true, false, false, false, true] => Some(Wait::Retry);
    }

    fn plan(changes: Vec<Planned<()>>) -> Plan<()> {
        Plan { summary: Summary::of(&changes), changes, forget: vec![] }
    }

    /// One pass of the daemon over `changes`: what runs, what waits, and
    /// the merged changes after it.
    fn pass(
        changes: Vec<Planned<()>>,
        drift_check: bool,
        in_window: bool,
        merged: &BTreeSet<ResourceId>,
    ) -> (Vec<ResourceId>, Vec<(ResourceId, String)>, BTreeSet<ResourceId>) {
        let report_only: BTreeSet<String> = ["outside".to_owned()].into();
        let no = |_: &ResourceId| false;
        let not_approved = |_: &ResourceId, _: &str| false;
        let policy = Policy {
            drift_check,
            in_window,
            report_only: &report_only,
            merged,
            approved: &not_approved,
            endangers_own_host: &no,
            rolled_back: &no,
            retrying: &no,
        };
        let plan = plan(changes);
        let mut next = merged_after(merged, plan.changes.iter().map(|c| &c.id), drift_check);
        let (left, held) = hold_back(plan, |c| policy.wait(c).map(|w| w.reason().to_owned()));
        let runs: Vec<ResourceId> = left.changes.into_iter().map(|c| c.id).collect();
        applied(&mut next, &runs);
        (runs, held.into_iter().map(|h| (h.id, h.waiting_for)).collect(), next)
    }

    #[test]
    fn a_merged_deletion_and_its_dependents_apply_in_the_first_window_whatever_the_drift_mode() {
        // A commit drops a user: its grant goes first, then the user
        // (which depends on the grant's deletion).
        let changes = || {
            vec![
                change("outside", "grant", Op::Delete, &[]),
                change("outside", "user", Op::Delete, &["grant"]),
            ]
        };
        // The commit's pass, outside the window: both wait for it.
        let (runs, held, merged) = pass(changes(), false, false, &BTreeSet::new());
        assert!(runs.is_empty());
        assert_eq!(held.len(), 2);
        assert!(held.iter().all(|(_, why)| why.starts_with("maintenance window")), "{held:?}");
        // A drift pass while it is still closed: still the window, not drift.
        let (runs, held, merged) = pass(changes(), true, false, &merged);
        assert!(runs.is_empty());
        assert!(held.iter().all(|(_, why)| why.starts_with("maintenance window")), "{held:?}");
        // The window opens and a drift pass comes first: both apply.
        let (runs, held, merged) = pass(changes(), true, true, &merged);
        assert_eq!(runs, vec![id("outside", "grant"), id("outside", "user")]);
        assert!(held.is_empty(), "{held:?}");
        // Applied: the next drift pass plans nothing, and a user made again
        // by hand later is drift, for an operator to decide on.
        let (_, _, merged) = pass(vec![], true, true, &merged);
        assert!(merged.is_empty());
        let (runs, held, _) =
            pass(vec![change("outside", "user", Op::Delete, &[])], true, true, &merged);
        assert!(runs.is_empty());
        assert_eq!(held, vec![(id("outside", "user"), Wait::ReportOnly.reason().to_owned())]);
    }

    #[test]
    fn what_a_commit_applied_is_drift_when_it_is_needed_again() {
        // The commit's pass creates a user; someone drops it before the
        // next drift pass: that pass finds drift, for an operator.
        let create = || vec![change("outside", "telegraf", Op::Create, &[])];
        let (runs, _, merged) = pass(create(), false, true, &BTreeSet::new());
        assert_eq!(runs, vec![id("outside", "telegraf")]);
        assert!(merged.is_empty(), "{merged:?}");
        let (runs, held, _) = pass(create(), true, true, &merged);
        assert!(runs.is_empty());
        assert_eq!(held, vec![(id("outside", "telegraf"), Wait::ReportOnly.reason().to_owned())]);
    }

    #[test]
    fn a_new_commit_makes_everything_it_plans_its_own() {
        let merged = BTreeSet::from([id("outside", "old")]);
        let planned = [id("outside", "a"), id("outside", "b")];
        assert_eq!(merged_after(&merged, &planned, false), planned.iter().cloned().collect());
        assert!(merged_after(&merged, &planned, true).is_empty());
    }
}
