//! Rendering: the desired state → the files each host needs.
//!
//! Handlebars in strict mode: a missing variable is an error naming the
//! template, its line and column and the variable, never an empty string.
//! Built-in templates ship in `templates/`; a repository's `templates/`
//! replaces one by file name. Output is in memory; nothing is written here.
//! [`templates`] compiles and renders them, within limits: a repository's
//! template can neither recurse nor nest without bound nor grow its output
//! past a limit, so no commit can take the process down while rendering.

mod daemon;
pub mod health;
mod templates;

pub use daemon::{CONFIG_PATH as DAEMON_CONFIG_PATH, UNIT as DAEMON_UNIT};
pub use templates::{Templates, MAX_BLOCK_DEPTH, MAX_OUTPUT_BYTES};

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::model::{
    DesiredState, Diagnostics, Environment, Host, Location, MaybeSecret, Role, Runner, Secrets,
    Sensitive,
};

/// The built-in templates: name and source.
pub const BUILT_IN: [(&str, &str); 11] = [
    ("cloud-init.yaml.hbs", include_str!("../../templates/cloud-init.yaml.hbs")),
    ("telegraf.conf.hbs", include_str!("../../templates/telegraf.conf.hbs")),
    ("clouds.yaml.hbs", include_str!("../../templates/clouds.yaml.hbs")),
    ("apimon-health.service.hbs", include_str!("../../templates/apimon-health.service.hbs")),
    ("executor.yaml.hbs", include_str!("../../templates/executor.yaml.hbs")),
    ("apimon-executor.service.hbs", include_str!("../../templates/apimon-executor.service.hbs")),
    ("telegraf.service.hbs", include_str!("../../templates/telegraf.service.hbs")),
    ("influxdb.conf.hbs", include_str!("../../templates/influxdb.conf.hbs")),
    ("grafana.ini.hbs", include_str!("../../templates/grafana.ini.hbs")),
    ("apimon.service.hbs", include_str!("../../templates/apimon.service.hbs")),
    ("daemon.yaml.hbs", include_str!("../../templates/daemon.yaml.hbs")),
];

/// Rendering failed.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// A template failed while rendering (strict mode: missing variable).
    #[error("{origin}: template {template} for host {host}: {message}")]
    Template {
        /// Template name.
        template: String,
        /// Where the failing expression is.
        origin: Box<Location>,
        /// Host being rendered.
        host: String,
        /// What went wrong.
        message: String,
    },
    /// A secret the templates need is not set.
    #[error("{}", .0)]
    Secrets(Diagnostics),
    /// A secret pinned to other hosts would be written to this one.
    #[error("host {host}: {file} would hold secret `{secret}`, which the secrets file pins to other hosts")]
    Pinned {
        /// The host.
        host: String,
        /// The file.
        file: String,
        /// The secret.
        secret: String,
    },
    /// The daemon would refuse what was rendered for it.
    #[error("host {host}: the daemon would refuse {what}: {message}")]
    Daemon {
        /// Host the daemon runs on.
        host: String,
        /// Which file.
        what: String,
        /// Why.
        message: String,
    },
}

/// One file for a host.
#[derive(Debug, Clone)]
pub struct RenderedFile {
    /// Absolute path on the host.
    pub path: String,
    /// Content; may contain secrets, so it never prints.
    pub content: Sensitive<Vec<u8>>,
    /// Hex sha256 of the content.
    pub sha256: String,
    /// Permission bits.
    pub mode: u32,
    /// Owner user.
    pub owner: String,
    /// Owner group.
    pub group: String,
    /// Units restarted when this file changes.
    pub restarts: Vec<String>,
    /// Template it came from (`None` for copied files).
    pub template: Option<String>,
}

/// What one host gets.
#[derive(Debug, Clone)]
pub struct RenderedHost {
    /// Environment.
    pub env: String,
    /// Host name.
    pub host: String,
    /// Role.
    pub role: Role,
    /// cloud-init user data.
    pub user_data: String,
    /// Hex sha256 of the user data, kept in server metadata.
    pub user_data_sha256: String,
    /// Files the host provider converges.
    pub files: Vec<RenderedFile>,
    /// systemd units that must be enabled and running.
    pub units: Vec<String>,
    /// Whether the environment's daemon runs here (its files, account and
    /// binary are converged; its unit is enabled, never restarted).
    pub runs_daemon: bool,
    /// Runs its environment's health service.
    pub runs_health: bool,
}

