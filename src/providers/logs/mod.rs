//! Job-log containers (`environments.<env>.logs`): the Swift container an
//! environment's executors upload their run logs to, in a monitored cloud
//! (its credentials, not the environment's clouds.yaml entry), with its
//! temp-URL key and read ACL. apimon makes and keeps it; the executor only
//! uploads, once the daemon wrote the executor.yaml that names it.
//!
//! Ownership: the container's metadata (`X-Container-Meta-Apimon-Managed`,
//! `-Apimon-Env`), as for `openstack.container`. The temp-URL key is a
//! secret: specs carry its fingerprint, read back from the container when
//! Swift shows it and from the state store when it does not.

mod swift;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::model::{Environment, MaybeSecret, Secrets, Sensitive};
use crate::plan::{
    Comparison, DesiredItem, DesiredSet, ItemChange, ObservedSet, Planned, ProviderKind,
    ResourceId, Spec,
};

use super::keystone::{CloudAuth, MonitoredAuth};
use super::{failure_kind, Availability, Context, FailureKind, Model, Ownership, Provider, Scope};
pub use swift::LogsError;

/// The provider's name in resource ids.
pub const KIND: ProviderKind = ProviderKind::named("logs");

/// A job-log container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogContainer {
    /// Readable (and listable) without a token.
    pub public: bool,
    /// Fingerprint of the temp-URL key (empty: none, or not known).
    pub key: String,
}

impl Spec for LogContainer {
    fn compare(&self, have: &Self) -> Comparison {
        let mut changes = Vec::new();
        if self.public != have.public {
            changes.push(if self.public {
                "made public (readable without a token)".to_owned()
            } else {
                "made private".to_owned()
            });
        }
        if self.key != have.key {
            changes.push("temp-URL key changed".to_owned());
        }
        if changes.is_empty() {
            Comparison::Same
        } else {
            Comparison::Update(changes)
        }
    }
}

/// `logs.container/<cloud>:<container>`.
pub fn container_id(env: &str, cloud: &str, container: &str) -> ResourceId {
    ResourceId::new(env, KIND, "container", format!("{cloud}:{container}"))
}

/// The cloud and container a resource name stands for.
fn split(name: &str) -> Option<(&str, &str)> {
    name.split_once(':')
}

/// The temp-URL key's fingerprint: what the state store keeps.
fn key_fingerprint(cloud: &str, container: &str, key: &str) -> String {
    if key.is_empty() {
        return String::new();
    }
    crate::digest::sha256_hex(format!("apimon-logs-key:{cloud}:{container}:{key}").as_bytes())
}

/// The environment's temp-URL key, resolved (empty when public without one).
fn key_of(logs: &crate::model::Logs, secrets: &Secrets) -> Sensitive<String> {
    logs.temp_url_key.as_ref().and_then(|key| secrets.resolve(key)).unwrap_or_default()
}

/// What `env` asks for: its log container, if it has `logs:`.
pub fn desired(env: &Environment, secrets: &Secrets) -> DesiredSet<LogContainer> {
    let mut set = DesiredSet::new();
    if let Some(logs) = &env.logs {
        let key = key_of(logs, secrets);
        let spec = LogContainer {
            public: logs.public,
            key: key_fingerprint(&logs.cloud, &logs.container, key.expose()),
        };
        set.insert(
            container_id(&env.name, &logs.cloud, &logs.container),
            DesiredItem::new(spec, vec![]),
        );
    }
    set
}

/// One environment's log containers, reached with its monitored clouds'
/// credentials.
#[derive(Debug)]
pub struct LogsProvider {
    env: String,
    /// A session per monitored cloud of the environment.
    clouds: BTreeMap<String, tokio::sync::Mutex<swift::Account>>,
    /// The declared container's temp-URL key, by resource id.
    keys: BTreeMap<ResourceId, Sensitive<String>>,
    /// The declared containers.
    wanted: Vec<ResourceId>,
    requests: std::sync::atomic::AtomicUsize,
}

impl LogsProvider {
    /// The account of `cloud`, or an error naming the resource.
    fn account(
        &self,
        r: &ResourceId,
        cloud: &str,
    ) -> Result<&tokio::sync::Mutex<swift::Account>, LogsError> {
        self.clouds
            .get(cloud)
            .ok_or_else(|| LogsError::NoCloud { resource: r.to_string(), cloud: cloud.to_owned() })
    }
}

impl Provider for LogsProvider {
    const KIND: ProviderKind = KIND;
    const OWNERSHIP: Ownership = Ownership::Marks;
    type Spec = LogContainer;
    type Error = LogsError;

    fn desired(model: &Model<'_>, env: &Environment) -> DesiredSet<LogContainer> {
        desired(env, model.secrets)
    }

