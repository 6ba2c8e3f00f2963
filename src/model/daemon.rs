//! The daemon's settings, defined once: apimon.yaml's `daemon:` of an
//! environment ([`Daemon`]) and the `/etc/apimon/daemon.yaml` rendered from
//! it ([`RawConfig`]) share their window type, defaults and limits, and
//! daemon.yaml is checked here ([`DaemonFile::parse`]) both by the daemon
//! that reads it and by the renderer that writes it. The two repository
//! sections differ only where they must: apimon.yaml names secrets,
//! daemon.yaml the files they are written to (serde cannot flatten a
//! shared part under `deny_unknown_fields`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::load::ConfigFile;
use super::raw::MaybeSecret;
use crate::cron::Schedule;

/// Shortest webhook secret accepted (also the bearer token of `/trigger`).
pub const MIN_WEBHOOK_SECRET: usize = 16;

/// `daemon:` of an environment: the settings of the daemon its first
/// bastion runs, rendered into that host's `/etc/apimon/daemon.yaml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Daemon {
    /// The repository the daemon follows (this one, as the bastion reaches it).
    pub repository: DaemonRepository,
    /// Address of its HTTP endpoint (/healthz, /status, /metrics, /hooks/git).
    #[serde(default = "daemon_defaults::listen")]
    pub listen: String,
    /// Webhook secret (HMAC key of /hooks/git, bearer token of /trigger); a secret.
    pub webhook_secret: Option<MaybeSecret>,
    /// When to re-observe and repair (or report) drift; 5 or 6 cron fields.
    pub drift_cron: Option<String>,
    /// When deletes and replaces may run; always when empty.
    #[serde(default)]
    pub maintenance_windows: Vec<DaemonWindow>,
    /// Changes applied at once.
    #[serde(default = "daemon_defaults::parallelism")]
    pub parallelism: u32,
    /// Tries per change on transient errors.
    #[serde(default = "daemon_defaults::attempts")]
    pub attempts: u32,
}

/// `daemon.repository`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonRepository {
    /// Remote URL: https://, http://, ssh://, git:// or file://.
    pub url: String,
    /// Branch.
    #[serde(default = "daemon_defaults::branch")]
    pub branch: String,
    /// How often the remote branch is checked.
    #[serde(default = "daemon_defaults::poll")]
    pub poll_interval_seconds: u64,
    /// Access token for an https:// remote; a secret.
    pub token: Option<MaybeSecret>,
    /// Private deploy key for an ssh:// remote; a secret.
    pub ssh_key: Option<MaybeSecret>,
    /// Most bytes one fetch may receive (default 1 GiB).
    pub max_fetch_bytes: Option<u64>,
}

/// A maintenance window of the daemon.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonWindow {
    /// When it opens (cron, 5 or 6 fields).
    pub cron: String,
    /// How long it stays open.
    pub duration_minutes: u64,
}

/// The daemon's defaults, the same in apimon.yaml's `daemon:` and daemon.yaml.
pub mod daemon_defaults {
    /// `listen`.
    pub fn listen() -> String {
        "127.0.0.1:9110".to_owned()
    }
    /// `parallelism`.
    pub fn parallelism<T: From<u8>>() -> T {
        T::from(4)
    }
    /// `attempts`.
    pub fn attempts() -> u32 {
        4
    }
    /// `repository.branch`.
    pub fn branch() -> String {
        "main".to_owned()
    }
    /// `repository.poll_interval_seconds`.
    pub fn poll() -> u64 {
        60
    }
}

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
    pub parallelism: u32,
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
pub type RawWindow = DaemonWindow;

/// The longest maintenance window: a year (longer ones would overflow
/// the time arithmetic, and mean "always").
pub const MAX_WINDOW_MINUTES: u64 = 366 * 24 * 60;

fn default_state_dir() -> PathBuf {
    PathBuf::from(crate::layout::STATE_DIR)
}
use daemon_defaults::{
    attempts as default_attempts, branch as default_branch, listen as default_listen,
    parallelism as default_parallelism, poll as default_poll,
};

/// daemon.yaml, checked: schedules parsed, every problem with its place.
#[derive(Debug, Clone)]
pub struct DaemonFile {
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
}

impl DaemonFile {
    /// Checks `text`, naming `path` in errors.
    ///
    /// # Errors
    /// Every problem, as `file:line:column: key: message`.
    pub fn parse(path: &Path, text: &str) -> Result<Self, Vec<String>> {
        let mut file = ConfigFile::<RawConfig>::parse(path, text)?;
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
        let raw = file.finish()?;
        Ok(Self {
            path: path.to_owned(),
            poll_interval: Duration::from_secs(raw.repository.poll_interval_seconds),
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
        let config = DaemonFile::parse(
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
        let error = DaemonFile::parse(Path::new("daemon.yaml"), "repository: {url: x}\npoll: 3\n")
            .expect_err("unknown")
            .join("\n");
        assert!(error.contains("daemon.yaml:2:1: poll: unknown field `poll`"), "{error}");
        let error = DaemonFile::parse(
            Path::new("daemon.yaml"),
            "repository: {url: x}\ndrift_cron: '99 * * * *'\n",
        )
        .expect_err("cron")
        .join("\n");
        assert!(error.contains("daemon.yaml:2:13: drift_cron: invalid cron expression"), "{error}");
    }

    #[test]
    fn maintenance_windows_open_for_their_duration() {
        let config = DaemonFile::parse(Path::new("d.yaml"), "repository: {url: x}\nmaintenance_windows: [{cron: '0 22 * * *', duration_minutes: 120}]\n").expect("valid");
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
        let error =
            DaemonFile::parse(Path::new("d.yaml"), "repository: {url: x}\nruns_on: bastion\n")
                .expect_err("no environment")
                .join("\n");
        assert!(error.contains("d.yaml:2:10: runs_on: invalid `bastion`"), "{error}");
        let config = DaemonFile::parse(
            Path::new("d.yaml"),
            "repository: {url: x}\nruns_on: outside/outside-bastion\n",
        )
        .expect("valid");
        assert_eq!(config.raw.runs_on.as_deref(), Some("outside/outside-bastion"));
    }
}
