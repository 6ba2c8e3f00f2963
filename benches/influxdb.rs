//! No-op plan against a REAL InfluxDB: 1,000 users and 21 databases,
//! converged first, then planned again and again. Prints wall time and
//! HTTP requests per plan; asserts nothing about speed.
//!
//! Run: `cargo bench --bench influxdb` (needs `influxd`, Debian package influxdb).

#[path = "../tests/support/mod.rs"]
mod support;
use support::harness::Harness;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use apimon::apply::ApplyOptions;
use apimon::providers::Probe;
use apimon::reconcile;
use apimon::state;

#[tokio::main]
async fn main() {
    let Some(server) = support::influxdb::InfluxServer::start().await else {
        eprintln!("influxd is not installed; nothing measured");
        return;
    };
    let repo = support::TestRepo::with_files(support::fixture_files_without_grafana());
    repo.edit("apimon.yaml", "http://192.168.10.30:8086", &server.url());
    let mut influx = String::from("databases:\n");
    for d in 0..20 {
        let _ = writeln!(
            influx,
            "  - name: db{d}\n    retention_policies: [{{name: rp, duration: 4w, default: true}}]"
        );
    }
    influx.push_str("  - name: apimon\nusers:\n  - {name: admin, admin: true, password: {secret: outside_influxdb_admin_password}}\n  - name: telegraf\n    password: {secret: outside_influxdb_telegraf_password}\n    grants: [{database: apimon, privilege: WRITE}]\n  - name: grafana\n    password: {secret: outside_influxdb_grafana_password}\n    grants: [{database: apimon, privilege: READ}]\n");
    for u in 0..USERS - 3 {
        let _ = writeln!(influx, "  - name: user{u}\n    password: {{secret: outside_influxdb_telegraf_password}}\n    grants: [{{database: db{}, privilege: READ}}]", u % 20);
    }
    repo.write("inventory/outside/influxdb.yaml", &influx);
    let secrets_file = repo.secrets_file(&support::fixture_secrets(), 0o600);
    let state_dir = tempfile::tempdir().expect("temp dir");
    let harness = Harness::outside(repo.path(), &secrets_file, state_dir.path());
    let prepare = || harness.prepare();

    let options = ApplyOptions { parallelism: 8, ..ApplyOptions::default() };
    let started = Instant::now();
    let (plan, outcome) = harness.apply(&options, Probe::default(), || {}, |_| {}).await;
    assert!(outcome.is_success(), "{outcome:?}");
    let converge = started.elapsed();

    let state = state::read(state_dir.path()).expect("state");
    let mut samples: Vec<(Duration, usize)> = Vec::new();
    for _ in 0..10 {
        let prepared = prepare();
        let started = Instant::now();
        let plan = reconcile::plan(&prepared, &state, false).await.expect("plan");
        samples.push((
            started.elapsed(),
            prepared.live.as_ref().map_or(0, |l| l.requests_of("influxdb")),
        ));
        assert!(!plan.summary.has_changes(), "{:?}", plan.summary);
    }
    samples.sort();
    let (median, requests) = samples[samples.len() / 2];
    println!(
        "objects: {} ({USERS} users, 21 databases, retention policies, grants)",
        plan.summary.create
    );
    println!("converge from nothing (parallelism 8): {:>8.1} ms", converge.as_secs_f64() * 1e3);
    println!("no-op plan, median of 10:              {:>8.1} ms", median.as_secs_f64() * 1e3);
    println!(
        "no-op plan, slowest:                   {:>8.1} ms",
        samples[samples.len() - 1].0.as_secs_f64() * 1e3
    );
    println!("HTTP requests per no-op plan:          {requests:>8}");

    // A drift pass: the same plus a slice of password logins.
    let prepared = prepare();
    let probe = apimon::providers::Probe { round: 0, budget: 100 };
    let started = Instant::now();
    let plan = reconcile::plan_probing(&prepared, &state, false, probe).await.expect("plan");
    assert!(!plan.summary.has_changes(), "{:?}", plan.summary);
    println!(
        "drift pass (100 logins of {USERS}):     {:>8.1} ms, {} requests",
        started.elapsed().as_secs_f64() * 1e3,
        prepared.live.as_ref().map_or(0, |l| l.requests_of("influxdb"))
    );
}

/// Users declared (admin, telegraf, grafana and the rest).
const USERS: usize = 1000;
