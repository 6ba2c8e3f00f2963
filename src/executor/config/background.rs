//! executor.yaml's settings of the work besides the scenarios: catalog
//! probes, sweepers and the job logs' store.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::RawConfig;
use crate::executor::{logs::LogsConfig, probe::ProbeConfig, sweeper};
use crate::model::load::ConfigFile;
use crate::model::Sensitive;

/// `logs:`: the object store of the job logs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLogs {
    /// The clouds file entry.
    pub cloud: String,
    /// Swift container.
    pub container: String,
    /// `X-Delete-After`; default 14 days.
    #[serde(default = "default_log_retention")]
    pub retention_seconds: u64,
    /// Anyone may read them (no temp URLs).
    #[serde(default)]
    pub public: bool,
    /// The container's temp-URL key (required unless public).
    pub temp_url_key: Option<String>,
}

fn default_log_retention() -> u64 {
    14 * 86_400
}

/// `sweepers[]`: one monitored cloud's sweeper.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSweeper {
    /// The clouds file entry.
    pub cloud: String,
    /// Between two passes.
    #[serde(default = "default_sweep_interval")]
    pub interval_seconds: u64,
    /// Only what is older is deleted.
    #[serde(default = "default_sweep_age")]
    pub age_seconds: u64,
    /// `job_id` or `project`.
    #[serde(default = "default_sweep_select")]
    pub select: String,
    /// Report only.
    #[serde(default)]
    pub dry_run: bool,
    /// The project may hold apimon's platform resources.
    #[serde(default)]
    pub platform_project: bool,
}

fn default_sweep_interval() -> u64 {
    1200
}

fn default_sweep_age() -> u64 {
    7200
}

fn default_sweep_select() -> String {
    "job_id".to_owned()
}

/// `probes[]`: one monitored cloud's catalog probing.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProbe {
    /// The clouds file entry.
    pub cloud: String,
    /// Between two rounds.
    #[serde(default = "default_probe_interval")]
    pub interval_seconds: u64,
    /// Catalog interface probed.
    #[serde(default = "default_probe_interface")]
    pub interface: String,
    /// Service types left out.
    #[serde(default)]
    pub skip: Vec<String>,
    /// Requests at once.
    #[serde(default = "default_probe_concurrency")]
    pub concurrency: usize,
    /// A request without an answer by then is `failed`.
    #[serde(default = "default_probe_timeout")]
    pub timeout_seconds: u64,
}

fn default_probe_interval() -> u64 {
    30
}

fn default_probe_interface() -> String {
    "public".to_owned()
}

fn default_probe_concurrency() -> usize {
    8
}

fn default_probe_timeout() -> u64 {
    10
}

/// The checked probes, sweepers and logs of `raw`; problems go to `file`.
pub(super) fn check(
    file: &mut ConfigFile<RawConfig>,
    raw: &RawConfig,
) -> (BTreeMap<String, ProbeConfig>, BTreeMap<String, sweeper::SweeperConfig>, Option<LogsConfig>) {
    let mut probes = BTreeMap::new();
    for (i, p) in raw.probes.iter().enumerate() {
        let key = format!("probes[{i}]");
        if !matches!(p.interface.as_str(), "public" | "internal" | "admin") {
            file.problem(
                &format!("{key}.interface"),
                format!("unknown interface `{}`; expected public, internal or admin", p.interface),
            );
        }
        for (field, value) in [
            ("interval_seconds", p.interval_seconds),
            ("timeout_seconds", p.timeout_seconds),
            ("concurrency", p.concurrency as u64),
        ] {
            if value == 0 {
                file.problem(&format!("{key}.{field}"), "0; expected at least 1".to_owned());
            }
        }
        if probes.contains_key(&p.cloud) {
            file.problem(&format!("{key}.cloud"), format!("cloud `{}` is probed twice", p.cloud));
        }
        probes.insert(
            p.cloud.clone(),
            ProbeConfig {
                cloud: p.cloud.clone(),
                interval: Duration::from_secs(p.interval_seconds.max(1)),
                interface: p.interface.clone(),
                skip: p.skip.iter().cloned().collect(),
                concurrency: p.concurrency.max(1),
                timeout: Duration::from_secs(p.timeout_seconds.max(1)),
            },
        );
    }
    let mut sweepers = BTreeMap::new();
    for (i, w) in raw.sweepers.iter().enumerate() {
        let key = format!("sweepers[{i}]");
        let select = match w.select.as_str() {
            "job_id" => sweeper::Select::JobIds,
            "project" => sweeper::Select::Project,
            other => {
                file.problem(
                    &format!("{key}.select"),
                    format!("unknown selection `{other}`; expected job_id or project"),
                );
                sweeper::Select::JobIds
            }
        };
        if w.interval_seconds == 0 {
            file.problem(&format!("{key}.interval_seconds"), "0; expected at least 1".to_owned());
        }
        if sweepers.contains_key(&w.cloud) {
            file.problem(&format!("{key}.cloud"), format!("cloud `{}` has two sweepers", w.cloud));
        }
        sweepers.insert(
            w.cloud.clone(),
            sweeper::SweeperConfig {
                cloud: w.cloud.clone(),
                interval: Duration::from_secs(w.interval_seconds.max(1)),
                age: Duration::from_secs(w.age_seconds),
                select,
                dry_run: w.dry_run,
                platform_project: w.platform_project,
            },
        );
    }
    let logs = raw.logs.as_ref().map(|l| {
        let key = l.temp_url_key.clone().filter(|k| !k.is_empty());
        if key.is_none() && !l.public {
            file.problem("logs.temp_url_key", "missing; a container that is not public is read through temp URLs, which need the key".to_owned());
        }
        if l.container.is_empty() || l.container.contains('/') {
            file.problem("logs.container", format!("invalid container `{}`", l.container));
        }
        LogsConfig {
            cloud: l.cloud.clone(),
            container: l.container.clone(),
            retention: Duration::from_secs(l.retention_seconds.max(1)),
            public: l.public,
            temp_url_key: Sensitive::new(key.unwrap_or_default()),
        }
    });
    (probes, sweepers, logs)
}
