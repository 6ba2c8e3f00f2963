//! A TEST DOUBLE of Grafana's HTTP API: no Grafana server can be installed
//! on these machines (no vendor apt repositories, not in Debian), so the
//! tests talk to this in-process server instead, in one of three behaviour
//! modes ([`Version`]) — every Grafana test runs against each.
//!
//! Checked against Grafana's HTTP API documentation
//! (docs/sources/developers/http_api/: data_source.md, folder.md,
//! folder_dashboard_search.md, dashboard.md) and handlers:
//! `pkg/api/dashboard.go`, `pkg/api/folder.go`, `pkg/api/datasources.go`,
//! `pkg/api/index.go` (`NotFoundHandler`: 404 `{"message":"Not found"}`),
//! `pkg/api/apierrors/{dashboard,folder}.go`,
//! `pkg/services/dashboards/errors.go` and `database/database.go`
//! (`getExistingDashboardByTitleAndFolder`, up to 11.2),
//! `pkg/services/dashboards/service/dashboard_service.go`,
//! `pkg/services/folder/folderimpl` (`GetChildren`, cascading `Delete`),
//! `pkg/services/datasources/service/store.go` (`updateIsDefaultFlag`) and
//! `convertModelToDtos` (`secureJsonFields` lists non-empty values only),
//! the folder API tests (`pkg/tests/api/folders`, `pkg/tests/apis/folder`),
//! and the release notes: nested folders on by default from 11.0 (PR
//! #84631); dashboard and folder titles no longer unique from 11.3 (PR
//! #90687, issue #105077).
//!
//! What differs by mode:
//!
//! | | 10.x | 11.0–11.2 | 11.3+ and 12 |
//! |---|---|---|---|
//! | nested folders (`parentUid`; `GET /api/folders` lists one level) | off: flat list | on | on |
//! | a second folder of the same title at one parent | 409 | 409 | allowed |
//! | a second folder of the same uid | 409 | 409 | 412 `version-mismatch` |
//! | dashboard of a title that exists in the folder, new uid | `overwrite`: takes the old one over (its uid answered); else 412 `name-exists` | same | allowed: a new dashboard |
//! | numbers of a saved dashboard | kept as sent | kept | `1.0` read back as `1` |
//!
//! In every mode: bearer-token or basic auth (401), 412 `version-mismatch`
//! for a stale dashboard or folder version, cascading folder delete
//! (subfolders and their dashboards), read-only (provisioned) datasources
//! (403 on PUT/DELETE, `readOnly: true`), provisioned dashboards (400 on
//! save and delete, `meta.provisioned`), `isDefault` exclusive, JSON 404
//! for unknown routes. Failure injection answers 500 to the next requests,
//! as a Grafana under load or restarting would.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

/// Which Grafana the double behaves like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// 10.x: nested folders off, titles unique.
    V10,
    /// 11.0–11.2: nested folders on, titles unique.
    V11Early,
    /// 11.3 and later, 12: titles not unique, numbers normalised.
    V11Late,
}

impl Version {
    /// Every mode.
    pub const ALL: [Self; 3] = [Self::V10, Self::V11Early, Self::V11Late];

    fn nested(self) -> bool {
        self != Self::V10
    }

    fn unique_titles(self) -> bool {
        self != Self::V11Late
    }
}

/// A stored datasource.
#[derive(Debug, Clone)]
pub struct Datasource {
    /// The datasource as Grafana returns it (without secure data).
    pub body: Value,
    /// secureJsonData as last written (the double keeps it to let tests check).
    pub secure: BTreeMap<String, String>,
}

/// A stored dashboard.
#[derive(Debug, Clone)]
pub struct Dashboard {
    /// Model with Grafana's `id`, `uid`, `version`.
    pub model: Value,
    /// Folder uid ("" for General).
    pub folder_uid: String,
    /// Provisioned from a file (read-only to the API).
    pub provisioned: bool,
}

