//! Dead-man's switches: what should report and went quiet. An executor
//! whose `apimon_executor` health points stopped for 3 of its intervals; a
//! scheduled scenario without a run (other than `skipped`) for 3 of its
//! periods; an environment whose daemon reconciles have failed, or been
//! held, for longer than a bound (from the `apimon_reconcile` points the
//! daemon writes). Each fires an incident of its own. One query per switch
//! kind and environment, grouped by executor or scenario.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::evaluate::Source;

/// `deadman:` in the health service's configuration.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Deadman {
    /// The executors' health point interval (their
    /// `health_interval_seconds`); default 60.
    pub executor_interval_seconds: Option<u64>,
    /// Executors expected by environment (any seen in the last day count
    /// too).
    #[serde(default)]
    pub executors: BTreeMap<String, Vec<String>>,
    /// Scheduled scenarios and their cron, by environment.
    #[serde(default)]
    pub scenarios: BTreeMap<String, BTreeMap<String, String>>,
    /// How long reconciles may fail or be held before it is an incident;
    /// default 1800.
    pub reconcile_bound_seconds: Option<u64>,
}

/// Periods (or intervals) of silence that fire a switch.
const MISSED: u32 = 3;

/// One switch's look: `(about, Some(what it saw))` when it fires.
pub type Look = (String, Option<String>);

