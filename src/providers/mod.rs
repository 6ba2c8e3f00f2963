//! Providers: one module per target system, each implementing one
//! contract ([`Provider`]), listed once in [`registry`].
//!
//! A provider builds its desired set from the validated model (pure),
//! connects from a [`Context`] (available, or unavailable with a reason),
//! reads what exists (`observe`, batched, read-only), plans (the planning
//! core's generic [`diff`](crate::plan::diff) unless it needs more) and
//! carries out one change at a time (`apply`). It says how it knows what
//! apimon owns, which values are write-only fingerprints, and which of its
//! errors are worth retrying. Providers know nothing of git, the daemon or
//! each other.

#![deny(missing_docs)]

pub mod grafana;
pub mod host;
pub mod incremental;
pub mod influxdb;
pub mod keystone;
pub mod locate;
pub mod logs;
pub mod openstack;
pub mod registry;
pub mod tunnel;

use std::future::Future;
use std::path::PathBuf;

use serde::Serialize;

use crate::machine::Machine;
use crate::model::{DesiredState, Environment, Secrets};
use crate::plan::{diff, DesiredSet, ItemChange, ObservedSet, Planned, ProviderKind, Spec};
use crate::render::Rendered;

/// What one observe call is about.
#[derive(Debug, Clone)]
pub struct Scope {
    /// Environment name.
    pub env: String,
    /// Fingerprints of write-only secrets as last applied, by resource id
    /// (from the state store): how a provider tells whether a secret it
    /// cannot read back is still the declared one.
    pub fingerprints: std::collections::BTreeMap<String, String>,
    /// Resources the state store says apimon created in this environment:
    /// a provider that only reads what is declared must also read these,
    /// or it could never prune them.
    pub owned: Vec<crate::plan::ResourceId>,
    /// Which write-only secrets with a matching fingerprint to check for
    /// drift anyway (a login), on this pass.
    pub probe: Probe,
    /// The observation this call is part of (one number for all
    /// environments of one pass; 0: none): environments that share a cloud
    /// project share the pass's lists.
    pub pass: u64,
}

/// The secrets a drift pass checks although their fingerprints match:
/// `budget` of them (by sorted name) per pass, a different slice each
/// `round`, so every one is checked within `ceil(n / budget)` passes.
/// The default checks none: a commit's plan costs the same whatever the
/// number of users.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Probe {
    /// The drift pass's number.
    pub round: u64,
    /// How many to check on this pass; 0: none.
    pub budget: usize,
}

impl Probe {
    /// Whether the `index`-th of `count` sorted secrets is checked on this pass.
    pub fn selects(&self, index: usize, count: usize) -> bool {
        if self.budget == 0 || count == 0 {
            return false;
        }
        let slices = count.div_ceil(self.budget) as u64;
        (index / self.budget) as u64 == self.round % slices
    }
}

/// What desired sets are built from: the validated repository, rendered.
#[derive(Debug, Clone, Copy)]
pub struct Model<'a> {
    /// The validated repository.
    pub state: &'a DesiredState,
    /// Every host's rendered files.
    pub rendered: &'a Rendered,
    /// Secret values (redacted when planning offline).
    pub secrets: &'a Secrets,
    /// The apimon binary executors get, and its sha256.
    pub executor_binary: Option<&'a (PathBuf, String)>,
}

/// What live providers are built from.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The validated repository.
    pub state: &'a DesiredState,
    /// Resolved secrets.
    pub secrets: &'a Secrets,
    /// The applying machine's own files (keys, clouds.yaml).
    pub machine: &'a Machine,
    /// Who says where a server is, by environment (from the providers
    /// connected before: see [`Provider::locator`]).
    pub locators: &'a locate::Locators,
}

/// Whether a provider can reach its system for an environment.
#[derive(Debug)]
pub enum Availability<P> {
    /// Ready to observe and apply.
    Available(P),
    /// Cannot be reached from here; the reason says why and what to do.
    /// A live plan leaves this provider's resources of the environment out
    /// and says so.
    Unavailable(String),
}

/// How a provider knows which resources apimon created (and may delete).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    /// Marks on the resources themselves (tags, metadata): `observe`
    /// decides.
    Marks,
    /// The state store's record of what apimon created.
    StateStore,
}

pub use crate::error::FailureKind;