/// A stored folder.
#[derive(Debug, Clone)]
pub struct Folder {
    /// Numeric id.
    pub id: i64,
    /// Title.
    pub title: String,
    /// Version.
    pub version: i64,
    /// Parent uid ("" at the root).
    pub parent: String,
}

/// Everything the double holds.
#[derive(Debug, Default)]
pub struct Store {
    next_id: i64,
    /// By uid.
    pub datasources: BTreeMap<String, Datasource>,
    /// By uid.
    pub folders: BTreeMap<String, Folder>,
    /// By uid.
    pub dashboards: BTreeMap<String, Dashboard>,
    /// Requests seen (method and path).
    pub requests: Vec<String>,
    /// Answer 500 to this many next requests.
    pub fail_next: usize,
}

impl Store {
    fn id(&mut self) -> i64 {
        self.next_id += 1;
        self.next_id
    }

    /// `uid` and every folder below it.
    fn subtree(&self, uid: &str) -> Vec<String> {
        let mut all = vec![uid.to_owned()];
        let mut i = 0;
        while i < all.len() {
            let parent = all[i].clone();
            all.extend(
                self.folders.iter().filter(|(_, f)| f.parent == parent).map(|(u, _)| u.clone()),
            );
            i += 1;
        }
        all
    }
}

/// A running double.
pub struct GrafanaDouble {
    /// Base URL.
    pub url: String,
    /// Its behaviour.
    pub version: Version,
    /// Its state.
    pub store: Arc<Mutex<Store>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct AppState {
    store: Arc<Mutex<Store>>,
    token: String,
    version: Version,
}

fn message(status: StatusCode, text: &str) -> Response {
    (status, Json(json!({ "message": text }))).into_response()
}

fn status_message(status: StatusCode, code: &str, text: &str) -> Response {
    (status, Json(json!({ "status": code, "message": text }))).into_response()
}

impl GrafanaDouble {
    /// Starts a double of `version` accepting `token` (or basic auth
    /// `admin:<token>`, as the admin user of grafana.ini).
    pub async fn start(token: &str, version: Version) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        Self::start_on(listener, token, version)
    }

    /// Like [`start`](Self::start), serving `listener` (one made inside a
    /// network namespace, say).
    pub fn start_on(listener: std::net::TcpListener, token: &str, version: Version) -> Self {
        let store = Arc::new(Mutex::new(Store::default()));
        let state = AppState { store: Arc::clone(&store), token: token.to_owned(), version };
        let app = Router::new()
            .route("/api/datasources", get(list_datasources).post(create_datasource))
            .route(
                "/api/datasources/uid/{uid}",
                get(get_datasource).put(update_datasource).delete(delete_datasource),
            )
            .route("/api/folders", get(list_folders).post(create_folder))
            .route("/api/folders/{uid}", get(get_folder).put(update_folder).delete(delete_folder))
            .route("/api/search", get(search))
            .route("/api/dashboards/db", axum::routing::post(save_dashboard))
            .route("/api/dashboards/uid/{uid}", get(get_dashboard).delete(delete_dashboard))
            .fallback(|| async { message(StatusCode::NOT_FOUND, "Not found") })
            .layer(axum::middleware::from_fn_with_state(state.clone(), gate))
            .with_state(state);
        listener.set_nonblocking(true).expect("nonblocking");
        let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, version, store, task }
    }

    /// Requests seen so far.
    pub fn requests(&self) -> usize {
        self.store.lock().expect("store").requests.len()
    }

    /// Answer 500 to the next `n` requests.
    pub fn fail_next(&self, n: usize) {
        self.store.lock().expect("store").fail_next = n;
    }

    /// A copy of a dashboard's model.
    pub fn dashboard(&self, uid: &str) -> Option<Dashboard> {
        self.store.lock().expect("store").dashboards.get(uid).cloned()
    }

    /// A copy of a datasource.
    pub fn datasource(&self, uid: &str) -> Option<Datasource> {
        self.store.lock().expect("store").datasources.get(uid).cloned()
    }

    /// A copy of a folder.
    pub fn folder(&self, uid: &str) -> Option<Folder> {
        self.store.lock().expect("store").folders.get(uid).cloned()
    }

    /// Marks a datasource as provisioned (read-only), as a file under
    /// provisioning/datasources would.
    pub fn provision_datasource(&self, uid: &str) {
        let mut store = self.store.lock().expect("store");
        let datasource = store.datasources.get_mut(uid).expect("datasource");
        datasource.body["readOnly"] = json!(true);
    }

    /// Marks a dashboard as provisioned (`allowUiUpdates: false`).
    pub fn provision_dashboard(&self, uid: &str) {
        let mut store = self.store.lock().expect("store");
        store.dashboards.get_mut(uid).expect("dashboard").provisioned = true;
    }
}

