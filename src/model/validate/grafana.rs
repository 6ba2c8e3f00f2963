//! `inventory/<env>/grafana.yaml`: folders, and InfluxDB datasources that
//! log in with a read-only user of this or another environment.

use std::collections::BTreeMap;

use super::checks::{is_grafana_uid, names_list};
use super::{Check, SectionCheck};
use crate::model::load::Document;
use crate::model::sections::RawInventory;
use crate::model::{raw, Datasource, Environment, Grafana, Role, SecretUse, Sections};

/// Checks the folders, and that Grafana objects have a Grafana to live in.
/// Datasources are checked once every environment is known.
pub(in crate::model) fn check_folders(cx: &mut SectionCheck<'_>, earlier: &Sections) -> Grafana {
    let (check, root, doc) = (&mut *cx.check, cx.root, &cx.inventory.grafana);
    let (env_name, env, hosts) = (cx.env_name, cx.env, &earlier.hosts);
    let folders = &doc.value.folders;
    check.unique(
        doc,
        "folder",
        folders.iter().enumerate().map(|(i, f)| (f.uid.as_str(), format!("folders[{i}].uid"))),
    );
    for (i, folder) in folders.iter().enumerate() {
        if !is_grafana_uid(&folder.uid) {
            check.error(
                doc,
                &format!("folders[{i}].uid"),
                format!(
                    "invalid uid `{}`; expected at most 40 of a-z, A-Z, 0-9, `_`, `-`",
                    folder.uid
                ),
            );
        }
        if folder.title.trim().is_empty() {
            check.error(
                doc,
                &format!("folders[{i}].title"),
                "empty title; expected the folder's name in Grafana",
            );
        }
    }
    let has_grafana_host = hosts.iter().any(|h| h.role == Role::Grafana);
    let declares_grafana = !folders.is_empty() || !doc.value.datasources.is_empty();
    if declares_grafana && !has_grafana_host {
        check.error(doc, "", format!("environment `{env_name}` declares Grafana objects but has no host with `role: grafana`"));
    }
    if has_grafana_host && env.grafana.is_none() {
        check.error(root, &format!("environments.{env_name}"), format!("environment `{env_name}` has a grafana host but no `grafana:` endpoint (url, token)"));
    }
    Grafana { folders: folders.clone(), datasources: Vec::new() }
}

/// Checks the datasources of `env_name`, which may read the InfluxDB of
/// any environment in `environments`.
pub(super) fn check_datasources(
    check: &mut Check,
    inventory: &RawInventory,
    env_name: &str,
    environments: &BTreeMap<String, Environment>,
    raw_environments: &BTreeMap<String, raw::Environment>,
) -> Vec<Datasource> {
    let doc = &inventory.grafana;
    let list = &doc.value.datasources;
    check.unique(
        doc,
        "datasource",
        list.iter().enumerate().map(|(i, d)| (d.name.as_str(), format!("datasources[{i}].name"))),
    );
    let uids: Vec<String> =
        list.iter().map(|d| d.uid.clone().unwrap_or_else(|| d.name.clone())).collect();
    check.unique(
        doc,
        "datasource uid",
        list.iter().enumerate().map(|(i, d)| {
            (
                uids[i].as_str(),
                format!("datasources[{i}].{}", if d.uid.is_some() { "uid" } else { "name" }),
            )
        }),
    );
    let defaults = list.iter().filter(|d| d.default).count();
    if defaults > 1 {
        check.error(
            doc,
            "datasources",
            format!("{defaults} datasources have `default: true`; expected at most one"),
        );
    }
    let mut checked = Vec::new();
    for (i, raw_ds) in list.iter().enumerate() {
        let path = format!("datasources[{i}]");
        if !is_grafana_uid(&uids[i]) {
            check.error(doc, &format!("{path}.uid"), format!("invalid uid `{}`; expected at most 40 of a-z, A-Z, 0-9, `_`, `-` (set `uid` when the name has other characters)", uids[i]));
        }
        let source_env = raw_ds.environment.clone().unwrap_or_else(|| env_name.to_owned());
        let Some(source) = environments.get(&source_env) else {
            if !raw_environments.contains_key(&source_env) {
                check.error(
                    doc,
                    &format!("{path}.environment"),
                    format!(
                        "unknown environment `{source_env}`; {}",
                        names_list(raw_environments.keys().map(String::as_str))
                    ),
                );
            }
            continue;
        };
        let datasource = check_datasource(check, doc, &path, env_name, raw_ds, source);
        checked.extend(datasource.map(|d| Datasource { uid: uids[i].clone(), ..d }));
    }
    checked
}

/// One datasource reading `source`'s InfluxDB.
fn check_datasource(
    check: &mut Check,
    doc: &Document<raw::GrafanaFile>,
    path: &str,
    env_name: &str,
    raw_ds: &raw::Datasource,
    source: &Environment,
) -> Option<Datasource> {
    let influx_file = format!("inventory/{}/influxdb.yaml", source.name);
    if !source.influxdb.databases.iter().any(|d| d.name == raw_ds.database) {
        check.error(
            doc,
            &format!("{path}.database"),
            format!(
                "unknown database `{}` ({influx_file}); {}",
                raw_ds.database,
                names_list(source.influxdb.databases.iter().map(|d| d.name.as_str()))
            ),
        );
    }
    let Some(user) = source.influxdb.user(&raw_ds.user) else {
        check.error(
            doc,
            &format!("{path}.user"),
            format!(
                "unknown InfluxDB user `{}` ({influx_file}); {}",
                raw_ds.user,
                names_list(source.influxdb.users.iter().map(|u| u.name.as_str()))
            ),
        );
        return None;
    };
    let read_only = !user.admin && user.grants.iter().all(|g| g.privilege == raw::Privilege::Read);
    if !read_only {
        check.error(doc, &format!("{path}.user"), format!("user `{}` can write; a datasource must log in with a read-only user (only READ grants, not admin)", user.name));
    }
    if !user.admin && !user.grants.iter().any(|g| g.database == raw_ds.database) {
        check.error(
            doc,
            &format!("{path}.user"),
            format!(
                "user `{}` has no READ grant on `{}` ({influx_file})",
                user.name, raw_ds.database
            ),
        );
    }
    let raw::MaybeSecret::Secret(password_secret) = &user.password else { return None };
    // The datasource needs that password where its Grafana is applied,
    // which may be another environment than the user's.
    check.secret_uses.push(SecretUse {
        name: password_secret.clone(),
        env: Some(env_name.to_owned()),
        location: doc.at(&format!("{path}.user")),
        path: format!("{path}.user"),
    });
    Some(Datasource {
        name: raw_ds.name.clone(),
        uid: String::new(),
        environment: source.name.clone(),
        url: source.influxdb_endpoint.url.clone(),
        database: raw_ds.database.clone(),
        user: raw_ds.user.clone(),
        password_secret: password_secret.clone(),
        default: raw_ds.default,
    })
}
