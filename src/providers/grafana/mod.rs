//! Grafana: folders, InfluxDB datasources and dashboards.
//!
//! The pure part. Dashboards are compared after normalising what Grafana
//! owns (`id`, `version`) so an unchanged dashboard never shows a diff;
//! datasource passwords cannot be read back, so they compare by a hash
//! that the state store keeps.

mod apply;
pub mod client;
mod observe;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::digest::sha256_hex;
use crate::model::{DesiredState, Environment, MaybeSecret, Role, Secrets, Sensitive};
use crate::plan::{
    Comparison, DesiredItem, DesiredSet, ItemChange, ObservedSet, Planned, ProviderKind,
    ResourceId, Spec,
};

use super::{
    failure_kind, influxdb, openstack, Availability, Context, FailureKind, Model, Ownership,
    Provider, Scope,
};
use client::Client;
pub use client::GrafanaError;

/// Tag every dashboard apimon manages carries.
pub const DASHBOARD_TAG: &str = "apimon";

/// One Grafana object.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum GrafanaSpec {
    /// A folder.
    Folder {
        /// Title.
        title: String,
    },
    /// An InfluxDB datasource.
    Datasource {
        /// Name.
        name: String,
        /// InfluxDB URL.
        url: String,
        /// Database.
        database: String,
        /// User.
        user: String,
        /// Default datasource.
        default: bool,
        /// sha256 over uid and password: tells a changed secret without storing it.
        password_hash: String,
        /// Provisioned from files on the Grafana host (observed only).
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        read_only: bool,
    },
    /// A dashboard.
    Dashboard {
        /// Folder uid.
        folder: String,
        /// Normalised model (as read: with Grafana's `version`).
        model: Value,
        /// Provisioned from files on the Grafana host (observed only).
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        read_only: bool,
        /// Desired: sha256 of folder and model, kept in the state store once
        /// applied; observed: the same when taken from that record instead
        /// of read, empty when read. Never compared.
        #[serde(skip)]
        content: String,
    },
}

impl Spec for GrafanaSpec {
    fn compare(&self, observed: &Self) -> Comparison {
        use GrafanaSpec as S;
        match (self, observed) {
            (S::Folder { title }, S::Folder { title: have }) if title != have => {
                Comparison::Update(vec![format!("title {have:?} → {title:?}")])
            }
            (
                S::Datasource { name, url, database, user, default, password_hash, .. },
                S::Datasource {
                    name: n,
                    url: u,
                    database: d,
                    user: us,
                    default: de,
                    password_hash: p,
                    ..
                },
            ) => {
                let mut reasons = Vec::new();
                for (field, want, have) in [
                    ("name", name, n),
                    ("url", url, u),
                    ("database", database, d),
                    ("user", user, us),
                ] {
                    if want != have {
                        reasons.push(format!("{field} {have:?} → {want:?}"));
                    }
                }
                if default != de {
                    reasons.push("default changed".to_owned());
                }
                if password_hash != p {
                    reasons.push("password changed".to_owned());
                }
                if reasons.is_empty() {
                    Comparison::Same
                } else {
                    Comparison::Update(reasons)
                }
            }
            (
                S::Dashboard { folder, model, .. },
                S::Dashboard { folder: have_folder, model: have_model, .. },
            ) => {
                let mut reasons = Vec::new();
                if folder != have_folder {
                    reasons.push(format!("moved to folder {folder}"));
                }
                if normalize_dashboard(model) != normalize_dashboard(have_model) {
                    reasons.push("dashboard content changed".to_owned());
                }
                if reasons.is_empty() {
                    Comparison::Same
                } else {
                    Comparison::Update(reasons)
                }
            }
            (want, have) if want == have => Comparison::Same,
            (S::Folder { .. }, S::Folder { .. }) => Comparison::Same,
            _ => Comparison::Replace("resource kind changed".to_owned()),
        }
    }
}

/// Removes the fields Grafana owns and adds the `apimon` tag, so a model
/// read back from Grafana equals the one in the repository; numbers are
/// compared by value (Grafana writes `1.0` back as `1`).
pub fn normalize_dashboard(model: &Value) -> Value {
    let mut model = model.clone();
    normalize_numbers(&mut model);
    if let Some(object) = model.as_object_mut() {
        object.remove("id");
        object.remove("version");
        object.remove("meta");
        let tags = object.entry("tags").or_insert_with(|| Value::Array(Vec::new()));
        if let Some(tags) = tags.as_array_mut() {
            if !tags.iter().any(|t| t == DASHBOARD_TAG) {
                tags.push(Value::String(DASHBOARD_TAG.to_owned()));
            }
            tags.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
        }
    }
    model
}

