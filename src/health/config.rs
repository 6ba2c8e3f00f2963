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
}

/// Where the service listens, unless configured: loopback.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8190);

fn default_listen() -> SocketAddr {
    DEFAULT_LISTEN
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
    })
}
