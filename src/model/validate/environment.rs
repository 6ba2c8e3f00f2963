//! One environment: its settings in apimon.yaml (endpoints, SSH access,
//! policy), then its inventory, section by section (`model::sections`).

use std::collections::BTreeMap;
use std::time::Duration;

use super::checks::{http_url_port, is_http_url};
use super::{daemon, Check, SectionCheck};
use crate::model::load::Document;
use crate::model::sections::RawInventory;
use crate::model::{
    raw, CatalogProbe, Environment, GrafanaEndpoint, InfluxdbEndpoint, Location, Logs, Policy,
    Sections, Sweeper, DEFAULT_MAX_DELETES,
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
    let (catalog_probes, sweepers) = check_monitored_clouds(check, root, &env_path, env);
    let logs = env.logs.as_ref().map(|logs| check_logs(check, root, &env_path, env, logs));
    let influxdb_endpoint = check_influxdb_endpoint(check, root, &env_path, &env.influxdb);
    let grafana_endpoint = check_grafana_endpoint(check, root, &env_path, env.grafana.as_ref());
    check_ssh(check, root, &env_path, env.ssh.as_ref());
    let sections =
        Sections::check(&mut SectionCheck { check, root, env_name, env, inventory, all_hosts });
    daemon::check(check, root, &env_path, env, &sections.hosts);
    check_jump_host(check, root, &env_path, env.ssh.as_ref(), &sections.hosts);
    Environment {
        name: env_name.to_owned(),
        description: env.description.clone(),
        placement: env.location,
        cloud: env.cloud.clone(),
        monitored_clouds: env.monitored_clouds.clone(),
        catalog_probes,
        sweepers,
        logs,
        influxdb_endpoint,
        grafana_endpoint,
        ssh: env.ssh.clone(),
        daemon: env.daemon.clone(),
        policy: Policy::of(root.value.defaults.clone(), &env.policy),
        sections,
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
) -> (BTreeMap<String, CatalogProbe>, BTreeMap<String, Sweeper>) {
    let mut probes = BTreeMap::new();
    let mut sweepers = BTreeMap::new();
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
        if let Some(catalog) = &cloud.probes.catalog {
            let probe =
                check_catalog_probes(check, root, &format!("{path}.probes.catalog"), catalog);
            probes.insert(cloud_name.clone(), probe);
        }
        if let Some(sweeper) = &cloud.sweeper {
            let sweeper = check_sweeper(check, root, &format!("{path}.sweeper"), sweeper);
            sweepers.insert(cloud_name.clone(), sweeper);
        }
    }
    (probes, sweepers)
}

/// `logs`: a monitored cloud, a container name, a retention, and a key
/// (a secret) unless the container is public.
fn check_logs(
    check: &mut Check,
    root: &Document<raw::Root>,
    env_path: &str,
    env: &raw::Environment,
    logs: &raw::Logs,
) -> Logs {
    let path = format!("{env_path}.logs");
    if !env.monitored_clouds.contains_key(&logs.cloud) {
        let known = super::checks::names_list(env.monitored_clouds.keys().map(String::as_str));
        check.error(
            root,
            &format!("{path}.cloud"),
            format!("`{}` is not a monitored cloud of this environment; {known}", logs.cloud),
        );
    }
    if logs.cloud.contains(':') {
        // `logs.container/<cloud>:<container>` names the resource.
        check.error(
            root,
            &format!("{path}.cloud"),
            "a cloud that holds job logs has no `:` in its name",
        );
    }
    let bad = |c: char| c.is_control() || matches!(c, '/' | '?' | '#' | '%');
    if logs.container.is_empty() || logs.container.len() > 256 || logs.container.contains(bad) {
        check.error(
            root,
            &format!("{path}.container"),
            format!(
                "invalid container `{}`; expected 1 to 256 characters without `/`, `?`, `#`, `%` or control characters",
                logs.container.escape_debug()
            ),
        );
    }
    let retention = check.duration(
        root,
        &format!("{path}.retention"),
        logs.retention.as_deref(),
        Duration::from_secs(14 * 86_400),
        "14d",
    );
    match &logs.temp_url_key {
        Some(key) => check.secret(root, &format!("{path}.temp_url_key"), key, true),
        None if !logs.public => check.error(root, &path, "no `temp_url_key`; a container that is not public is read through temp URLs, signed with that key (a secret)"),
        None => {}
    }
    Logs {
        cloud: logs.cloud.clone(),
        container: logs.container.clone(),
        retention,
        public: logs.public,
        temp_url_key: logs.temp_url_key.clone(),
    }
}

