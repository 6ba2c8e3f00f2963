//! Changing a Grafana: one change is one request, plus the checks that keep
//! apimon from touching what is not its own: a folder is deleted only when
//! nothing else is inside, a dashboard is saved without `overwrite` (so
//! Grafana up to 11.2 refuses to let it take over another dashboard of the
//! same title) and the uid Grafana answers with must be the one sent.
//! Every request is safe to repeat.

use reqwest::Method;
use serde_json::{json, Value};

use crate::plan::{ItemChange, Op, Planned};

use super::client::{segment, GrafanaError};
use super::{GrafanaProvider, GrafanaSpec};

pub(super) async fn apply(
    provider: &GrafanaProvider,
    change: &Planned<ItemChange<GrafanaSpec>>,
) -> Result<(), GrafanaError> {
    let uid = &*change.id.name;
    let client = &provider.client;
    match (&change.op, &change.change.desired, &change.change.observed) {
        (Op::NoOp, ..) => Ok(()),
        (_, _, Some(GrafanaSpec::Datasource { read_only: true, .. })) => {
            Err(read_only(provider, &format!("datasource {uid}")))
        }
        (_, _, Some(GrafanaSpec::Dashboard { read_only: true, .. })) => {
            Err(read_only(provider, &format!("dashboard {uid}")))
        }
        (Op::Delete, _, Some(GrafanaSpec::Folder { .. })) => delete_folder(provider, uid).await,
        (Op::Delete, _, Some(GrafanaSpec::Datasource { .. })) => {
            client.delete(&format!("/api/datasources/uid/{}", segment(uid))).await
        }
        (Op::Delete, _, Some(GrafanaSpec::Dashboard { .. })) => {
            client.delete(&format!("/api/dashboards/uid/{}", segment(uid))).await
        }
        (_, Some(GrafanaSpec::Folder { title }), observed) => {
            if observed.is_some() {
                return retitle_folder(provider, uid, title).await;
            }
            let body = json!({ "uid": uid, "title": title });
            match client.send::<Value>(Method::POST, "/api/folders", Some(&body)).await {
                // Created by a lost earlier try: make sure the title is
                // right. Another folder of that title: Grafana's message.
                Err(error) if matches!(error.status(), Some(409 | 412)) => {
                    let path = format!("/api/folders/{}", segment(uid));
                    match client.get_optional::<Value>(&path).await? {
                        Some(_) => retitle_folder(provider, uid, title).await,
                        None => Err(error),
                    }
                }
                other => other.map(drop),
            }
        }
        (_, Some(spec @ GrafanaSpec::Datasource { .. }), observed) => {
            put_datasource(provider, uid, spec, observed.is_some()).await
        }
        (_, Some(GrafanaSpec::Dashboard { folder, model, .. }), observed) => {
            let version = match observed {
                Some(GrafanaSpec::Dashboard { model, .. }) => model.get("version").cloned(),
                _ => None,
            };
            save_dashboard(provider, uid, folder, model, version).await
        }
        _ => Ok(()),
    }
}

fn read_only(provider: &GrafanaProvider, what: &str) -> GrafanaError {
    GrafanaError::ReadOnly {
        url: provider.client.url().to_owned(),
        what: what.to_owned(),
        status: 0,
        message: "observed as provisioned; nothing was sent".to_owned(),
    }
}