impl Drop for GrafanaDouble {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Auth, request log and failure injection.
async fn gate(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let line = format!("{} {}", request.method(), request.uri());
    {
        let mut store = state.store.lock().expect("store");
        store.requests.push(line);
        if store.fail_next > 0 {
            store.fail_next -= 1;
            return message(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error");
        }
    }
    let header = request.headers().get("authorization").and_then(|v| v.to_str().ok());
    let authorized = match header {
        Some(value) if value.starts_with("Bearer ") => value[7..] == state.token,
        Some(value) if value.starts_with("Basic ") => basic(&value[6..])
            .is_some_and(|(user, password)| user == "admin" && password == state.token),
        _ => false,
    };
    if !authorized {
        return message(StatusCode::UNAUTHORIZED, "Unauthorized");
    }
    next.run(request).await
}

/// Decodes a basic-auth value (base64 of `user:password`).
fn basic(encoded: &str) -> Option<(String, String)> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut count = 0;
    let mut bytes = Vec::new();
    for c in encoded.bytes().filter(|c| *c != b'=') {
        let value = ALPHABET.iter().position(|a| *a == c)? as u32;
        bits = (bits << 6) | value;
        count += 6;
        if count >= 8 {
            count -= 8;
            bytes.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    let text = String::from_utf8(bytes).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

fn list_item(body: &Value) -> Value {
    let mut item = body.clone();
    if let Some(object) = item.as_object_mut() {
        object.remove("secureJsonFields");
        object.remove("version");
    }
    item
}

async fn list_datasources(State(state): State<AppState>) -> Response {
    let store = state.store.lock().expect("store");
    Json(store.datasources.values().map(|d| list_item(&d.body)).collect::<Vec<_>>()).into_response()
}

async fn get_datasource(State(state): State<AppState>, Path(uid): Path<String>) -> Response {
    let store = state.store.lock().expect("store");
    match store.datasources.get(&uid) {
        Some(d) => Json(d.body.clone()).into_response(),
        None => message(StatusCode::NOT_FOUND, "Data source not found"),
    }
}

fn datasource_body(
    id: i64,
    uid: &str,
    input: &Value,
    secure: &BTreeMap<String, String>,
    version: i64,
) -> Value {
    let field = |name: &str| input.get(name).cloned().unwrap_or(Value::String(String::new()));
    // Only secure fields holding a value are listed.
    let fields: serde_json::Map<String, Value> = secure
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, _)| (k.clone(), json!(true)))
        .collect();
    json!({
        "id": id,
        "uid": uid,
        "orgId": 1,
        "name": field("name"),
        "type": field("type"),
        "typeLogoUrl": "",
        "access": input.get("access").cloned().unwrap_or(json!("proxy")),
        "url": field("url"),
        "user": field("user"),
        "database": field("database"),
        "basicAuth": input.get("basicAuth").cloned().unwrap_or(json!(false)),
        "isDefault": input.get("isDefault").cloned().unwrap_or(json!(false)),
        "jsonData": input.get("jsonData").cloned().unwrap_or(json!({})),
        "secureJsonFields": fields,
        "version": version,
        "readOnly": false,
    })
}

fn secure_of(input: &Value) -> BTreeMap<String, String> {
    input
        .get("secureJsonData")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter().filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_owned()))).collect()
        })
        .unwrap_or_default()
}

