//! The executor's configuration, `/etc/apimon/executor.yaml`, rendered by
//! the daemon from `templates/executor.yaml.hbs`. Unknown keys are errors,
//! and every error names the file, line and column.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::model::load::ConfigFile;

mod background;
use crate::model::Sensitive;
pub use background::{RawLogs, RawProbe, RawSweeper};

/// The executor's configuration, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Environment tag of every point.
    pub environment: String,
    /// This executor's name, the `executor` tag of its health point (the
    /// health service's dead-man's switch tells executors apart by it);
    /// default: the machine's host name.
    pub executor: Option<String>,
    /// Where results go.
    pub results: RawResults,
    /// Base directory of playbooks.
    pub scenarios_dir: PathBuf,
    /// clouds.yaml for the playbooks (OS_CLIENT_CONFIG_FILE).
    pub clouds_file: PathBuf,
    /// The `ansible-playbook` binary; default from PATH.
    #[serde(default = "default_ansible")]
    pub ansible_playbook: PathBuf,
    /// Runs at once, over all scenarios.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// How long running scenarios may finish after SIGTERM.
    #[serde(default = "default_grace")]
    pub grace_period_seconds: u64,
    /// Where each playbook run gets its own working directory and log.
    #[serde(default = "default_runs_dir")]
    pub runs_dir: PathBuf,
    /// Run directories kept per scenario; older ones are removed.
    #[serde(default = "default_keep_runs")]
    pub keep_runs: usize,
    /// Loopback address where runs send their points (openstacksdk's
    /// metrics) and where `/metrics` answers; `null` turns both off.
    #[serde(default = "default_ingest_listen")]
    pub ingest_listen: Option<SocketAddr>,
    /// How often the executor writes its own health point.
    #[serde(default = "default_health_interval")]
    pub health_interval_seconds: u64,
    /// No run starts while the 1-minute load average is at or above this
    /// times the CPUs (`skipped`, `reason=overloaded`).
    #[serde(default = "default_load_limit")]
    pub load_limit: f64,
    /// Scheduled scenarios.
    #[serde(default)]
    pub scenarios: Vec<RawScenario>,
    /// Catalog probes, one per monitored cloud that asks for them.
    #[serde(default)]
    pub probes: Vec<RawProbe>,
    /// Sweepers, one per monitored cloud that asks for one.
    #[serde(default)]
    pub sweepers: Vec<RawSweeper>,
    /// Where job logs are uploaded, if anywhere.
    pub logs: Option<RawLogs>,
    /// The executor's availability zone, a `zone` tag on every point.
    pub zone: Option<String>,
    /// Without `zone`: the file apimon wrote the zone Nova gave the
    /// server into (`/etc/apimon/zone`).
    pub zone_file: Option<PathBuf>,
    /// Without `zone` or `zone_file`: Nova's metadata document to read it
    /// from (`http://169.254.169.254/openstack/latest/meta_data.json`).
    pub zone_metadata_url: Option<String>,
}

/// Where the executor takes points from runs, unless configured.
pub const DEFAULT_INGEST_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8187);

#[allow(clippy::unnecessary_wraps)] // serde default of an Option
fn default_ingest_listen() -> Option<SocketAddr> {
    Some(DEFAULT_INGEST_LISTEN)
}

fn default_health_interval() -> u64 {
    60
}

fn default_load_limit() -> f64 {
    2.5
}

fn default_ansible() -> PathBuf {
    PathBuf::from("ansible-playbook")
}

fn default_concurrency() -> usize {
    4
}

fn default_grace() -> u64 {
    60
}

fn default_runs_dir() -> PathBuf {
    PathBuf::from(crate::layout::RUNS_DIR)
}

fn default_keep_runs() -> usize {
    20
}

/// `results:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawResults {
    /// `/write` URL of telegraf's influxdb_listener or of InfluxDB.
    pub url: String,
    /// Database (`db` parameter).
    pub database: String,
    /// Basic-auth user when writing to InfluxDB directly.
    pub username: Option<String>,
    /// Its password.
    pub password: Option<String>,
    /// Where points wait while the target is down.
    #[serde(default = "default_buffer_dir")]
    pub buffer_dir: PathBuf,
    /// Most points kept while the target is down; the oldest go first.
    #[serde(default = "default_buffer_max")]
    pub buffer_max_points: usize,
}

