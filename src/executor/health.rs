//! The executor's own health: runs by result, last success per scenario,
//! points ingested, buffered and dropped. Served as Prometheus text on the
//! ingest listener (`GET /metrics`) and written as an `apimon_executor`
//! point at each health interval, so dashboards show it next to the
//! results (see docs/metrics.md).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::lineproto::escape_tag;
use super::results::{Counters, RunResult};

#[derive(Debug, Default)]
struct Inner {
    /// Scenarios whose playbook Ansible cannot load, with why.
    unloadable: BTreeMap<String, String>,
    runs: BTreeMap<(String, &'static str), u64>,
    last_success: BTreeMap<String, i64>,
    running: u64,
}

/// Everything the executor counts about itself.
#[derive(Debug, Default)]
pub struct Health {
    inner: Mutex<Inner>,
    /// Lines accepted from runs (openstacksdk, the callback).
    pub ingested: AtomicU64,
    /// Lines refused as malformed.
    pub rejected: AtomicU64,
    /// Writes refused for want of a running scenario's credential.
    pub unauthenticated: AtomicU64,
    /// Catalog probes sent.
    pub probes: AtomicU64,
    /// Catalog probes that got no answer (refused, reset, timed out).
    pub probes_failed: AtomicU64,
    /// Probe rounds that could not start: the clouds entry is unusable or
    /// Keystone gave no token (apimon's or Keystone's fault, not an endpoint's).
    pub probe_rounds_failed: AtomicU64,
    /// The job log uploader's counters.
    pub logs: Arc<super::logs::LogCounters>,
    /// Leftovers the sweeper deleted.
    pub swept: AtomicU64,
    /// Sweeper passes that could not run (clouds entry, token, a list failed).
    pub sweeps_failed: AtomicU64,
    /// Sweeper passes refused: the project holds apimon's platform resources.
    pub sweeps_refused: AtomicU64,
    /// The results writer's counters (they outlive a writer replaced on reload).
    pub results: Arc<Counters>,
}

/// A Prometheus label value.
fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl Health {
    fn with(&self, f: impl FnOnce(&mut Inner)) {
        if let Ok(mut inner) = self.inner.lock() {
            f(&mut inner);
        }
    }

    /// The syntax check of the rollout in force found these playbooks
    /// Ansible cannot load.
    pub fn set_unloadable(&self, unloadable: BTreeMap<String, String>) {
        self.with(|h| h.unloadable = unloadable);
    }

    /// A run started.
    pub fn started(&self) {
        self.with(|h| h.running += 1);
    }

    /// A run of `scenario` ended with `result` at `unix_seconds`
    /// (a skipped fire never started, so it is not subtracted).
    pub fn finished(&self, scenario: &str, result: RunResult, unix_seconds: i64) {
        self.with(|h| {
            if result != RunResult::Skipped {
                h.running = h.running.saturating_sub(1);
            }
            *h.runs.entry((scenario.to_owned(), result.as_str())).or_default() += 1;
            if result == RunResult::Passed {
                h.last_success.insert(scenario.to_owned(), unix_seconds);
            }
        });
    }

    /// Age of the oldest buffered point at `now_ns`, in seconds (0 when none).
    fn oldest_age(&self, now_ns: i64) -> f64 {
        match self.results.oldest_ns.load(Ordering::Relaxed) {
            0 => 0.0,
            oldest => (now_ns.saturating_sub(oldest).max(0) as f64) / 1e9,
        }
    }

    /// The Prometheus text exposition at `now_ns`.
    pub fn render(&self, now_ns: i64) -> String {
        let Ok(h) = self.inner.lock() else { return String::new() };
        let mut out = String::new();
        let _ = writeln!(out, "# HELP apimon_executor_runs_total Scenario runs, by scenario and result.\n# TYPE apimon_executor_runs_total counter");
        for ((scenario, result), count) in &h.runs {
            let _ = writeln!(
                out,
                "apimon_executor_runs_total{{scenario=\"{}\",result=\"{result}\"}} {count}",
                label(scenario)
            );
        }
        let _ = writeln!(out, "# HELP apimon_executor_last_success_timestamp_seconds When each scenario last passed.\n# TYPE apimon_executor_last_success_timestamp_seconds gauge");
        for (scenario, at) in &h.last_success {
            let _ = writeln!(
                out,
                "apimon_executor_last_success_timestamp_seconds{{scenario=\"{}\"}} {at}",
                label(scenario)
            );
        }
        let _ = writeln!(out, "# HELP apimon_executor_playbook_unloadable Scheduled scenarios whose playbook Ansible cannot load (ansible-playbook --syntax-check after the rollout).\n# TYPE apimon_executor_playbook_unloadable gauge");
        for scenario in h.unloadable.keys() {
            let _ = writeln!(
                out,
                "apimon_executor_playbook_unloadable{{scenario=\"{}\"}} 1",
                label(scenario)
            );
        }
        let counters = &self.results;
        let gauges = [
            ("running", "Scenario runs going on now.", "gauge", h.running as f64),
            (
                "points_ingested_total",
                "Points received from runs (openstacksdk, the Ansible callback).",
                "counter",
                self.ingested.load(Ordering::Relaxed) as f64,
            ),
            (
                "points_rejected_total",
                "Lines received from runs and refused as malformed.",
                "counter",
                self.rejected.load(Ordering::Relaxed) as f64,
            ),
            (
                "writes_unauthenticated_total",
                "Writes to the ingest listener refused for want of a running scenario's credential.",
                "counter",
                self.unauthenticated.load(Ordering::Relaxed) as f64,
            ),
            (
                "probes_total",
                "Catalog probes sent (one GET per endpoint and round).",
                "counter",
                self.probes.load(Ordering::Relaxed) as f64,
            ),
            (
                "probes_failed_total",
                "Catalog probes that got no answer.",
                "counter",
                self.probes_failed.load(Ordering::Relaxed) as f64,
            ),
            (
                "probe_rounds_failed_total",
                "Probe rounds that could not start (clouds entry unusable, no token).",
                "counter",
                self.probe_rounds_failed.load(Ordering::Relaxed) as f64,
            ),
            (
                "logs_uploaded_total",
                "Job logs object storage took.",
                "counter",
                self.logs.uploaded.load(Ordering::Relaxed) as f64,
            ),
            (
                "log_upload_failures_total",
                "Job log uploads that failed (each is retried).",
                "counter",
                self.logs.failures.load(Ordering::Relaxed) as f64,
            ),
            (
                "logs_pending",
                "Finished runs whose logs wait for object storage.",
                "gauge",
                self.logs.pending.load(Ordering::Relaxed) as f64,
            ),
            (
                "swept_total",
                "Leftovers of scenario runs the sweeper deleted.",
                "counter",
                self.swept.load(Ordering::Relaxed) as f64,
            ),
            (
                "sweeps_failed_total",
                "Sweeper passes that could not run (clouds entry, token, a list failed).",
                "counter",
                self.sweeps_failed.load(Ordering::Relaxed) as f64,
            ),
            (
                "sweeps_refused_total",
                "Sweeper passes refused because the project holds apimon's platform resources.",
                "counter",
                self.sweeps_refused.load(Ordering::Relaxed) as f64,
            ),
            (
                "points_written_total",
                "Points the results target accepted.",
                "counter",
                counters.written.load(Ordering::Relaxed) as f64,
            ),
            (
                "points_dropped_total",
                "Points dropped: buffer full, or refused by the target as malformed.",
                "counter",
                counters.dropped.load(Ordering::Relaxed) as f64,
            ),
            (
                "points_buffered",
                "Points waiting on disk for the results target.",
                "gauge",
                counters.buffered.load(Ordering::Relaxed) as f64,
            ),
            (
                "oldest_buffered_point_age_seconds",
                "Age of the oldest point waiting for the results target.",
                "gauge",
                self.oldest_age(now_ns),
            ),
        ];
        for (name, help, kind, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP apimon_executor_{name} {help}\n# TYPE apimon_executor_{name} {kind}\napimon_executor_{name} {value}"
            );
        }
        out
    }