/// One default datasource per organisation.
fn clear_other_defaults(store: &mut Store, uid: &str) {
    for (other, datasource) in store.datasources.iter_mut() {
        if other != uid {
            datasource.body["isDefault"] = json!(false);
        }
    }
}

async fn create_datasource(State(state): State<AppState>, Json(input): Json<Value>) -> Response {
    let mut store = state.store.lock().expect("store");
    let name = input.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
    if name.is_empty() {
        return message(StatusCode::BAD_REQUEST, "Name is required");
    }
    if store.datasources.values().any(|d| d.body["name"] == name.as_str()) {
        return message(StatusCode::CONFLICT, "data source with the same name already exists");
    }
    let id = store.id();
    let uid =
        input.get("uid").and_then(Value::as_str).map_or_else(|| format!("gen{id}"), str::to_owned);
    if store.datasources.contains_key(&uid) {
        return message(StatusCode::CONFLICT, "data source with the same uid already exists");
    }
    let secure = secure_of(&input);
    let body = datasource_body(id, &uid, &input, &secure, 1);
    if body["isDefault"] == true {
        clear_other_defaults(&mut store, &uid);
    }
    store.datasources.insert(uid, Datasource { body: body.clone(), secure });
    Json(json!({ "datasource": body, "id": id, "message": "Datasource added", "name": name }))
        .into_response()
}

async fn update_datasource(
    State(state): State<AppState>,
    Path(uid): Path<String>,
    Json(input): Json<Value>,
) -> Response {
    let mut store = state.store.lock().expect("store");
    let Some(existing) = store.datasources.get(&uid).cloned() else {
        return message(StatusCode::NOT_FOUND, "Data source not found");
    };
    if existing.body["readOnly"] == true {
        return message(StatusCode::FORBIDDEN, "Cannot update read-only data source");
    }
    let name = input.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
    if store.datasources.iter().any(|(other, d)| *other != uid && d.body["name"] == name.as_str()) {
        return message(StatusCode::CONFLICT, "data source with the same name already exists");
    }
    let current = existing.body["version"].as_i64().unwrap_or(1);
    if input.get("version").and_then(Value::as_i64).is_some_and(|v| v < current) {
        return message(
            StatusCode::CONFLICT,
            "Datasource has already been updated by someone else. Please reload and try again",
        );
    }
    // Secure fields not sent keep their value.
    let mut secure = existing.secure.clone();
    secure.extend(secure_of(&input));
    let id = existing.body["id"].as_i64().unwrap_or_default();
    let body = datasource_body(id, &uid, &input, &secure, current + 1);
    if body["isDefault"] == true {
        clear_other_defaults(&mut store, &uid);
    }
    store.datasources.insert(uid, Datasource { body: body.clone(), secure });
    Json(json!({ "datasource": body, "id": id, "message": "Datasource updated", "name": name }))
        .into_response()
}

async fn delete_datasource(State(state): State<AppState>, Path(uid): Path<String>) -> Response {
    let mut store = state.store.lock().expect("store");
    match store.datasources.get(&uid) {
        None => message(StatusCode::NOT_FOUND, "Data source not found"),
        Some(d) if d.body["readOnly"] == true => {
            message(StatusCode::FORBIDDEN, "Cannot delete read-only data source")
        }
        Some(d) => {
            let id = d.body["id"].clone();
            store.datasources.remove(&uid);
            Json(json!({ "message": "Data source deleted", "id": id })).into_response()
        }
    }
}

fn folder_json(version: Version, uid: &str, folder: &Folder) -> Value {
    let mut body = json!({ "id": folder.id, "uid": uid, "title": folder.title, "url": format!("/dashboards/f/{uid}/"), "version": folder.version });
    if version.nested() && !folder.parent.is_empty() {
        body["parentUid"] = json!(folder.parent);
    }
    body
}

