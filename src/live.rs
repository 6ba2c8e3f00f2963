//! Connects the engine to the live providers: builds one provider per
//! environment and system, observes them (in parallel), marks what the
//! state store says apimon owns, and dispatches each change to its
//! provider. The CLI's `plan`/`apply` and the daemon share this.
//!
//! Providers that cannot reach their system (an environment whose cloud
//! is in no clouds.yaml, hosts without an `ssh:` section) are left out of
//! live plans and named by [`Live::restrict`], so a live plan never shows
//! their resources as "create" by mistake.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::apply::ChangeError;
use crate::engine::{AnyChange, Desired, Observed};
use crate::model::{DesiredState, Environment, Secrets};
use crate::plan::{ItemChange, ObservedSet, Planned, ProviderKind};
use crate::providers::grafana::{GrafanaProvider, GrafanaSpec};
use crate::providers::host::{HostProvider, HostSpec};
use crate::providers::influxdb::{InfluxdbProvider, InfluxdbSpec};
use crate::providers::openstack::client::OpenstackError;
use crate::providers::openstack::{OpenstackProvider, OpenstackSpec};
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
    openstack: BTreeMap<String, Arc<OpenstackProvider>>,
    /// Environments whose cloud is in no clouds.yaml: (environment, cloud).
    clouds_missing: Vec<(String, String)>,
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
            let openstack = OpenstackProvider::for_environment(
                env,
                &desired.openstack,
                machine.clouds_file.as_deref(),
            )
            .map_err(|e| provider_error(&env.name, ProviderKind::Openstack, e))?;
            match openstack {
                Some(provider) => {
                    live.openstack.insert(env.name.clone(), Arc::new(provider));
                }
                None => live.clouds_missing.push((env.name.clone(), env.cloud.clone())),
            }
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
        for (env, cloud) in &self.clouds_missing {
            if desired.openstack.keys().any(|id| &id.env == env) {
                left_out.push(format!(
                    "openstack of {env} (cloud `{cloud}` is in no clouds.yaml: pass --clouds-file or set OS_CLIENT_CONFIG_FILE)"
                ));
            }
        }
        desired.openstack.retain(|id, _| self.openstack.contains_key(&id.env));
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
            Openstack(Result<ObservedSet<OpenstackSpec>, OpenstackError>),
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
        for (env, provider) in &self.openstack {
            let (provider, scope) = (Arc::clone(provider), scope(env));
            tasks.spawn(async move {
                (scope.env.clone(), Observation::Openstack(provider.observe(&scope).await))
            });
        }
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
                Observation::Openstack(result) => {
                    // The provider judges ownership itself: by marks, and by
                    // the scope's state-store list only for keypairs.
                    let set =
                        result.map_err(|e| provider_error(&env, ProviderKind::Openstack, e))?;
                    observed.openstack.extend(set);
                }
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

    /// API requests sent to OpenStack so far (after authentication), over all environments.
    pub fn openstack_requests(&self) -> usize {
        self.openstack.values().map(|p| p.requests()).sum()
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
            AnyChange::Openstack(item) => apply_with(&self.openstack, shell.map(|()| item)).await,
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
