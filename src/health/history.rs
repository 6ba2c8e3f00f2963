//! A service's recent past for the status page: its worst state per hour
//! over the last 24 h and per day over the last 7 d, read back from the
//! `apimon_health` points the service wrote (two queries per environment,
//! grouped by service, refreshed at most once a minute).

use std::collections::BTreeMap;

use serde::Serialize;

use super::evaluate::Source;
use crate::model::health::State;

/// One service's past: oldest first, `None` where nothing was evaluated.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Past {
    /// The last 24 hours, one slot per hour.
    pub day: Vec<Option<State>>,
    /// The last 7 days, one slot per day.
    pub week: Vec<Option<State>>,
}

/// Services' pasts by environment.
pub type History = BTreeMap<String, BTreeMap<String, Past>>;

/// Reads the pasts of `environments`; a query that fails leaves that
/// environment out (the page says the history is unavailable).
pub async fn read(source: &Source<'_>, environments: &[String]) -> History {
    let secrets: Vec<&str> =
        source.credentials.map(|c| c.password.expose().as_str()).into_iter().collect();
    let mut history = History::new();
    for environment in environments {
        let quoted = environment.replace('\\', "\\\\").replace('\'', "\\'");
        let query = |span: &str, bucket: &str| {
            format!("SELECT max(\"weight\") FROM \"apimon_health\" WHERE \"environment\" = '{quoted}' AND time > now() - {span} GROUP BY time({bucket}), \"service\" fill(null)")
        };
        let queries = [query("24h", "1h"), query("7d", "1d")];
        let Ok(results) =
            source.client.query_in(source.database, &queries, source.credentials, &secrets).await
        else {
            continue;
        };
        let mut pasts: BTreeMap<String, Past> = BTreeMap::new();
        for (slot, result) in results.iter().enumerate() {
            for series in &result.series {
                let Some(service) = series.tags.get("service") else { continue };
                let states: Vec<Option<State>> = series
                    .values
                    .iter()
                    .map(|row| {
                        row.get(1)
                            .and_then(serde_json::Value::as_f64)
                            .map(|w| State::of(w.clamp(0.0, 2.0) as u8))
                    })
                    .collect();
                let past = pasts.entry(service.clone()).or_default();
                if slot == 0 {
                    past.day = tail(states, 24);
                } else {
                    past.week = tail(states, 7);
                }
            }
        }
        history.insert(environment.clone(), pasts);
    }
    history
}

/// The last `n` of `states`.
fn tail(mut states: Vec<Option<State>>, n: usize) -> Vec<Option<State>> {
    if states.len() > n {
        states.drain(..states.len() - n);
    }
    states
}
