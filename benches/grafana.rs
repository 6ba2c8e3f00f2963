//! No-op plan of 500 dashboards in 10 folders against the Grafana API
//! double (tests/support/grafana.rs, Grafana 11.3+/12 behaviour; no
//! Grafana server can run here) with a REAL InfluxDB for the rest of the
//! environment: converged first, then planned again and again. Prints wall
//! time and Grafana requests per plan — a commit's plan (dashboards taken
//! by their recorded content hash), a drift pass (100 read back), and a
//! plan without recorded hashes (every dashboard read: what each plan cost
//! before) — and asserts nothing about speed.
//!
//! Run: `cargo bench --bench grafana` (needs `influxd`, Debian package influxdb).

#[path = "../tests/support/mod.rs"]
mod support;
use support::harness::Harness;

use std::time::{Duration, Instant};

use apimon::apply::ApplyOptions;
use apimon::providers::Probe;
use apimon::reconcile;
use apimon::state;
use support::grafana::{GrafanaDouble, Version};

const FOLDERS: usize = 10;
const DASHBOARDS: usize = 500;

#[tokio::main]
async fn main() {
    let Some(influx) = support::influxdb::InfluxServer::start().await else {
        eprintln!("influxd is not installed; nothing measured");
        return;
    };
    let grafana = GrafanaDouble::start("glsa_token", Version::V11Late).await;
    let repo = support::TestRepo::fixture();
    repo.edit("apimon.yaml", "http://192.168.10.30:8086", &influx.url());
    repo.edit("apimon.yaml", "http://192.168.10.40:3000", &grafana.url);
    let mut folders = String::from("folders:\n");
    for f in 0..FOLDERS {
        folders.push_str(&format!("  - {{uid: f{f}, title: Folder {f}}}\n"));
    }
    folders.push_str("datasources:\n  - {name: apimon-outside, database: apimon, user: grafana, default: true}\n");
    repo.write("inventory/outside/grafana.yaml", &folders);
    std::fs::remove_dir_all(repo.path().join("dashboards")).expect("remove dashboards");
    for d in 0..DASHBOARDS {
        let panels: Vec<String> = (0..6)
            .map(|p| format!(r#"{{"id": {p}, "type": "timeseries", "title": "Panel {p}", "targets": [{{"query": "SELECT mean(duration_ms) FROM apimon_scenario WHERE scenario = 's{d}' GROUP BY time(1m)"}}]}}"#))
            .collect();
        repo.write(
            &format!("dashboards/f{}/d{d}.json", d % FOLDERS),
            &format!(
                r#"{{"uid": "d{d}", "title": "Dashboard {d}", "panels": [{}]}}"#,
                panels.join(", ")
            ),
        );
    }
    let secrets_file = repo.secrets_file(&support::outside_secrets(), 0o600);
    let state_dir = tempfile::tempdir().expect("temp dir");
    let harness = Harness::outside(repo.path(), &secrets_file, state_dir.path());
    let prepare = || harness.prepare();

    let options = ApplyOptions { parallelism: 8, ..ApplyOptions::default() };
    let started = Instant::now();
    let (plan, outcome) = harness.apply(&options, Probe::default(), || {}, |_| {}).await;
    assert!(outcome.is_success(), "{outcome:?}");
    let converge = started.elapsed();
    let state = state::read(state_dir.path()).expect("state");

    let measure = |state: apimon::state::State, probe: apimon::providers::Probe| {
        let prepared = prepare();
        async move {
            let started = Instant::now();
            let plan =
                reconcile::plan_probing(&prepared, &state, false, probe).await.expect("plan");
            assert!(!plan.summary.has_changes(), "{:?}", plan.summary);
            (started.elapsed(), prepared.live.as_ref().map_or(0, |l| l.requests_of("grafana")))
        }
    };
    let median = |mut samples: Vec<(Duration, usize)>| {
        samples.sort();
        samples[samples.len() / 2]
    };
    let mut commit = Vec::new();
    for _ in 0..10 {
        commit.push(measure(state.clone(), apimon::providers::Probe::default()).await);
    }
    let (commit_time, commit_requests) = median(commit);
    let drift = measure(state.clone(), apimon::providers::Probe { round: 0, budget: 100 }).await;
    let mut unrecorded = state.clone();
    for env in unrecorded.environments.values_mut() {
        env.fingerprints.retain(|id, _| !id.contains("/grafana.dashboard/"));
    }
    let mut before = Vec::new();
    for _ in 0..5 {
        before.push(measure(unrecorded.clone(), apimon::providers::Probe::default()).await);
    }
    let (before_time, before_requests) = median(before);

    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!("objects: {} ({DASHBOARDS} dashboards, {FOLDERS} folders)", plan.summary.create);
    println!("converge from nothing (parallelism 8):     {:>8.1} ms", ms(converge));
    println!(
        "commit's no-op plan, median of 10:         {:>8.1} ms, {commit_requests} Grafana requests",
        ms(commit_time)
    );
    println!(
        "drift pass (100 dashboards read back):     {:>8.1} ms, {} Grafana requests",
        ms(drift.0),
        drift.1
    );
    println!(
        "no-op plan reading every dashboard, median of 5 (before fingerprints): {:>8.1} ms, {before_requests} Grafana requests",
        ms(before_time)
    );
}
