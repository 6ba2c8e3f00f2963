//! Approvals of pending changes (report-only drift, destructive changes
//! waiting for a maintenance window), one resource or one environment at a
//! time: given over the authenticated `POST /approve`, taken by the next
//! reconcile, forgotten once that reconcile has run.

use std::collections::BTreeSet;

use crate::plan::ResourceId;

/// What operators approved and the next reconcile has not used yet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Approvals {
    /// Resource ids (`outside/influxdb.user/telegraf`).
    pub ids: BTreeSet<String>,
    /// Whole environments.
    pub environments: BTreeSet<String>,
}

impl Approvals {
    /// Whether the change of `id` may run although it would be held.
    pub fn approves(&self, id: &ResourceId) -> bool {
        self.environments.contains(&*id.env) || self.ids.contains(&id.to_string())
    }

    /// Whether nothing is approved.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty() && self.environments.is_empty()
    }

    /// Forgets what `used` holds (approvals given meanwhile stay).
    pub fn forget(&mut self, used: &Self) {
        self.ids.retain(|id| !used.ids.contains(id));
        self.environments.retain(|env| !used.environments.contains(env));
    }
}

/// What `POST /approve` takes: exactly one of the two.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// One pending change, by resource id.
    pub id: Option<String>,
    /// Every pending change of one environment.
    pub environment: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::ProviderKind;

    #[test]
    fn an_approval_covers_its_resource_or_its_environment_and_is_used_once() {
        let user = ResourceId::new("outside", ProviderKind::named("influxdb"), "user", "telegraf");
        let other = ResourceId::new("outside", ProviderKind::named("influxdb"), "user", "grafana");
        let mut approvals = Approvals::default();
        approvals.ids.insert(user.to_string());
        assert!(approvals.approves(&user) && !approvals.approves(&other));
        let used = approvals.clone();
        approvals.environments.insert("inside".to_owned());
        approvals.forget(&used);
        assert!(!approvals.approves(&user));
        assert_eq!(approvals.environments.len(), 1, "given meanwhile: kept");
    }
}
