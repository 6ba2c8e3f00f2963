//! `/etc/apimon/daemon.yaml`: where the repository is, where secrets and
//! state live, how often to poll, when to repair drift, and when
//! destructive changes may run. Unknown keys are errors with file, line
//! and column.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::apply::ApplyOptions;
use crate::cron::Schedule;
use crate::model::load::ConfigFile;

/// The daemon configuration file, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// The desired-state repository.
    pub repository: RawRepository,
    /// State directory (owned resources, history, lock, commit exports).
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Secrets file (mode 0600 or stricter).
    pub secrets_file: Option<PathBuf>,
    /// SSH private key for the bastion and the hosts.
    pub ssh_key: Option<PathBuf>,
    /// known_hosts with the bastion's and the hosts' keys.
    pub ssh_known_hosts: Option<PathBuf>,
    /// clouds.yaml with each environment's `cloud`; the standard places when absent.
    pub clouds_file: Option<PathBuf>,
    /// Environments this daemon manages; all when absent.
    #[serde(default)]
    pub environments: Vec<String>,
    /// Address of the HTTP endpoint (/healthz, /metrics, /status, /hooks/git).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// File holding the webhook secret (HMAC key; also the bearer token of POST /trigger).
    pub webhook_secret_file: Option<PathBuf>,
    /// When to re-observe and repair (or report) drift; 5 or 6 cron fields.
    pub drift_cron: Option<String>,
    /// When destructive changes (delete, replace) may run; always when absent.
    #[serde(default)]
    pub maintenance_windows: Vec<RawWindow>,
    /// Changes applied at once.
    #[serde(default = "default_parallelism")]
    pub parallelism: usize,
    /// Tries per change on transient errors.
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// Allow plans that delete more than an environment's max_deletes.
    #[serde(default)]
    pub allow_deletes: bool,
    /// The host this daemon runs on (`<environment>/<host>`): changes that
    /// would destroy it or cut access to it are held. Default: the host
    /// whose name is this machine's hostname (cloud-init sets it so).
    pub runs_on: Option<String>,
}

/// `repository:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRepository {
    /// Remote URL: https://, ssh://, git:// or file://.
    pub url: String,
    /// Branch.
    #[serde(default = "default_branch")]
    pub branch: String,
    /// How often the remote branch is checked.
    #[serde(default = "default_poll")]
    pub poll_interval_seconds: u64,
    /// SSH private key (ssh:// remotes).
    pub ssh_key: Option<PathBuf>,
    /// File holding an access token (https:// remotes).
    pub token_file: Option<PathBuf>,
    /// OpenSSH allowed-signers file: commits must be signed by one of them.
    pub ssh_allowed_signers: Option<PathBuf>,
    /// GnuPG home with the accepted keys: commits must be signed by one of them.
    pub gnupg_home: Option<PathBuf>,
    /// Most bytes one fetch may receive (default 1 GiB); a larger pack is
    /// refused and the commit in force stays.
    pub max_fetch_bytes: Option<u64>,
}

/// A maintenance window: the same in daemon.yaml and in apimon.yaml's `daemon:`.
pub use crate::model::raw::DaemonWindow as RawWindow;

/// The longest maintenance window: a year (longer ones would overflow
/// the time arithmetic, and mean "always").
pub const MAX_WINDOW_MINUTES: u64 = 366 * 24 * 60;

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/apimon")
}
use crate::model::raw::daemon_defaults::{
    attempts as default_attempts, branch as default_branch, listen as default_listen,
    parallelism as default_parallelism, poll as default_poll,
};

/// A checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from.
    pub path: PathBuf,
    /// As written.
    pub raw: RawConfig,
    /// Poll interval.
    pub poll_interval: Duration,
    /// Parsed drift schedule.
    pub drift: Option<Schedule>,
    /// Parsed maintenance windows.
    pub windows: Vec<(Schedule, Duration)>,
    /// Apply options.
    pub apply: ApplyOptions,
}

/// The configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Unreadable.
    #[error("cannot read daemon config {path}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Invalid: every problem with its place.
    #[error("invalid daemon config:\n{}", .0.join("\n"))]
    Invalid(Vec<String>),
}

