//! The one list of providers. Adding a provider adds one line to
//! [`registry!`]'s invocation at the bottom; everything that spans
//! providers — the change enum, the per-provider sets, connecting,
//! observing in parallel, dispatching a change — is generated from it, so
//! no provider name appears anywhere else outside the provider's folder.
//!
//! What is the same for every provider lives in the generic [`Connected`];
//! the macro only fans out over the list (vector's `components` registry,
//! with a closed enum instead of `typetag`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::apply::ChangeError;
use crate::model::Environment;
use crate::plan::{DesiredSet, ItemChange, ObservedSet, Planned, ProviderKind, ResourceId};
use crate::state::State;

use super::{
    Availability, Context, FailureKind, Model, OwnHost, Ownership, Probe, Provider, Scope,
};

/// Observing failed; nothing was changed.
#[derive(Debug, thiserror::Error)]
#[error("environment {env}: {provider}: cannot observe")]
pub struct ObserveError {
    /// Environment.
    pub env: String,
    /// Provider.
    pub provider: ProviderKind,
    /// Whether retrying may help.
    pub kind: FailureKind,
    /// Cause.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

impl ObserveError {
    fn new<P: Provider>(env: &str, error: P::Error) -> Self {
        Self {
            env: env.to_owned(),
            provider: P::KIND,
            kind: P::classify(&error),
            source: Box::new(error),
        }
    }
}

/// One provider's live instances, by environment.
#[derive(Debug)]
pub struct Connected<P> {
    available: BTreeMap<String, Arc<P>>,
    /// Environments it cannot reach, with the reason.
    unavailable: BTreeMap<String, String>,
}

impl<P> Default for Connected<P> {
    fn default() -> Self {
        Self { available: BTreeMap::new(), unavailable: BTreeMap::new() }
    }
}

impl<P> Clone for Connected<P> {
    fn clone(&self) -> Self {
        Self { available: self.available.clone(), unavailable: self.unavailable.clone() }
    }
}

impl<P: Provider> Connected<P> {
    /// Builds the desired set of every environment.
    fn desired(model: &Model<'_>, environments: &[&Environment]) -> DesiredSet<P::Spec> {
        let mut set = DesiredSet::new();
        for env in environments {
            set.extend(P::desired(model, env));
        }
        set
    }

    /// Sets up `P` for every environment.
    fn connect(
        context: &Context<'_>,
        environments: &[&Environment],
        desired: &DesiredSet<P::Spec>,
    ) -> Result<Self, ObserveError> {
        let mut connected = Self::default();
        for env in environments {
            let mine: DesiredSet<P::Spec> = desired
                .iter()
                .filter(|(id, _)| *id.env == *env.name)
                .map(|(id, item)| (id.clone(), item.clone()))
                .collect();
            match P::connect(context, env, &mine)
                .map_err(|e| ObserveError::new::<P>(&env.name, e))?
            {
                Availability::Available(provider) => {
                    connected.available.insert(env.name.clone(), Arc::new(provider));
                }
                Availability::Unavailable(reason) => {
                    connected.unavailable.insert(env.name.clone(), reason);
                }
            }
        }
        Ok(connected)
    }

    /// Drops from `desired` what no live instance covers, noting why.
    fn restrict(&self, desired: &mut DesiredSet<P::Spec>, notes: &mut Vec<String>) {
        for (env, reason) in &self.unavailable {
            if desired.keys().any(|id| *id.env == **env) {
                notes.push(format!("{} of {env} ({reason})", P::KIND));
            }
        }
        desired.retain(|id, _| self.available.contains_key(&*id.env));
    }

