//! Grafana: folders, InfluxDB datasources and dashboards.
//!
//! The pure part. Dashboards are compared after normalising what Grafana
//! owns (`id`, `version`) so an unchanged dashboard never shows a diff;
//! datasource passwords cannot be read back, so they compare by a hash
//! that the state store keeps.

use serde::Serialize;
use serde_json::Value;

use crate::model::{DesiredState, Environment, Role, Secrets};
use crate::plan::{Comparison, DesiredItem, DesiredSet, ProviderKind, ResourceId, Spec};
use crate::render::sha256_hex;

use super::{influxdb, openstack};

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
    },
    /// A dashboard.
    Dashboard {
        /// Folder uid.
        folder: String,
        /// Normalised model.
        model: Value,
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
                S::Datasource { name, url, database, user, default, password_hash },
                S::Datasource {
                    name: n,
                    url: u,
                    database: d,
                    user: us,
                    default: de,
                    password_hash: p,
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
                S::Dashboard { folder, model },
                S::Dashboard { folder: have_folder, model: have_model },
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
/// read back from Grafana equals the one in the repository.
pub fn normalize_dashboard(model: &Value) -> Value {
    let mut model = model.clone();
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

/// Hash of a datasource's secure password, bound to its uid.
pub fn password_hash(uid: &str, password: &str) -> String {
    sha256_hex(format!("apimon-datasource:{uid}:{password}").as_bytes())
}

fn id(env: &str, kind: &str, name: impl Into<String>) -> ResourceId {
    ResourceId::new(env, ProviderKind::Grafana, kind, name)
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
    let Some(grafana_host) = env.host_with_role(Role::Grafana) else { return set };
    let server = vec![openstack::server_id(name, &grafana_host.name)];
    for folder in &env.grafana.folders {
        set.insert(
            id(name, "folder", &folder.uid),
            DesiredItem {
                spec: GrafanaSpec::Folder { title: folder.title.clone() },
                depends_on: server.clone(),
            },
        );
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
        };
        let mut depends_on = server.clone();
        depends_on.push(influxdb::user_id(&ds.environment, &ds.user));
        set.insert(id(name, "datasource", &ds.uid), DesiredItem { spec, depends_on });
    }
    for dashboard in state.dashboards.values() {
        let spec = GrafanaSpec::Dashboard {
            folder: dashboard.folder.clone(),
            model: normalize_dashboard(&dashboard.model),
        };
        let depends_on = vec![id(name, "folder", &dashboard.folder)];
        set.insert(id(name, "dashboard", &dashboard.uid), DesiredItem { spec, depends_on });
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
        let want = GrafanaSpec::Dashboard { folder: "f".into(), model: normalize_dashboard(&repo) };
        let have = GrafanaSpec::Dashboard { folder: "f".into(), model: read_back };
        assert_eq!(want.compare(&have), Comparison::Same);
    }

    #[test]
    fn an_edited_dashboard_is_restored() {
        let want = GrafanaSpec::Dashboard {
            folder: "f".into(),
            model: normalize_dashboard(&json!({"uid": "a", "title": "T"})),
        };
        let have = GrafanaSpec::Dashboard {
            folder: "f".into(),
            model: json!({"uid": "a", "title": "Edited", "tags": ["apimon"]}),
        };
        assert_eq!(
            want.compare(&have),
            Comparison::Update(vec!["dashboard content changed".into()])
        );
    }

    #[test]
    fn password_hash_depends_on_uid_and_password() {
        assert_ne!(password_hash("a", "p"), password_hash("b", "p"));
        assert_ne!(password_hash("a", "p"), password_hash("a", "q"));
    }
}