/// `sweeper`: durations and the selection.
fn check_sweeper(
    check: &mut Check,
    root: &Document<raw::Root>,
    path: &str,
    sweeper: &raw::RawSweeper,
) -> Sweeper {
    let secs = Duration::from_secs;
    let interval = check.duration(
        root,
        &format!("{path}.interval"),
        sweeper.interval.as_deref(),
        secs(20 * 60),
        "20m",
    );
    let age =
        check.duration(root, &format!("{path}.age"), sweeper.age.as_deref(), secs(2 * 3600), "2h");
    let whole_project = match sweeper.select.as_deref() {
        None | Some("job_id") => false,
        Some("project") => true,
        Some(other) => {
            check.error(root, &format!("{path}.select"), format!("unknown selection `{other}`; expected job_id (names that carry a run's job id) or project (everything old enough: a project of the scenarios' own)"));
            false
        }
    };
    Sweeper {
        interval,
        age,
        whole_project,
        dry_run: sweeper.dry_run,
        platform_project: sweeper.platform_project,
    }
}

/// `probes.catalog`: durations, the interface, a concurrency of at least 1.
fn check_catalog_probes(
    check: &mut Check,
    root: &Document<raw::Root>,
    path: &str,
    catalog: &raw::CatalogProbes,
) -> CatalogProbe {
    let secs = Duration::from_secs;
    let interval = check.duration(
        root,
        &format!("{path}.interval"),
        catalog.interval.as_deref(),
        secs(30),
        "30s",
    );
    let timeout = check.duration(
        root,
        &format!("{path}.timeout"),
        catalog.timeout.as_deref(),
        secs(10),
        "10s",
    );
    let interface = catalog.interface.clone().unwrap_or_else(|| "public".to_owned());
    if !matches!(interface.as_str(), "public" | "internal" | "admin") {
        check.error(
            root,
            &format!("{path}.interface"),
            format!("unknown interface `{interface}`; expected public, internal or admin"),
        );
    }
    if catalog.concurrency == Some(0) {
        check.error(root, &format!("{path}.concurrency"), "0; expected at least 1");
    }
    CatalogProbe {
        interval,
        interface,
        skip: catalog.skip.clone(),
        concurrency: catalog.concurrency.unwrap_or(8).max(1),
        timeout,
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
        via: endpoint.via,
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
        via: endpoint.via,
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
    if ssh.unit_settle_seconds > MAX_UNIT_SETTLE_SECONDS {
        check.error(
            root,
            &format!("{ssh_path}.unit_settle_seconds"),
            format!(
                "{} seconds; expected at most {MAX_UNIT_SETTLE_SECONDS} (every restart waits this long)",
                ssh.unit_settle_seconds
            ),
        );
    }
}

/// Without `bastion_address`, the jump host is the first bastion, at the
/// floating IP the cloud gives it (hosts.yaml requires one of a bastion).
fn check_jump_host(
    check: &mut Check,
    root: &Document<raw::Root>,
    env_path: &str,
    ssh: Option<&raw::SshAccess>,
    hosts: &[crate::model::Host],
) {
    if ssh.is_some_and(|ssh| ssh.bastion_address.is_none())
        && !hosts.iter().any(|h| h.role == crate::model::Role::Bastion)
    {
        check.error(
            root,
            &format!("{env_path}.ssh"),
            "no `bastion_address` and no host with `role: bastion`: apimon reaches the hosts through the bastion, at the address given here or at the floating IP of the first bastion in hosts.yaml",
        );
    }
}

/// The longest a restarted unit is watched.
const MAX_UNIT_SETTLE_SECONDS: u64 = 300;