/// Everything rendered, by host name.
#[derive(Debug, Clone, Default)]
pub struct Rendered {
    /// By host name.
    pub hosts: BTreeMap<String, RenderedHost>,
}

pub use crate::digest::sha256_hex;

pub(crate) fn secret_value(
    secrets: &Secrets,
    value: &MaybeSecret,
    missing: &mut Vec<String>,
) -> String {
    match value {
        MaybeSecret::Plain(text) => text.clone(),
        MaybeSecret::Secret(name) => match secrets.value(name) {
            Some(value) => value.expose().clone(),
            None => {
                missing.push(name.clone());
                String::new()
            }
        },
    }
}

/// Renders every host of the selected environments.
///
/// # Errors
/// A template failed, or a secret it needs is missing (when resolving).
pub fn render_all(
    state: &DesiredState,
    environments: &[&Environment],
    templates: &Templates,
    secrets: &Secrets,
) -> Result<Rendered, RenderError> {
    crate::model::authority::check_transport(state, environments).map_err(RenderError::Secrets)?;
    if let Secrets::Resolved(_) = secrets {
        state.check_secrets(secrets, Some(environments)).map_err(RenderError::Secrets)?;
        crate::model::authority::check_pins(state, secrets, Some(environments))
            .map_err(RenderError::Secrets)?;
    }
    let mut rendered = Rendered::default();
    for environment in environments {
        for host in &environment.hosts {
            let output = render_host(state, environment, host, templates, secrets)?;
            check_pinned(host, &output, secrets)?;
            rendered.hosts.insert(host.name.clone(), output);
        }
    }
    Ok(rendered)
}

/// A secret the secrets file pins to other hosts must not be in anything
/// rendered for `host` (whichever template, built in or overridden, put
/// it there).
fn check_pinned(host: &Host, output: &RenderedHost, secrets: &Secrets) -> Result<(), RenderError> {
    let Secrets::Resolved(store) = secrets else { return Ok(()) };
    let names = [Some(host.name.to_ascii_lowercase()), host.address.map(|a| a.to_string())];
    for (name, value, hosts) in store.pinned() {
        if names.iter().flatten().any(|n| hosts.contains(n)) {
            continue;
        }
        // As written, and as a JSON string writes it (escaped quotes and
        // backslashes: the health service's files are JSON).
        let json = serde_json::to_string(value.expose()).unwrap_or_default();
        let escaped = json.get(1..json.len().saturating_sub(1)).unwrap_or_default().to_owned();
        let needles: Vec<&[u8]> = [value.expose().as_bytes(), escaped.as_bytes()]
            .into_iter()
            .filter(|n| !n.is_empty())
            .collect();
        let found = std::iter::once(("cloud-init user data", output.user_data.as_bytes()))
            .chain(output.files.iter().map(|f| (f.path.as_str(), f.content.expose().as_slice())))
            .find(|(_, bytes)| {
                needles.iter().any(|needle| bytes.windows(needle.len()).any(|w| w == *needle))
            });
        if let Some((file, _)) = found {
            return Err(RenderError::Pinned {
                host: host.name.clone(),
                file: file.to_owned(),
                secret: name.to_owned(),
            });
        }
    }
    Ok(())
}