async fn list_folders(
    State(state): State<AppState>,
    Query(params): Query<BTreeMap<String, String>>,
) -> Response {
    let store = state.store.lock().expect("store");
    let parent = params.get("parentUid").cloned().unwrap_or_default();
    if state.version.nested() && !parent.is_empty() && !store.folders.contains_key(&parent) {
        return status_message(StatusCode::NOT_FOUND, "not-found", "folder not found");
    }
    let items: Vec<Value> = store
        .folders
        .iter()
        // Nested folders: one level (the root unless `parentUid`); else all.
        .filter(|(_, f)| !state.version.nested() || f.parent == parent)
        .map(|(uid, f)| {
            let mut item = json!({ "id": f.id, "uid": uid, "title": f.title });
            if state.version.nested() && !f.parent.is_empty() {
                item["parentUid"] = json!(f.parent);
            }
            item
        })
        .collect();
    Json(items).into_response()
}

async fn get_folder(State(state): State<AppState>, Path(uid): Path<String>) -> Response {
    let store = state.store.lock().expect("store");
    match store.folders.get(&uid) {
        Some(folder) => Json(folder_json(state.version, &uid, folder)).into_response(),
        None => status_message(StatusCode::NOT_FOUND, "not-found", "folder not found"),
    }
}

async fn create_folder(State(state): State<AppState>, Json(input): Json<Value>) -> Response {
    let mut store = state.store.lock().expect("store");
    let title = input.get("title").and_then(Value::as_str).unwrap_or_default().to_owned();
    let parent = if state.version.nested() {
        input.get("parentUid").and_then(Value::as_str).unwrap_or_default().to_owned()
    } else {
        String::new()
    };
    if !parent.is_empty() && !store.folders.contains_key(&parent) {
        return status_message(StatusCode::NOT_FOUND, "not-found", "folder not found");
    }
    let id = store.id();
    let uid =
        input.get("uid").and_then(Value::as_str).map_or_else(|| format!("f{id}"), str::to_owned);
    if store.folders.contains_key(&uid) {
        return match state.version {
            Version::V11Late => status_message(
                StatusCode::PRECONDITION_FAILED,
                "version-mismatch",
                "the folder has been changed by someone else",
            ),
            _ => {
                message(StatusCode::CONFLICT, "a folder/dashboard with the same uid already exists")
            }
        };
    }
    if state.version.unique_titles()
        && store.folders.values().any(|f| f.title == title && f.parent == parent)
    {
        return message(
            StatusCode::CONFLICT,
            "a folder or dashboard in the general folder with the same name already exists",
        );
    }
    let folder = Folder { id, title, version: 1, parent };
    let body = folder_json(state.version, &uid, &folder);
    store.folders.insert(uid, folder);
    Json(body).into_response()
}

async fn update_folder(
    State(state): State<AppState>,
    Path(uid): Path<String>,
    Json(input): Json<Value>,
) -> Response {
    let mut store = state.store.lock().expect("store");
    let Some(folder) = store.folders.get(&uid).cloned() else {
        return status_message(StatusCode::NOT_FOUND, "not-found", "folder not found");
    };
    let overwrite = input.get("overwrite").and_then(Value::as_bool).unwrap_or(false);
    let version = input.get("version").and_then(Value::as_i64);
    if !overwrite && version != Some(folder.version) {
        return status_message(
            StatusCode::PRECONDITION_FAILED,
            "version-mismatch",
            "the folder has been changed by someone else",
        );
    }
    let title = input.get("title").and_then(Value::as_str).unwrap_or(&folder.title).to_owned();
    if state.version.unique_titles()
        && store
            .folders
            .iter()
            .any(|(other, f)| *other != uid && f.title == title && f.parent == folder.parent)
    {
        return message(
            StatusCode::CONFLICT,
            "a folder or dashboard in the general folder with the same name already exists",
        );
    }
    let updated = Folder { title, version: folder.version + 1, ..folder };
    let body = folder_json(state.version, &uid, &updated);
    store.folders.insert(uid, updated);
    Json(body).into_response()
}

