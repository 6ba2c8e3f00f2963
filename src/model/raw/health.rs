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
    /// Where incidents are notified.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// When notifications are held back.
    #[serde(default)]
    pub maintenance_windows: Vec<MaintenanceWindow>,
    /// The host that runs each environment's health service; default:
    /// the environment's first bastion.
    #[serde(default)]
    pub hosts: BTreeMap<String, String>,
    /// Where the page and the API listen; default loopback only.
    pub page: Option<PageSettings>,
}

/// `page`: the status page's listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageSettings {
    /// `address:port`; default `127.0.0.1:8190`.
    pub listen: Option<String>,
    /// Networks allowed to connect (required unless `listen` is loopback).
    #[serde(default)]
    pub allow_from: Vec<String>,
    /// The page as people reach it (a reverse proxy's URL), linked from
    /// every message.
    pub url: Option<String>,
}

/// `routes[]`: which incidents go where. Exactly one of `webhook`,
/// `matrix`, `email`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Name (counters, logs).
    pub name: String,
    /// Only these environments' incidents; all when absent.
    pub environments: Option<Vec<String>>,
    /// Only incidents naming one of these services; all when absent.
    pub services: Option<Vec<String>>,
    /// The least severity notified: `degraded` (default) or `outage`.
    pub severity: Option<String>,
    /// Between two reminders of an incident still open; none when absent.
    pub reminder: Option<String>,
    /// Most messages an hour (default 30); more are dropped and counted.
    pub rate_limit: Option<u32>,
    /// A generic webhook.
    pub webhook: Option<WebhookRoute>,
    /// A Matrix room.
    pub matrix: Option<MatrixRoute>,
    /// E-mail.
    pub email: Option<EmailRoute>,
}

/// `routes[].webhook`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookRoute {
    /// Where the JSON body is POSTed.
    pub url: String,
    /// The HMAC-SHA256 key of the `X-Apimon-Signature` header.
    pub secret: super::MaybeSecret,
}

/// `routes[].matrix`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatrixRoute {
    /// The homeserver's base URL.
    pub homeserver: String,
    /// The room id (`!abc:example.org`).
    pub room: String,
    /// The sending user's access token.
    pub access_token: super::MaybeSecret,
}

/// `routes[].email`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailRoute {
    /// The SMTP server.
    pub smtp_host: String,
    /// Its submission port (default 587); STARTTLS is always required.
    pub smtp_port: Option<u16>,
    /// A CA bundle (PEM) that signs the server's certificate, besides the
    /// system's roots.
    pub ca_file: Option<String>,
    /// `From:`.
    pub from: String,
    /// `To:`.
    pub to: Vec<String>,
    /// SMTP user, when the server wants a login.
    pub username: Option<super::MaybeSecret>,
    /// Its password.
    pub password: Option<super::MaybeSecret>,
}

/// `maintenance_windows[]`: `cron` and `duration`, or `start` and `end`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceWindow {
    /// Name (shown on the page).
    pub name: String,
    /// Only these environments; all when absent.
    pub environments: Option<Vec<String>>,
    /// Only these services; all when absent.
    pub services: Option<Vec<String>>,
    /// When it opens (5 or 6 fields).
    pub cron: Option<String>,
    /// How long it stays open (`2h`).
    pub duration: Option<String>,
    /// A one-off window's start (RFC 3339).
    pub start: Option<String>,
    /// Its end.
    pub end: Option<String>,
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