fn default_buffer_dir() -> PathBuf {
    PathBuf::from(crate::layout::RESULTS_BUFFER_DIR)
}

fn default_buffer_max() -> usize {
    100_000
}

/// One scenario, as rendered.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawScenario {
    /// Name.
    pub name: String,
    /// Cron expression (5 or 6 fields).
    pub cron: String,
    /// Timeout in seconds.
    pub timeout_seconds: u64,
    /// `ansible` or `http`.
    pub runner: String,
    /// Playbook path relative to `base_dir` (ansible).
    pub playbook: Option<String>,
    /// The playbook's tree, where its `ansible.cfg` is; default `scenarios_dir` (ansible).
    pub base_dir: Option<String>,
    /// OS_CLOUD (ansible).
    pub cloud: Option<String>,
    /// `-e` variables (ansible).
    #[serde(default)]
    pub extra_vars: BTreeMap<String, String>,
    /// Inventory variables of any shape (ansible).
    #[serde(default)]
    pub vars: BTreeMap<String, serde_json::Value>,
    /// URL (http).
    pub url: Option<String>,
    /// Method (http).
    pub method: Option<String>,
    /// Expected status (http).
    pub expect_status: Option<u16>,
    /// Playbook run after a timeout or an abort (ansible).
    pub cleanup_playbook: Option<String>,
    /// Its timeout; default 300.
    pub cleanup_timeout_seconds: Option<u64>,
}

/// Checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Environment.
    pub environment: String,
    /// This executor's name.
    pub executor: String,
    /// Results target.
    pub results: ResultsTarget,
    /// Settings of the runners.
    pub runners: RunnerSettings,
    /// Runs at once.
    pub concurrency: usize,
    /// Grace period on shutdown.
    pub grace_period: Duration,
    /// Scenarios by name.
    pub scenarios: BTreeMap<String, ScenarioConfig>,
    /// Where runs send points, if anywhere.
    pub ingest_listen: Option<SocketAddr>,
    /// Between two health points.
    pub health_interval: Duration,
    /// The load governor's limit, per CPU.
    pub load_limit: f64,
    /// Catalog probes by cloud.
    pub probes: BTreeMap<String, super::probe::ProbeConfig>,
    /// Sweepers by cloud.
    pub sweepers: BTreeMap<String, super::sweeper::SweeperConfig>,
    /// The job logs' store.
    pub logs: Option<super::logs::LogsConfig>,
    /// Where the zone is read when executor.yaml does not give it: the
    /// file apimon wrote, else the metadata service.
    pub zone_file: Option<PathBuf>,
    /// See [`RawConfig::zone_metadata_url`].
    pub zone_metadata_url: Option<String>,
}

/// Where points go.
#[derive(Debug, Clone)]
pub struct ResultsTarget {
    /// `/write` URL.
    pub url: String,
    /// Database.
    pub database: String,
    /// Basic auth.
    pub credentials: Option<(String, Sensitive<String>)>,
    /// Disk buffer.
    pub buffer_dir: PathBuf,
    /// Buffer bound.
    pub buffer_max_points: usize,
    /// The executor's zone, a tag of every point (resolved at start and
    /// reload when it comes from the metadata service).
    pub zone: Option<String>,
}

/// What the runners need besides the scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerSettings {
    /// Playbook base directory.
    pub scenarios_dir: PathBuf,
    /// clouds.yaml.
    pub clouds_file: PathBuf,
    /// ansible-playbook binary.
    pub ansible_playbook: PathBuf,
    /// Run directories, one per playbook run.
    pub runs_dir: PathBuf,
    /// Run directories kept per scenario.
    pub keep_runs: usize,
    /// Where openstacksdk in a run sends its metrics (the ingest
    /// listener, as a client reaches it), if anywhere.
    pub metrics_endpoint: Option<SocketAddr>,
}