async fn delete_folder(State(state): State<AppState>, Path(uid): Path<String>) -> Response {
    let mut store = state.store.lock().expect("store");
    let Some(folder) = store.folders.get(&uid).cloned() else {
        return status_message(StatusCode::NOT_FOUND, "not-found", "folder not found");
    };
    // Subfolders and every dashboard in them go too.
    let subtree = store.subtree(&uid);
    store.folders.retain(|u, _| !subtree.contains(u));
    store.dashboards.retain(|_, d| !subtree.contains(&d.folder_uid));
    match state.version {
        Version::V10 => Json(json!({ "message": format!("Folder {} deleted", folder.title), "id": folder.id, "title": folder.title })).into_response(),
        _ => Json(json!({ "message": "Folder deleted" })).into_response(),
    }
}

async fn search(
    State(state): State<AppState>,
    Query(params): Query<BTreeMap<String, String>>,
) -> Response {
    let store = state.store.lock().expect("store");
    let kind = params.get("type").map(String::as_str);
    let folders: Option<Vec<&str>> = params.get("folderUIDs").map(|f| f.split(',').collect());
    let in_folder = |folder: &str| folders.as_ref().is_none_or(|f| f.contains(&folder));
    let query = params.get("query").map(|q| q.to_lowercase());
    let matches_query =
        |title: &str| query.as_ref().is_none_or(|q| title.to_lowercase().contains(q.as_str()));
    let mut hits: Vec<Value> = Vec::new();
    if kind.is_none_or(|k| k == "dash-folder") {
        for (uid, folder) in &store.folders {
            if in_folder(&folder.parent) && matches_query(&folder.title) {
                let mut hit = json!({ "id": folder.id, "uid": uid, "title": folder.title, "type": "dash-folder", "url": format!("/dashboards/f/{uid}/") });
                if !folder.parent.is_empty() {
                    hit["folderUid"] = json!(folder.parent);
                }
                hits.push(hit);
            }
        }
    }
    if kind.is_none_or(|k| k == "dash-db") {
        for (uid, d) in &store.dashboards {
            let title = d.model["title"].as_str().unwrap_or_default();
            let tagged = params.get("tag").is_none_or(|tag| {
                d.model["tags"]
                    .as_array()
                    .is_some_and(|tags| tags.iter().any(|t| t == tag.as_str()))
            });
            if !in_folder(&d.folder_uid) || !matches_query(title) || !tagged {
                continue;
            }
            let mut hit = json!({
                "id": d.model["id"],
                "uid": uid,
                "title": d.model["title"],
                "uri": format!("db/{uid}"),
                "url": format!("/d/{uid}"),
                "type": "dash-db",
                "tags": d.model.get("tags").cloned().unwrap_or(json!([])),
                "isStarred": false,
            });
            if let Some(folder) = store.folders.get(&d.folder_uid) {
                hit["folderId"] = json!(folder.id);
                hit["folderUid"] = json!(d.folder_uid);
                hit["folderTitle"] = json!(folder.title);
            }
            hits.push(hit);
        }
    }
    Json(hits).into_response()
}

