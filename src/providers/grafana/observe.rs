//! Reading a Grafana: folders, datasources and search in one request each;
//! then one GET per datasource that apimon declares or owns (the password
//! flag is only there), one per declared or owned folder the root listing
//! does not show (with nested folders, Grafana 11 and later list only root
//! folders), and one per declared dashboard whose model must be read: a
//! dashboard whose declared content is the one the state store recorded
//! when apimon last wrote or verified it, and which is still in its folder,
//! is taken as that content unread — unless the drift pass's probe selects
//! it — so a commit's plan reads only what the commit changed. Reads run
//! [`READ_CONCURRENCY`] at a time.
//!
//! The lists always exist: a 404 there means the URL is not Grafana's, so
//! it is an error, never "empty".

use std::collections::BTreeSet;

use serde::Deserialize;
use serde_json::Value;

use crate::plan::{ObservedItem, ObservedSet};
use crate::providers::Scope;

/// Dashboard reads in flight at once.
const READ_CONCURRENCY: usize = 8;

use super::client::{segment, GrafanaError};
use super::{dashboard_id, datasource_id, folder_id, GrafanaProvider, GrafanaSpec};

#[derive(Deserialize)]
struct FolderItem {
    uid: String,
    title: String,
}

#[derive(Deserialize)]
pub(super) struct DatasourceItem {
    pub uid: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub url: String,
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub database: String,
    #[serde(default, rename = "isDefault")]
    pub is_default: bool,
    #[serde(default, rename = "jsonData")]
    pub json_data: Value,
    #[serde(default, rename = "secureJsonFields")]
    pub secure_json_fields: Value,
    #[serde(default, rename = "readOnly")]
    pub read_only: bool,
}

impl DatasourceItem {
    /// InfluxQL database: `jsonData.dbName` in current Grafana, `database` before.
    fn database(&self) -> String {
        self.json_data
            .get("dbName")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map_or_else(|| self.database.clone(), str::to_owned)
    }
}

#[derive(Deserialize)]
struct SearchHit {
    uid: String,
    #[serde(default, rename = "folderUid")]
    folder_uid: String,
}

#[derive(Deserialize)]
struct DashboardFull {
    dashboard: Value,
    #[serde(default)]
    meta: Value,
}

pub(super) async fn observe(
    provider: &GrafanaProvider,
    scope: &Scope,
) -> Result<ObservedSet<GrafanaSpec>, GrafanaError> {
    let mut observed = ObservedSet::new();
    folders(provider, scope, &mut observed).await?;
    datasources(provider, scope, &mut observed).await?;
    dashboards(provider, scope, &mut observed).await?;
    Ok(observed)
}

async fn folders(
    provider: &GrafanaProvider,
    scope: &Scope,
    observed: &mut ObservedSet<GrafanaSpec>,
) -> Result<(), GrafanaError> {
    let client = &provider.client;
    let root: Vec<FolderItem> = client.get("/api/folders?limit=1000").await?;
    let insert = |observed: &mut ObservedSet<GrafanaSpec>, folder: FolderItem| {
        observed.insert(
            folder_id(&provider.env, &folder.uid),
            ObservedItem {
                spec: GrafanaSpec::Folder { title: folder.title },
                owned: false,
                depends_on: vec![],
            },
        );
    };
    for folder in root {
        insert(observed, folder);
    }
    // Declared or owned folders below another folder are read by uid.
    let owned = scope
        .owned
        .iter()
        .filter(|id| id.provider == super::KIND && id.kind == "folder")
        .map(|id| &*id.name);
    let wanted: BTreeSet<&str> = provider.folders.iter().map(String::as_str).chain(owned).collect();
    for uid in wanted {
        if observed.contains_key(&folder_id(&provider.env, uid)) {
            continue;
        }
        let path = format!("/api/folders/{}", segment(uid));
        if let Some(folder) = client.get_optional::<FolderItem>(&path).await? {
            insert(observed, folder);
        }
    }
    Ok(())
}

/// InfluxDB datasources; the declared or owned ones read one by one (only
/// that answer says whether a password is set).
async fn datasources(
    provider: &GrafanaProvider,
    scope: &Scope,
    observed: &mut ObservedSet<GrafanaSpec>,
) -> Result<(), GrafanaError> {
    let client = &provider.client;
    let datasources: Vec<DatasourceItem> = client.get("/api/datasources").await?;
    for listed in datasources.into_iter().filter(|d| d.kind == "influxdb") {
        let id = datasource_id(&provider.env, &listed.uid);
        // The list leaves out which secure fields are set.
        let item = if provider.declared.iter().any(|d| **d == *id.name)
            || scope.fingerprints.contains_key(&id.to_string())
        {
            let path = format!("/api/datasources/uid/{}", segment(&listed.uid));
            client.get_optional::<DatasourceItem>(&path).await?.unwrap_or(listed)
        } else {
            listed
        };
        let password_set =
            item.secure_json_fields.get("password").and_then(Value::as_bool).unwrap_or(false);
        let password_hash = if password_set {
            scope.fingerprints.get(&id.to_string()).cloned().unwrap_or_default()
        } else {
            String::new()
        };
        let spec = GrafanaSpec::Datasource {
            name: item.name.clone(),
            url: item.url.clone(),
            database: item.database(),
            user: item.user.clone(),
            default: item.is_default,
            password_hash,
            read_only: item.read_only,
        };
        observed.insert(id, ObservedItem { spec, owned: false, depends_on: vec![] });
    }
    Ok(())
}

