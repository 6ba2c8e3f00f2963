//! One evaluation: per environment, one query per flag template (grouped
//! by the service tag, never one per flag and service), each series' last
//! value as that service's value, then each service's state from the flags
//! that fired. A query InfluxDB refuses is an error of the evaluation,
//! shown and counted — never an empty result.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::Value;

use crate::model::health::{Health, State};
use crate::providers::influxdb::client::{Client, Credentials, StatementResult};

/// One service's health.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceHealth {
    /// Its state.
    pub state: State,
    /// Each template's value (absent: no data).
    pub values: BTreeMap<String, f64>,
    /// The flags that fired.
    pub fired: BTreeSet<String>,
}

/// A query InfluxDB refused or could not answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueryError {
    /// Environment.
    pub environment: String,
    /// Template.
    pub template: String,
    /// InfluxDB's message.
    pub message: String,
}

/// One evaluation's outcome.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Evaluation {
    /// Services by environment.
    pub environments: BTreeMap<String, BTreeMap<String, ServiceHealth>>,
    /// Refused queries.
    pub errors: Vec<QueryError>,
    /// Queries sent.
    pub queries: usize,
}

/// Where the measurements are.
pub struct Source<'a> {
    /// The InfluxDB client.
    pub client: &'a Client,
    /// Its login.
    pub credentials: Option<&'a Credentials>,
    /// The results database.
    pub database: &'a str,
}

/// Evaluates `rules` for `environments`.
pub async fn evaluate(source: &Source<'_>, rules: &Health, environments: &[String]) -> Evaluation {
    let mut evaluation = Evaluation::default();
    let secrets: Vec<&str> =
        source.credentials.map(|c| c.password.expose().as_str()).into_iter().collect();
    for environment in environments {
        let mut values: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
        let wanted = rules.queries_in(environment);
        let services: BTreeSet<&str> = wanted.values().flatten().copied().collect();
        for (template, template_services) in &wanted {
            let Some(query) = rules.query(template, environment, template_services) else {
                continue;
            };
            evaluation.queries += 1;
            match source
                .client
                .query_in(source.database, &[query], source.credentials, &secrets)
                .await
            {
                Ok(results) => {
                    for (service, value) in series_values(results.first()) {
                        values.entry(service).or_default().insert((*template).to_owned(), value);
                    }
                }
                Err(error) => evaluation.errors.push(QueryError {
                    environment: environment.clone(),
                    template: (*template).to_owned(),
                    message: error.to_string(),
                }),
            }
        }
        let mut states = BTreeMap::new();
        for service in services {
            let service_values = values.remove(service).unwrap_or_default();
            let by_template: BTreeMap<&str, f64> =
                service_values.iter().map(|(t, v)| (t.as_str(), *v)).collect();
            let (state, fired) = rules.state(environment, service, &by_template);
            states
                .insert(service.to_owned(), ServiceHealth { state, values: service_values, fired });
        }
        evaluation.environments.insert(environment.clone(), states);
    }
    evaluation
}

/// Each series' service (its one tag's value) and last numeric value.
fn series_values(result: Option<&StatementResult>) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for series in result.into_iter().flat_map(|r| &r.series) {
        let Some(service) = series.tags.values().next() else { continue };
        let value = series.values.last().and_then(|row| {
            row.iter()
                .zip(&series.columns)
                .filter(|(_, c)| *c != "time")
                .find_map(|(v, _)| number(v))
        });
        if let Some(value) = value {
            out.push((service.clone(), value));
        }
    }
    out
}

fn number(value: &Value) -> Option<f64> {
    value.as_f64().filter(|v| v.is_finite())
}

/// The `apimon_health` point of each service at `now_ns`.
pub fn points(evaluation: &Evaluation, now_ns: i64) -> Vec<String> {
    use crate::executor::lineproto::escape_tag;
    let mut lines = Vec::new();
    for (environment, services) in &evaluation.environments {
        for (service, health) in services {
            let mut fields = vec![
                format!("state=\"{}\"", health.state.as_str()),
                format!("weight={}i", health.state as u8),
                format!("fired=\"{}\"", health.fired.iter().cloned().collect::<Vec<_>>().join(",")),
            ];
            for (template, value) in &health.values {
                fields.push(format!("value_{}={value}", escape_tag(template)));
            }
            lines.push(format!(
                "apimon_health,environment={},service={} {} {now_ns}",
                escape_tag(environment),
                escape_tag(service),
                fields.join(",")
            ));
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_series_gives_its_service_and_last_value() {
        let result: StatementResult = serde_json::from_value(serde_json::json!({
            "series": [
                {"name": "openstack_api.compute", "tags": {"service_type": "compute"}, "columns": ["time", "rate"], "values": [[1, 50.0], [2, 99.5]]},
                {"name": "openstack_api.network", "tags": {"service_type": "network"}, "columns": ["time", "rate"], "values": [[1, null]]}
            ]
        }))
        .unwrap_or_default();
        assert_eq!(series_values(Some(&result)), [("compute".to_owned(), 99.5)]);
    }

    #[test]
    fn a_point_per_service_with_its_state_and_values() {
        let mut services = BTreeMap::new();
        services.insert(
            "compute".to_owned(),
            ServiceHealth {
                state: State::Outage,
                values: [("success".to_owned(), 0.0)].into(),
                fired: ["down".to_owned()].into(),
            },
        );
        let evaluation = Evaluation {
            environments: [("outside".to_owned(), services)].into(),
            ..Evaluation::default()
        };
        let lines = points(&evaluation, 7);
        assert_eq!(lines, ["apimon_health,environment=outside,service=compute state=\"outage\",weight=2i,fired=\"down\",value_success=0 7"]);
        crate::executor::lineproto::parse(&lines[0]).expect("valid line protocol");
    }
}
