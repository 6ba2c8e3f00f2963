//! The engine: joins every provider's desired and observed sets into one
//! ordered, guarded plan.
//!
//! It knows providers only through the closed [`AnyChange`] enum
//! (ripgrep's `PatternMatcher` pattern), never their clients.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::model::{DesiredState, Environment, Policy, Secrets};
use crate::plan::{
    check_guards, diff, order, DesiredSet, GuardError, ItemChange, ObservedSet, Op, OrderError,
    Planned, Summary,
};
use crate::providers::grafana::{self, GrafanaSpec};
use crate::providers::host::{self, HostSpec};
use crate::providers::influxdb::{self, InfluxdbSpec};
use crate::providers::openstack::{self, OpenstackSpec};
use crate::render::Rendered;

/// A change of any provider.
#[derive(Debug, Clone)]
pub enum AnyChange {
    /// OpenStack.
    Openstack(ItemChange<OpenstackSpec>),
    /// InfluxDB.
    Influxdb(ItemChange<InfluxdbSpec>),
    /// Grafana.
    Grafana(ItemChange<GrafanaSpec>),
    /// Host.
    Host(ItemChange<HostSpec>),
}

/// One set per provider, across the selected environments.
#[derive(Debug, Clone, Default)]
pub struct Sets<O, I, G, H> {
    /// OpenStack.
    pub openstack: O,
    /// InfluxDB.
    pub influxdb: I,
    /// Grafana.
    pub grafana: G,
    /// Host.
    pub host: H,
}

/// What the repository asks for.
pub type Desired = Sets<
    DesiredSet<OpenstackSpec>,
    DesiredSet<InfluxdbSpec>,
    DesiredSet<GrafanaSpec>,
    DesiredSet<HostSpec>,
>;
/// What exists. The default (everything empty) is the offline view.
pub type Observed = Sets<
    ObservedSet<OpenstackSpec>,
    ObservedSet<InfluxdbSpec>,
    ObservedSet<GrafanaSpec>,
    ObservedSet<HostSpec>,
>;

/// Builds every provider's desired set for `environments`.
///
/// `executor_binary` is the apimon binary executors get: this one when `None`.
pub fn desired(
    state: &DesiredState,
    environments: &[&Environment],
    rendered: &Rendered,
    secrets: &Secrets,
    executor_binary: Option<&std::path::Path>,
) -> Desired {
    let binary = host::binary(executor_binary);
    let mut sets = Desired::default();
    for env in environments {
        sets.openstack.extend(openstack::desired(env, rendered));
        sets.influxdb.extend(influxdb::desired(env, secrets));
        sets.grafana.extend(grafana::desired(state, env, secrets));
        sets.host.extend(host::desired(env, rendered, binary.as_ref()));
    }
    sets
}

/// Planning failed.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The dependencies form a cycle.
    #[error("cannot order the plan")]
    Order(#[from] OrderError),
    /// A safety guard refused the plan.
    #[error("the plan was refused:\n{}", .0.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n"))]
    Refused(Vec<GuardError>),
}

/// An ordered, guarded plan.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// Changes in the order they apply, no-ops included.
    pub changes: Vec<Planned<AnyChange>>,
    /// Counts.
    pub summary: Summary,
}

impl Plan {
    /// The changes that do something.
    pub fn actions(&self) -> impl Iterator<Item = &Planned<AnyChange>> {
        self.changes.iter().filter(|c| c.op != Op::NoOp)
    }
}

impl AnyChange {
    /// The fingerprint to keep in the state store once the change applied:
    /// of a write-only secret (a Grafana datasource password), or of the
    /// files a unit was restarted for.
    pub fn fingerprint(&self) -> Option<&str> {
        match self {
            Self::Grafana(ItemChange {
                desired: Some(GrafanaSpec::Datasource { password_hash, .. }),
                ..
            }) => Some(password_hash),
            Self::Host(ItemChange {
                desired: Some(HostSpec::Unit { restart_token, .. }), ..
            }) => Some(restart_token),
            _ => None,
        }
    }
}

impl Serialize for AnyChange {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Plans never carry provider payloads into JSON: they may hold secrets.
        serializer.serialize_unit()
    }
}

/// Diffs, orders and guards. Pure: the same input gives the same plan.
///
/// # Errors
/// A dependency cycle, or a guard (max deletes, unowned replace) refused it.
pub fn plan(
    desired: &Desired,
    observed: &Observed,
    policies: &BTreeMap<String, Policy>,
    allow_deletes: bool,
) -> Result<Plan, PlanError> {
    let mut changes: Vec<Planned<AnyChange>> = Vec::new();
    changes.extend(
        diff(&desired.openstack, &observed.openstack, true)
            .into_iter()
            .map(|c| c.map(AnyChange::Openstack)),
    );
    changes.extend(
        diff(&desired.influxdb, &observed.influxdb, true)
            .into_iter()
            .map(|c| c.map(AnyChange::Influxdb)),
    );
    changes.extend(
        diff(&desired.grafana, &observed.grafana, true)
            .into_iter()
            .map(|c| c.map(AnyChange::Grafana)),
    );
    changes.extend(
        diff(&desired.host, &observed.host, true).into_iter().map(|c| c.map(AnyChange::Host)),
    );
    // Pruning is a per-environment policy.
    changes.retain(|c| c.op != Op::Delete || policies.get(&c.id.env).is_none_or(|p| p.prune));
    let max_deletes = policies.iter().map(|(env, p)| (env.clone(), p.max_deletes)).collect();
    check_guards(&changes, &max_deletes, allow_deletes).map_err(PlanError::Refused)?;
    let changes = order(changes)?;
    let summary = Summary::of(&changes);
    Ok(Plan { changes, summary })
}