impl Config {
    /// Reads and checks `path`.
    ///
    /// # Errors
    /// Unreadable, or invalid (file:line:column for each problem).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = crate::fsutil::read_text_limited(path, crate::fsutil::MAX_CONFIG_BYTES)
            .map_err(|e| ConfigError::Read { path: path.to_owned(), source: e.into() })?;
        Self::parse(path, &text)
    }

    /// Checks `text`, naming `path` in errors.
    ///
    /// # Errors
    /// As [`Config::load`].
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let mut file = ConfigFile::<RawConfig>::parse(path, text).map_err(ConfigError::Invalid)?;
        let parse_cron = Schedule::parse;
        let drift = match file.value.drift_cron.clone() {
            None => None,
            Some(expression) => match parse_cron(&expression) {
                Ok(schedule) => Some(schedule),
                Err(message) => {
                    file.problem("drift_cron", message);
                    None
                }
            },
        };
        let mut windows = Vec::new();
        for (i, window) in file.value.maintenance_windows.clone().iter().enumerate() {
            match parse_cron(&window.cron) {
                Ok(schedule) => {
                    windows.push((schedule, Duration::from_secs(window.duration_minutes * 60)))
                }
                Err(message) => file.problem(&format!("maintenance_windows[{i}].cron"), message),
            }
            if !(1..=MAX_WINDOW_MINUTES).contains(&window.duration_minutes) {
                file.problem(
                    &format!("maintenance_windows[{i}].duration_minutes"),
                    format!(
                        "{}; expected 1 to {MAX_WINDOW_MINUTES} (a year)",
                        window.duration_minutes
                    ),
                );
            }
        }
        if file.value.repository.poll_interval_seconds == 0 {
            file.problem("repository.poll_interval_seconds", "0; expected at least 1");
        }
        if file.value.repository.max_fetch_bytes == Some(0) {
            file.problem("repository.max_fetch_bytes", "0; expected at least 1");
        }
        if file.value.listen.parse::<std::net::SocketAddr>().is_err() {
            let message = format!(
                "invalid address `{}`; expected host:port like 127.0.0.1:9110",
                file.value.listen
            );
            file.problem("listen", message);
        }
        if let Some(runs_on) = file.value.runs_on.clone() {
            let valid = runs_on.split_once('/').is_some_and(|(env, host)| {
                !env.is_empty() && !host.is_empty() && !host.contains('/')
            });
            if !valid {
                file.problem(
                    "runs_on",
                    format!("invalid `{runs_on}`; expected <environment>/<host>, like outside/outside-bastion"),
                );
            }
        }
        let raw = file.finish().map_err(ConfigError::Invalid)?;
        Ok(Self {
            path: path.to_owned(),
            poll_interval: Duration::from_secs(raw.repository.poll_interval_seconds),
            apply: ApplyOptions {
                parallelism: raw.parallelism.max(1),
                max_attempts: raw.attempts.max(1),
                ..ApplyOptions::default()
            },
            drift,
            windows,
            raw,
        })
    }

    /// The next opening of a maintenance window after `now`; `None` when
    /// none is configured (every moment is one).
    pub fn next_window_opening(
        &self,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Option<chrono::DateTime<chrono::Utc>> {
        self.windows.iter().filter_map(|(schedule, _)| schedule.next_after(&now)).min()
    }

    /// Whether `now` is inside a maintenance window (always, when none is configured).
    pub fn in_maintenance_window(&self, now: chrono::DateTime<chrono::Utc>) -> bool {
        if self.windows.is_empty() {
            return true;
        }
        self.windows.iter().any(|(schedule, length)| {
            let length = chrono::Duration::from_std(*length).unwrap_or_default();
            // The latest opening at or before now: the first one after (now - length).
            schedule.next_after(&(now - length)).is_some_and(|opened| opened <= now)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_config_gets_defaults() {
        let config = Config::parse(
            Path::new("daemon.yaml"),
            "repository: {url: 'file:///srv/desired.git'}\n",
        )
        .expect("valid");
        assert_eq!(config.raw.repository.branch, "main");
        assert_eq!(config.poll_interval, Duration::from_secs(60));
        assert!(config.in_maintenance_window(chrono::Utc::now()));
    }

    #[test]
    fn unknown_keys_and_bad_cron_name_their_place() {
        let error = Config::parse(Path::new("daemon.yaml"), "repository: {url: x}\npoll: 3\n")
            .expect_err("unknown")
            .to_string();
        assert!(error.contains("daemon.yaml:2:1: poll: unknown field `poll`"), "{error}");
        let error = Config::parse(
            Path::new("daemon.yaml"),
            "repository: {url: x}\ndrift_cron: '99 * * * *'\n",
        )
        .expect_err("cron")
        .to_string();
        assert!(error.contains("daemon.yaml:2:13: drift_cron: invalid cron expression"), "{error}");
    }

    #[test]
    fn maintenance_windows_open_for_their_duration() {
        let config = Config::parse(Path::new("d.yaml"), "repository: {url: x}\nmaintenance_windows: [{cron: '0 22 * * *', duration_minutes: 120}]\n").expect("valid");
        let at = |h: u32, m: u32| {
            chrono::NaiveDate::from_ymd_opt(2026, 11, 24)
                .and_then(|d| d.and_hms_opt(h, m, 0))
                .map(|t| t.and_utc())
                .expect("time")
        };
        assert!(!config.in_maintenance_window(at(21, 59)));
        assert!(config.in_maintenance_window(at(22, 0)));
        assert!(config.in_maintenance_window(at(23, 59)));
        assert!(!config.in_maintenance_window(at(12, 0)));
    }

    #[test]
    fn runs_on_names_an_environment_and_a_host() {
        let error = Config::parse(Path::new("d.yaml"), "repository: {url: x}\nruns_on: bastion\n")
            .expect_err("no environment")
            .to_string();
        assert!(error.contains("d.yaml:2:10: runs_on: invalid `bastion`"), "{error}");
        let config = Config::parse(
            Path::new("d.yaml"),
            "repository: {url: x}\nruns_on: outside/outside-bastion\n",
        )
        .expect("valid");
        assert_eq!(config.raw.runs_on.as_deref(), Some("outside/outside-bastion"));
    }
}