/// Every switch of `environment` at `now`; `started` is when the service
/// started (nothing is "silent" for longer than it has been watching).
pub async fn look(
    source: &Source<'_>,
    deadman: &Deadman,
    environment: &str,
    now: DateTime<Utc>,
    started: DateTime<Utc>,
) -> Result<Vec<Look>, String> {
    let quoted = environment.replace('\\', "\\\\").replace('\'', "\\'");
    let secrets: Vec<&str> =
        source.credentials.map(|c| c.password.expose().as_str()).into_iter().collect();
    // Back far enough to see the last run of the scenario with the
    // longest period (3 periods and a day), at least a week.
    let longest = deadman
        .scenarios
        .get(environment)
        .into_iter()
        .flatten()
        .filter_map(|(_, cron)| period(&crate::cron::Schedule::parse(cron).ok()?, now))
        .max()
        .unwrap_or_default();
    let reach_hours =
        (longest * MISSED as i32 + chrono::Duration::days(1)).num_hours().clamp(7 * 24, 400 * 24);
    let queries = [
        format!("SELECT last(\"running\") FROM \"apimon_executor\" WHERE \"environment\" = '{quoted}' AND time > now() - 1d GROUP BY \"executor\""),
        format!("SELECT last(\"duration_ms\") FROM \"apimon_scenario\" WHERE \"environment\" = '{quoted}' AND \"result\" != 'skipped' AND time > now() - {reach_hours}h GROUP BY \"scenario\""),
        format!("SELECT last(\"outcome\") FROM \"apimon_reconcile\" WHERE \"environment\" = '{quoted}' AND time > now() - 7d"),
        format!("SELECT last(\"outcome\") FROM \"apimon_reconcile\" WHERE \"environment\" = '{quoted}' AND (\"outcome\" = 'success' OR \"outcome\" = 'no_changes') AND time > now() - 7d"),
    ];
    let results = source
        .client
        .query_in(source.database, &queries, source.credentials, &secrets)
        .await
        .map_err(|e| e.to_string())?;
    let last_by = |index: usize, tag: &str| -> BTreeMap<String, DateTime<Utc>> {
        let mut out = BTreeMap::new();
        for series in results.get(index).into_iter().flat_map(|r| &r.series) {
            let name = series.tags.get(tag).cloned().unwrap_or_default();
            if let Some(at) = series.values.last().and_then(|row| row.first()).and_then(time_of) {
                out.insert(name, at);
            }
        }
        out
    };
    let watching = now - started;
    let mut looks = Vec::new();

    // Executors.
    let interval = Duration::from_secs(deadman.executor_interval_seconds.unwrap_or(60).max(1));
    let limit = chrono::Duration::from_std(interval * MISSED).unwrap_or_default();
    let seen = last_by(0, "executor");
    // Points from before executors carried their name (no tag) are no
    // executor of their own.
    let expected: BTreeSet<&String> = deadman
        .executors
        .get(environment)
        .into_iter()
        .flatten()
        .chain(seen.keys())
        .filter(|name| !name.is_empty())
        .collect();
    for executor in expected {
        let fired = match seen.get(executor) {
            Some(at) if now - *at > limit => Some(format!(
                "executor {executor} has sent no health point since {} ({} s; expected every {} s)",
                at.format("%Y-%m-%d %H:%M:%S UTC"),
                (now - *at).num_seconds(),
                interval.as_secs()
            )),
            None if watching > limit => {
                Some(format!("executor {executor} has sent no health point in the last day"))
            }
            _ => None,
        };
        looks.push((format!("executor:{executor}"), fired));
    }

    // Scenarios.
    let runs = last_by(1, "scenario");
    for (scenario, cron) in deadman.scenarios.get(environment).into_iter().flatten() {
        let Ok(schedule) = crate::cron::Schedule::parse(cron) else { continue };
        let Some(period) = period(&schedule, now) else { continue };
        let limit = period * MISSED as i32;
        let fired = match runs.get(scenario) {
            Some(at) if now - *at > limit => Some(format!(
                "scenario {scenario} ({cron}) has not run since {} ({} of its periods)",
                at.format("%Y-%m-%d %H:%M:%S UTC"),
                (now - *at).num_seconds() / period.num_seconds().max(1)
            )),
            None if watching > limit => Some(format!(
                "scenario {scenario} ({cron}) has not run in the last {} days",
                reach_hours / 24
            )),
            _ => None,
        };
        looks.push((format!("scenario:{scenario}"), fired));
    }

    // The daemon's reconciles: the last one failed or was held, and the
    // last good one is older than the bound.
    let bound = chrono::Duration::seconds(
        i64::try_from(deadman.reconcile_bound_seconds.unwrap_or(1800)).unwrap_or(1800),
    );
    let last = results
        .get(2)
        .and_then(|r| r.series.first())
        .and_then(|s| s.values.last())
        .and_then(|row| Some((time_of(row.first()?)?, row.get(1)?.as_str()?.to_owned())));
    let good = results
        .get(3)
        .and_then(|r| r.series.first())
        .and_then(|s| s.values.last())
        .and_then(|row| time_of(row.first()?));
    if let Some((at, outcome)) = last {
        let bad = !matches!(outcome.as_str(), "success" | "no_changes");
        let since = good.unwrap_or(at - bound - chrono::Duration::seconds(1));
        let fired = (bad && now - since > bound).then(|| {
            format!(
                "the daemon's reconciles have not succeeded since {} (last outcome {outcome} at {})",
                since.format("%Y-%m-%d %H:%M:%S UTC"),
                at.format("%Y-%m-%d %H:%M:%S UTC")
            )
        });
        looks.push(("reconcile".to_owned(), fired));
    }
    Ok(looks)
}

/// The time between the next two firings of `schedule` after `now`.
fn period(schedule: &crate::cron::Schedule, now: DateTime<Utc>) -> Option<chrono::Duration> {
    let first = schedule.next_after(&now)?;
    let second = schedule.next_after(&first)?;
    Some(second - first)
}

fn time_of(value: &serde_json::Value) -> Option<DateTime<Utc>> {
    value.as_str().and_then(|t| DateTime::parse_from_rfc3339(t).ok()).map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_period_is_the_gap_between_firings() {
        let Ok(every_five) = crate::cron::Schedule::parse("*/5 * * * *") else { panic!("cron") };
        assert_eq!(period(&every_five, Utc::now()), Some(chrono::Duration::minutes(5)));
        let Ok(seconds) = crate::cron::Schedule::parse("*/2 * * * * *") else { panic!("cron") };
        assert_eq!(period(&seconds, Utc::now()), Some(chrono::Duration::seconds(2)));
    }
}
