//! Connects the engine to the live providers: builds one provider per
//! environment and system, observes them (in parallel), marks what the
//! state store says apimon owns, and dispatches each change to its
//! provider. The CLI's `plan`/`apply` and the daemon share this.
//!
//! Providers that cannot observe live systems yet are left out of live
//! plans and named in [`Live::not_observed`], so a live plan never shows
//! them as "create" by mistake.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::apply::ChangeError;
use crate::engine::{AnyChange, Desired, Observed};
use crate::model::{DesiredState, Environment, Secrets};
use crate::plan::{ItemChange, ObservedSet, Planned, ProviderKind};
use crate::providers::grafana::{GrafanaProvider, GrafanaSpec};
use crate::providers::host::{HostProvider, HostSpec};
use crate::providers::influxdb::{InfluxdbProvider, InfluxdbSpec};
use crate::providers::{Provider, Scope};
use crate::reconcile::Machine;
use crate::state::State;

/// Observing failed; nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    /// A provider could not read its system.
    #[error("environment {env}: {provider}: cannot observe")]
    Provider {
        /// Environment.
        env: String,
        /// Provider.
        provider: ProviderKind,
        /// Cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// The live providers of the selected environments.
#[derive(Debug, Clone, Default)]
pub struct Live {
    influxdb: BTreeMap<String, Arc<InfluxdbProvider>>,
    grafana: BTreeMap<String, Arc<GrafanaProvider>>,
    host: BTreeMap<String, Arc<HostProvider>>,
}

impl Live {
    /// Sets up the providers (no network traffic yet).
    ///
    /// # Errors
    /// A provider's client cannot be built (e.g. an unreadable CA file).
    pub fn connect(
        state: &DesiredState,
        environments: &[&Environment],
        secrets: &Secrets,
        desired: &Desired,
        machine: &Machine,
    ) -> Result<Self, ObserveError> {
        let mut live = Self::default();
        for env in environments {
            let influxdb = InfluxdbProvider::for_environment(env, secrets)
                .map_err(|e| provider_error(&env.name, ProviderKind::Influxdb, e))?;
            live.influxdb.insert(env.name.clone(), Arc::new(influxdb));
            let grafana = GrafanaProvider::for_environment(state, env, secrets)
                .map_err(|e| provider_error(&env.name, ProviderKind::Grafana, e))?;
            if let Some(grafana) = grafana {
                live.grafana.insert(env.name.clone(), Arc::new(grafana));
            }
            let host = HostProvider::for_environment(
                env,
                &desired.host,
                &machine.ssh_key,
                &machine.known_hosts,
            );
            if let Some(host) = host {
                live.host.insert(env.name.clone(), Arc::new(host));
            }
        }
        Ok(live)
    }

    /// Drops from `desired` what live plans cannot cover, and says what.
    pub fn restrict(&self, desired: &mut Desired) -> Vec<String> {
        let mut left_out = Vec::new();
        if !desired.openstack.is_empty() {
            left_out.push("openstack (its provider cannot observe live systems yet)".to_owned());
        }
        desired.openstack.clear();
        let unmanaged: Vec<String> = desired
            .host
            .keys()
            .map(|id| id.env.clone())
            .filter(|env| !self.host.contains_key(env))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        if !unmanaged.is_empty() {
            left_out.push(format!(
                "hosts of {} (no `ssh:` section in apimon.yaml)",
                unmanaged.join(", ")
            ));
        }
        desired.host.retain(|id, _| self.host.contains_key(&id.env));
        left_out
    }

    /// Reads every environment's systems at once, marking owned resources.
    ///
    /// # Errors
    /// The first provider that failed, naming environment and provider.
    pub async fn observe(&self, state: &State) -> Result<Observed, ObserveError> {
        enum Observation {
            Influxdb(Result<ObservedSet<InfluxdbSpec>, crate::providers::influxdb::InfluxdbError>),
            Grafana(Result<ObservedSet<GrafanaSpec>, crate::providers::grafana::GrafanaError>),
            Host(Result<ObservedSet<HostSpec>, crate::providers::host::HostError>),
        }
        let scope = |env: &String| Scope {
            env: env.clone(),
            fingerprints: state
                .environments
                .get(env)
                .map(|e| e.fingerprints.clone())
                .unwrap_or_default(),
            owned: state
                .environments
                .get(env)
                .map(|e| e.owned.iter().cloned().collect())
                .unwrap_or_default(),
        };
        let mut tasks = tokio::task::JoinSet::new();
        for (env, provider) in &self.influxdb {
            let (provider, scope) = (Arc::clone(provider), scope(env));
            tasks.spawn(async move {
                (scope.env.clone(), Observation::Influxdb(provider.observe(&scope).await))
            });
        }
        for (env, provider) in &self.grafana {
            let (provider, scope) = (Arc::clone(provider), scope(env));
            tasks.spawn(async move {
                (scope.env.clone(), Observation::Grafana(provider.observe(&scope).await))
            });
        }
        for (env, provider) in &self.host {
            let (provider, scope) = (Arc::clone(provider), scope(env));
            tasks.spawn(async move {
                (scope.env.clone(), Observation::Host(provider.observe(&scope).await))
            });
        }
        let mut observed = Observed::default();
        while let Some(joined) = tasks.join_next().await {
            let (env, observation) =
                joined.map_err(|e| provider_error("(all)", ProviderKind::Influxdb, e))?;
            match observation {
                Observation::Influxdb(result) => {
                    let set =
                        result.map_err(|e| provider_error(&env, ProviderKind::Influxdb, e))?;
                    observed.influxdb.extend(mark_owned(set, state));
                }
                Observation::Grafana(result) => {
                    let set = result.map_err(|e| provider_error(&env, ProviderKind::Grafana, e))?;
                    observed.grafana.extend(mark_owned(set, state));
                }
                Observation::Host(result) => {
                    let set = result.map_err(|e| provider_error(&env, ProviderKind::Host, e))?;
                    observed.host.extend(mark_owned(set, state));
                }
            }
        }
        Ok(observed)
    }

    /// HTTP requests sent to Grafana so far, over all environments.
    pub fn grafana_requests(&self) -> usize {
        self.grafana.values().map(|p| p.requests()).sum()
    }

    /// HTTP requests sent to InfluxDB so far, over all environments.
    pub fn influxdb_requests(&self) -> usize {
        self.influxdb.values().map(|p| p.requests()).sum()
    }

    /// Applies one change with its provider.
    ///
    /// # Errors
    /// The provider failed; the message names the system, never a secret.
    pub async fn apply(&self, change: Planned<AnyChange>) -> Result<(), ChangeError> {
        // Split the payload off, so it moves into the provider's own type uncloned.
        let Planned { id, op, depends_on, owned, change } = change;
        let shell = Planned { id, op, depends_on, owned, change: () };
        match change {
            AnyChange::Influxdb(item) => apply_with(&self.influxdb, shell.map(|()| item)).await,
            AnyChange::Grafana(item) => apply_with(&self.grafana, shell.map(|()| item)).await,
            AnyChange::Host(item) => apply_with(&self.host, shell.map(|()| item)).await,
            AnyChange::Openstack(_) => Err(ChangeError {
                message: format!("the {} provider cannot apply changes yet", shell.id.provider),
                transient: false,
            }),
        }
    }
}

fn provider_error(
    env: &str,
    provider: ProviderKind,
    source: impl std::error::Error + Send + Sync + 'static,
) -> ObserveError {
    ObserveError::Provider { env: env.to_owned(), provider, source: Box::new(source) }
}

fn missing(env: &str, provider: ProviderKind) -> ChangeError {
    ChangeError {
        message: format!("no {provider} provider for environment {env}"),
        transient: false,
    }
}

/// Applies one change with the provider of its environment.
async fn apply_with<P: Provider>(
    providers: &BTreeMap<String, Arc<P>>,
    change: Planned<ItemChange<P::Spec>>,
) -> Result<(), ChangeError> {
    let provider = providers.get(&change.id.env).ok_or_else(|| missing(&change.id.env, P::KIND))?;
    provider.apply(&change).await.map_err(|e| change_error(&e, P::is_transient(&e)))
}

/// Marks what the state store says apimon created.
fn mark_owned<S>(mut set: ObservedSet<S>, state: &State) -> ObservedSet<S> {
    for (id, item) in &mut set {
        item.owned = item.owned || state.owns(id);
    }
    set
}

/// The error with its causes, on one line.
fn change_error(error: &dyn std::error::Error, transient: bool) -> ChangeError {
    let mut message = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    ChangeError { message, transient }
}
