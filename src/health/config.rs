//! The health service's configuration, `/etc/apimon/health.yaml`: the
//! environments it evaluates, where the measurements are, where it
//! listens, and the file of its rules (the repository's health.yaml as it
//! is, checked as the repository's). Unknown keys are errors; every error
//! names the file, line and column.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::model::health::Health;
use crate::model::load::ConfigFile;
use crate::model::Sensitive;

/// As written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// The environments evaluated (each its own `environment` tag).
    pub environments: Vec<String>,
    /// The results database.
    pub influxdb: RawInfluxdb,
    /// Where `/api/v1/health` and `/metrics` answer.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The rules: a copy of the repository's health.yaml.
    pub rules_file: PathBuf,
    /// Where incidents and the notification outbox are kept.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// The values of the secrets the routes name (the daemon's secrets
    /// file format: `name: value`), mode 0600.
    pub secrets_file: Option<PathBuf>,
    /// The status page as people reach it (linked from notifications).
    pub page_url: Option<String>,
    /// Grafana's base URL (its Health dashboard linked from notifications).
    pub grafana_url: Option<String>,
    /// What should report: executors, scheduled scenarios, the daemon.
    #[serde(default)]
    pub deadman: super::deadman::Deadman,
    /// Networks allowed to connect (empty: anyone who reaches `listen`).
    #[serde(default)]
    pub allow_from: Vec<ipnet::IpNet>,
}

fn default_state_dir() -> PathBuf {
    PathBuf::from(crate::layout::STATE_DIR).join("health")
}

/// `influxdb:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInfluxdb {
    /// Base URL.
    pub url: String,
    /// Database of the results (queried and written).
    pub database: String,
    /// User (reads the results, writes `apimon_health`).
    pub username: Option<String>,
    /// Its password.
    pub password: Option<String>,
    /// A CA bundle (PEM) that signs its certificate, besides the system's.
    pub ca_file: Option<PathBuf>,
}

fn default_listen() -> SocketAddr {
    crate::layout::HEALTH_LISTEN
        .parse()
        .unwrap_or(SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8190))
}

/// Checked.
#[derive(Debug, Clone)]
pub struct Config {
    /// Environments.
    pub environments: Vec<String>,
    /// InfluxDB base URL.
    pub url: String,
    /// Database.
    pub database: String,
    /// Basic auth.
    pub credentials: Option<(String, Sensitive<String>)>,
    /// Listen address.
    pub listen: SocketAddr,
    /// The rules, checked as the repository's are.
    pub rules: Health,
    /// Where they are.
    pub rules_file: PathBuf,
    /// Incidents and the outbox.
    pub state_dir: PathBuf,
    /// Each route's destination with its secrets.
    pub targets: std::collections::BTreeMap<String, crate::notify::Target>,
    /// Links in notifications.
    pub links: super::alerts::Links,
    /// The dead-man's switches.
    pub deadman: super::deadman::Deadman,
    /// Networks allowed to connect.
    pub allow_from: Vec<ipnet::IpNet>,
    /// InfluxDB's CA bundle.
    pub ca_file: Option<PathBuf>,
    /// The route secrets' file (re-read when it changes).
    pub secrets_file: Option<PathBuf>,
}

/// The configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Cannot be read.
    #[error("cannot read health config {path}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Invalid; every problem listed.
    #[error("invalid health config:\n{}", .0.join("\n"))]
    Invalid(Vec<String>),
}