/// The template context shared by every template of one host.
fn context(
    state: &DesiredState,
    environment: &Environment,
    host: &Host,
    secrets: &Secrets,
) -> Value {
    let mut missing = Vec::new();
    let results_user = environment
        .influxdb
        .users
        .iter()
        .find(|u| u.name == environment.influxdb_endpoint.results_user);
    let results_password =
        results_user.map(|u| secret_value(secrets, &u.password, &mut missing)).unwrap_or_default();
    let monitored_clouds: serde_json::Map<String, Value> = environment
        .monitored_clouds
        .iter()
        .map(|(name, cloud)| {
            let value = json!({
                "auth_url": cloud.auth_url,
                "region": cloud.region,
                "project_name": cloud.project_name,
                "domain_name": cloud.domain_name,
                "username": secret_value(secrets, &cloud.username, &mut missing),
                "password": secret_value(secrets, &cloud.password, &mut missing),
            });
            (name.clone(), value)
        })
        .collect();
    let scenarios = scenarios_context(state, environment, host);
    let sweepers: Vec<Value> = environment
        .sweepers
        .iter()
        .map(|(cloud, sweeper)| {
            json!({
                "cloud": cloud,
                "interval_seconds": sweeper.interval.as_secs(),
                "age_seconds": sweeper.age.as_secs(),
                "select": if sweeper.whole_project { "project" } else { "job_id" },
                "dry_run": sweeper.dry_run,
                "platform_project": sweeper.platform_project,
            })
        })
        .collect();
    let logs = environment.logs.as_ref().map(|logs| {
        let key = logs.temp_url_key.as_ref().map(|k| secret_value(secrets, k, &mut missing));
        json!({
            "cloud": logs.cloud,
            "container": logs.container,
            "retention_seconds": logs.retention.as_secs(),
            "public": logs.public,
            "temp_url_key": key,
        })
    });
    let probes: Vec<Value> = environment
        .catalog_probes
        .iter()
        .map(|(cloud, probe)| {
            json!({
                "cloud": cloud,
                "interval_seconds": probe.interval.as_secs(),
                "interface": probe.interface,
                "skip": probe.skip,
                "concurrency": probe.concurrency,
                "timeout_seconds": probe.timeout.as_secs(),
            })
        })
        .collect();
    let volumes = volumes_context(host);
    let grafana = environment.grafana_endpoint.as_ref().map_or_else(
        || json!({ "url": "", "port": 3000, "admin_password": "" }),
        |endpoint| {
            let port =
                reqwest::Url::parse(&endpoint.url).ok().and_then(|u| u.port()).unwrap_or(3000);
            let admin_password = endpoint
                .admin_password
                .as_ref()
                .map(|p| secret_value(secrets, p, &mut missing))
                .unwrap_or_default();
            json!({ "url": endpoint.url, "port": port, "admin_password": admin_password })
        },
    );
    let address = host.address.map_or_else(|| "0.0.0.0".to_owned(), |a| a.to_string());
    let bind_address = format!("{address}:{}", environment.influxdb_endpoint.port);
    json!({
        "project": state.project,
        "environment": {
            "name": environment.name,
            "description": environment.description,
            "placement": environment.placement,
            "cloud": environment.cloud,
        },
        "host": {
            "name": host.name,
            "role": host.role,
            "address": host.address,
            "flavor": host.flavor,
            "availability_zone": host.availability_zone,
            "image": host.image,
            "metadata": host.metadata,
            "volumes": volumes,
        },
        "hosts": environment.hosts.iter().map(|h| json!({"name": h.name, "role": h.role, "address": h.address})).collect::<Vec<_>>(),
        "ssh_user": environment.ssh.as_ref().map_or("ubuntu", |s| s.user.as_str()),
        "influxdb": {
            "url": environment.influxdb_endpoint.url,
            "bind_address": bind_address,
            "admin_user": environment.influxdb_endpoint.admin_user,
            "results_database": environment.influxdb_endpoint.results_database,
            "results_user": environment.influxdb_endpoint.results_user,
            "results_password": results_password,
            "results_direct": environment.influxdb_endpoint.results_via == crate::model::raw::ResultsVia::Direct,
            "write_url": format!("{}/write", environment.influxdb_endpoint.url.trim_end_matches('/')),
        },
        "monitored_clouds": monitored_clouds,
        "grafana": grafana,
        "scenarios": scenarios,
        "probes": probes,
        "sweepers": sweepers,
        "logs": logs,
        "runtime": state.runtime.as_ref().map(|runtime| json!({
            "id": runtime.id,
            "ansible_playbook": crate::layout::ANSIBLE_PLAYBOOK,
        })),
    })
}