    /// Observes every environment at once; also returns what the state
    /// store says apimon created but no longer exists (for providers whose
    /// ownership the store records).
    async fn observe(
        &self,
        state: &State,
        probe: Probe,
        pass: u64,
    ) -> Result<(ObservedSet<P::Spec>, Vec<ResourceId>), ObserveError> {
        let mut tasks = tokio::task::JoinSet::new();
        let mut envs = BTreeMap::new();
        for (env, provider) in &self.available {
            let provider = Arc::clone(provider);
            let scope = scope(env, state, probe, pass);
            let handle = tasks.spawn(async move { provider.observe(&scope).await });
            envs.insert(handle.id(), env.clone());
        }
        let mut observed = ObservedSet::new();
        let mut stale = Vec::new();
        while let Some(joined) = tasks.join_next_with_id().await {
            let (task, result) = match joined {
                Ok((task, result)) => (task, result),
                Err(error) => {
                    let env = envs.get(&error.id()).cloned().unwrap_or_default();
                    return Err(ObserveError {
                        env,
                        provider: P::KIND,
                        kind: FailureKind::Permanent,
                        source: Box::new(error),
                    });
                }
            };
            let env = envs.get(&task).cloned().unwrap_or_default();
            let set = result.map_err(|e| ObserveError::new::<P>(&env, e))?;
            match P::OWNERSHIP {
                // Marks alone decide: a record of a create (even one that
                // failed) must never make a same-named resource apimon's.
                Ownership::Marks => observed.extend(set),
                Ownership::StateStore => {
                    let owned = state.environments.get(&env).map(|e| &e.owned);
                    stale.extend(
                        owned
                            .into_iter()
                            .flatten()
                            .filter(|id| id.provider == P::KIND && !set.contains_key(id))
                            .cloned(),
                    );
                    observed.extend(set.into_iter().map(|(id, mut item)| {
                        item.owned = item.owned || state.owns(&id);
                        (id, item)
                    }));
                }
            }
        }
        Ok((observed, stale))
    }

    /// The instance of `change`'s environment.
    fn provider_for(&self, change: &Planned<ItemChange<P::Spec>>) -> Result<&P, ChangeError> {
        self.available.get(&*change.id.env).map(|p| &**p).ok_or_else(|| {
            ChangeError::new(
                FailureKind::Permanent,
                format!("no {} provider for environment {}", P::KIND, change.id.env),
            )
        })
    }

    /// Applies one change with the instance of its environment.
    async fn apply(&self, change: Planned<ItemChange<P::Spec>>) -> Result<(), ChangeError> {
        self.provider_for(&change)?
            .apply(&change)
            .await
            .map_err(|error| ChangeError::from_error(P::classify(&error), error))
    }

    /// Marks one existing resource as apimon's (`apimon adopt`).
    async fn adopt(&self, change: Planned<ItemChange<P::Spec>>) -> Result<(), ChangeError> {
        self.provider_for(&change)?
            .adopt(&change)
            .await
            .map_err(|error| ChangeError::from_error(P::classify(&error), error))
    }

    /// Adds the locators this provider offers, by environment.
    fn locators(&self, into: &mut super::locate::Locators) {
        for (env, provider) in &self.available {
            if let Some(locate) = P::locator(provider) {
                into.entry(env.clone()).or_insert(locate);
            }
        }
    }

    /// Requests sent so far, over all environments.
    fn requests(&self) -> usize {
        self.available.values().map(|p| p.requests()).sum()
    }

