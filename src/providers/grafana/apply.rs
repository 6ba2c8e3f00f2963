//! Changing a Grafana: one change is one request (two for a folder that
//! must be checked before deletion). Every request is safe to repeat.

use reqwest::Method;
use serde_json::{json, Value};

use crate::plan::{ItemChange, Op, Planned};

use super::client::{segment, GrafanaError};
use super::{GrafanaProvider, GrafanaSpec};

pub(super) async fn apply(
    provider: &GrafanaProvider,
    change: &Planned<ItemChange<GrafanaSpec>>,
) -> Result<(), GrafanaError> {
    let uid = change.id.name.as_str();
    match (&change.op, &change.change.desired, &change.change.observed) {
        (Op::NoOp, ..) => Ok(()),
        (Op::Delete, _, Some(GrafanaSpec::Folder { .. })) => delete_folder(provider, uid).await,
        (Op::Delete, _, Some(GrafanaSpec::Datasource { .. })) => {
            delete(provider, &format!("/api/datasources/uid/{}", segment(uid))).await
        }
        (Op::Delete, _, Some(GrafanaSpec::Dashboard { .. })) => {
            delete(provider, &format!("/api/dashboards/uid/{}", segment(uid))).await
        }
        (_, Some(GrafanaSpec::Folder { title }), observed) => {
            if observed.is_some() {
                return retitle_folder(provider, uid, title).await;
            }
            let body = json!({ "uid": uid, "title": title });
            match provider.client.call::<Value>(Method::POST, "/api/folders", Some(&body)).await {
                // Created by a lost earlier try: make sure the title is right.
                Err(error) if matches!(error.status(), Some(409 | 412)) => {
                    retitle_folder(provider, uid, title).await
                }
                other => other.map(drop),
            }
        }
        (_, Some(spec @ GrafanaSpec::Datasource { .. }), observed) => {
            put_datasource(provider, uid, spec, observed.is_some()).await
        }
        (_, Some(GrafanaSpec::Dashboard { folder, model }), _) => {
            let mut model = model.clone();
            if let Some(object) = model.as_object_mut() {
                object.insert("id".into(), Value::Null);
                object.insert("uid".into(), Value::String(uid.to_owned()));
            }
            let body = json!({ "dashboard": model, "folderUid": folder, "overwrite": true, "message": "apimon: converged to the repository" });
            provider
                .client
                .call::<Value>(Method::POST, "/api/dashboards/db", Some(&body))
                .await
                .map(drop)
        }
        _ => Ok(()),
    }
}

/// Grafana deletes a folder's dashboards with it. apimon's own ones in it
/// were deleted before (they depend on the folder), so any dashboard still
/// there is someone else's: never take it along.
async fn delete_folder(provider: &GrafanaProvider, uid: &str) -> Result<(), GrafanaError> {
    let path = format!("/api/search?folderUIDs={}&type=dash-db&limit=5000", segment(uid));
    let inside: Vec<Value> =
        provider.client.call(Method::GET, &path, None).await?.unwrap_or_default();
    let foreign: Vec<String> = inside
        .iter()
        .filter_map(|d| d.get("uid").and_then(Value::as_str))
        .map(str::to_owned)
        .collect();
    if !foreign.is_empty() {
        return Err(GrafanaError::Http {
            url: String::new(),
            method: "DELETE".into(),
            path: format!("/api/folders/{uid}"),
            status: 409,
            message: format!("refusing to delete folder {uid}: it holds dashboards apimon does not manage ({}); move or delete them by hand", foreign.join(", ")),
        });
    }
    delete(provider, &format!("/api/folders/{}", segment(uid))).await
}

/// Creates or updates datasource `uid` as `spec`.
async fn put_datasource(
    provider: &GrafanaProvider,
    uid: &str,
    spec: &GrafanaSpec,
    exists: bool,
) -> Result<(), GrafanaError> {
    let GrafanaSpec::Datasource { name, url, database, user, default, .. } = spec else {
        return Ok(());
    };
    let client = &provider.client;
    let password = provider.passwords.get(uid).map(|p| p.expose().clone()).unwrap_or_default();
    let body = json!({
        "uid": uid,
        "name": name,
        "type": "influxdb",
        "access": "proxy",
        "url": url,
        "user": user,
        "database": database,
        "isDefault": default,
        "basicAuth": false,
        "jsonData": { "dbName": database, "httpMode": "GET" },
        "secureJsonData": { "password": password },
    });
    let path = format!("/api/datasources/uid/{}", segment(uid));
    if exists {
        return client.call::<Value>(Method::PUT, &path, Some(&body)).await.map(drop);
    }
    match client.call::<Value>(Method::POST, "/api/datasources", Some(&body)).await {
        Err(error) if error.status() == Some(409) => {
            // Either a lost earlier try (same uid: update it) or a
            // datasource made by hand with this name (report it).
            match client.call::<Value>(Method::GET, &path, None).await? {
                Some(_) => client.call::<Value>(Method::PUT, &path, Some(&body)).await.map(drop),
                None => Err(error),
            }
        }
        other => other.map(drop),
    }
}

/// Sets a folder's title, whatever its version (apimon's title wins).
async fn retitle_folder(
    provider: &GrafanaProvider,
    uid: &str,
    title: &str,
) -> Result<(), GrafanaError> {
    let body = json!({ "title": title, "overwrite": true });
    provider
        .client
        .call::<Value>(Method::PUT, &format!("/api/folders/{}", segment(uid)), Some(&body))
        .await
        .map(drop)
}

async fn delete(provider: &GrafanaProvider, path: &str) -> Result<(), GrafanaError> {
    // 404 is `Ok(None)`: already gone is done.
    provider.client.call::<Value>(Method::DELETE, path, None).await.map(drop)
}