    /// The `apimon_executor` point of `executor` in `environment` at `now_ns`.
    pub fn point(&self, environment: &str, executor: &str, now_ns: i64) -> String {
        let (running, unloadable) =
            self.inner.lock().map(|h| (h.running, h.unloadable.len())).unwrap_or_default();
        let counters = &self.results;
        // The load the governor looks at (runs wait while it is too high).
        let load = super::load::one_minute()
            .map(|l| format!(",load={l},cpus={}i", super::load::cpus()))
            .unwrap_or_default();
        format!(
            "apimon_executor,environment={},executor={} buffered={}i,dropped={}i,ingested={}i{load},log_upload_failures={}i,logs_pending={}i,logs_uploaded={}i,oldest_buffered_age_s={},probe_rounds_failed={}i,probes={}i,probes_failed={}i,rejected={}i,running={running}i,unauthenticated={}i,unloadable={unloadable}i,written={}i {now_ns}",
            escape_tag(environment),
            escape_tag(executor),
            counters.buffered.load(Ordering::Relaxed),
            counters.dropped.load(Ordering::Relaxed),
            self.ingested.load(Ordering::Relaxed),
            self.logs.failures.load(Ordering::Relaxed),
            self.logs.pending.load(Ordering::Relaxed),
            self.logs.uploaded.load(Ordering::Relaxed),
            self.oldest_age(now_ns),
            self.probe_rounds_failed.load(Ordering::Relaxed),
            self.probes.load(Ordering::Relaxed),
            self.probes_failed.load(Ordering::Relaxed),
            self.rejected.load(Ordering::Relaxed),
            self.unauthenticated.load(Ordering::Relaxed),
            counters.written.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_counted_by_result_and_the_last_success_kept() {
        let health = Health::default();
        health.started();
        health.finished("list \"servers\"", RunResult::Passed, 1_700_000_000);
        health.started();
        health.finished("list \"servers\"", RunResult::Aborted, 1_700_000_060);
        health.finished("list \"servers\"", RunResult::Skipped, 1_700_000_060);
        let text = health.render(0);
        for expected in [
            "apimon_executor_runs_total{scenario=\"list \\\"servers\\\"\",result=\"passed\"} 1\n",
            "apimon_executor_runs_total{scenario=\"list \\\"servers\\\"\",result=\"aborted\"} 1\n",
            "apimon_executor_runs_total{scenario=\"list \\\"servers\\\"\",result=\"skipped\"} 1\n",
            "apimon_executor_last_success_timestamp_seconds{scenario=\"list \\\"servers\\\"\"} 1700000000\n",
            "apimon_executor_running 0\n",
        ] {
            assert!(text.contains(expected), "{expected} missing from\n{text}");
        }
    }

    #[test]
    fn the_oldest_buffered_point_has_an_age() {
        let health = Health::default();
        health.results.buffered.store(2, Ordering::Relaxed);
        health.results.oldest_ns.store(1_000_000_000, Ordering::Relaxed);
        let point = health.point("outside", "outside-executor", 3_500_000_000);
        assert!(point.starts_with("apimon_executor,environment=outside,executor=outside-executor "));
        assert!(
            point.contains("buffered=2i") && point.contains("oldest_buffered_age_s=2.5"),
            "{point}"
        );
        crate::executor::lineproto::parse(&point).expect("valid line protocol");
    }
}