    fn connect(
        context: &Context<'_>,
        env: &Environment,
        desired: &DesiredSet<LogContainer>,
    ) -> Result<Availability<Self>, LogsError> {
        let secrets = context.secrets;
        let value = |v: &MaybeSecret| secrets.resolve(v).unwrap_or_default();
        let http = swift::http();
        let mut clouds = BTreeMap::new();
        for (name, cloud) in &env.monitored_clouds {
            let (username, password) = (value(&cloud.username), value(&cloud.password));
            let auth = MonitoredAuth {
                auth_url: &cloud.auth_url,
                region: cloud.region.as_deref(),
                project_name: &cloud.project_name,
                domain_name: &cloud.domain_name,
                username: username.expose(),
                password: password.expose(),
            };
            // A cloud whose credentials are incomplete is reported when a
            // container in it is observed, not here: other clouds work.
            if let Ok(auth) = CloudAuth::password(name, &auth) {
                clouds.insert(
                    name.clone(),
                    tokio::sync::Mutex::new(swift::Account::new(auth, http.clone())),
                );
            }
        }
        let keys = env
            .logs
            .iter()
            .map(|logs| {
                (container_id(&env.name, &logs.cloud, &logs.container), key_of(logs, secrets))
            })
            .collect();
        let wanted = desired.keys().filter(|id| *id.env == *env.name).cloned().collect();
        Ok(Availability::Available(Self {
            env: env.name.clone(),
            clouds,
            keys,
            wanted,
            requests: std::sync::atomic::AtomicUsize::new(0),
        }))
    }

    fn fingerprint(spec: &LogContainer) -> Option<&str> {
        Some(spec.key.as_str()).filter(|key| !key.is_empty())
    }

    /// One HEAD per container declared or recorded as apimon's.
    async fn observe(&self, scope: &Scope) -> Result<ObservedSet<LogContainer>, LogsError> {
        let ids: std::collections::BTreeSet<&ResourceId> = self
            .wanted
            .iter()
            .chain(&scope.owned)
            .filter(|id| *id.env == *self.env && id.provider == KIND)
            .collect();
        let mut observed = ObservedSet::new();
        for id in ids {
            let Some((cloud, container)) = split(&id.name) else { continue };
            let Ok(account) = self.account(id, cloud) else {
                // A cloud no longer declared: its containers cannot be read.
                if self.wanted.contains(id) {
                    return Err(self.account(id, cloud).err().unwrap_or(LogsError::NoCloud {
                        resource: id.to_string(),
                        cloud: cloud.to_owned(),
                    }));
                }
                continue;
            };
            let mut account = account.lock().await;
            self.requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(seen) = account.head(id, container).await? else { continue };
            let owned = seen.env.as_deref() == Some(self.env.as_str()) && seen.managed;
            if !owned && seen.managed {
                return Err(LogsError::Foreign {
                    resource: id.to_string(),
                    other: seen.env.unwrap_or_default(),
                });
            }
            let key = match &seen.key {
                Some(key) => key_fingerprint(cloud, container, key.expose()),
                None => scope.fingerprints.get(&id.to_string()).cloned().unwrap_or_default(),
            };
            let spec = LogContainer { public: seen.public, key };
            observed
                .insert(id.clone(), crate::plan::ObservedItem { spec, owned, depends_on: vec![] });
        }
        Ok(observed)
    }

    async fn apply(&self, change: &Planned<ItemChange<LogContainer>>) -> Result<(), LogsError> {
        let id = &change.id;
        let Some((cloud, container)) = split(&id.name) else {
            return Err(LogsError::NoCloud { resource: id.to_string(), cloud: String::new() });
        };
        let mut account = self.account(id, cloud)?.lock().await;
        self.requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let key = self.keys.get(id).cloned().unwrap_or_default();
        match (&change.change.desired, &change.op) {
            (_, crate::plan::Op::Delete) | (None, _) => account.delete(id, container).await,
            (Some(want), crate::plan::Op::Create) => {
                account.put(id, container, &self.env, want.public, &key).await
            }
            (Some(want), _) => account.post(id, container, want.public, &key).await,
        }
    }

    async fn adopt(&self, change: &Planned<ItemChange<LogContainer>>) -> Result<(), LogsError> {
        let id = &change.id;
        let Some((cloud, container)) = split(&id.name) else { return Ok(()) };
        let mut account = self.account(id, cloud)?.lock().await;
        account.mark(id, container, &self.env).await
    }

    fn classify(error: &LogsError) -> FailureKind {
        failure_kind(error.is_transient())
    }

    fn describe(name: &str, _spec: &LogContainer) -> Option<(&'static str, String)> {
        Some(("log container", name.to_owned()))
    }

    fn requests(&self) -> usize {
        self.requests.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_compared_by_fingerprint_and_never_shown() {
        let want = LogContainer { public: false, key: key_fingerprint("c", "logs", "k2") };
        let have = LogContainer { public: false, key: key_fingerprint("c", "logs", "k1") };
        assert_eq!(want.compare(&have), Comparison::Update(vec!["temp-URL key changed".into()]));
        assert_eq!(want.compare(&want.clone()), Comparison::Same);
        assert!(!format!("{:?}", want.compare(&have)).contains("k2"));
        let public = LogContainer { public: true, key: String::new() };
        assert!(matches!(public.compare(&have), Comparison::Update(c) if c.len() == 2));
    }

    #[test]
    fn names_carry_the_cloud() {
        let id = container_id("outside", "otc", "apimon-logs");
        assert_eq!(&*id.name, "otc:apimon-logs");
        assert_eq!(split(&id.name), Some(("otc", "apimon-logs")));
    }
}