impl RunnerSettings {
    /// Where the Ansible callback plugin apimon ships is written.
    pub fn plugins_dir(&self) -> PathBuf {
        self.runs_dir.join(".plugins").join("callback")
    }
}

/// One scenario, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioConfig {
    /// Name.
    pub name: String,
    /// Cron expression, 6 fields.
    pub cron: String,
    /// Parsed schedule.
    pub schedule: crate::cron::Schedule,
    /// Timeout.
    pub timeout: Duration,
    /// How it runs.
    pub runner: RunnerConfig,
}

/// How a scenario runs: the same runners the repository declares.
pub use crate::model::Runner as RunnerConfig;

/// The configuration file is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Cannot be read.
    #[error("cannot read executor config {path}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Invalid; every problem listed.
    #[error("invalid executor config:\n{}", .0.join("\n"))]
    Invalid(Vec<String>),
}

/// Reads and checks the configuration file.
///
/// # Errors
/// Unreadable, unparsable, or inconsistent (each problem with its place).
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = crate::fsutil::read_text_limited(path, crate::fsutil::MAX_CONFIG_BYTES)
        .map_err(|e| ConfigError::Read { path: path.to_owned(), source: e.into() })?;
    parse(path, &text)
}

/// Parses and checks `text`, naming `path` in errors.
///
/// # Errors
/// As [`load`].
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
    let mut file = ConfigFile::<RawConfig>::parse(path, text).map_err(ConfigError::Invalid)?;
    let raw = file.value.clone();
    let mut problem = |key: &str, message: String| file.problem(key, message);
    if raw.concurrency == 0 {
        problem("concurrency", "0; expected at least 1".to_owned());
    }
    // The listener takes points without authentication: loopback only.
    if let Some(listen) = raw.ingest_listen.filter(|l| !l.ip().is_loopback()) {
        problem(
            "ingest_listen",
            format!("{listen} is not a loopback address; the listener has no authentication, so it listens on 127.0.0.1 or ::1 only"),
        );
    }
    let mut scenarios = BTreeMap::new();
    for (i, s) in raw.scenarios.iter().enumerate() {
        let key = format!("scenarios[{i}]");
        let schedule = match crate::cron::Schedule::parse(&s.cron) {
            Ok(parsed) => Some(parsed),
            Err(message) => {
                problem(&format!("{key}.cron"), message);
                None
            }
        };
        if s.timeout_seconds == 0 {
            problem(&format!("{key}.timeout_seconds"), "0; expected at least 1".to_owned());
        }
        let runner = match (s.runner.as_str(), &s.playbook, &s.url) {
            ("ansible", Some(playbook), _) => Some(RunnerConfig::Ansible {
                playbook: playbook.clone(),
                base_dir: s.base_dir.clone(),
                cloud: s.cloud.clone(),
                extra_vars: s.extra_vars.clone(),
                vars: s.vars.clone(),
                cleanup: s.cleanup_playbook.as_ref().map(|playbook| crate::model::Cleanup {
                    playbook: playbook.clone(),
                    timeout: Duration::from_secs(s.cleanup_timeout_seconds.unwrap_or(300).max(1)),
                }),
            }),
            ("http", _, Some(url)) => Some(RunnerConfig::Http {
                url: url.clone(),
                method: s.method.clone().unwrap_or_else(|| "GET".to_owned()),
                expect_status: s.expect_status.unwrap_or(200),
            }),
            ("ansible", None, _) => {
                problem(&key, "runner ansible needs `playbook`".to_owned());
                None
            }
            ("http", _, None) => {
                problem(&key, "runner http needs `url`".to_owned());
                None
            }
            (other, ..) => {
                problem(
                    &format!("{key}.runner"),
                    format!("unknown runner `{other}`; expected ansible or http"),
                );
                None
            }
        };
        if scenarios.contains_key(&s.name) {
            problem(&format!("{key}.name"), format!("duplicate scenario `{}`", s.name));
        }
        if let (Some(schedule), Some(runner)) = (schedule, runner) {
            let cron = schedule.normalized().to_owned();
            scenarios.insert(
                s.name.clone(),
                ScenarioConfig {
                    name: s.name.clone(),
                    cron,
                    schedule,
                    timeout: Duration::from_secs(s.timeout_seconds),
                    runner,
                },
            );
        }
    }
    if !(raw.load_limit.is_finite() && raw.load_limit >= 0.0) {
        file.problem(
            "load_limit",
            format!("{}; expected a number from 0 (no run starts) up", raw.load_limit),
        );
    }
    let (probes, sweepers, logs) = background::check(&mut file, &raw);
    file.finish().map_err(ConfigError::Invalid)?;
    Ok(Config {
        environment: raw.environment,
        executor: raw.executor.filter(|n| !n.trim().is_empty()).unwrap_or_else(host_name),
        results: ResultsTarget {
            url: raw.results.url,
            database: raw.results.database,
            credentials: raw
                .results
                .username
                .map(|user| (user, Sensitive::new(raw.results.password.unwrap_or_default()))),
            buffer_dir: raw.results.buffer_dir,
            buffer_max_points: raw.results.buffer_max_points.max(1),
            zone: raw.zone.filter(|z| super::zone::is_zone_name(z)),
        },
        runners: RunnerSettings {
            scenarios_dir: raw.scenarios_dir,
            clouds_file: raw.clouds_file,
            ansible_playbook: raw.ansible_playbook,
            runs_dir: raw.runs_dir,
            keep_runs: raw.keep_runs.max(1),
            metrics_endpoint: raw.ingest_listen,
        },
        concurrency: raw.concurrency,
        grace_period: Duration::from_secs(raw.grace_period_seconds),
        scenarios,
        ingest_listen: raw.ingest_listen,
        health_interval: Duration::from_secs(raw.health_interval_seconds.max(1)),
        load_limit: raw.load_limit,
        probes,
        sweepers,
        logs,
        zone_file: raw.zone_file,
        zone_metadata_url: raw.zone_metadata_url,
    })
}

