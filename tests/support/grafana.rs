//! A TEST DOUBLE of Grafana's HTTP API: no Grafana server can be installed
//! on these machines (it is not packaged for Debian), so the tests talk to
//! this in-process server instead.
//!
//! It implements only what apimon uses, following Grafana's HTTP API
//! documentation (docs/sources/developers/http_api/: data_source.md,
//! folder.md, folder_dashboard_search.md, dashboard.md): bearer-token auth
//! (401 `{"message": "Unauthorized"}`), the JSON shapes of GET/POST/PUT/DELETE
//! for datasources (list without `secureJsonFields`; by uid with
//! `secureJsonFields`; 409 "data source with the same name already exists"),
//! folders (409 on a duplicate uid, 412 on a version mismatch without
//! `overwrite`, deleting a folder deletes its dashboards), search
//! (`type=dash-db`, `folderUIDs`, `tag`) and dashboards (`POST
//! /api/dashboards/db` with `overwrite`, 412 `version-mismatch`; GET by uid
//! with `dashboard` and `meta.folderUid`; Grafana owns `id` and `version`).
//! Failure injection answers 500 to the next requests, as a Grafana under
//! load or restarting would. `tests/grafana.rs` also runs the same checks
//! against a real Grafana when GRAFANA_URL and GRAFANA_TOKEN are set.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

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
}

/// Everything the double holds.
#[derive(Debug, Default)]
pub struct Store {
    next_id: i64,
    /// By uid.
    pub datasources: BTreeMap<String, Datasource>,
    /// uid → (id, title, version).
    pub folders: BTreeMap<String, (i64, String, i64)>,
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
}

/// A running double.
pub struct GrafanaDouble {
    /// Base URL.
    pub url: String,
    /// Its state.
    pub store: Arc<Mutex<Store>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct AppState {
    store: Arc<Mutex<Store>>,
    token: String,
}

fn message(status: StatusCode, text: &str) -> Response {
    (status, Json(json!({ "message": text }))).into_response()
}

impl GrafanaDouble {
    /// Starts a double accepting `token`.
    pub async fn start(token: &str) -> Self {
        let store = Arc::new(Mutex::new(Store::default()));
        let state = AppState { store: Arc::clone(&store), token: token.to_owned() };
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
            .layer(axum::middleware::from_fn_with_state(state.clone(), gate))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, store, task }
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
    let authorized = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t == state.token);
    if !authorized {
        return message(StatusCode::UNAUTHORIZED, "Unauthorized");
    }
    next.run(request).await
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
        "secureJsonFields": secure.keys().map(|k| (k.clone(), json!(true))).collect::<serde_json::Map<_, _>>(),
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
    let name = input.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
    if store.datasources.iter().any(|(other, d)| *other != uid && d.body["name"] == name.as_str()) {
        return message(StatusCode::CONFLICT, "data source with the same name already exists");
    }
    // Secure fields not sent keep their value.
    let mut secure = existing.secure.clone();
    secure.extend(secure_of(&input));
    let id = existing.body["id"].as_i64().unwrap_or_default();
    let version = existing.body["version"].as_i64().unwrap_or(1) + 1;
    let body = datasource_body(id, &uid, &input, &secure, version);
    store.datasources.insert(uid, Datasource { body: body.clone(), secure });
    Json(json!({ "datasource": body, "id": id, "message": "Datasource updated", "name": name }))
        .into_response()
}

async fn delete_datasource(State(state): State<AppState>, Path(uid): Path<String>) -> Response {
    let mut store = state.store.lock().expect("store");
    match store.datasources.remove(&uid) {
        Some(d) => {
            Json(json!({ "message": "Data source deleted", "id": d.body["id"] })).into_response()
        }
        None => message(StatusCode::NOT_FOUND, "Data source not found"),
    }
}

fn folder_json(uid: &str, (id, title, version): &(i64, String, i64)) -> Value {
    json!({ "id": id, "uid": uid, "title": title, "url": format!("/dashboards/f/{uid}/"), "version": version })
}

async fn list_folders(State(state): State<AppState>) -> Response {
    let store = state.store.lock().expect("store");
    Json(
        store
            .folders
            .iter()
            .map(|(uid, f)| json!({ "id": f.0, "uid": uid, "title": f.1 }))
            .collect::<Vec<_>>(),
    )
    .into_response()
}

async fn get_folder(State(state): State<AppState>, Path(uid): Path<String>) -> Response {
    let store = state.store.lock().expect("store");
    match store.folders.get(&uid) {
        Some(folder) => Json(folder_json(&uid, folder)).into_response(),
        None => message(StatusCode::NOT_FOUND, "folder not found"),
    }
}

