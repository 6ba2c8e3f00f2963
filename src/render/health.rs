//! The files of the host that runs an environment's health service (the
//! host health.yaml's `hosts` names, by default the first bastion): its
//! unit, its configuration (the environment, its InfluxDB as the
//! administrator, the dead-man's switches from the inventory and the
//! schedule), the repository's health.yaml as it is, and the values of the
//! secrets its routes name (mode 0600). The service re-reads its files
//! when they change; a new unit restarts it.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use super::{secret_value, sha256_hex, RenderError, RenderedFile, Templates};
use crate::model::health::routes::Sink;
use crate::model::{DesiredState, Environment, Host, MaybeSecret, Role, Secrets, Sensitive};

/// The service's unit.
pub const UNIT: &str = "apimon-health";
/// Its unit file.
pub const UNIT_PATH: &str = "/etc/systemd/system/apimon-health.service";
/// Its configuration.
pub const CONFIG_PATH: &str = "/etc/apimon/health.yaml";
/// The repository's health.yaml.
pub const RULES_PATH: &str = "/etc/apimon/health-rules.yaml";
/// The values of the secrets the routes name.
pub const SECRETS_PATH: &str = "/etc/apimon/health-secrets.yaml";

/// The host that runs `environment`'s health service, if it has rules.
pub fn host_of<'a>(state: &DesiredState, environment: &'a Environment) -> Option<&'a Host> {
    let health = state.health.as_ref()?;
    match health.hosts.get(&environment.name) {
        Some(name) => environment.hosts.iter().find(|h| h.name == *name),
        None => environment.host_with_role(Role::Bastion),
    }
}

fn file(path: &str, text: String, mode: u32, owner: &str, template: Option<&str>) -> RenderedFile {
    RenderedFile {
        path: path.to_owned(),
        sha256: sha256_hex(text.as_bytes()),
        content: Sensitive::new(text.into_bytes()),
        mode,
        owner: owner.to_owned(),
        group: "apimon".to_owned(),
        // The service re-reads its rules itself; a new unit or configuration
        // (its listener) restarts it.
        restarts: if path == UNIT_PATH || path == CONFIG_PATH {
            vec![UNIT.to_owned()]
        } else {
            Vec::new()
        },
        template: template.map(str::to_owned),
    }
}

/// The health service's files on `host`.
pub(super) fn files(
    state: &DesiredState,
    environment: &Environment,
    host: &Host,
    templates: &Templates,
    secrets: &Secrets,
    context: &Value,
) -> Result<Vec<RenderedFile>, RenderError> {
    let (Some(rules), Some(text)) = (&state.health, &state.health_text) else {
        return Ok(Vec::new());
    };
    let mut missing = Vec::new();
    let endpoint = &environment.influxdb_endpoint;
    let admin_password = environment
        .influxdb
        .users
        .iter()
        .find(|u| u.name == endpoint.admin_user)
        .map(|u| secret_value(secrets, &u.password, &mut missing))
        .unwrap_or_default();
    let executors: Vec<&str> = environment
        .hosts
        .iter()
        .filter(|h| h.role == Role::Executor)
        .map(|h| h.name.as_str())
        .collect();
    let scenarios: serde_json::Map<String, Value> = environment
        .schedule
        .iter()
        .map(|s| (s.scenario.clone(), Value::String(s.cron.expression().to_owned())))
        .collect();
    let config = json!({
        "environments": [environment.name],
        "influxdb": {
            "url": endpoint.url,
            "database": endpoint.results_database,
            "username": endpoint.admin_user,
            "password": admin_password,
            "ca_file": endpoint.ca_file,
        },
        "rules_file": RULES_PATH,
        "state_dir": format!("{}/health", crate::layout::STATE_DIR),
        "secrets_file": SECRETS_PATH,
        "grafana_url": environment.grafana_endpoint.as_ref().map(|g| g.url.clone()),
        "page_url": rules.page_url,
        "listen": rules.listen.map_or_else(|| crate::layout::HEALTH_LISTEN.to_owned(), |l| l.to_string()),
        "allow_from": rules.allow_from.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "deadman": {
            "executors": {environment.name.clone(): executors},
            "scenarios": {environment.name.clone(): scenarios},
        },
    });
    let mut config_text = format!(
        "# Rendered by apimon for {}: the health service of environment {}. Do not edit by hand.\n",
        host.name, environment.name
    );
    config_text.push_str(&serde_json::to_string_pretty(&config).unwrap_or_default());
    config_text.push('\n');
    // The secrets the routes name, as the daemon's secrets file writes them.
    let names: BTreeSet<&str> = rules
        .routes
        .iter()
        .filter(|r| r.environments.as_ref().is_none_or(|e| e.contains(&environment.name)))
        .flat_map(|r| match &r.sink {
            Sink::Webhook { secret, .. } => vec![secret],
            Sink::Matrix { access_token, .. } => vec![access_token],
            Sink::Email { login, .. } => login.iter().flat_map(|(u, p)| [u, p]).collect(),
        })
        .filter_map(|v| match v {
            MaybeSecret::Secret(name) => Some(name.as_str()),
            MaybeSecret::Plain(_) => None,
        })
        .collect();
    let mut secrets_text =
        String::from("# Rendered by apimon: the secrets health.yaml's routes name.\n");
    for name in names {
        let value = secret_value(secrets, &MaybeSecret::Secret(name.to_owned()), &mut missing);
        secrets_text
            .push_str(&format!("{name}: {}\n", serde_json::to_string(&value).unwrap_or_default()));
    }
    let unit = templates.render("apimon-health.service.hbs", &host.name, context)?;
    Ok(vec![
        file(UNIT_PATH, unit, 0o644, "root", Some("apimon-health.service.hbs")),
        file(CONFIG_PATH, config_text, 0o640, "root", None),
        file(RULES_PATH, text.clone(), 0o640, "root", None),
        file(SECRETS_PATH, secrets_text, 0o600, "apimon", None),
    ])
}
