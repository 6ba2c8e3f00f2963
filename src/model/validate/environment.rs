//! One environment: its settings in apimon.yaml (endpoints, SSH access,
//! policy) and its keypairs; the other inventory files are checked by
//! their own modules and assembled here.

use std::collections::BTreeMap;

use super::checks::{http_url_port, is_http_url};
use super::{daemon, grafana, hosts, influxdb, networks, Check};
use crate::model::load::{Document, RawInventory};
use crate::model::{
    raw, Environment, GrafanaEndpoint, InfluxdbEndpoint, Keypair, Location, Policy, PublicKey,
    DEFAULT_MAX_DELETES,
};

/// Checks environment `env_name` and its inventory.
pub(super) fn check(
    check: &mut Check,
    root: &Document<raw::Root>,
    env_name: &str,
    env: &raw::Environment,
    inventory: &RawInventory,
    all_hosts: &mut BTreeMap<String, Location>,
) -> Environment {
    let env_path = format!("environments.{env_name}");
    check_monitored_clouds(check, root, &env_path, env);
    let influxdb_endpoint = check_influxdb_endpoint(check, root, &env_path, &env.influxdb);
    let grafana_endpoint = check_grafana_endpoint(check, root, &env_path, env.grafana.as_ref());
    check_ssh(check, root, &env_path, env.ssh.as_ref());
    let keypairs = check_keypairs(check, &inventory.keypairs);
    let networks = networks::check_networks(check, &inventory.networks);
    let security_groups = networks::check_security_groups(check, &inventory.security_groups);
    let declared = hosts::Declared {
        keypairs: inventory.keypairs.value.keypairs.iter().map(|k| k.name.as_str()).collect(),
        networks: &networks,
        groups: inventory
            .security_groups
            .value
            .security_groups
            .iter()
            .map(|g| g.name.as_str())
            .collect(),
    };
    let hosts = hosts::check(check, &inventory.hosts, env_name, env, &declared, all_hosts);
    daemon::check(check, root, &env_path, env, &hosts);
    let influxdb = influxdb::check(check, root, &inventory.influxdb, env_name, &env.influxdb);
    let folders = grafana::check_folders(check, root, &inventory.grafana, env_name, env, &hosts);
    Environment {
        name: env_name.to_owned(),
        description: env.description.clone(),
        placement: env.location,
        cloud: env.cloud.clone(),
        monitored_clouds: env.monitored_clouds.clone(),
        influxdb_endpoint,
        grafana_endpoint,
        ssh: env.ssh.clone(),
        daemon: env.daemon.clone(),
        policy: Policy::of(root.value.defaults.clone(), &env.policy),
        hosts,
        keypairs,
        security_groups,
        networks,
        influxdb,
        grafana: crate::model::Grafana { folders, datasources: Vec::new() },
        schedule: Vec::new(),
    }
}

impl Policy {
    /// The environment's own settings over the project defaults over apimon's.
    fn of(defaults: raw::Policy, own: &raw::Policy) -> Self {
        Self {
            max_deletes: own.max_deletes.or(defaults.max_deletes).unwrap_or(DEFAULT_MAX_DELETES),
            prune: own.prune.or(defaults.prune).unwrap_or(true),
            drift: own.drift.or(defaults.drift).unwrap_or(raw::DriftMode::Repair),
            resize_servers: own.resize_servers.or(defaults.resize_servers).unwrap_or(false),
        }
    }
}

fn check_monitored_clouds(
    check: &mut Check,
    root: &Document<raw::Root>,
    env_path: &str,
    env: &raw::Environment,
) {
    for (cloud_name, cloud) in &env.monitored_clouds {
        let path = format!("{env_path}.monitored_clouds.{cloud_name}");
        if !is_http_url(&cloud.auth_url) {
            check.error(
                root,
                &format!("{path}.auth_url"),
                format!("invalid URL `{}`; expected http:// or https://", cloud.auth_url),
            );
        }
        check.secret(root, &format!("{path}.username"), &cloud.username, false);
        check.secret(root, &format!("{path}.password"), &cloud.password, true);
    }
}