/// The host a daemon runs on, in its environment.
#[derive(Debug, Clone, Copy)]
pub struct OwnHost<'a> {
    /// Its environment.
    pub env: &'a crate::model::Environment,
    /// The host.
    pub host: &'a crate::model::Host,
}

/// A target system.
///
/// # Guarantees
/// `desired` and `plan` are pure. `observe` never changes anything.
/// `apply` carries out exactly one change and is idempotent, so a retry
/// after a lost reply is safe.
pub trait Provider: Sized + Send + Sync + 'static {
    /// Which provider this is: the `provider` part of its resource ids.
    const KIND: ProviderKind;
    /// How it knows what apimon created.
    const OWNERSHIP: Ownership;
    /// The provider's resource description.
    type Spec: Spec + Serialize + PartialEq + Send + Sync + 'static;
    /// The provider's error type; each error names its resource.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Pure: what `env` asks of this system.
    fn desired(model: &Model<'_>, env: &Environment) -> DesiredSet<Self::Spec>;

    /// Sets up the provider for `env` (no network traffic yet).
    ///
    /// # Errors
    /// The configuration cannot be used (an unreadable CA file, a broken
    /// clouds.yaml): the live plan fails, naming the provider.
    fn connect(
        context: &Context<'_>,
        env: &Environment,
        desired: &DesiredSet<Self::Spec>,
    ) -> Result<Availability<Self>, Self::Error>;

    /// Reads what exists, in as few calls as possible.
    ///
    /// # Errors
    /// The system could not be read; nothing was changed.
    fn observe(
        &self,
        scope: &Scope,
    ) -> impl Future<Output = Result<ObservedSet<Self::Spec>, Self::Error>> + Send;

    /// Pure: the changes that take `observed` to `desired`, sorted by id.
    fn plan(
        desired: &DesiredSet<Self::Spec>,
        observed: &ObservedSet<Self::Spec>,
    ) -> Vec<Planned<ItemChange<Self::Spec>>> {
        diff(desired, observed, true)
    }

    /// Applies one change.
    ///
    /// # Errors
    /// The change failed; the error names the resource.
    fn apply(
        &self,
        change: &Planned<ItemChange<Self::Spec>>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// The fingerprint to keep in the state store once `spec` is applied:
    /// of a write-only value the system cannot return (a password), or of
    /// what a restart depends on. Observe gets it back in [`Scope`].
    fn fingerprint(_spec: &Self::Spec) -> Option<&str> {
        None
    }

    /// Whether `error` is worth retrying.
    fn classify(error: &Self::Error) -> FailureKind;

    /// Whether destroying (deleting or replacing) the resource `id` would
    /// destroy or cut off the host the daemon runs on, `own`, in a plan
    /// that deletes `deleted`: the daemon holds such a change for an
    /// operator (`apimon bootstrap`). Default: no.
    fn endangers(
        _own: &OwnHost<'_>,
        _id: &crate::plan::ResourceId,
        _deleted: &std::collections::BTreeSet<crate::plan::ResourceId>,
    ) -> bool {
        false
    }

    /// Whether the resource `id` is owned with a resource it depends on
    /// (a security group's rules with the group): adopting that one makes
    /// it apimon's too, so an undeclared one is then pruned. Default: no.
    fn follows_owner(_id: &crate::plan::ResourceId) -> bool {
        false
    }

    /// Pure: how an existing resource apimon did not create (`observed`)
    /// looks once adopted as the declared one: what `adopt` writes that
    /// observe reads back (a server's user-data hash, which Nova cannot
    /// return). The default: as observed.
    fn adopted(observed: &Self::Spec, _desired: &Self::Spec) -> Self::Spec {
        observed.clone()
    }

    /// Marks an existing, declared resource as apimon's (`apimon adopt`);
    /// the state store records it either way. The default writes nothing:
    /// for providers whose ownership is the state store's record.
    ///
    /// # Errors
    /// The marks could not be written; the error names the resource.
    fn adopt(
        &self,
        _change: &Planned<ItemChange<Self::Spec>>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send {
        std::future::ready(Ok(()))
    }

    /// What a resource is, for summaries of what a plan destroys: a noun
    /// (`server`) and a label (`outside-bastion (bastion)`); `None` for
    /// resources not worth a line of their own.
    fn describe(_name: &str, _spec: &Self::Spec) -> Option<(&'static str, String)> {
        None
    }

    /// Requests sent to the system so far (for benchmarks and logs).
    fn requests(&self) -> usize {
        0
    }

    /// What the last `observe` found that is no resource but an operator
    /// must see in the daemon's status; `None` before an observation (or
    /// for a provider that reports nothing). Default: `None`.
    fn findings(&self) -> Option<Vec<Finding>> {
        None
    }

    /// Whether this provider can say where the environment's servers are
    /// (their floating IPs and fixed addresses) for the providers that
    /// reach hosts. Default: no.
    fn locator(_provider: &std::sync::Arc<Self>) -> Option<std::sync::Arc<dyn locate::Locate>> {
        None
    }
}

/// Something an observation found that is no resource: an executor's
/// scheduled playbooks its runtime cannot load (its syntax check).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// What it is about (a host).
    pub subject: String,
    /// What is wrong, in a few words.
    pub summary: String,
    /// The details by name (a scenario → Ansible's complaint).
    pub items: std::collections::BTreeMap<String, String>,
}

/// `a → b` for a change reason.
pub(crate) fn changed<T: std::fmt::Display + PartialEq>(
    what: &str,
    from: &T,
    to: &T,
    out: &mut Vec<String>,
) {
    if from != to {
        out.push(format!("{what} {from} → {to}"));
    }
}

/// `Transient` when `transient`, else `Permanent`.
pub(crate) fn failure_kind(transient: bool) -> FailureKind {
    if transient {
        FailureKind::Transient
    } else {
        FailureKind::Permanent
    }
}

#[cfg(test)]
mod tests {
    //! The contract against an in-memory provider (peace's `VecCopyItem`).

    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use super::*;
    use crate::plan::{Comparison, DesiredItem, ObservedItem, Op, ResourceId};

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
        const KIND: ProviderKind = ProviderKind::named("fake");
        const OWNERSHIP: Ownership = Ownership::Marks;
        type Spec = Value;
        type Error = FakeError;

        fn desired(_: &Model<'_>, _: &Environment) -> DesiredSet<Value> {
            DesiredSet::new()
        }

        fn connect(
            _: &Context<'_>,
            _: &Environment,
            _: &DesiredSet<Value>,
        ) -> Result<Availability<Self>, FakeError> {
            Ok(Availability::Available(Self::default()))
        }

        async fn observe(&self, _scope: &Scope) -> Result<ObservedSet<Value>, FakeError> {
            let store = self.store.lock().map_err(|_| FakeError(id("lock")))?;
            Ok(store
                .iter()
                .map(|(id, v)| {
                    (id.clone(), ObservedItem { spec: v.clone(), owned: true, depends_on: vec![] })
                })
                .collect())
        }

        fn classify(_: &FakeError) -> FailureKind {
            FailureKind::Permanent
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
        ResourceId::new("e", FakeProvider::KIND, "value", name)
    }

    fn desired(values: &[(&str, u32)]) -> DesiredSet<Value> {
        values.iter().map(|(n, v)| (id(n), DesiredItem::new(Value(*v), vec![]))).collect()
    }

    async fn converge(provider: &FakeProvider, want: &DesiredSet<Value>) -> usize {
        let scope = Scope {
            env: "e".into(),
            fingerprints: BTreeMap::new(),
            owned: Vec::new(),
            probe: Probe::default(),
            pass: 0,
        };
        let observed = provider.observe(&scope).await.expect("observe");
        let changes = FakeProvider::plan(want, &observed);
        let mut applied = 0;
        for change in changes.iter().filter(|c| c.op != Op::NoOp) {
            provider.apply(change).await.expect("apply");
            applied += 1;
        }
        applied
    }

    #[tokio::test]
    async fn applying_a_plan_converges_and_the_next_plan_is_empty() {
        let provider = FakeProvider::default();
        let want = desired(&[("a", 1), ("b", 2)]);
        assert_eq!(converge(&provider, &want).await, 2);
        assert_eq!(converge(&provider, &want).await, 0);
    }

    #[tokio::test]
    async fn a_changed_value_is_updated_and_a_removed_one_deleted() {
        let provider = FakeProvider::default();
        converge(&provider, &desired(&[("a", 1), ("b", 2)])).await;
        let next = desired(&[("a", 5)]);
        assert_eq!(converge(&provider, &next).await, 2);
        let store = provider.store.lock().expect("lock").clone();
        assert_eq!(store, BTreeMap::from([(id("a"), Value(5))]));
    }
}