    /// What this pass's observation found beyond resources, by environment
    /// (only the environments it observed).
    fn findings(&self, into: &mut BTreeMap<String, Vec<super::Finding>>) {
        for (env, provider) in &self.available {
            if let Some(found) = provider.findings() {
                into.entry(env.clone()).or_default().extend(found);
            }
        }
    }
}

/// Declared resources in `observed` that apimon does not own, taken as
/// adopted (owned, in their adopted form); their ids.
fn adopt_declared<P: Provider>(
    desired: &DesiredSet<P::Spec>,
    observed: &mut ObservedSet<P::Spec>,
) -> Vec<ResourceId> {
    let mut adopted = Vec::new();
    for (id, item) in observed.iter_mut().filter(|(_, item)| !item.owned) {
        if let Some(want) = desired.get(id) {
            item.spec = P::adopted(&item.spec, &want.spec);
            item.owned = true;
            adopted.push(id.clone());
        }
    }
    // What is owned with an adopted resource becomes apimon's with it: the
    // plan after adoption shows the undeclared ones pruned.
    for (id, item) in observed.iter_mut().filter(|(_, item)| !item.owned) {
        if P::follows_owner(id) && item.depends_on.iter().any(|d| adopted.contains(d)) {
            item.owned = true;
        }
    }
    adopted
}

/// `desired` as if applied: the same specs, owned.
fn as_applied<S: Clone>(desired: &DesiredSet<S>) -> ObservedSet<S> {
    desired
        .iter()
        .map(|(id, item)| {
            let observed = crate::plan::ObservedItem {
                spec: item.spec.clone(),
                owned: true,
                depends_on: item.depends_on.clone(),
            };
            (id.clone(), observed)
        })
        .collect()
}

/// What observe gets from the state store for `env`, in observation `pass`.
fn scope(env: &str, state: &State, probe: Probe, pass: u64) -> Scope {
    let env_state = state.environments.get(env);
    Scope {
        env: env.to_owned(),
        fingerprints: env_state.map(|e| e.fingerprints.clone()).unwrap_or_default(),
        owned: env_state.map(|e| e.owned.iter().cloned().collect()).unwrap_or_default(),
        probe,
        pass,
    }
}

/// A new observation's number (never 0), unique in this process.
pub fn next_pass() -> u64 {
    static PASSES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    PASSES.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1
}

/// Generates the cross-provider types from the list of providers.
macro_rules! registry {
    ($($variant:ident $field:ident: $provider:ty),+ $(,)?) => {
        /// A change of any provider (a closed enum: dispatch is a `match`).
        #[derive(Debug, Clone)]
        pub enum AnyChange {
            $(
                #[doc = concat!("A change of `", stringify!($field), "`.")]
                $variant(ItemChange<<$provider as Provider>::Spec>),
            )+
        }

        impl AnyChange {
            /// The fingerprint to keep in the state store once the change
            /// applied (see [`Provider::fingerprint`]).
            pub fn fingerprint(&self) -> Option<&str> {
                match self {
                    $(Self::$variant(item) => {
                        item.desired.as_ref().and_then(<$provider as Provider>::fingerprint)
                    })+
                }
            }
        }

        impl AnyChange {
            /// What the resource `name` is (see [`Provider::describe`]).
            pub fn describe(&self, name: &str) -> Option<(&'static str, String)> {
                match self {
                    $(Self::$variant(item) => item
                        .desired
                        .as_ref()
                        .or(item.observed.as_ref())
                        .and_then(|spec| <$provider as Provider>::describe(name, spec)),)+
                }
            }
        }

        impl crate::plan::Follow for AnyChange {
            fn forget_observed(&mut self) {
                match self {
                    $(Self::$variant(item) => item.observed = None,)+
                }
            }
        }

        impl serde::Serialize for AnyChange {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                // Plans never carry provider payloads into JSON: they may hold secrets.
                serializer.serialize_unit()
            }
        }

        /// What the repository asks for, per provider.
        #[derive(Debug, Clone, Default)]
        pub struct Desired {
            $(
                #[doc = concat!("`", stringify!($field), "`.")]
                pub $field: DesiredSet<<$provider as Provider>::Spec>,
            )+
        }

        /// What exists, per provider. The default (nothing) is the offline view.
        #[derive(Debug, Clone, Default)]
        pub struct Observed {
            $(
                #[doc = concat!("`", stringify!($field), "`.")]
                pub $field: ObservedSet<<$provider as Provider>::Spec>,
            )+
            /// What the state store says apimon created that no longer exists.
            pub stale: Vec<ResourceId>,
        }

        impl Observed {
            /// What would exist once `desired` is applied: every resource as
            /// declared and owned (a converged platform, for benchmarks).
            pub fn as_applied(desired: &Desired) -> Self {
                Self { $($field: as_applied(&desired.$field),)+ stale: Vec::new() }
            }

            /// This observation as it is after `applied` (id → operation)
            /// carried out `desired`'s declarations.
            pub fn record_applied(&mut self, desired: &Desired, applied: &BTreeMap<ResourceId, crate::plan::Op>) {
                $(super::incremental::record_applied(&mut self.$field, &desired.$field, applied);)+
            }

            /// Takes the declared resources apimon does not own as adopted;
            /// their ids (see [`Provider::adopted`]).
            pub fn adopt_declared(&mut self, desired: &Desired) -> Vec<ResourceId> {
                let mut adopted = Vec::new();
                $(adopted.extend(adopt_declared::<$provider>(&desired.$field, &mut self.$field));)+
                adopted
            }
        }

        /// Whether destroying `id` would destroy or cut off `own`, the
        /// daemon's host, in a plan that deletes `deleted`: its provider
        /// decides ([`Provider::endangers`]).
        pub fn endangers(
            own: &OwnHost<'_>,
            id: &ResourceId,
            deleted: &std::collections::BTreeSet<ResourceId>,
        ) -> bool {
            $(if id.provider == <$provider as Provider>::KIND {
                return <$provider as Provider>::endangers(own, id, deleted);
            })+
            false
        }

        impl Desired {
            /// Every provider's desired set for `environments`.
            pub fn build(model: &Model<'_>, environments: &[&Environment]) -> Self {
                Self { $($field: Connected::<$provider>::desired(model, environments),)+ }
            }

            /// Each provider's changes from `observed` to `self`, unordered.
            pub fn diff(&self, observed: &Observed) -> Vec<Planned<AnyChange>> {
                let mut changes = Vec::new();
                $(
                    changes.extend(
                        <$provider as Provider>::plan(&self.$field, &observed.$field)
                            .into_iter()
                            .map(|c| c.map(AnyChange::$variant)),
                    );
                )+
                changes
            }

            /// The providers whose declarations differ from `before`'s,
            /// and, over and over, those with a resource that needs a
            /// resource of one of them (a file on a replaced server): what
            /// a commit's pass must observe.
            pub fn changed_providers(&self, before: &Desired) -> BTreeSet<ProviderKind> {
                let mut changed = BTreeSet::new();
                let mut ids = BTreeSet::new();
                $(
                    let differ = super::incremental::changed_ids(&self.$field, &before.$field);
                    if !differ.is_empty() {
                        changed.insert(<$provider as Provider>::KIND);
                        ids.extend(differ);
                    }
                )+
                loop {
                    let mut grew = false;
                    $(
                        let kind = <$provider as Provider>::KIND;
                        if !changed.contains(&kind) && super::incremental::needs_any(&self.$field, &ids) {
                            changed.insert(kind);
                            ids.extend(self.$field.keys().cloned());
                            grew = true;
                        }
                    )+
                    if !grew {
                        return changed;
                    }
                }
            }

            /// Resources declared, over all providers.
            pub fn len(&self) -> usize {
                0 $(+ self.$field.len())+
            }

            /// Whether nothing is declared.
            pub fn is_empty(&self) -> bool {
                self.len() == 0
            }
        }

        /// The live providers of the selected environments.
        #[derive(Debug, Clone, Default)]
        pub struct Live {
            $($field: Connected<$provider>,)+
        }

        impl Live {
            /// Sets up every provider of every environment (no network
            /// traffic yet), in the list's order: each gets the locators of
            /// those before it.
            ///
            /// # Errors
            /// A provider's configuration cannot be used.
            pub fn connect(
                context: &Context<'_>,
                environments: &[&Environment],
                desired: &Desired,
            ) -> Result<Self, ObserveError> {
                let mut locators = context.locators.clone();
                $(
                    let $field = Connected::<$provider>::connect(
                        &Context { locators: &locators, ..*context },
                        environments,
                        &desired.$field,
                    )?;
                    $field.locators(&mut locators);
                )+
                Ok(Self { $($field,)+ })
            }

            /// Who says where `env`'s servers are, if a provider can.
            pub fn locator(&self, env: &str) -> Option<Arc<dyn super::locate::Locate>> {
                let mut locators = super::locate::Locators::new();
                $(self.$field.locators(&mut locators);)+
                locators.remove(env)
            }

            /// Drops from `desired` what no live provider covers; says what, and why.
            pub fn restrict(&self, desired: &mut Desired) -> Vec<String> {
                let mut notes = Vec::new();
                $(self.$field.restrict(&mut desired.$field, &mut notes);)+
                notes
            }

            /// Reads every provider of every environment at once, marking
            /// what the state store says apimon owns where it speaks.
            ///
            /// # Errors
            /// The first provider that failed, naming environment and provider.
            pub async fn observe(&self, state: &State, probe: Probe) -> Result<Observed, ObserveError> {
                let pass = next_pass();
                let ($($field,)+) = tokio::join!($(self.$field.observe(state, probe, pass),)+);
                let mut stale = Vec::new();
                $(
                    let $field = $field?;
                    stale.extend($field.1);
                    let $field = $field.0;
                )+
                Ok(Observed { $($field,)+ stale })
            }

            /// As [`Self::observe`] for the providers in `only`; the others
            /// as `cached` has them.
            ///
            /// # Errors
            /// As [`Self::observe`].
            pub async fn observe_some(
                &self,
                state: &State,
                probe: Probe,
                only: &BTreeSet<ProviderKind>,
                cached: &Observed,
            ) -> Result<Observed, ObserveError> {
                let pass = next_pass();
                $(
                    let $field = async {
                        if only.contains(&<$provider as Provider>::KIND) {
                            self.$field.observe(state, probe, pass).await.map(Some)
                        } else {
                            Ok(None)
                        }
                    };
                )+
                let ($($field,)+) = tokio::join!($($field,)+);
                let mut stale: Vec<ResourceId> =
                    cached.stale.iter().filter(|id| !only.contains(&id.provider)).cloned().collect();
                $(
                    let $field = match $field? {
                        Some((set, gone)) => {
                            stale.extend(gone);
                            set
                        }
                        None => cached.$field.clone(),
                    };
                )+
                Ok(Observed { $($field,)+ stale })
            }

            /// Applies one change with its provider.
            ///
            /// # Errors
            /// The provider failed; the message names the system, never a secret.
            pub async fn apply(&self, change: Planned<AnyChange>) -> Result<(), ChangeError> {
                // Split the payload off, so it moves into the provider's own type uncloned.
                let Planned { id, op, depends_on, owned, lives_on, triggered_by, note, change } = change;
                let shell = Planned { id, op, depends_on, owned, lives_on, triggered_by, note, change: () };
                match change {
                    $(AnyChange::$variant(item) => self.$field.apply(shell.map(|()| item)).await,)+
                }
            }

            /// Marks one existing resource as apimon's with its provider.
            ///
            /// # Errors
            /// The provider failed; the message names the resource.
            pub async fn adopt(&self, change: Planned<AnyChange>) -> Result<(), ChangeError> {
                let Planned { id, op, depends_on, owned, lives_on, triggered_by, note, change } = change;
                let shell = Planned { id, op, depends_on, owned, lives_on, triggered_by, note, change: () };
                match change {
                    $(AnyChange::$variant(item) => self.$field.adopt(shell.map(|()| item)).await,)+
                }
            }

            /// What this pass's observations found beyond resources, by
            /// environment (only those observed: a cached one keeps the last).
            pub fn findings(&self) -> BTreeMap<String, Vec<super::Finding>> {
                let mut found = BTreeMap::new();
                $(self.$field.findings(&mut found);)+
                found
            }

            /// Requests sent so far, by provider.
            pub fn requests(&self) -> Vec<(ProviderKind, usize)> {
                vec![$((<$provider as Provider>::KIND, self.$field.requests()),)+]
            }

            /// Requests sent so far to `provider` (by name).
            pub fn requests_of(&self, provider: &str) -> usize {
                self.requests().iter().filter(|(kind, _)| kind.as_str() == provider).map(|(_, n)| n).sum()
            }
        }
    };
}

registry! {
    Openstack openstack: super::openstack::OpenstackProvider,
    Influxdb influxdb: super::influxdb::InfluxdbProvider,
    Grafana grafana: super::grafana::GrafanaProvider,
    Host host: super::host::HostProvider,
    Logs logs: super::logs::LogsProvider,
}