fn check_influxdb_endpoint(
    check: &mut Check,
    root: &Document<raw::Root>,
    env_path: &str,
    endpoint: &raw::InfluxdbEndpoint,
) -> InfluxdbEndpoint {
    let port = http_url_port(&endpoint.url).unwrap_or_else(|| {
        check.error(
            root,
            &format!("{env_path}.influxdb.url"),
            format!("invalid URL `{}`; expected http:// or https://", endpoint.url),
        );
        0
    });
    InfluxdbEndpoint {
        url: endpoint.url.clone(),
        port,
        admin_user: endpoint.admin_user.clone(),
        results_database: endpoint.results_database.clone(),
        results_user: endpoint.results_user.clone(),
        results_via: endpoint.results_via,
        ca_file: endpoint.ca_file.as_ref().map(Into::into),
    }
}

fn check_grafana_endpoint(
    check: &mut Check,
    root: &Document<raw::Root>,
    env_path: &str,
    endpoint: Option<&raw::GrafanaEndpoint>,
) -> Option<GrafanaEndpoint> {
    let endpoint = endpoint?;
    if !is_http_url(&endpoint.url) {
        check.error(
            root,
            &format!("{env_path}.grafana.url"),
            format!("invalid URL `{}`; expected http:// or https://", endpoint.url),
        );
    }
    if let Some(token) = &endpoint.token {
        check.secret(root, &format!("{env_path}.grafana.token"), token, true);
    }
    if let Some(password) = &endpoint.admin_password {
        check.secret(root, &format!("{env_path}.grafana.admin_password"), password, true);
    }
    if endpoint.token.is_none() && endpoint.admin_password.is_none() {
        check.error(
            root,
            &format!("{env_path}.grafana"),
            "no credentials; expected `token` (a service-account token) or `admin_password` (the admin user grafana.ini sets up), or both",
        );
    }
    Some(GrafanaEndpoint {
        url: endpoint.url.clone(),
        token: endpoint.token.clone(),
        admin_password: endpoint.admin_password.clone(),
    })
}

fn check_ssh(
    check: &mut Check,
    root: &Document<raw::Root>,
    env_path: &str,
    ssh: Option<&raw::SshAccess>,
) {
    let Some(ssh) = ssh else { return };
    let ssh_path = format!("{env_path}.ssh");
    for (key, command) in
        [("package_check", &ssh.package_check), ("package_install", &ssh.package_install)]
    {
        // package_update takes no package.
        if !command.contains("{package}") {
            check.error(
                root,
                &format!("{ssh_path}.{key}"),
                "the command must contain `{package}`, replaced by the package name",
            );
        }
    }
    if !ssh.root.starts_with('/') {
        check.error(
            root,
            &format!("{ssh_path}.root"),
            format!("`{}` is not an absolute path", ssh.root),
        );
    }
}

fn check_keypairs(check: &mut Check, doc: &Document<raw::KeypairsFile>) -> Vec<Keypair> {
    let keypairs = &doc.value.keypairs;
    check.unique(
        doc,
        "keypair",
        keypairs.iter().enumerate().map(|(i, k)| (k.name.as_str(), format!("keypairs[{i}].name"))),
    );
    let mut checked = Vec::new();
    for (i, keypair) in keypairs.iter().enumerate() {
        match (&keypair.public_key, keypair.existing) {
            (Some(_), true) => check.error(
                doc,
                &format!("keypairs[{i}].existing"),
                "`existing: true` with a `public_key`; expected one: a key apimon registers, or an existing keypair it only references",
            ),
            (None, false) => check.error(
                doc,
                &format!("keypairs[{i}]"),
                "no `public_key`; expected an OpenSSH public key line, or `existing: true` for a keypair the project already has",
            ),
            (None, true) => checked.push(Keypair { name: keypair.name.clone(), public_key: None }),
            (Some(line), false) => match PublicKey::parse(line) {
                Ok(public_key) => checked
                    .push(Keypair { name: keypair.name.clone(), public_key: Some(public_key) }),
                Err(why) => check.error(
                    doc,
                    &format!("keypairs[{i}].public_key"),
                    format!("invalid public key ({why}); expected an OpenSSH public key line like `ssh-ed25519 AAAA... comment`"),
                ),
            },
        }
    }
    checked
}
