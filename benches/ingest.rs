//! What the executor's measurement path costs, against a REAL InfluxDB:
//!
//! - points per second from runs to InfluxDB: openstacksdk-shaped points
//!   POSTed to the executor's ingest listener with an admitted run's
//!   credential, one per request (as openstacksdk sends them, 8 clients at
//!   once) and in batches of 1,000, timed until InfluxDB has every one of
//!   them;
//! - the overhead apimon's Ansible callback adds per task: a playbook of
//!   300 `set_fact` tasks with and without the callback (best of 3 each).
//!
//! Prints the numbers; asserts nothing about speed.
//! Run: `cargo bench --bench ingest` (needs `influxd`, Debian package
//! influxdb; `ansible-playbook` on PATH for the callback part).

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use apimon::executor;

const SINGLE: usize = 4_000;
const BATCHED: usize = 100_000;
const TASKS: usize = 300;

fn request_line(i: usize) -> String {
    format!(
        "openstack_api.compute,method=GET,name=servers_detail,status_code=200 200=1i,GET.200=1i,attempted=1i,duration={}i,status_code_val=200i",
        i % 900
    )
}

async fn count(server: &support::influxdb::InfluxServer) -> u64 {
    let (_, body) = server
        .query_in(
            Some(("admin", "admin-pw")),
            "apimon",
            "SELECT count(\"attempted\") FROM \"openstack_api.compute\"",
        )
        .await;
    body["results"][0]["series"][0]["values"][0][1].as_u64().unwrap_or_default()
}

async fn wait_for(server: &support::influxdb::InfluxServer, total: u64) {
    let deadline = Instant::now() + Duration::from_secs(600);
    while count(server).await < total {
        assert!(Instant::now() < deadline, "InfluxDB never got all points");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn report(what: &str, points: usize, accepted: Duration, stored: Duration) {
    println!(
        "{what}: {points} points accepted in {:.2} s ({:.0}/s), in InfluxDB after {:.2} s ({:.0}/s)",
        accepted.as_secs_f64(),
        points as f64 / accepted.as_secs_f64(),
        stored.as_secs_f64(),
        points as f64 / stored.as_secs_f64()
    );
}

async fn ingest_throughput() {
    let Some(server) = support::influxdb::InfluxServer::start().await else {
        eprintln!("influxd is not installed; ingest not measured");
        return;
    };
    server.query(None, "CREATE USER admin WITH PASSWORD 'admin-pw' WITH ALL PRIVILEGES").await;
    server.query(Some(("admin", "admin-pw")), "CREATE DATABASE apimon").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let port = support::free_port();
    // The executor's listener and results path, as a run reaches them: one
    // run admitted, its credential on every write (as openstacksdk sends it).
    let target = executor::config::ResultsTarget {
        url: format!("{}/write", server.url()),
        database: "apimon".into(),
        credentials: Some(("admin".into(), apimon::model::Sensitive::new("admin-pw".into()))),
        buffer_dir: dir.path().join("buffer"),
        buffer_max_points: 1_000_000,
        zone: None,
    };
    let health = std::sync::Arc::new(executor::health::Health::default());
    let writer = executor::results::spawn(
        target,
        Duration::from_millis(100),
        std::sync::Arc::clone(&health.results),
    );
    let ingest = executor::ingest::Ingest::new("bench".into(), writer.clone(), health);
    let admission = ingest.admit("bench", "0123");
    let stop = tokio_util::sync::CancellationToken::new();
    let address: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    executor::ingest::serve(address, std::sync::Arc::clone(&ingest), stop.clone())
        .await
        .expect("listen");
    let url = format!("http://127.0.0.1:{port}/write?db=bench:0123");
    let http = reqwest::Client::new();
    let token = admission.token.clone();

    let start = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for client in 0..8 {
        let (http, url, token) = (http.clone(), url.clone(), token.clone());
        clients.spawn(async move {
            for i in (client..SINGLE).step_by(8) {
                let response = http
                    .post(&url)
                    .basic_auth("apimon-run", Some(&token))
                    .body(request_line(i))
                    .send()
                    .await
                    .expect("write");
                assert_eq!(response.status().as_u16(), 204);
            }
        });
    }
    while clients.join_next().await.is_some() {}
    let accepted = start.elapsed();
    wait_for(&server, SINGLE as u64).await;
    let stored = start.elapsed();
    report("one point per request, 8 clients", SINGLE, accepted, stored);

    let start = Instant::now();
    for chunk in 0..BATCHED / 1_000 {
        let body: String =
            (0..1_000).map(|i| request_line(chunk * 1_000 + i) + "\n").collect::<String>();
        let response = http
            .post(&url)
            .basic_auth("apimon-run", Some(&token))
            .body(body)
            .send()
            .await
            .expect("write");
        assert_eq!(response.status().as_u16(), 204);
    }
    let accepted = start.elapsed();
    wait_for(&server, (SINGLE + BATCHED) as u64).await;
    let stored = start.elapsed();
    report("batches of 1,000", BATCHED, accepted, stored);
    drop(admission);
    stop.cancel();
    writer.stop().await;
}

fn playbook_seconds(
    ansible: &std::path::Path,
    playbook: &std::path::Path,
    plugin: Option<&std::path::Path>,
    run_dir: &std::path::Path,
) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..3 {
        let mut command = std::process::Command::new(ansible);
        command.arg(playbook).env("ANSIBLE_NOCOLOR", "1").stdout(std::process::Stdio::null());
        if let Some(dir) = plugin {
            command.env("ANSIBLE_CALLBACK_PLUGINS", dir).env("APIMON_RUN_DIR", run_dir);
        }
        let start = Instant::now();
        let status = command.status().expect("ansible-playbook");
        assert!(status.success());
        best = best.min(start.elapsed().as_secs_f64());
    }
    best
}

fn callback_overhead() {
    let Some(ansible) = support::require_binary("ansible-playbook", "ansible-core (PyPI)") else {
        eprintln!("ansible-playbook is not on PATH; the callback not measured");
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let mut text =
        String::from("- hosts: localhost\n  connection: local\n  gather_facts: false\n  tasks:\n");
    for i in 0..TASKS {
        text.push_str(&format!("    - ansible.builtin.set_fact: {{x{i}: {i}}}\n"));
    }
    let playbook = dir.path().join("tasks.yaml");
    std::fs::write(&playbook, text).expect("playbook");
    let plugins = dir.path().join("plugins");
    apimon::executor::ansible::ensure_callback_plugin(&plugins).expect("plugin");
    let without = playbook_seconds(&ansible, &playbook, None, dir.path());
    let with = playbook_seconds(&ansible, &playbook, Some(&plugins), dir.path());
    let points =
        std::fs::read_to_string(dir.path().join("tasks.lp")).expect("task points").lines().count();
    println!(
        "{TASKS} tasks: {without:.2} s without the callback, {with:.2} s with it ({points} points written over 3 runs): {:+.2} ms per task",
        (with - without) * 1e3 / TASKS as f64
    );
}

#[tokio::main]
async fn main() {
    ingest_throughput().await;
    callback_overhead();
}
