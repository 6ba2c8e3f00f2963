//! Service health from the measurements (issue #32), the pure parts: the
//! checked rules of `health.yaml` ([`Health`]), their expression language
//! ([`expression`]), the query each template makes per environment, and a
//! service's state from the flags that fired, where incidents are told
//! ([`routes`]: routes and maintenance windows). The health service
//! (`apimon health`) runs them.

pub mod expression;
pub mod routes;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

pub use super::raw::health::Comparison;
pub use super::validate::check_health_file as check_rules;
use expression::Expr;

/// A service's state.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Weight 0.
    Ok,
    /// Weight 1.
    Degraded,
    /// Weight 2.
    Outage,
}

impl State {
    /// The state of `weight` (0, 1, 2; more is an outage).
    pub fn of(weight: u8) -> Self {
        match weight {
            0 => Self::Ok,
            1 => Self::Degraded,
            _ => Self::Outage,
        }
    }

    /// `ok`, `degraded`, `outage`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Degraded => "degraded",
            Self::Outage => "outage",
        }
    }
}

/// A checked flag template.
#[derive(Debug, Clone, PartialEq)]
pub struct FlagTemplate {
    /// InfluxQL with `$service`, `$environment`, `$window`.
    pub query: String,
    /// Its comparison.
    pub op: Comparison,
    /// Its threshold.
    pub threshold: f64,
}

/// A checked flag.
#[derive(Debug, Clone, PartialEq)]
pub struct Flag {
    /// Name.
    pub name: String,
    /// Template.
    pub template: String,
    /// Services.
    pub services: Vec<String>,
    /// Environments it applies to.
    pub environments: Vec<String>,
    /// Its threshold where no environment overrides it.
    pub threshold: f64,
    /// Per-environment thresholds.
    pub thresholds: BTreeMap<String, f64>,
}

impl Flag {
    /// Its threshold in `environment`.
    pub fn threshold_in(&self, environment: &str) -> f64 {
        self.thresholds.get(environment).copied().unwrap_or(self.threshold)
    }
}

/// A checked health expression.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthExpression {
    /// Name.
    pub name: String,
    /// Parsed.
    pub expr: Expr,
    /// 0, 1 or 2.
    pub weight: u8,
}

/// The checked rules of `health.yaml`.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    /// Between two evaluations.
    pub interval: Duration,
    /// The window evaluated starts this long ago…
    pub window_from: Duration,
    /// …and ends this long ago.
    pub window_to: Duration,
    /// Consecutive ok evaluations that resolve an incident.
    pub resolve_after: u32,
    /// Templates by name.
    pub templates: BTreeMap<String, FlagTemplate>,
    /// Flags.
    pub flags: Vec<Flag>,
    /// Expressions.
    pub expressions: Vec<HealthExpression>,
    /// Where incidents are notified.
    pub routes: Vec<routes::Route>,
    /// When notifications are held back.
    pub windows: Vec<routes::Window>,
    /// The host that runs each environment's service, where the
    /// repository names one (else its first bastion).
    pub hosts: BTreeMap<String, String>,
    /// Where the page listens (`None`: the service's default, loopback).
    pub listen: Option<std::net::SocketAddr>,
    /// Who may connect to it when it is not on loopback.
    pub allow_from: Vec<ipnet::IpNet>,
    /// The page as people reach it, linked from messages.
    pub page_url: Option<String>,
}

/// The placeholders a template's query may use.
pub const PLACEHOLDERS: [&str; 3] = ["$service", "$environment", "$window"];

impl Comparison {
    /// Whether `value` fires against `threshold`.
    pub fn fires(self, value: f64, threshold: f64) -> bool {
        match self {
            Self::Lt => value < threshold,
            Self::Gt => value > threshold,
            Self::Eq => (value - threshold).abs() < f64::EPSILON,
        }
    }
}

impl Health {
    /// The services of `environment` and, per template, the services its
    /// flags there ask for.
    pub fn queries_in(&self, environment: &str) -> BTreeMap<&str, BTreeSet<&str>> {
        let mut out: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for flag in self.flags.iter().filter(|f| f.environments.iter().any(|e| e == environment)) {
            out.entry(flag.template.as_str())
                .or_default()
                .extend(flag.services.iter().map(String::as_str));
        }
        out
    }

    /// The query of `template` in `environment` for `services`: one query,
    /// grouped by service, whatever the number of flags and services.
    pub fn query(
        &self,
        template: &str,
        environment: &str,
        services: &BTreeSet<&str>,
    ) -> Option<String> {
        let template = self.templates.get(template)?;
        let alternation: Vec<String> = services.iter().map(|s| regex_escape(s)).collect();
        let window = format!(
            "time > now() - {}s AND time < now() - {}s",
            self.window_from.as_secs(),
            self.window_to.as_secs()
        );
        Some(
            template
                .query
                .replace("$service", &format!("^({})$", alternation.join("|")))
                .replace("$environment", environment)
                .replace("$window", &window),
        )
    }