/// The scenarios executor `host` of `environment` runs, as its configuration lists them.
fn scenarios_context(state: &DesiredState, environment: &Environment, host: &Host) -> Vec<Value> {
    environment
        .schedule
        .iter()
        .filter(|entry| entry.executors.contains(&host.name))
        .filter_map(|entry| {
            let scenario = state.scenarios.get(&entry.scenario)?;
            let mut value = json!({
                "name": scenario.name,
                "cron": entry.cron.normalized(),
                "timeout_seconds": scenario.timeout.as_secs(),
                "runner": scenario.runner.kind(),
            });
            let extra = match &scenario.runner {
                Runner::Ansible { playbook, base_dir, cloud, extra_vars, vars, cleanup } => {
                    let mut value =
                        json!({ "playbook": playbook, "cloud": cloud, "extra_vars": extra_vars });
                    if let (Some(dir), Some(object)) = (base_dir, value.as_object_mut()) {
                        object.insert("base_dir".into(), json!(dir));
                    }
                    if let (false, Some(object)) = (vars.is_empty(), value.as_object_mut()) {
                        object.insert("vars".into(), json!(vars));
                    }
                    if let (Some(cleanup), Some(object)) = (cleanup, value.as_object_mut()) {
                        object.insert("cleanup_playbook".into(), json!(cleanup.playbook));
                        object.insert(
                            "cleanup_timeout_seconds".into(),
                            json!(cleanup.timeout.as_secs()),
                        );
                    }
                    value
                }
                Runner::Http { url, method, expect_status } => {
                    json!({ "url": url, "method": method, "expect_status": expect_status })
                }
            };
            if let (Some(target), Value::Object(extra)) = (value.as_object_mut(), extra) {
                target.extend(extra);
            }
            Some(value)
        })
        .collect()
}

/// Linux's name for disk number `n` (0 = `a`, 25 = `z`, 26 = `aa`): the
/// root disk is `vda`, data volumes follow in order.
fn disk_suffix(mut n: usize) -> String {
    let mut letters = Vec::new();
    loop {
        letters.push(char::from(b'a' + (n % 26) as u8));
        if n < 26 {
            break;
        }
        n = n / 26 - 1;
    }
    letters.iter().rev().collect()
}

/// The host's data volumes with their device and mount point.
fn volumes_context(host: &Host) -> Vec<Value> {
    host.volumes
        .iter()
        .enumerate()
        .map(|(i, volume)| {
            let device = volume
                .device
                .clone()
                .unwrap_or_else(|| format!("/dev/vd{}", disk_suffix(i + 1)));
            let mount_point = if let Some(path) = &volume.mount_path {
                path.clone()
            } else if let Some(path) = host.role.profile().data_dir.filter(|_| i == 0) {
                path.to_owned()
            } else {
                format!("/mnt/{}", volume.name)
            };
            json!({ "name": volume.name, "size_gb": volume.size_gb, "device": device, "mount_point": mount_point })
        })
        .collect()
}