/// Saves dashboard `uid` at `version` (the one observed; none for a new
/// one). A version changed since (an edit by hand, a lost earlier try) is
/// read again once: the repository wins.
async fn save_dashboard(
    provider: &GrafanaProvider,
    uid: &str,
    folder: &str,
    model: &Value,
    mut version: Option<Value>,
) -> Result<(), GrafanaError> {
    let client = &provider.client;
    let title = model.get("title").and_then(Value::as_str).unwrap_or_default().to_owned();
    for attempt in 0..2 {
        let mut model = model.clone();
        if let Some(object) = model.as_object_mut() {
            object.insert("id".into(), Value::Null);
            object.insert("uid".into(), Value::String(uid.to_owned()));
            match &version {
                Some(version) => object.insert("version".into(), version.clone()),
                None => object.remove("version"),
            };
        }
        let body = json!({ "dashboard": model, "folderUid": folder, "overwrite": false, "message": "apimon: converged to the repository" });
        match client.send::<Value>(Method::POST, "/api/dashboards/db", Some(&body)).await {
            Ok(answer) => {
                let saved = answer.get("uid").and_then(Value::as_str).unwrap_or(uid);
                if saved != uid {
                    return Err(GrafanaError::TakeOver {
                        url: client.url().to_owned(),
                        uid: uid.to_owned(),
                        other: saved.to_owned(),
                        title,
                        folder: folder.to_owned(),
                    });
                }
                return Ok(());
            }
            Err(error) if attempt == 0 && is_version_mismatch(&error) => {
                let path = format!("/api/dashboards/uid/{}", segment(uid));
                let current = client.get_optional::<Value>(&path).await?;
                version = current.and_then(|c| c.pointer("/dashboard/version").cloned());
            }
            Err(error) if is_name_exists(&error) => {
                let other = same_title(provider, folder, &title, uid).await?;
                return Err(GrafanaError::TakeOver {
                    url: client.url().to_owned(),
                    uid: uid.to_owned(),
                    other: other.unwrap_or_else(|| "(unknown uid)".to_owned()),
                    title,
                    folder: folder.to_owned(),
                });
            }
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

fn is_version_mismatch(error: &GrafanaError) -> bool {
    matches!(error.status(), Some(409 | 412))
        && error.message().is_some_and(|m| m.contains("changed by someone else"))
}

fn is_name_exists(error: &GrafanaError) -> bool {
    matches!(error.status(), Some(400 | 409 | 412))
        && error.message().is_some_and(|m| m.to_ascii_lowercase().contains("same name"))
}

/// The uid of another dashboard titled `title` in `folder`.
async fn same_title(
    provider: &GrafanaProvider,
    folder: &str,
    title: &str,
    uid: &str,
) -> Result<Option<String>, GrafanaError> {
    let path = format!(
        "/api/search?type=dash-db&folderUIDs={}&query={}&limit=5000",
        segment(folder),
        segment(title)
    );
    let hits: Vec<Value> = provider.client.get(&path).await?;
    Ok(hits
        .iter()
        .filter(|h| {
            h.get("title").and_then(Value::as_str).is_some_and(|t| t.eq_ignore_ascii_case(title))
        })
        .filter_map(|h| h.get("uid").and_then(Value::as_str))
        .find(|other| *other != uid)
        .map(str::to_owned))
}

/// Grafana deletes a folder's dashboards and subfolders with it. apimon's
/// own dashboards in it were deleted before (they depend on the folder)
/// and apimon makes no subfolders, so anything still inside — at any
/// depth, which takes a subfolder at the first level — is someone else's:
/// never take it along.
async fn delete_folder(provider: &GrafanaProvider, uid: &str) -> Result<(), GrafanaError> {
    let path = format!("/api/search?folderUIDs={}&limit=5000", segment(uid));
    let inside: Vec<Value> = provider.client.get(&path).await?;
    let foreign: Vec<String> = inside
        .iter()
        .filter(|hit| hit.get("folderUid").and_then(Value::as_str).is_none_or(|f| f == uid))
        .filter_map(|hit| {
            let kind = match hit.get("type").and_then(Value::as_str) {
                Some("dash-folder") => "folder",
                _ => "dashboard",
            };
            hit.get("uid").and_then(Value::as_str).map(|u| format!("{kind} {u}"))
        })
        .collect();
    if !foreign.is_empty() {
        return Err(GrafanaError::NotEmpty {
            url: provider.client.url().to_owned(),
            uid: uid.to_owned(),
            inside: foreign.join(", "),
        });
    }
    provider.client.delete(&format!("/api/folders/{}", segment(uid))).await
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
        return client.send::<Value>(Method::PUT, &path, Some(&body)).await.map(drop);
    }
    match client.send::<Value>(Method::POST, "/api/datasources", Some(&body)).await {
        Err(error) if error.status() == Some(409) => {
            // Either a lost earlier try (same uid: update it) or a
            // datasource made by hand with this name (report it).
            match client.get_optional::<Value>(&path).await? {
                Some(_) => client.send::<Value>(Method::PUT, &path, Some(&body)).await.map(drop),
                None => Err(error),
            }
        }
        other => other.map(drop),
    }
}

/// Sets a folder's title at its current version (apimon's title wins).
async fn retitle_folder(
    provider: &GrafanaProvider,
    uid: &str,
    title: &str,
) -> Result<(), GrafanaError> {
    let path = format!("/api/folders/{}", segment(uid));
    let current: Option<Value> = provider.client.get_optional(&path).await?;
    let version = current.as_ref().and_then(|c| c.get("version")).cloned().unwrap_or(Value::Null);
    let body = json!({ "title": title, "version": version, "overwrite": true });
    provider.client.send::<Value>(Method::PUT, &path, Some(&body)).await.map(drop)
}