    /// The state of a service in `environment` whose template values are
    /// `values` (template name → value; absent: no data), with the flags
    /// that fired.
    pub fn state(
        &self,
        environment: &str,
        service: &str,
        values: &BTreeMap<&str, f64>,
    ) -> (State, BTreeSet<String>) {
        let fired: BTreeSet<String> = self
            .flags
            .iter()
            .filter(|f| f.environments.iter().any(|e| e == environment))
            .filter(|f| f.services.iter().any(|s| s == service))
            .filter(|f| {
                let Some(template) = self.templates.get(&f.template) else { return false };
                values
                    .get(f.template.as_str())
                    .is_some_and(|v| template.op.fires(*v, f.threshold_in(environment)))
            })
            .map(|f| f.name.clone())
            .collect();
        let weight = self
            .expressions
            .iter()
            .filter(|e| e.expr.holds(&|flag| fired.contains(flag)))
            .map(|e| e.weight)
            .max()
            .unwrap_or(0);
        (State::of(weight), fired)
    }
}

/// `text` with regex metacharacters escaped (service types are plain
/// words; a hostile one must not change the pattern).
fn regex_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\.+*?()|[]{}^$/".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Health {
        let template =
            |query: &str, op, threshold| FlagTemplate { query: query.into(), op, threshold };
        let flag = |name: &str, template: &str, threshold: f64| Flag {
            name: name.into(),
            template: template.into(),
            services: vec!["compute".into(), "network".into()],
            environments: vec!["outside".into(), "inside".into()],
            threshold,
            thresholds: BTreeMap::new(),
        };
        let expression = |name: &str, text: &str, weight| HealthExpression {
            name: name.into(),
            expr: Expr::parse(text).unwrap_or_else(|e| panic!("{e}")),
            weight,
        };
        let mut slow = flag("slow", "latency", 300.0);
        slow.thresholds.insert("inside".into(), 100.0);
        Health {
            interval: Duration::from_secs(60),
            window_from: Duration::from_secs(300),
            window_to: Duration::from_secs(120),
            resolve_after: 2,
            templates: [
                ("success".to_owned(), template("SELECT … WHERE \"service_type\" =~ /$service/ AND \"environment\" = '$environment' AND $window GROUP BY \"service_type\"", Comparison::Lt, 90.0)),
                ("latency".to_owned(), template("SELECT mean(\"duration\") …", Comparison::Gt, 300.0)),
            ]
            .into(),
            flags: vec![flag("failing", "success", 90.0), flag("down", "success", 1.0), slow],
            expressions: vec![
                expression("degraded", "failing || slow", 1),
                expression("outage", "down", 2),
            ],
            routes: Vec::new(),
            windows: Vec::new(),
            hosts: BTreeMap::new(),
            listen: None,
            allow_from: Vec::new(),
            page_url: None,
        }
    }

    macro_rules! states {
        ($($name:ident: $env:expr, $success:expr, $latency:expr => $state:expr, [$($fired:expr),*];)*) => {$(
            #[test]
            fn $name() {
                let mut values = BTreeMap::new();
                if let Some(v) = $success { values.insert("success", v); }
                if let Some(v) = $latency { values.insert("latency", v); }
                let (state, fired) = rules().state($env, "compute", &values);
                assert_eq!(state, $state);
                let want: BTreeSet<String> = [$($fired.to_owned()),*].into();
                assert_eq!(fired, want);
            }
        )*};
    }

    states! {
        all_well_is_ok: "outside", Some(99.0), Some(120.0) => State::Ok, [];
        a_low_success_rate_degrades: "outside", Some(80.0), Some(120.0) => State::Degraded, ["failing"];
        nothing_succeeding_is_an_outage: "outside", Some(0.0), Some(120.0) => State::Outage, ["down", "failing"];
        an_environment_threshold_overrides: "inside", Some(99.0), Some(120.0) => State::Degraded, ["slow"];
        no_data_fires_no_flag: "outside", None::<f64>, None::<f64> => State::Ok, [];
    }

    #[test]
    fn one_query_per_template_and_environment_names_every_service() {
        let health = rules();
        let queries = health.queries_in("outside");
        assert_eq!(queries.len(), 2, "one per template, not per flag and service");
        let query = health.query("success", "outside", &queries["success"]).unwrap_or_default();
        assert!(query.contains("=~ /^(compute|network)$/"), "{query}");
        assert!(query.contains("= 'outside'"), "{query}");
        assert!(query.contains("time > now() - 300s AND time < now() - 120s"), "{query}");
    }

    #[test]
    fn a_service_name_cannot_widen_the_pattern() {
        assert_eq!(regex_escape("a.b|c/d"), "a\\.b\\|c\\/d");
    }
}