fn render_host(
    state: &DesiredState,
    environment: &Environment,
    host: &Host,
    templates: &Templates,
    secrets: &Secrets,
) -> Result<RenderedHost, RenderError> {
    let mut context = context(state, environment, host, secrets);
    let user_data = templates.render("cloud-init.yaml.hbs", &host.name, &context)?;
    let mut files = Vec::new();
    for spec in host.role.profile().files {
        let text = templates.render(spec.template, &host.name, &context)?;
        files.push(RenderedFile {
            path: spec.path.to_owned(),
            sha256: sha256_hex(text.as_bytes()),
            content: Sensitive::new(text.into_bytes()),
            mode: spec.mode,
            owner: spec.owner.to_owned(),
            group: spec.group.to_owned(),
            restarts: spec.restarts.iter().map(|s| (*s).to_owned()).collect(),
            template: Some(spec.template.to_owned()),
        });
    }
    if host.role == Role::Executor {
        // Playbooks and their data go to the executor verbatim, and the
        // scenario repository's tree as pinned (its own ansible.cfg, roles,
        // library/ and inventory included).
        let trees = state
            .scenario_files
            .iter()
            .map(|(path, bytes)| (format!("/etc/apimon/scenarios/{path}"), bytes))
            .chain(state.scenario_repository.iter().flat_map(|r| &r.files).map(|(path, bytes)| {
                (format!("{}/{path}", crate::model::SCENARIO_REPOSITORY_DIR), bytes)
            }));
        for (path, bytes) in trees {
            files.push(RenderedFile {
                path,
                sha256: sha256_hex(bytes),
                content: Sensitive::new(bytes.clone()),
                mode: 0o644,
                owner: "root".to_owned(),
                group: "apimon".to_owned(),
                restarts: Vec::new(),
                template: None,
            });
        }
    }
    let runs_daemon = environment.daemon_host().is_some_and(|h| h.name == host.name);
    let mut units: Vec<String> =
        host.role.profile().units.iter().map(|s| (*s).to_owned()).collect();
    if let (true, Some(daemon)) = (runs_daemon, &environment.daemon) {
        files.extend(daemon::files(environment, host, daemon, templates, secrets, &mut context)?);
        units.push(daemon::UNIT.to_owned());
    }
    let runs_health = health::host_of(state, environment).is_some_and(|h| h.name == host.name);
    if runs_health {
        files.extend(health::files(state, environment, host, templates, secrets, &context)?);
        units.push(health::UNIT.to_owned());
    }
    Ok(RenderedHost {
        env: environment.name.clone(),
        host: host.name.clone(),
        role: host.role,
        user_data_sha256: sha256_hex(user_data.as_bytes()),
        user_data,
        files,
        units,
        runs_daemon,
        runs_health,
    })
}

#[cfg(test)]
mod tests {
    use super::templates::tests::templates_with;
    use super::*;

    #[test]
    fn disks_are_named_as_linux_names_them() {
        let names: Vec<String> =
            [0, 1, 25, 26, 27, 701, 702].into_iter().map(disk_suffix).collect();
        assert_eq!(names, ["a", "b", "z", "aa", "ab", "zz", "aaa"]);
    }

    #[test]
    fn built_in_templates_compile() {
        assert!(Templates::new(&BTreeMap::new()).is_ok());
    }

    #[test]
    fn missing_variable_names_template_position_and_variable() {
        let templates =
            templates_with("telegraf.conf.hbs", "a\nurl = {{influxdb.nope}}\n").expect("compiles");
        let error = templates
            .render("telegraf.conf.hbs", "h1", &json!({"influxdb": {}}))
            .expect_err("strict");
        let text = error.to_string();
        assert!(text.starts_with("templates/telegraf.conf.hbs:2:7:"), "{text}");
        assert!(text.contains("influxdb.nope"), "{text}");
        assert!(text.contains("host h1"), "{text}");
    }

    #[test]
    fn missing_variable_inside_json_helper_is_an_error_too() {
        let templates =
            templates_with("telegraf.conf.hbs", "x = {{json influxdb.nope}}\n").expect("compiles");
        let error = templates
            .render("telegraf.conf.hbs", "h1", &json!({"influxdb": {}}))
            .expect_err("strict");
        assert!(error.to_string().contains("influxdb.nope"), "{error}");
    }

    #[test]
    fn json_helper_quotes_and_escapes() {
        let templates = templates_with("telegraf.conf.hbs", "x = {{json v}}").expect("compiles");
        let out =
            templates.render("telegraf.conf.hbs", "h", &json!({"v": "a\"b<c>"})).expect("renders");
        assert_eq!(out, r#"x = "a\"b<c>""#);
    }

    #[test]
    fn syntax_error_names_file_line_and_column() {
        let problems = templates_with("influxdb.conf.hbs", "ok\n{{#if x}}\nnever closed\n")
            .expect_err("syntax");
        let text = problems.to_string();
        assert!(text.starts_with("templates/influxdb.conf.hbs:"), "{text}");
        assert!(text.contains("template syntax error"), "{text}");
    }

    #[test]
    fn unknown_override_name_is_rejected() {
        let problems = templates_with("cloud-init.yml.hbs", "x").expect_err("unknown");
        assert!(problems.to_string().contains("unknown template name"), "{problems}");
    }
}
