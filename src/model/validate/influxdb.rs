//! `inventory/<env>/influxdb.yaml`: databases with parsed retention
//! durations, users with secret passwords and grants on declared
//! databases, and the users apimon.yaml names for administration and
//! results.

use std::collections::BTreeSet;

use super::checks::{is_influx_identifier, names_list};
use super::{Check, SectionCheck};
use crate::model::load::Document;
use crate::model::{raw, Database, InfluxDuration, Influxdb, RetentionPolicy, Sections};

/// Checks the file and the users `endpoint` names.
pub(in crate::model) fn check(cx: &mut SectionCheck<'_>, _: &Sections) -> Influxdb {
    let (check, root, doc) = (&mut *cx.check, cx.root, &cx.inventory.influxdb);
    let (env_name, endpoint) = (cx.env_name, &cx.env.influxdb);
    let databases = check_databases(check, doc);
    let names: BTreeSet<&str> = doc.value.databases.iter().map(|d| d.name.as_str()).collect();
    check_users(check, doc, &names);
    let influxdb = Influxdb { databases, users: doc.value.users.clone() };
    check_endpoint_users(check, root, env_name, endpoint, &influxdb, &names);
    influxdb
}

fn check_databases(check: &mut Check, doc: &Document<raw::InfluxdbFile>) -> Vec<Database> {
    let databases = &doc.value.databases;
    check.unique(
        doc,
        "database",
        databases
            .iter()
            .enumerate()
            .map(|(i, d)| (d.name.as_str(), format!("databases[{i}].name"))),
    );
    let mut checked = Vec::new();
    for (i, database) in databases.iter().enumerate() {
        let path = format!("databases[{i}]");
        if !is_influx_identifier(&database.name) {
            check.error(doc, &format!("{path}.name"), format!("invalid database name `{}`; expected a letter or `_` followed by letters, digits, `_` or `-`", database.name));
        }
        check.unique(
            doc,
            "retention policy",
            database
                .retention_policies
                .iter()
                .enumerate()
                .map(|(j, rp)| (rp.name.as_str(), format!("{path}.retention_policies[{j}].name"))),
        );
        let retention_policies = database
            .retention_policies
            .iter()
            .enumerate()
            .filter_map(|(j, rp)| {
                check_policy(check, doc, &format!("{path}.retention_policies[{j}]"), rp)
            })
            .collect();
        let defaults = database.retention_policies.iter().filter(|rp| rp.default).count();
        if !database.retention_policies.is_empty() && defaults != 1 {
            check.error(doc, &format!("{path}.retention_policies"), format!("database `{}` has {defaults} default retention policies; expected exactly one with `default: true`", database.name));
        }
        let continuous_queries = super::continuous_queries::check(check, doc, &path, database);
        checked.push(Database {
            name: database.name.clone(),
            retention_policies,
            continuous_queries,
        });
    }
    checked
}

fn check_policy(
    check: &mut Check,
    doc: &Document<raw::InfluxdbFile>,
    path: &str,
    rp: &raw::RetentionPolicy,
) -> Option<RetentionPolicy> {
    if !is_influx_identifier(&rp.name) {
        check.error(
            doc,
            &format!("{path}.name"),
            format!("invalid retention policy name `{}`", rp.name),
        );
    }
    let duration = InfluxDuration::parse(&rp.duration);
    if duration.is_none() {
        check.error(
            doc,
            &format!("{path}.duration"),
            format!(
                "invalid duration `{}`; expected an InfluxQL duration like 30d, 4w or INF",
                rp.duration
            ),
        );
    }
    let shard_duration = match &rp.shard_duration {
        None => Some(None),
        Some(text) => {
            match InfluxDuration::parse(text) {
                Some(shard) if !shard.is_infinite() => Some(Some(shard)),
                _ => {
                    check.error(doc, &format!("{path}.shard_duration"), format!("invalid shard duration `{text}`; expected an InfluxQL duration like 1d"));
                    None
                }
            }
        }
    };
    if rp.replication == 0 {
        check.error(doc, &format!("{path}.replication"), "replication 0; expected at least 1");
    }
    Some(RetentionPolicy {
        name: rp.name.clone(),
        duration: duration?,
        shard_duration: shard_duration?,
        replication: rp.replication,
        default: rp.default,
    })
}

fn check_users(check: &mut Check, doc: &Document<raw::InfluxdbFile>, databases: &BTreeSet<&str>) {
    let users = &doc.value.users;
    check.unique(
        doc,
        "user",
        users.iter().enumerate().map(|(i, u)| (u.name.as_str(), format!("users[{i}].name"))),
    );
    for (i, user) in users.iter().enumerate() {
        let path = format!("users[{i}]");
        if !is_influx_identifier(&user.name) {
            check.error(doc, &format!("{path}.name"), format!("invalid user name `{}`", user.name));
        }
        check.secret(doc, &format!("{path}.password"), &user.password, true);
        check.unique(
            doc,
            "grant on database",
            user.grants
                .iter()
                .enumerate()
                .map(|(j, g)| (g.database.as_str(), format!("{path}.grants[{j}].database"))),
        );
        for (j, grant) in user.grants.iter().enumerate() {
            if !databases.contains(grant.database.as_str()) {
                check.error(
                    doc,
                    &format!("{path}.grants[{j}].database"),
                    format!(
                        "unknown database `{}`; {}",
                        grant.database,
                        names_list(databases.iter().copied())
                    ),
                );
            }
        }
    }
}

/// The administrator must be an admin; the results user must be able to
/// write the results database.
fn check_endpoint_users(
    check: &mut Check,
    root: &Document<raw::Root>,
    env_name: &str,
    endpoint: &raw::InfluxdbEndpoint,
    influxdb: &Influxdb,
    databases: &BTreeSet<&str>,
) {
    let path = format!("environments.{env_name}.influxdb");
    let file = format!("inventory/{env_name}/influxdb.yaml");
    let known_users = || names_list(influxdb.users.iter().map(|u| u.name.as_str()));
    match influxdb.user(&endpoint.admin_user) {
        Some(user) if user.admin => {}
        Some(_) => check.error(
            root,
            &format!("{path}.admin_user"),
            format!(
                "user `{}` is not an administrator in {file}; expected `admin: true`",
                endpoint.admin_user
            ),
        ),
        None => check.error(
            root,
            &format!("{path}.admin_user"),
            format!("unknown InfluxDB user `{}` ({file}); {}", endpoint.admin_user, known_users()),
        ),
    }
    if !databases.contains(endpoint.results_database.as_str()) {
        check.error(
            root,
            &format!("{path}.results_database"),
            format!(
                "unknown database `{}` ({file}); {}",
                endpoint.results_database,
                names_list(databases.iter().copied())
            ),
        );
    }
    match influxdb.user(&endpoint.results_user) {
        Some(user) if !Influxdb::can_write(user, &endpoint.results_database) => check.error(
            root,
            &format!("{path}.results_user"),
            format!(
                "user `{}` cannot write to `{}`; expected a WRITE or ALL grant on it",
                user.name, endpoint.results_database
            ),
        ),
        Some(_) => {}
        None => check.error(
            root,
            &format!("{path}.results_user"),
            format!(
                "unknown InfluxDB user `{}` ({file}); {}",
                endpoint.results_user,
                known_users()
            ),
        ),
    }
}
