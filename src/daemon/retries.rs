//! Per-resource retries: a change that failed is tried again after its own
//! exponential backoff ([`Backoff`], kube-rs's shape), not on every pass —
//! a unit that exits right after its restart is restarted again after
//! 0.8, 1.6, 3.2 … up to 30 s, not once per poll or drift pass. Its last
//! error stays reported meanwhile. A new commit, or an operator's `POST
//! /trigger`, retries at once.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::backoff::Backoff;
use crate::plan::ResourceId;

/// One failing change.
#[derive(Debug)]
struct Failing {
    backoff: Backoff,
    until: Instant,
    error: String,
}

/// The failing changes, by resource.
#[derive(Debug, Default)]
pub(super) struct Retries {
    failing: BTreeMap<ResourceId, Failing>,
}

impl Retries {
    /// `id` failed at `now` with `error`: it waits for its next delay.
    pub(super) fn failed(&mut self, id: &ResourceId, error: String, now: Instant) {
        let failing = self.failing.entry(id.clone()).or_insert_with(|| Failing {
            backoff: Backoff::default(),
            until: now,
            error: String::new(),
        });
        failing.until = now + failing.backoff.failure(now);
        failing.error = error;
    }

    /// `id` applied: it fails no more.
    pub(super) fn applied(&mut self, id: &ResourceId) {
        self.failing.remove(id);
    }

    /// A new commit: everything is tried at once again.
    pub(super) fn clear(&mut self) {
        self.failing.clear();
    }

    /// Whether `id` waits for its next attempt at `now`.
    pub(super) fn waiting(&self, id: &ResourceId, now: Instant) -> bool {
        self.failing.get(id).is_some_and(|f| f.until > now)
    }

    /// How long until the next attempt is due, for the changes still
    /// waiting: one already due is tried by the next pass, whatever starts
    /// it, and never makes the loop spin.
    pub(super) fn next_due(&self, now: Instant) -> Option<Duration> {
        self.failing.values().filter(|f| f.until > now).map(|f| f.until - now).min()
    }

    /// Keeps only the changes still planned: one that left the plan (a new
    /// desired state, a fixed system) fails no more.
    pub(super) fn retain_planned(&mut self, planned: &std::collections::BTreeSet<&ResourceId>) {
        self.failing.retain(|id, _| planned.contains(id));
    }

    /// Whether any change is failing.
    pub(super) fn any(&self) -> bool {
        !self.failing.is_empty()
    }

    /// The failing changes of environment `env` with their last errors.
    pub(super) fn errors_in<'a>(
        &'a self,
        env: &'a str,
    ) -> impl Iterator<Item = (String, String)> + 'a {
        self.failing
            .iter()
            .filter(move |(id, _)| *id.env == *env)
            .map(|(id, f)| (id.to_string(), f.error.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::ProviderKind;

    fn unit() -> ResourceId {
        ResourceId::new("outside", ProviderKind::named("host"), "unit", "executor:apimon-executor")
    }

    #[test]
    fn a_failing_change_waits_longer_each_time_until_it_applies_or_a_commit_comes() {
        let mut retries = Retries::default();
        let now = Instant::now();
        assert!(!retries.waiting(&unit(), now), "never failed: runs");
        retries.failed(&unit(), "exited".into(), now);
        assert!(retries.waiting(&unit(), now));
        let first = retries.next_due(now).expect("due");
        assert!(first >= Duration::from_millis(800) && first < Duration::from_secs(1), "{first:?}");
        let later = now + first;
        assert!(!retries.waiting(&unit(), later), "due again after its delay");
        assert_eq!(retries.next_due(later), None, "a due change does not wake the loop again");
        retries.failed(&unit(), "exited again".into(), later);
        let second = retries.next_due(later).expect("due");
        assert!(second >= Duration::from_millis(1600), "the delay grows: {second:?}");
        assert_eq!(
            retries.errors_in("outside").collect::<Vec<_>>(),
            vec![(unit().to_string(), "exited again".to_owned())]
        );
        assert_eq!(retries.errors_in("inside").count(), 0);
        retries.applied(&unit());
        assert!(!retries.any() && !retries.waiting(&unit(), later));
        retries.failed(&unit(), "exited".into(), later);
        retries.clear();
        assert!(!retries.waiting(&unit(), later), "a new commit tries at once");
        retries.failed(&unit(), "exited".into(), later);
        retries.retain_planned(&std::collections::BTreeSet::new());
        assert!(!retries.any(), "a change no longer planned fails no more");
    }
}