/// Reads and checks `path`.
///
/// # Errors
/// Unreadable, unparsable, or rules that do not check.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = crate::fsutil::read_text_limited(path, crate::fsutil::MAX_CONFIG_BYTES)
        .map_err(|e| ConfigError::Read { path: path.to_owned(), source: e.into() })?;
    let mut file = ConfigFile::<RawConfig>::parse(path, &text).map_err(ConfigError::Invalid)?;
    let raw = file.value.clone();
    if raw.environments.is_empty() {
        file.problem("environments", "none; expected the environments this service evaluates");
    }
    let rules = match crate::fsutil::read_text_limited(
        &raw.rules_file,
        crate::fsutil::MAX_CONFIG_BYTES,
    ) {
        Err(error) => {
            file.problem(
                "rules_file",
                format!("cannot read {}: {error}", raw.rules_file.display()),
            );
            None
        }
        Ok(text) => {
            match crate::model::health::check_rules(&raw.rules_file, &text, &raw.environments) {
                Ok(Some(rules)) => Some(rules),
                Ok(None) => {
                    file.problem("rules_file", "no flag templates, flags or expressions in it; expected the repository's health rules");
                    None
                }
                Err(problems) => return Err(ConfigError::Invalid(problems)),
            }
        }
    };
    let secrets = match &raw.secrets_file {
        None => crate::model::Secrets::Resolved(crate::model::secret::SecretStore::default()),
        Some(path) => match crate::model::secret::SecretStore::load(Some(path), std::iter::empty())
        {
            Ok(store) => crate::model::Secrets::Resolved(store),
            Err(error) => {
                file.problem("secrets_file", error.to_string());
                crate::model::Secrets::Resolved(crate::model::secret::SecretStore::default())
            }
        },
    };
    // Only the routes of the environments this service evaluates: the
    // others' secrets are not on this host.
    let routes: Vec<crate::model::health::routes::Route> = rules
        .iter()
        .flat_map(|r| &r.routes)
        .filter(|r| {
            r.environments.as_ref().is_none_or(|e| raw.environments.iter().any(|x| e.contains(x)))
        })
        .cloned()
        .collect();
    let targets = match &rules {
        Some(_) => targets(&mut file, &routes, &secrets),
        None => std::collections::BTreeMap::new(),
    };
    for (environment, scenarios) in &raw.deadman.scenarios {
        for (scenario, cron) in scenarios {
            if let Err(message) = crate::cron::Schedule::parse(cron) {
                file.problem(&format!("deadman.scenarios.{environment}.{scenario}"), message);
            }
        }
    }
    file.finish().map_err(ConfigError::Invalid)?;
    let Some(rules) = rules else { return Err(ConfigError::Invalid(vec!["no rules".to_owned()])) };
    Ok(Config {
        environments: raw.environments,
        url: raw.influxdb.url.trim_end_matches('/').to_owned(),
        database: raw.influxdb.database,
        credentials: raw
            .influxdb
            .username
            .map(|user| (user, Sensitive::new(raw.influxdb.password.unwrap_or_default()))),
        listen: raw.listen,
        rules,
        rules_file: raw.rules_file,
        state_dir: raw.state_dir,
        targets,
        links: super::alerts::Links { page: raw.page_url, grafana: raw.grafana_url },
        deadman: raw.deadman,
        allow_from: raw.allow_from,
        secrets_file: raw.secrets_file,
        ca_file: raw.influxdb.ca_file,
    })
}

/// Each route's destination, its secrets resolved; a secret that is not
/// set, or a CA file that cannot be read, is a problem of `rules_file`.
fn targets(
    file: &mut ConfigFile<RawConfig>,
    routes: &[crate::model::health::routes::Route],
    secrets: &crate::model::Secrets,
) -> std::collections::BTreeMap<String, crate::notify::Target> {
    use crate::model::health::routes::Sink;
    use crate::model::raw::MaybeSecret;
    use crate::notify::Target;
    let mut missing = Vec::new();
    let mut value = |v: &MaybeSecret| match v {
        MaybeSecret::Plain(text) => Sensitive::new(text.clone()),
        MaybeSecret::Secret(name) => secrets.value(name).unwrap_or_else(|| {
            missing.push(name.clone());
            Sensitive::default()
        }),
    };
    let mut targets = std::collections::BTreeMap::new();
    let mut unreadable = Vec::new();
    for route in routes {
        let target = match &route.sink {
            Sink::Webhook { url, secret } => {
                Target::Webhook { url: url.clone(), secret: value(secret) }
            }
            Sink::Matrix { homeserver, room, access_token } => Target::Matrix {
                homeserver: homeserver.clone(),
                room: room.clone(),
                token: value(access_token),
            },
            Sink::Email { host, port, ca_file, from, to, login } => {
                let ca_pem = ca_file.as_ref().and_then(|path| {
                    crate::fsutil::read_limited(Path::new(path), 1024 * 1024)
                        .map_err(|e| {
                            unreadable.push(format!("route {}: ca_file {path}: {e}", route.name))
                        })
                        .ok()
                });
                Target::Email {
                    host: host.clone(),
                    port: *port,
                    ca_pem,
                    from: from.clone(),
                    to: to.clone(),
                    login: login.as_ref().map(|(u, p)| (value(u).expose().clone(), value(p))),
                }
            }
        };
        targets.insert(route.name.clone(), target);
    }
    for name in missing {
        file.problem("secrets_file", format!("secret `{name}` a route names is not set"));
    }
    for problem in unreadable {
        file.problem("rules_file", problem);
    }
    targets
}
