//! What the daemon last observed, kept between passes so that a commit's
//! pass observes only what the commit touches (`Desired::changed_providers`)
//! and takes the rest as last seen, updated by what was applied since.
//!
//! Safety: the cache stands in only on a pass for a new commit. Drift
//! passes, starts, manual triggers, retries, approvals and maintenance
//! windows observe everything (and so refresh the cache); a provider with
//! a change that failed, was skipped or did not start is observed again
//! on the next pass; a change of secrets or of the environments observes
//! everything. So anything changed outside apimon is seen by the next
//! drift pass at the latest, as without a cache.

use std::collections::{BTreeMap, BTreeSet};

use crate::apply::Outcome;
use crate::plan::{Op, ProviderKind};
use crate::providers::registry::{Desired, Observed};
use crate::reconcile::{Plan, Prepared};

use super::status::Trigger;

/// The last observation, as the applied changes left it.
#[derive(Debug)]
pub(super) struct Cache {
    desired: Desired,
    observed: Observed,
    secrets: String,
    environments: Vec<String>,
    /// Providers with a change whose result is not known: observed again.
    unsure: BTreeSet<ProviderKind>,
}

/// What a pass observes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Scope {
    /// Every provider.
    Everything,
    /// These; the others from the cache.
    Only(BTreeSet<ProviderKind>),
}

/// Whether a pass woken by `trigger` may take unchanged providers from a
/// cache that matches its secrets and environments.
fn may_use_cache(trigger: Trigger, matches: bool) -> bool {
    matches && matches!(trigger, Trigger::Poll | Trigger::Webhook)
}

impl Cache {
    /// What a pass for `prepared` (with secrets `secrets`) woken by
    /// `trigger` observes, given this cache (if any).
    pub(super) fn scope(
        cache: Option<&Self>,
        trigger: Trigger,
        prepared: &Prepared,
        secrets: &str,
    ) -> Scope {
        let Some(cache) = cache else { return Scope::Everything };
        let matches = cache.secrets == secrets && cache.environments == prepared.environments;
        if !may_use_cache(trigger, matches) {
            return Scope::Everything;
        }
        let mut only = prepared.desired.changed_providers(&cache.desired);
        only.extend(cache.unsure.iter().cloned());
        Scope::Only(only)
    }

    /// The observation to hand to the planner with `scope`.
    pub(super) fn observed(&self) -> &Observed {
        &self.observed
    }

    /// The cache after `outcome` of `plan`, planned from `observed`.
    pub(super) fn after(
        prepared: &Prepared,
        mut observed: Observed,
        plan: &Plan,
        outcome: &Outcome,
        secrets: &str,
    ) -> Self {
        let ops: BTreeMap<_, Op> =
            plan.changes.iter().map(|c| (c.id.clone(), c.op.clone())).collect();
        let applied: BTreeMap<_, Op> = outcome
            .applied
            .iter()
            .filter_map(|id| ops.get(id).map(|op| (id.clone(), op.clone())))
            .collect();
        observed.record_applied(&prepared.desired, &applied);
        observed.stale.retain(|id| !plan.forget.contains(id) && !applied.contains_key(id));
        let unsure = outcome
            .failed
            .keys()
            .chain(outcome.skipped.keys())
            .chain(&outcome.not_started)
            .map(|id| id.provider.clone())
            .collect();
        Self {
            desired: prepared.desired.clone(),
            observed,
            secrets: secrets.to_owned(),
            environments: prepared.environments.clone(),
            unsure,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! cache_cases {
        ($($name:ident: ($trigger:expr, $matches:expr) => $expected:expr;)+) => {$(
            #[test]
            fn $name() {
                assert_eq!(may_use_cache($trigger, $matches), $expected);
            }
        )+};
    }

    cache_cases! {
        a_polled_commit_uses_a_matching_cache: (Trigger::Poll, true) => true;
        a_webhook_commit_uses_a_matching_cache: (Trigger::Webhook, true) => true;
        changed_secrets_or_environments_observe_everything: (Trigger::Webhook, false) => false;
        a_drift_pass_observes_everything: (Trigger::Drift, true) => false;
        a_start_observes_everything: (Trigger::Start, true) => false;
        a_manual_trigger_observes_everything: (Trigger::Manual, true) => false;
        a_retry_observes_everything: (Trigger::Retry, true) => false;
        an_approval_observes_everything: (Trigger::Approval, true) => false;
        a_window_observes_everything: (Trigger::Window, true) => false;
    }
}
