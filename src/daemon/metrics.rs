//! The daemon's metrics in the Prometheus text exposition format
//! (version 0.0.4), written by hand: a handful of counters, gauges and one
//! histogram do not justify a metrics framework.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

/// Upper bounds of the reconcile duration histogram, in seconds.
const BUCKETS: [f64; 10] = [0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];

#[derive(Debug, Default)]
struct Inner {
    duration_counts: [u64; BUCKETS.len()],
    duration_sum: f64,
    duration_count: u64,
    changes: BTreeMap<(String, String, String), u64>,
    failures: BTreeMap<String, u64>,
    last_applied: BTreeMap<String, f64>,
    drift: BTreeMap<String, u64>,
    pending: BTreeMap<String, u64>,
    /// (environment, host) → scheduled playbooks its runtime cannot load.
    unloadable: BTreeMap<(String, String), u64>,
}

/// Everything the daemon counts.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    fn with(&self, f: impl FnOnce(&mut Inner)) {
        if let Ok(mut inner) = self.inner.lock() {
            f(&mut inner);
        }
    }

    /// One reconcile took `seconds`.
    pub fn reconcile_duration(&self, seconds: f64) {
        self.with(|m| {
            for (count, bound) in m.duration_counts.iter_mut().zip(BUCKETS) {
                if seconds <= bound {
                    *count += 1;
                }
            }
            m.duration_sum += seconds;
            m.duration_count += 1;
        });
    }

    /// A change was applied.
    pub fn change_applied(&self, provider: &str, kind: &str, op: &str) {
        self.with(|m| {
            *m.changes.entry((provider.to_owned(), kind.to_owned(), op.to_owned())).or_default() +=
                1
        });
    }

    /// A failure of `stage` (`source`, `validate`, `observe`, `apply`).
    pub fn failure(&self, stage: &str) {
        self.with(|m| *m.failures.entry(stage.to_owned()).or_default() += 1);
    }

    /// `env` converged to a commit at `unix_seconds`.
    pub fn applied(&self, env: &str, unix_seconds: f64) {
        self.with(|m| {
            m.last_applied.insert(env.to_owned(), unix_seconds);
        });
    }

    /// A drift check found `count` resources off their desired state in `env`.
    pub fn drift_found(&self, env: &str, count: u64) {
        self.with(|m| *m.drift.entry(env.to_owned()).or_default() += count);
    }

    /// Changes waiting (report-only drift or outside a maintenance window).
    pub fn pending(&self, env: &str, count: u64) {
        self.with(|m| {
            m.pending.insert(env.to_owned(), count);
        });
    }

    /// What the last observation of `env`'s hosts found: playbooks each
    /// executor's runtime cannot load.
    pub fn unloadable(&self, env: &str, by_host: &[(String, u64)]) {
        self.with(|m| {
            m.unloadable.retain(|(e, _), _| e != env);
            for (host, count) in by_host {
                m.unloadable.insert((env.to_owned(), host.clone()), *count);
            }
        });
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let Ok(m) = self.inner.lock() else { return String::new() };
        let mut out = String::new();
        let _ = writeln!(out, "# HELP apimon_reconcile_duration_seconds Time one reconcile took.\n# TYPE apimon_reconcile_duration_seconds histogram");
        for (count, bound) in m.duration_counts.iter().zip(BUCKETS) {
            let _ =
                writeln!(out, "apimon_reconcile_duration_seconds_bucket{{le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(
            out,
            "apimon_reconcile_duration_seconds_bucket{{le=\"+Inf\"}} {}",
            m.duration_count
        );
        let _ = writeln!(
            out,
            "apimon_reconcile_duration_seconds_sum {}\napimon_reconcile_duration_seconds_count {}",
            m.duration_sum, m.duration_count
        );
        let _ = writeln!(out, "# HELP apimon_changes_applied_total Changes applied, by provider, kind and operation.\n# TYPE apimon_changes_applied_total counter");
        for ((provider, kind, op), count) in &m.changes {
            let _ = writeln!(out, "apimon_changes_applied_total{{provider=\"{provider}\",kind=\"{kind}\",op=\"{op}\"}} {count}");
        }
        let _ = writeln!(out, "# HELP apimon_reconcile_failures_total Failed reconciles, by stage.\n# TYPE apimon_reconcile_failures_total counter");
        for (stage, count) in &m.failures {
            let _ = writeln!(out, "apimon_reconcile_failures_total{{stage=\"{stage}\"}} {count}");
        }
        let _ = writeln!(out, "# HELP apimon_last_applied_commit_timestamp_seconds When an environment last converged to a commit.\n# TYPE apimon_last_applied_commit_timestamp_seconds gauge");
        for (env, at) in &m.last_applied {
            let _ = writeln!(
                out,
                "apimon_last_applied_commit_timestamp_seconds{{environment=\"{env}\"}} {at}"
            );
        }
        let _ = writeln!(out, "# HELP apimon_drift_found_total Resources found off their desired state by drift checks.\n# TYPE apimon_drift_found_total counter");
        for (env, count) in &m.drift {
            let _ = writeln!(out, "apimon_drift_found_total{{environment=\"{env}\"}} {count}");
        }
        let _ = writeln!(out, "# HELP apimon_pending_changes Changes waiting for a maintenance window or, for report-only drift, for an operator.\n# TYPE apimon_pending_changes gauge");
        for (env, count) in &m.pending {
            let _ = writeln!(out, "apimon_pending_changes{{environment=\"{env}\"}} {count}");
        }
        let _ = writeln!(out, "# HELP apimon_executor_playbooks_unloadable Scheduled playbooks an executor's runtime cannot load, as its last syntax check found (read when the daemon observed the host).\n# TYPE apimon_executor_playbooks_unloadable gauge");
        for ((env, host), count) in &m.unloadable {
            let _ = writeln!(out, "apimon_executor_playbooks_unloadable{{environment=\"{env}\",host=\"{host}\"}} {count}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let metrics = Metrics::default();
        metrics.reconcile_duration(0.2);
        metrics.reconcile_duration(3.0);
        let text = metrics.render();
        assert!(
            text.contains("apimon_reconcile_duration_seconds_bucket{le=\"0.1\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("apimon_reconcile_duration_seconds_bucket{le=\"0.25\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("apimon_reconcile_duration_seconds_bucket{le=\"5\"} 2\n"), "{text}");
        assert!(
            text.contains("apimon_reconcile_duration_seconds_bucket{le=\"+Inf\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("apimon_reconcile_duration_seconds_count 2\n"), "{text}");
    }

    #[test]
    fn counters_carry_their_labels() {
        let metrics = Metrics::default();
        metrics.change_applied("influxdb", "user", "create");
        metrics.change_applied("influxdb", "user", "create");
        metrics.failure("validate");
        assert!(metrics.render().contains(
            "apimon_changes_applied_total{provider=\"influxdb\",kind=\"user\",op=\"create\"} 2"
        ));
        assert!(metrics.render().contains("apimon_reconcile_failures_total{stage=\"validate\"} 1"));
    }
}
