//! Raw scenario files: `scenarios/<name>.yaml` and `scenarios/schedule.yaml`.

use std::collections::BTreeMap;

use serde::Deserialize;

/// `scenarios/<name>.yaml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Kill the run after this long (`30s`, `5m`); default 5m.
    pub timeout: Option<String>,
    /// Run an Ansible playbook.
    pub ansible: Option<AnsibleRunner>,
    /// Or: a built-in HTTP probe.
    pub http: Option<HttpProbe>,
}

/// `ansible:` section of a scenario.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnsibleRunner {
    /// Playbook path relative to `scenarios/`.
    pub playbook: String,
    /// Monitored cloud (OS_CLOUD) the playbook talks to.
    pub cloud: Option<String>,
    /// Extra variables passed with `-e`.
    #[serde(default)]
    pub extra_vars: BTreeMap<String, String>,
    /// Variables of any shape (lists, maps), at inventory precedence: the
    /// playbook's own vars and `set_fact` win over them.
    #[serde(default)]
    pub vars: BTreeMap<String, serde_json::Value>,
    /// Run after a run killed at its timeout or stopped by apimon, so the
    /// cloud resources that run created do not stay behind.
    pub cleanup: Option<Cleanup>,
}

/// `ansible.cleanup:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cleanup {
    /// Playbook path relative to `scenarios/`.
    pub playbook: String,
    /// Kill it after this long (`30s`, `5m`); default 5m.
    pub timeout: Option<String>,
}

/// `http:` section of a scenario.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpProbe {
    /// URL to request.
    pub url: String,
    /// Method, default GET.
    #[serde(default = "default_method")]
    pub method: String,
    /// Expected status, default 200.
    #[serde(default = "default_status")]
    pub expect_status: u16,
}

fn default_method() -> String {
    "GET".to_owned()
}

fn default_status() -> u16 {
    200
}

/// `scenarios/schedule.yaml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleFile {
    /// Entries.
    #[serde(default)]
    pub schedule: Vec<ScheduleEntry>,
}

/// When a scenario runs, and where.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleEntry {
    /// Scenario name (file stem under `scenarios/`).
    pub scenario: String,
    /// Environments whose executor runs it.
    pub environments: Vec<String>,
    /// Cron expression, 5 fields (minute first) or 6 (second first).
    pub cron: String,
}
