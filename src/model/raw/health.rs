//! `health.yaml` at the repository's root, as written: how service health
//! is computed from the measurements (issue #32).

use std::collections::BTreeMap;

use serde::Deserialize;

/// `health.yaml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthFile {
    /// Evaluation settings.
    #[serde(default)]
    pub settings: HealthSettings,
    /// Queries with an operator and a threshold, by name.
    #[serde(default)]
    pub flag_templates: BTreeMap<String, FlagTemplate>,
    /// Templates applied to services and environments.
    #[serde(default)]
    pub flags: Vec<Flag>,
    /// Boolean expressions over flags, each with a weight.
    #[serde(default)]
    pub expressions: Vec<HealthExpression>,
}

/// `settings`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSettings {
    /// Between two evaluations (`60s`).
    pub interval: Option<String>,
    /// The window evaluated: from this long ago (`5m`)…
    pub window_from: Option<String>,
    /// …to this long ago (`2m`): the freshest minutes are incomplete.
    pub window_to: Option<String>,
    /// Consecutive ok evaluations that resolve an incident.
    pub resolve_after: Option<u32>,
}

/// A comparison of a flag's value with its threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Comparison {
    /// Fires below the threshold.
    Lt,
    /// Fires above the threshold.
    Gt,
    /// Fires at the threshold.
    Eq,
}

/// `flag_templates.<name>`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlagTemplate {
    /// InfluxQL with `$service`, `$environment` and `$window`, grouped by
    /// the service tag: one value per service.
    pub query: String,
    /// `lt`, `gt` or `eq`.
    pub op: Comparison,
    /// The threshold.
    pub threshold: f64,
}

/// `flags[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flag {
    /// The flag's name in expressions.
    pub name: String,
    /// The template it applies.
    pub template: String,
    /// The services it is computed for.
    pub services: Vec<String>,
    /// The environments; all when absent.
    pub environments: Option<Vec<String>>,
    /// Overrides the template's threshold.
    pub threshold: Option<f64>,
    /// Per-environment thresholds.
    #[serde(default)]
    pub thresholds: BTreeMap<String, f64>,
}

/// `expressions[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthExpression {
    /// Name (shown with the state it gives).
    pub name: String,
    /// Over flags: `||`, `&&`, `!`, parentheses.
    pub expression: String,
    /// 0 ok, 1 degraded, 2 outage.
    pub weight: u8,
}