/// Whole floats become integers (how 11.3+ and 12 read a model back).
fn normalise_numbers(value: &mut Value) {
    match value {
        Value::Number(n) if n.is_f64() => {
            if let Some(f) = n.as_f64().filter(|f| f.fract() == 0.0) {
                *value = json!(f as i64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(normalise_numbers),
        Value::Object(map) => map.values_mut().for_each(normalise_numbers),
        _ => {}
    }
}

async fn save_dashboard(State(state): State<AppState>, Json(input): Json<Value>) -> Response {
    let mut store = state.store.lock().expect("store");
    let mut model = input.get("dashboard").cloned().unwrap_or(Value::Null);
    let folder_uid = input.get("folderUid").and_then(Value::as_str).unwrap_or_default().to_owned();
    let overwrite = input.get("overwrite").and_then(Value::as_bool).unwrap_or(false);
    if !folder_uid.is_empty() && !store.folders.contains_key(&folder_uid) {
        return message(StatusCode::BAD_REQUEST, "folder not found");
    }
    let id_new = store.id();
    let mut uid = model
        .get("uid")
        .and_then(Value::as_str)
        .map_or_else(|| format!("d{id_new}"), str::to_owned);
    let title = model.get("title").and_then(Value::as_str).unwrap_or_default().to_owned();
    // Up to 11.2: one dashboard per title and folder.
    if state.version.unique_titles() && !store.dashboards.contains_key(&uid) {
        let same_title = store
            .dashboards
            .iter()
            .find(|(_, d)| d.folder_uid == folder_uid && d.model["title"] == title.as_str())
            .map(|(u, _)| u.clone());
        if let Some(other) = same_title {
            if !overwrite {
                return status_message(
                    StatusCode::PRECONDITION_FAILED,
                    "name-exists",
                    "A dashboard with the same name in the folder already exists",
                );
            }
            // Taken over: the request's uid is replaced by the existing one.
            uid = other;
            if let Some(object) = model.as_object_mut() {
                object.insert("uid".into(), json!(uid));
            }
        }
    }
    let existing = store.dashboards.get(&uid).cloned();
    if let Some(existing) = &existing {
        let current = existing.model["version"].as_i64().unwrap_or(0);
        let sent = model.get("version").and_then(Value::as_i64).unwrap_or(0);
        if !overwrite && sent != current {
            return status_message(
                StatusCode::PRECONDITION_FAILED,
                "version-mismatch",
                "The dashboard has been changed by someone else",
            );
        }
        if existing.provisioned {
            return message(StatusCode::BAD_REQUEST, "Cannot save provisioned dashboard");
        }
    }
    let (id, version) = match &existing {
        Some(existing) => (
            existing.model["id"].as_i64().unwrap_or(id_new),
            existing.model["version"].as_i64().unwrap_or(0) + 1,
        ),
        None => (id_new, 1),
    };
    if state.version == Version::V11Late {
        normalise_numbers(&mut model);
    }
    if let Some(object) = model.as_object_mut() {
        object.insert("id".into(), json!(id));
        object.insert("uid".into(), json!(uid));
        object.insert("version".into(), json!(version));
    }
    store.dashboards.insert(uid.clone(), Dashboard { model, folder_uid, provisioned: false });
    Json(json!({ "id": id, "uid": uid, "url": format!("/d/{uid}"), "status": "success", "version": version, "slug": uid })).into_response()
}

async fn get_dashboard(State(state): State<AppState>, Path(uid): Path<String>) -> Response {
    let store = state.store.lock().expect("store");
    let Some(dashboard) = store.dashboards.get(&uid) else {
        return message(StatusCode::NOT_FOUND, "Dashboard not found");
    };
    let folder = store.folders.get(&dashboard.folder_uid);
    Json(json!({
        "dashboard": dashboard.model,
        "meta": {
            "type": "db",
            "canSave": !dashboard.provisioned,
            "slug": uid,
            "url": format!("/d/{uid}"),
            "version": dashboard.model["version"],
            "provisioned": dashboard.provisioned,
            "folderId": folder.map_or(0, |f| f.id),
            "folderUid": dashboard.folder_uid,
            "folderTitle": folder.map_or("General".to_owned(), |f| f.title.clone()),
        }
    }))
    .into_response()
}

async fn delete_dashboard(State(state): State<AppState>, Path(uid): Path<String>) -> Response {
    let mut store = state.store.lock().expect("store");
    match store.dashboards.get(&uid) {
        None => message(StatusCode::NOT_FOUND, "Dashboard not found"),
        Some(d) if d.provisioned => {
            message(StatusCode::BAD_REQUEST, "provisioned dashboard cannot be deleted")
        }
        Some(d) => {
            let title = d.model["title"].clone();
            let id = d.model["id"].clone();
            store.dashboards.remove(&uid);
            Json(json!({ "title": title, "message": format!("Dashboard {} deleted", title.as_str().unwrap_or_default()), "id": id })).into_response()
        }
    }
}