/// The machine's host name (`/proc/sys/kernel/hostname`), or `executor`.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "executor".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "environment: outside\nresults: {url: 'http://127.0.0.1:8186/write', database: apimon}\nscenarios_dir: /etc/apimon/scenarios\nclouds_file: /etc/apimon/clouds.yaml\nscenarios: [{\"name\":\"probe\",\"cron\":\"0 */5 * * * *\",\"timeout_seconds\":30,\"runner\":\"http\",\"url\":\"https://example.test\",\"method\":\"GET\",\"expect_status\":200}]\n";

    #[test]
    fn the_rendered_shape_parses() {
        let config = parse(Path::new("executor.yaml"), GOOD).expect("valid");
        assert_eq!(config.scenarios["probe"].runner.kind(), "http");
        assert_eq!(config.concurrency, 4);
    }

    #[test]
    fn a_bad_cron_names_file_line_and_key() {
        let text = GOOD.replace("0 */5 * * * *", "99 * * * * *");
        let error = parse(Path::new("executor.yaml"), &text).expect_err("bad cron").to_string();
        assert!(
            error.contains("executor.yaml:5:") && error.contains("scenarios[0].cron"),
            "{error}"
        );
    }

    #[test]
    fn the_ingest_listener_stays_on_loopback() {
        let text = format!("{GOOD}ingest_listen: 0.0.0.0:8187\n");
        let error = parse(Path::new("executor.yaml"), &text).expect_err("not loopback").to_string();
        assert!(error.contains("ingest_listen") && error.contains("loopback"), "{error}");
        let config = parse(Path::new("executor.yaml"), &format!("{GOOD}ingest_listen: null\n"))
            .expect("off");
        assert!(config.ingest_listen.is_none() && config.runners.metrics_endpoint.is_none());
        assert_eq!(
            parse(Path::new("executor.yaml"), GOOD).expect("default").ingest_listen,
            Some(DEFAULT_INGEST_LISTEN)
        );
    }

    #[test]
    fn unknown_keys_are_errors() {
        let error = parse(Path::new("executor.yaml"), &format!("{GOOD}surprise: 1\n"))
            .expect_err("unknown")
            .to_string();
        assert!(error.contains("executor.yaml:6:1: surprise: unknown field `surprise`"), "{error}");
    }
}