#[cfg(test)]
mod tests {
    //! Engine tests against an in-memory provider (peace's `VecCopyItem`).

    use std::sync::Mutex;

    use super::*;
    use crate::plan::{Comparison, DesiredItem, ObservedItem, ProviderKind, ResourceId, Spec};
    use crate::providers::{Provider, Scope};

    #[derive(Debug, Clone, PartialEq, Serialize)]
    struct Value(u32);

    impl Spec for Value {
        fn compare(&self, observed: &Self) -> Comparison {
            if self == observed {
                Comparison::Same
            } else {
                Comparison::Update(vec![format!("{} → {}", observed.0, self.0)])
            }
        }
    }

    #[derive(Debug, thiserror::Error)]
    #[error("fake failure on {0}")]
    struct FakeError(ResourceId);

    /// Holds resources in memory; everything it holds counts as owned.
    #[derive(Default)]
    struct FakeProvider {
        store: Mutex<BTreeMap<ResourceId, Value>>,
    }

    impl Provider for FakeProvider {
        const KIND: ProviderKind = ProviderKind::Fake;
        type Spec = Value;
        type Error = FakeError;

        async fn observe(&self, _scope: &Scope) -> Result<ObservedSet<Value>, FakeError> {
            let store = self.store.lock().map_err(|_| FakeError(id("lock")))?;
            Ok(store
                .iter()
                .map(|(id, v)| {
                    (id.clone(), ObservedItem { spec: v.clone(), owned: true, depends_on: vec![] })
                })
                .collect())
        }

        fn is_transient(_: &FakeError) -> bool {
            false
        }

        async fn apply(&self, change: &Planned<ItemChange<Value>>) -> Result<(), FakeError> {
            let mut store = self.store.lock().map_err(|_| FakeError(change.id.clone()))?;
            match (&change.op, &change.change.desired) {
                (Op::Delete, _) => {
                    store.remove(&change.id);
                }
                (_, Some(value)) => {
                    store.insert(change.id.clone(), value.clone());
                }
                (_, None) => return Err(FakeError(change.id.clone())),
            }
            Ok(())
        }
    }

    fn id(name: &str) -> ResourceId {
        ResourceId::new("e", ProviderKind::Fake, "value", name)
    }

    fn desired(values: &[(&str, u32)]) -> DesiredSet<Value> {
        values
            .iter()
            .map(|(n, v)| (id(n), DesiredItem { spec: Value(*v), depends_on: vec![] }))
            .collect()
    }

    async fn converge(provider: &FakeProvider, want: &DesiredSet<Value>) -> usize {
        let scope = Scope { env: "e".into(), fingerprints: BTreeMap::new(), owned: Vec::new() };
        let observed = provider.observe(&scope).await.expect("observe");
        let changes = FakeProvider::plan(want, &observed, true);
        let mut applied = 0;
        for change in changes.iter().filter(|c| c.op != Op::NoOp) {
            provider.apply(change).await.expect("apply");
            applied += 1;
        }
        applied
    }

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().expect("runtime").block_on(future)
    }

    #[test]
    fn applying_a_plan_converges_and_the_next_plan_is_empty() {
        block_on(async {
            let provider = FakeProvider::default();
            let want = desired(&[("a", 1), ("b", 2)]);
            assert_eq!(converge(&provider, &want).await, 2);
            assert_eq!(converge(&provider, &want).await, 0);
        });
    }

    #[test]
    fn a_changed_value_is_updated_and_a_removed_one_deleted() {
        block_on(async {
            let provider = FakeProvider::default();
            converge(&provider, &desired(&[("a", 1), ("b", 2)])).await;
            let next = desired(&[("a", 5)]);
            assert_eq!(converge(&provider, &next).await, 2);
            let store = provider.store.lock().expect("lock").clone();
            assert_eq!(store, BTreeMap::from([(id("a"), Value(5))]));
        });
    }

    #[test]
    fn offline_plan_creates_everything_and_respects_prune_policy() {
        let mut want = Desired::default();
        want.influxdb.insert(
            ResourceId::new("outside", ProviderKind::Influxdb, "database", "apimon"),
            DesiredItem { spec: InfluxdbSpec::Database, depends_on: vec![] },
        );
        let mut observed = Observed::default();
        observed.influxdb.insert(
            ResourceId::new("outside", ProviderKind::Influxdb, "database", "old"),
            ObservedItem { spec: InfluxdbSpec::Database, owned: true, depends_on: vec![] },
        );
        let policy = |prune| {
            BTreeMap::from([(
                "outside".to_owned(),
                Policy {
                    max_deletes: 5,
                    prune,
                    drift: crate::model::DriftMode::Repair,
                    resize_servers: false,
                },
            )])
        };
        let planned = plan(&want, &observed, &policy(true), false).expect("plan");
        assert_eq!((planned.summary.create, planned.summary.delete), (1, 1));
        let kept = plan(&want, &observed, &policy(false), false).expect("plan");
        assert_eq!((kept.summary.create, kept.summary.delete), (1, 0));
    }
}