async fn create_folder(State(state): State<AppState>, Json(input): Json<Value>) -> Response {
    let mut store = state.store.lock().expect("store");
    let title = input.get("title").and_then(Value::as_str).unwrap_or_default().to_owned();
    let id = store.id();
    let uid =
        input.get("uid").and_then(Value::as_str).map_or_else(|| format!("f{id}"), str::to_owned);
    if store.folders.contains_key(&uid) {
        return message(StatusCode::CONFLICT, "a folder with the same uid already exists");
    }
    if store.folders.values().any(|f| f.1 == title) {
        return message(
            StatusCode::CONFLICT,
            "a folder or dashboard in the general folder with the same name already exists",
        );
    }
    let folder = (id, title, 1);
    let body = folder_json(&uid, &folder);
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
        return message(StatusCode::NOT_FOUND, "folder not found");
    };
    let overwrite = input.get("overwrite").and_then(Value::as_bool).unwrap_or(false);
    let version = input.get("version").and_then(Value::as_i64);
    if !overwrite && version != Some(folder.2) {
        return (StatusCode::PRECONDITION_FAILED, Json(json!({ "message": "the folder has been changed by someone else", "status": "version-mismatch" }))).into_response();
    }
    let title = input.get("title").and_then(Value::as_str).unwrap_or(&folder.1).to_owned();
    let updated = (folder.0, title, folder.2 + 1);
    let body = folder_json(&uid, &updated);
    store.folders.insert(uid, updated);
    Json(body).into_response()
}

async fn delete_folder(State(state): State<AppState>, Path(uid): Path<String>) -> Response {
    let mut store = state.store.lock().expect("store");
    match store.folders.remove(&uid) {
        Some((id, title, _)) => {
            store.dashboards.retain(|_, d| d.folder_uid != uid);
            Json(json!({ "message": "Folder deleted", "id": id, "title": title })).into_response()
        }
        None => message(StatusCode::NOT_FOUND, "folder not found"),
    }
}

async fn search(
    State(state): State<AppState>,
    Query(params): Query<BTreeMap<String, String>>,
) -> Response {
    let store = state.store.lock().expect("store");
    if params.get("type").is_some_and(|t| t != "dash-db") {
        return Json(Vec::<Value>::new()).into_response();
    }
    let folders: Option<Vec<&str>> = params.get("folderUIDs").map(|f| f.split(',').collect());
    let hits: Vec<Value> = store
        .dashboards
        .iter()
        .filter(|(_, d)| folders.as_ref().is_none_or(|f| f.contains(&d.folder_uid.as_str())))
        .filter(|(_, d)| {
            params.get("tag").is_none_or(|tag| {
                d.model["tags"]
                    .as_array()
                    .is_some_and(|tags| tags.iter().any(|t| t == tag.as_str()))
            })
        })
        .map(|(uid, d)| {
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
            if let (Some(hit), Some(folder)) =
                (hit.as_object_mut(), store.folders.get(&d.folder_uid))
            {
                hit.insert("folderId".into(), json!(folder.0));
                hit.insert("folderUid".into(), json!(d.folder_uid));
                hit.insert("folderTitle".into(), json!(folder.1));
            }
            hit
        })
        .collect();
    Json(hits).into_response()
}

async fn save_dashboard(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(input): Json<Value>,
) -> Response {
    let _ = headers;
    let mut store = state.store.lock().expect("store");
    let mut model = input.get("dashboard").cloned().unwrap_or(Value::Null);
    let folder_uid = input.get("folderUid").and_then(Value::as_str).unwrap_or_default().to_owned();
    let overwrite = input.get("overwrite").and_then(Value::as_bool).unwrap_or(false);
    if !folder_uid.is_empty() && !store.folders.contains_key(&folder_uid) {
        return message(StatusCode::BAD_REQUEST, "folder not found");
    }
    let id_new = store.id();
    let uid = model
        .get("uid")
        .and_then(Value::as_str)
        .map_or_else(|| format!("d{id_new}"), str::to_owned);
    let existing = store.dashboards.get(&uid).cloned();
    if let Some(existing) = &existing {
        let current = existing.model["version"].as_i64().unwrap_or(0);
        let sent = model.get("version").and_then(Value::as_i64);
        if !overwrite && sent != Some(current) {
            return (StatusCode::PRECONDITION_FAILED, Json(json!({ "message": "The dashboard has been changed by someone else", "status": "version-mismatch" }))).into_response();
        }
    }
    let (id, version) = match &existing {
        Some(existing) => (
            existing.model["id"].as_i64().unwrap_or(id_new),
            existing.model["version"].as_i64().unwrap_or(0) + 1,
        ),
        None => (id_new, 1),
    };
    if let Some(object) = model.as_object_mut() {
        object.insert("id".into(), json!(id));
        object.insert("uid".into(), json!(uid));
        object.insert("version".into(), json!(version));
    }
    store.dashboards.insert(uid.clone(), Dashboard { model, folder_uid });
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
            "canSave": true,
            "slug": uid,
            "url": format!("/d/{uid}"),
            "version": dashboard.model["version"],
            "folderId": folder.map_or(0, |f| f.0),
            "folderUid": dashboard.folder_uid,
            "folderTitle": folder.map_or("General".to_owned(), |f| f.1.clone()),
        }
    }))
    .into_response()
}

async fn delete_dashboard(State(state): State<AppState>, Path(uid): Path<String>) -> Response {
    let mut store = state.store.lock().expect("store");
    match store.dashboards.remove(&uid) {
        Some(d) => Json(json!({ "title": d.model["title"], "message": format!("Dashboard {} deleted", d.model["title"].as_str().unwrap_or_default()), "id": d.model["id"] })).into_response(),
        None => message(StatusCode::NOT_FOUND, "Dashboard not found"),
    }
}