/// Dashboards: the declared ones with their model (read, or as recorded),
/// the rest by existence.
async fn dashboards(
    provider: &GrafanaProvider,
    scope: &Scope,
    observed: &mut ObservedSet<GrafanaSpec>,
) -> Result<(), GrafanaError> {
    let env = provider.env.as_str();
    let hits: Vec<SearchHit> = provider.client.get("/api/search?type=dash-db&limit=5000").await?;
    let wanted: BTreeSet<&String> = provider.dashboards.iter().collect();
    let mut to_read = Vec::new();
    // Recorded dashboards in uid order: the probe's slices are stable.
    let mut recorded: Vec<(&SearchHit, &GrafanaSpec)> = Vec::new();
    for hit in &hits {
        let id = dashboard_id(env, &hit.uid);
        if !wanted.contains(&hit.uid) {
            // Not declared: only its existence matters (pruned if owned).
            let spec = GrafanaSpec::Dashboard {
                folder: hit.folder_uid.clone(),
                model: Value::Null,
                read_only: false,
                content: String::new(),
            };
            let depends_on = vec![folder_id(env, &hit.folder_uid)];
            observed.insert(id, ObservedItem { spec, owned: false, depends_on });
            continue;
        }
        match provider.declared_dashboards.get(&hit.uid) {
            Some(want @ GrafanaSpec::Dashboard { folder, content, .. })
                if *folder == hit.folder_uid
                    && scope.fingerprints.get(&id.to_string()) == Some(content) =>
            {
                recorded.push((hit, want));
            }
            _ => to_read.push(hit.uid.clone()),
        }
    }
    recorded.sort_by(|a, b| a.0.uid.cmp(&b.0.uid));
    let count = recorded.len();
    for (index, (hit, want)) in recorded.into_iter().enumerate() {
        if scope.probe.selects(index, count) {
            to_read.push(hit.uid.clone());
        } else {
            let depends_on = vec![folder_id(env, &hit.folder_uid)];
            let item = ObservedItem { spec: want.clone(), owned: false, depends_on };
            observed.insert(dashboard_id(env, &hit.uid), item);
        }
    }
    for (uid, full) in read_dashboards(provider, to_read).await? {
        let folder =
            full.meta.get("folderUid").and_then(Value::as_str).unwrap_or_default().to_owned();
        let read_only = full.meta.get("provisioned").and_then(Value::as_bool).unwrap_or(false);
        let depends_on = vec![folder_id(env, &folder)];
        let spec = GrafanaSpec::Dashboard {
            folder,
            model: full.dashboard,
            read_only,
            content: String::new(),
        };
        observed.insert(dashboard_id(env, &uid), ObservedItem { spec, owned: false, depends_on });
    }
    Ok(())
}

/// Reads dashboards `uids`, [`READ_CONCURRENCY`] at a time; one gone
/// since the search is left out.
async fn read_dashboards(
    provider: &GrafanaProvider,
    uids: Vec<String>,
) -> Result<Vec<(String, DashboardFull)>, GrafanaError> {
    let limit = std::sync::Arc::new(tokio::sync::Semaphore::new(READ_CONCURRENCY));
    let mut tasks = tokio::task::JoinSet::new();
    let mut names = std::collections::BTreeMap::new();
    for uid in uids {
        let client = provider.client.clone();
        let limit = std::sync::Arc::clone(&limit);
        let task_uid = uid.clone();
        let handle = tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let path = format!("/api/dashboards/uid/{}", segment(&task_uid));
            (task_uid, client.get_optional::<DashboardFull>(&path).await)
        });
        names.insert(handle.id(), uid);
    }
    let mut read = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        // A read that did not finish must not look like a missing dashboard.
        let (uid, result) = joined.map_err(|e| GrafanaError::Unfinished {
            uid: names.get(&e.id()).cloned().unwrap_or_default(),
            message: e.to_string(),
        })?;
        if let Some(full) = result? {
            read.push((uid, full));
        }
    }
    Ok(read)
}
