//! The daemon's settings, defined once: apimon.yaml's `daemon:` of an
//! environment ([`Daemon`]) and the `/etc/apimon/daemon.yaml` rendered from
//! it ([`RawConfig`]) get the settings they share (the repository's URL,
//! branch, poll interval and fetch bound; listen, drift, windows,
//! parallelism, attempts) from one declaration, `daemon_settings!`, with
//! one set of defaults and one check (`problems`); each file adds its own
//! fields on top: apimon.yaml names secrets, daemon.yaml the files they
//! were written to and what only the bastion knows. (A macro, not a
//! flattened struct: serde cannot flatten under `deny_unknown_fields`.)
//! daemon.yaml is parsed here ([`DaemonFile::parse`]) both by the daemon
//! that reads it and by the renderer that writes it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::load::ConfigFile;
use super::raw::MaybeSecret;
use crate::cron::Schedule;
use crate::url::{carries, Credential};

/// Shortest webhook secret accepted (also the bearer token of `/trigger`).
pub const MIN_WEBHOOK_SECRET: usize = 16;

/// Declares the two structs of one file, the daemon's settings and its
/// repository's, each with the fields both files share (defined here,
/// once, with their defaults and their checks) followed by the file's own.
macro_rules! daemon_settings {
    (
        $(#[$dm:meta])* $daemon:ident { $($(#[$df:meta])* $dfield:ident: $dty:ty,)* }
        $(#[$rm:meta])* $repository:ident { $($(#[$rf:meta])* $rfield:ident: $rty:ty,)* }
    ) => {
        $(#[$dm])*
        #[derive(Debug, Clone, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $daemon {
            /// The repository the daemon follows.
            pub repository: $repository,
            /// Address of its HTTP endpoint (/healthz, /status, /metrics, /hooks/git).
            #[serde(default = "daemon_defaults::listen")]
            pub listen: String,
            /// A second listener that serves only `POST /hooks/git`
            /// (signature verified), for the forge to reach; none by default.
            pub webhook: Option<Webhook>,
            /// When to re-observe and repair (or report) drift; 5 or 6 cron fields.
            pub drift_cron: Option<String>,
            /// When destructive changes (delete, replace) may run; always when empty.
            #[serde(default)]
            pub maintenance_windows: Vec<DaemonWindow>,
            /// Changes applied at once.
            #[serde(default = "daemon_defaults::parallelism")]
            pub parallelism: u32,
            /// Tries per change on transient errors.
            #[serde(default = "daemon_defaults::attempts")]
            pub attempts: u32,
            $($(#[$df])* pub $dfield: $dty,)*
        }

        $(#[$rm])*
        #[derive(Debug, Clone, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $repository {
            /// Remote URL: https://, http://, ssh://, git:// or file://.
            pub url: String,
            /// Branch.
            #[serde(default = "daemon_defaults::branch")]
            pub branch: String,
            /// How often the remote branch is checked.
            #[serde(default = "daemon_defaults::poll")]
            pub poll_interval_seconds: u64,
            /// Most bytes one fetch may receive (default 1 GiB); a larger
            /// pack is refused and the commit in force stays.
            pub max_fetch_bytes: Option<u64>,
            $($(#[$rf])* pub $rfield: $rty,)*
        }

        impl $daemon {
            /// What is wrong with the shared settings: (key path, message).
            pub fn problems(&self) -> Vec<(String, String)> {
                shared_problems(
                    (&self.listen, self.webhook.as_ref()),
                    (self.drift_cron.as_deref(), &self.maintenance_windows),
                    (self.parallelism, self.attempts),
                    (self.repository.poll_interval_seconds, self.repository.max_fetch_bytes),
                )
            }
        }
    };
}

daemon_settings! {
    /// `daemon:` of an environment: the settings of the daemon its first
    /// bastion runs, rendered into that host's `/etc/apimon/daemon.yaml`.
    Daemon {
        /// Webhook secret (HMAC key of /hooks/git, bearer token of /trigger); a secret.
        webhook_secret: Option<MaybeSecret>,
    }
    /// `daemon.repository`: this repository, as the bastion reaches it.
    DaemonRepository {
        /// Access token for an https:// remote; a secret.
        token: Option<MaybeSecret>,
        /// Private deploy key for an ssh:// remote; a secret.
        ssh_key: Option<MaybeSecret>,
    }
}

daemon_settings! {
    /// The daemon configuration file, as written: the shared settings, and
    /// what only the bastion knows (where the credentials were written,
    /// which environments and host are its own).
    RawConfig {
        /// State directory (owned resources, history, lock, commit exports).
        #[serde(default = "default_state_dir")]
        state_dir: PathBuf,
        /// Secrets file (mode 0600 or stricter).
        secrets_file: Option<PathBuf>,
        /// SSH private key for the bastion and the hosts.
        ssh_key: Option<PathBuf>,
        /// known_hosts with the bastion's and the hosts' keys.
        ssh_known_hosts: Option<PathBuf>,
        /// clouds.yaml with each environment's `cloud`; the standard places when absent.
        clouds_file: Option<PathBuf>,
        /// Environments this daemon manages; all when absent.
        #[serde(default)]
        environments: Vec<String>,
        /// File holding the webhook secret (HMAC key; also the bearer token of POST /trigger).
        webhook_secret_file: Option<PathBuf>,
        /// File holding the approval token (the bearer token of POST
        /// /approve): part of the trust store `apimon bootstrap` installs,
        /// never the repository's.
        approval_token_file: Option<PathBuf>,
        /// The trust store's OpenSSH allowed signers (`apimon bootstrap
        /// --allowed-signers`): while the file exists, every commit must be
        /// signed by one of its keys (as with `repository.ssh_allowed_signers`,
        /// which must exist).
        allowed_signers_file: Option<PathBuf>,
        /// The trust store's allowed signers of scenario commits (`apimon
        /// bootstrap --scenario-signers`): while the file exists, every
        /// scenario repository commit must be signed by one of its keys,
        /// and a change of `scenario_repository.url` is held.
        scenario_allowed_signers_file: Option<PathBuf>,
        /// The trust store's release key (`apimon bootstrap --release-key`,
        /// an SSH public key): while the file exists, a pinned release is
        /// installed only with a good signature by it.
        release_key_file: Option<PathBuf>,
        /// Allow plans that delete more than an environment's max_deletes.
        #[serde(default)]
        allow_deletes: bool,
        /// The host this daemon runs on (`<environment>/<host>`): changes that
        /// would destroy it or cut access to it are held. Default: the host
        /// whose name is this machine's hostname (cloud-init sets it so).
        runs_on: Option<String>,
    }
    /// `repository:` of daemon.yaml.
    RawRepository {
        /// SSH private key (ssh:// remotes).
        ssh_key: Option<PathBuf>,
        /// File holding an access token (https:// remotes).
        token_file: Option<PathBuf>,
        /// OpenSSH allowed-signers file: commits must be signed by one of them.
        ssh_allowed_signers: Option<PathBuf>,
        /// GnuPG home with the accepted keys: commits must be signed by one of them.
        gnupg_home: Option<PathBuf>,
    }
}

/// What is wrong with a listening address `text`, if anything.
fn listen_problem(text: &str, example: &str, loopback_only: bool) -> Option<String> {
    let Ok(address) = text.parse::<std::net::SocketAddr>() else {
        return Some(format!("invalid address `{text}`; expected host:port like {example}"));
    };
    if loopback_only && !address.ip().is_loopback() {
        return Some(format!("`{text}` is not a loopback address; the daemon's API listens on this machine only (127.0.0.1 or ::1; put a reverse proxy in front for webhooks)"));
    }
    // The daemon's account may not bind below 1024: it would restart into
    // a configuration it cannot start.
    (address.port() < 1024).then(|| {
        format!(
            "port {} is below 1024, which the daemon's account cannot bind; expected 1024 to 65535",
            address.port()
        )
    })
}

/// `webhook:` of the daemon: where the forge's deliveries arrive, and from
/// where (the security group of the bastion opens the port to those
/// ranges; the daemon closes any other connection at once).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// Address and port of the listener (`0.0.0.0:9111`).
    pub listen: String,
    /// The forge's address ranges; `0.0.0.0/0` for anyone.
    #[serde(default)]
    pub allow_from: Vec<ipnet::IpNet>,
}

/// The checks of the shared settings, the same for both files.
fn shared_problems(
    (listen, webhook): (&str, Option<&Webhook>),
    (drift_cron, windows): (Option<&str>, &[DaemonWindow]),
    (parallelism, attempts): (u32, u32),
    (poll_interval_seconds, max_fetch_bytes): (u64, Option<u64>),
) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    let mut problem = |path: String, message: String| problems.push((path, message));
    // The API (/status, /trigger, /approve) is for this machine (and a
    // reverse proxy on it) only; the webhook listener may face the forge.
    let listeners = [
        ("listen", Some(listen), "127.0.0.1:9110", true),
        ("webhook.listen", webhook.map(|w| w.listen.as_str()), "0.0.0.0:9111", false),
    ];
    for (key, address, example, loopback_only) in listeners {
        if let Some(message) = address.and_then(|a| listen_problem(a, example, loopback_only)) {
            problem(key.to_owned(), message);
        }
    }
    // A listener facing the network names who may reach it.
    let faces_network =
        |w: &Webhook| w.listen.parse::<std::net::SocketAddr>().is_ok_and(|a| !a.ip().is_loopback());
    if webhook.is_some_and(|w| w.allow_from.is_empty() && faces_network(w)) {
        problem(
            "webhook.allow_from".to_owned(),
            "no address ranges; expected the forge's (CIDR, e.g. 140.82.112.0/20), or 0.0.0.0/0 to open the port to anyone".to_owned(),
        );
    }
    if let Some(Err(message)) = drift_cron.map(Schedule::parse) {
        problem("drift_cron".to_owned(), message);
    }
    for (i, window) in windows.iter().enumerate() {
        if let Err(message) = Schedule::parse(&window.cron) {
            problem(format!("maintenance_windows[{i}].cron"), message);
        }
        if !(1..=MAX_WINDOW_MINUTES).contains(&window.duration_minutes) {
            let minutes = window.duration_minutes;
            problem(
                format!("maintenance_windows[{i}].duration_minutes"),
                format!("{minutes}; expected 1 to {MAX_WINDOW_MINUTES} (a year)"),
            );
        }
    }
    let at_least_one = [
        ("parallelism", u64::from(parallelism)),
        ("attempts", u64::from(attempts)),
        ("repository.poll_interval_seconds", poll_interval_seconds),
        ("repository.max_fetch_bytes", max_fetch_bytes.unwrap_or(1)),
    ];
    for (key, value) in at_least_one {
        if value == 0 {
            problem(key.to_owned(), "0; expected at least 1".to_owned());
        }
    }
    problems
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

/// A maintenance window: the same in daemon.yaml and in apimon.yaml's `daemon:`.
pub type RawWindow = DaemonWindow;

/// The longest maintenance window: a year (longer ones would overflow
/// the time arithmetic, and mean "always").
pub const MAX_WINDOW_MINUTES: u64 = 366 * 24 * 60;

fn default_state_dir() -> PathBuf {
    PathBuf::from(crate::layout::STATE_DIR)
}

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
        for (path, message) in file.value.problems() {
            file.problem(&path, message);
        }
        let drift = file.value.drift_cron.as_deref().and_then(|c| Schedule::parse(c).ok());
        let windows = file
            .value
            .maintenance_windows
            .iter()
            .filter_map(|w| {
                let schedule = Schedule::parse(&w.cron).ok()?;
                Some((schedule, Duration::from_secs(w.duration_minutes * 60)))
            })
            .collect();
        if file.value.webhook.is_some() && file.value.webhook_secret_file.is_none() {
            file.problem(
                "webhook",
                "a webhook listener needs `webhook_secret_file` (the forge signs with it)"
                    .to_owned(),
            );
        }
        // The git credential goes only where its scheme protects it.
        let repository = &file.value.repository;
        let carried = [
            (
                "repository.token_file",
                repository.token_file.is_some(),
                Credential::Token,
                "a token is sent over https:// only (or http:// to this machine)",
            ),
            (
                "repository.ssh_key",
                repository.ssh_key.is_some(),
                Credential::SshKey,
                "an SSH key is used over ssh:// only",
            ),
        ];
        let url = repository.url.clone();
        // A file:// remote sends nothing anywhere: any credential is unused.
        let local = url.to_ascii_lowercase().starts_with("file://");
        for (key, set, kind, rule) in carried {
            if set && !local && !carries(&url, kind) {
                file.problem(key, format!("not for {}: {rule}", crate::url::redact_url(&url)));
            }
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

    /// The shared settings are checked once, the same in both files.
    #[test]
    fn both_files_report_a_bad_shared_setting_alike() {
        let shared = "listen: nowhere\nparallelism: 0\nmaintenance_windows: [{cron: '0 22 * * *', duration_minutes: 0}]\n";
        let daemon_yaml = format!("repository: {{url: x, poll_interval_seconds: 0}}\n{shared}");
        let apimon_yaml = format!("repository: {{url: x, poll_interval_seconds: 0}}\n{shared}");
        let from_daemon_yaml = ConfigFile::<RawConfig>::parse(Path::new("d.yaml"), &daemon_yaml)
            .and_then(ConfigFile::finish)
            .expect("parses")
            .problems();
        let from_apimon_yaml = ConfigFile::<Daemon>::parse(Path::new("a.yaml"), &apimon_yaml)
            .and_then(ConfigFile::finish)
            .expect("parses")
            .problems();
        assert_eq!(from_daemon_yaml, from_apimon_yaml);
        let keys: Vec<&str> = from_daemon_yaml.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "listen",
                "maintenance_windows[0].duration_minutes",
                "parallelism",
                "repository.poll_interval_seconds"
            ]
        );
    }

    #[test]
    fn the_api_listens_on_this_machine_on_a_port_its_account_can_bind() {
        let problem = |listen: &str| {
            let text = format!("repository: {{url: x}}\nlisten: '{listen}'\n");
            DaemonFile::parse(Path::new("d.yaml"), &text).err().map(|e| e.join("\n"))
        };
        for refused in ["198.51.100.7:9110", "0.0.0.0:9110", "[::]:9110", "127.0.0.1:80"] {
            let said = problem(refused).unwrap_or_else(|| panic!("{refused} accepted"));
            assert!(said.contains("d.yaml:2:9: listen:"), "{said}");
        }
        assert!(problem("198.51.100.7:9110").is_some_and(|s| s.contains("not a loopback address")));
        assert!(problem("127.0.0.1:80").is_some_and(|s| s.contains("below 1024")));
        for accepted in ["127.0.0.1:9110", "[::1]:9110", "127.0.0.2:1024"] {
            assert_eq!(problem(accepted), None, "{accepted}");
        }
    }

    #[test]
    fn the_webhook_listener_may_face_the_network_with_a_secret_and_a_port_its_account_can_bind() {
        let parse = |extra: &str| {
            let text = format!("repository: {{url: x}}\nwebhook_secret_file: /etc/s\n{extra}");
            DaemonFile::parse(Path::new("d.yaml"), &text).err().map(|e| e.join("\n"))
        };
        assert_eq!(
            parse("webhook: {listen: '0.0.0.0:9111', allow_from: [140.82.112.0/20]}\n"),
            None
        );
        let low =
            parse("webhook: {listen: '0.0.0.0:443', allow_from: [0.0.0.0/0]}\n").expect("refused");
        assert!(low.contains("webhook.listen: port 443 is below 1024"), "{low}");
        let open = parse("webhook: {listen: '0.0.0.0:9111'}\n").expect("refused");
        assert!(open.contains("webhook.allow_from: no address ranges"), "{open}");
        assert_eq!(
            parse("webhook: {listen: '127.0.0.3:9111'}\n"),
            None,
            "loopback: a proxy in front"
        );
        let bad = parse("webhook: {listen: '0.0.0.0:9111', allow_from: [not-a-cidr]}\n");
        assert!(bad.is_some_and(|e| e.contains("d.yaml:3:")), "a bad range names its place");
        let text =
            "repository: {url: x}\nwebhook: {listen: '0.0.0.0:9111', allow_from: [0.0.0.0/0]}\n";
        let unsigned =
            DaemonFile::parse(Path::new("d.yaml"), text).expect_err("no secret").join("\n");
        assert!(
            unsigned.contains("webhook: a webhook listener needs `webhook_secret_file`"),
            "{unsigned}"
        );
    }

    #[test]
    fn a_git_credential_goes_only_where_its_scheme_protects_it() {
        let parse = |repository: &str| {
            DaemonFile::parse(Path::new("d.yaml"), &format!("repository: {repository}\n"))
                .err()
                .map(|e| e.join("\n"))
        };
        let refused =
            parse("{url: 'http://git.example/r.git', token_file: /etc/t}").expect("refused");
        assert!(refused.contains("d.yaml:1:59: repository.token_file: not for http://git.example/r.git: a token is sent over https:// only"), "{refused}");
        let refused =
            parse("{url: 'https://git.example/r.git', ssh_key: /etc/k}").expect("refused");
        assert!(
            refused.contains("repository.ssh_key: not for https://git.example/r.git"),
            "{refused}"
        );
        assert_eq!(parse("{url: 'https://git.example/r.git', token_file: /etc/t}"), None);
        assert_eq!(parse("{url: 'http://127.0.0.1:3000/r.git', token_file: /etc/t}"), None);
        assert_eq!(parse("{url: 'ssh://git@git.example/r.git', ssh_key: /etc/k}"), None);
        assert_eq!(parse("{url: 'file:///srv/r.git', token_file: /etc/t}"), None, "sent nowhere");
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
