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

/// `scenario_repository:` in apimon.yaml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioRepository {
    /// Remote URL: https://, ssh://, git:// or file://.
    pub url: String,
    /// Pinned commit (40 hex digits); or:
    pub commit: Option<String>,
    /// A branch followed like the main repository.
    pub branch: Option<String>,
    /// Which files are scenarios (globs over paths in the repository).
    #[serde(default = "default_discover")]
    pub discover: Vec<String>,
    /// Settings of discovered scenarios, applied in order (later wins).
    #[serde(default)]
    pub overrides: Vec<ScenarioOverride>,
}

fn default_discover() -> Vec<String> {
    vec!["playbooks/scenario*.yaml".to_owned()]
}

/// One entry of `scenario_repository.overrides`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioOverride {
    /// A scenario name, or a glob over names (`*` for all).
    #[serde(rename = "match")]
    pub matches: String,
    /// Description.
    pub description: Option<String>,
    /// Timeout (`30s`, `5m`).
    pub timeout: Option<String>,
    /// OS_CLOUD.
    pub cloud: Option<String>,
    /// `-e` variables (merged key by key).
    #[serde(default)]
    pub extra_vars: BTreeMap<String, String>,
    /// Inventory variables (merged key by key).
    #[serde(default)]
    pub vars: BTreeMap<String, serde_json::Value>,
    /// Cleanup playbook, a path in the scenario repository.
    pub cleanup: Option<Cleanup>,
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
    /// Scenario name, or a glob over names (`scenario_*`).
    pub scenario: String,
    /// Environments whose executor runs it.
    pub environments: Vec<String>,
    /// Cron expression, 5 fields (minute first) or 6 (second first).
    pub cron: String,
    /// Which executors of each environment run it; default all.
    #[serde(default)]
    pub executors: Executors,
}

/// `schedule[].executors`: `all`, `spread`, a list of executor host names,
/// or `{availability_zone: NAME}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Executors {
    /// Every executor of the environment.
    #[default]
    All,
    /// `all` or `spread` (one executor per scenario, the same every time).
    Keyword(String),
    /// These executors (host names).
    Named(Vec<String>),
    /// The executors in this availability zone.
    Zone {
        /// Availability zone.
        availability_zone: String,
    },
}