/// Whole floats become integers, everywhere in `value`.
fn normalize_numbers(value: &mut Value) {
    match value {
        Value::Number(number) => {
            if let Some(float) = number.as_f64().filter(|_| number.is_f64()) {
                // 2^53: beyond it, floats are not exact integers anyway.
                if float.fract() == 0.0 && float.abs() < 9_007_199_254_740_992.0 {
                    #[allow(clippy::cast_possible_truncation)]
                    let whole = float as i64;
                    *number = serde_json::Number::from(whole);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(normalize_numbers),
        Value::Object(map) => map.values_mut().for_each(normalize_numbers),
        _ => {}
    }
}

/// Hash of what a dashboard is declared as: its folder and model.
pub fn content_hash(folder: &str, model: &Value) -> String {
    sha256_hex(format!("apimon-dashboard:{folder}:{model}").as_bytes())
}

/// Hash of a datasource's secure password, bound to its uid.
pub fn password_hash(uid: &str, password: &str) -> String {
    sha256_hex(format!("apimon-datasource:{uid}:{password}").as_bytes())
}

/// The provider's name in resource ids.
pub const KIND: ProviderKind = ProviderKind::named("grafana");

fn id(env: &str, kind: &'static str, name: impl Into<String>) -> ResourceId {
    ResourceId::new(env, KIND, kind, name)
}

fn folder_id(env: &str, uid: &str) -> ResourceId {
    id(env, "folder", uid)
}

fn datasource_id(env: &str, uid: &str) -> ResourceId {
    id(env, "datasource", uid)
}

fn dashboard_id(env: &str, uid: &str) -> ResourceId {
    id(env, "dashboard", uid)
}

/// How long one HTTP request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// One environment's Grafana.
#[derive(Debug, Clone)]
pub struct GrafanaProvider {
    env: String,
    client: Client,
    /// Declared folder uids.
    folders: Vec<String>,
    /// Declared datasource uids.
    declared: Vec<String>,
    /// Declared dashboard uids.
    dashboards: Vec<String>,
    /// Declared dashboards by uid, as desired (from `connect`): what a
    /// dashboard whose recorded content hash matches is taken to be.
    declared_dashboards: BTreeMap<String, GrafanaSpec>,
    /// Datasource passwords by uid.
    passwords: BTreeMap<String, Sensitive<String>>,
}

impl GrafanaProvider {
    /// The provider for `env`; unavailable when it has no Grafana endpoint.
    ///
    /// # Errors
    /// The HTTP client cannot be built.
    pub fn for_environment(
        env: &Environment,
        context: &crate::providers::Context<'_>,
    ) -> Result<Availability<Self>, GrafanaError> {
        let (state, secrets) = (context.state, context.secrets);
        let Some(endpoint) = &env.grafana_endpoint else {
            return Ok(Availability::Unavailable(
                "no `grafana:` endpoint in apimon.yaml".to_owned(),
            ));
        };
        if env.host_with_role(Role::Grafana).is_none() {
            return Ok(Availability::Unavailable("no host with `role: grafana`".to_owned()));
        }
        let secret = |value: &MaybeSecret| secrets.resolve(value).unwrap_or_default();
        // A token when there is one; else the admin user grafana.ini sets up.
        let credentials = match (&endpoint.token, &endpoint.admin_password) {
            (Some(token), _) => client::Credentials::Token(secret(token)),
            (None, Some(password)) => {
                client::Credentials::Basic { user: "admin".to_owned(), password: secret(password) }
            }
            (None, None) => client::Credentials::Token(Sensitive::new(String::new())),
        };
        let forward =
            crate::providers::tunnel::for_endpoint(env, context, &endpoint.url, endpoint.via)
                .map_err(|e| GrafanaError::Setup {
                    url: endpoint.url.clone(),
                    message: e.to_string(),
                })?;
        let client = Client::new(&endpoint.url, credentials, REQUEST_TIMEOUT, forward.as_ref())?;
        let passwords = env
            .grafana
            .datasources
            .iter()
            .map(|ds| (ds.uid.clone(), secrets.value(&ds.password_secret).unwrap_or_default()))
            .collect();
        Ok(Availability::Available(Self {
            env: env.name.clone(),
            client,
            folders: env.grafana.folders.iter().map(|f| f.uid.clone()).collect(),
            declared: env.grafana.datasources.iter().map(|ds| ds.uid.clone()).collect(),
            dashboards: state.dashboards.keys().cloned().collect(),
            declared_dashboards: BTreeMap::new(),
            passwords,
        }))
    }
}

impl Provider for GrafanaProvider {
    const KIND: ProviderKind = KIND;
    const OWNERSHIP: Ownership = Ownership::StateStore;
    type Spec = GrafanaSpec;
    type Error = GrafanaError;

    fn desired(model: &Model<'_>, env: &Environment) -> DesiredSet<GrafanaSpec> {
        desired(model.state, env, model.secrets)
    }

    fn connect(
        context: &Context<'_>,
        env: &Environment,
        desired: &DesiredSet<GrafanaSpec>,
    ) -> Result<Availability<Self>, GrafanaError> {
        let mut availability = Self::for_environment(env, context)?;
        if let Availability::Available(provider) = &mut availability {
            provider.declared_dashboards = desired
                .iter()
                .filter(|(id, item)| {
                    id.kind == "dashboard" && matches!(item.spec, GrafanaSpec::Dashboard { .. })
                })
                .map(|(id, item)| (id.name.to_string(), item.spec.clone()))
                .collect();
        }
        Ok(availability)
    }

    fn fingerprint(spec: &GrafanaSpec) -> Option<&str> {
        match spec {
            GrafanaSpec::Datasource { password_hash, .. } => Some(password_hash),
            GrafanaSpec::Dashboard { content, .. } if !content.is_empty() => Some(content),
            _ => None,
        }
    }

    async fn observe(&self, scope: &Scope) -> Result<ObservedSet<GrafanaSpec>, GrafanaError> {
        observe::observe(self, scope).await
    }

    async fn apply(&self, change: &Planned<ItemChange<GrafanaSpec>>) -> Result<(), GrafanaError> {
        apply::apply(self, change).await
    }

    fn classify(error: &GrafanaError) -> FailureKind {
        failure_kind(error.is_transient())
    }

    fn requests(&self) -> usize {
        self.client.requests()
    }
}

/// What the environment asks of its Grafana: its folders and datasources,
/// and every dashboard of the repository.
pub fn desired(
    state: &DesiredState,
    env: &Environment,
    secrets: &Secrets,
) -> DesiredSet<GrafanaSpec> {
    let name = env.name.as_str();
    let mut set = DesiredSet::new();
    let url = env.grafana_endpoint.as_ref().map_or("", |e| e.url.as_str());
    let Some(grafana_host) = env.serving_host(Role::Grafana, url) else { return set };
    // Grafana keeps its objects on its server: a new server has none.
    let host = openstack::server_id(name, &grafana_host.name);
    let server = vec![host.clone()];
    for folder in &env.grafana.folders {
        let spec = GrafanaSpec::Folder { title: folder.title.clone() };
        let item = DesiredItem::new(spec, server.clone()).on(host.clone());
        set.insert(id(name, "folder", &folder.uid), item);
    }
    for ds in &env.grafana.datasources {
        let password = secrets.value(&ds.password_secret).unwrap_or_default();
        let spec = GrafanaSpec::Datasource {
            name: ds.name.clone(),
            url: ds.url.clone(),
            database: ds.database.clone(),
            user: ds.user.clone(),
            default: ds.default,
            password_hash: password_hash(&ds.uid, password.expose()),
            read_only: false,
        };
        let mut depends_on = server.clone();
        depends_on.push(influxdb::user_id(&ds.environment, &ds.user));
        let item = DesiredItem::new(spec, depends_on).on(host.clone());
        set.insert(datasource_id(name, &ds.uid), item);
    }
    for dashboard in state.dashboards.values() {
        let model = normalize_dashboard(&dashboard.model);
        let spec = GrafanaSpec::Dashboard {
            folder: dashboard.folder.clone(),
            content: content_hash(&dashboard.folder, &model),
            model,
            read_only: false,
        };
        let depends_on = vec![folder_id(name, &dashboard.folder)];
        let item = DesiredItem::new(spec, depends_on).on(host.clone());
        set.insert(dashboard_id(name, &dashboard.uid), item);
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn grafana_owned_fields_never_cause_a_diff() {
        let repo = json!({"uid": "a", "title": "T", "panels": [], "tags": ["x"]});
        let read_back = json!({"id": 17, "version": 4, "uid": "a", "title": "T", "panels": [], "tags": ["apimon", "x"]});
        let want = GrafanaSpec::Dashboard {
            folder: "f".into(),
            model: normalize_dashboard(&repo),
            read_only: false,
            content: String::new(),
        };
        let have = GrafanaSpec::Dashboard {
            folder: "f".into(),
            model: read_back,
            read_only: false,
            content: String::new(),
        };
        assert_eq!(want.compare(&have), Comparison::Same);
    }

    #[test]
    fn an_edited_dashboard_is_restored() {
        let want = GrafanaSpec::Dashboard {
            folder: "f".into(),
            model: normalize_dashboard(&json!({"uid": "a", "title": "T"})),
            read_only: false,
            content: String::new(),
        };
        let have = GrafanaSpec::Dashboard {
            folder: "f".into(),
            model: json!({"uid": "a", "title": "Edited", "tags": ["apimon"]}),
            read_only: false,
            content: String::new(),
        };
        assert_eq!(
            want.compare(&have),
            Comparison::Update(vec!["dashboard content changed".into()])
        );
    }

    #[test]
    fn whole_floats_and_integers_are_the_same_number() {
        let repo =
            json!({"uid": "a", "panels": [{"gridPos": {"h": 8.0, "w": 12}, "opacity": 0.5}]});
        let read_back =
            json!({"uid": "a", "panels": [{"gridPos": {"h": 8, "w": 12.0}, "opacity": 0.5}]});
        assert_eq!(normalize_dashboard(&repo), normalize_dashboard(&read_back));
        let changed =
            json!({"uid": "a", "panels": [{"gridPos": {"h": 8, "w": 12}, "opacity": 0.6}]});
        assert_ne!(normalize_dashboard(&repo), normalize_dashboard(&changed));
    }

    #[test]
    fn password_hash_depends_on_uid_and_password() {
        assert_ne!(password_hash("a", "p"), password_hash("b", "p"));
        assert_ne!(password_hash("a", "p"), password_hash("a", "q"));
    }
}
