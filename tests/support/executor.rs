//! `apimon executor` in a test: its configuration in a temporary
//! directory, an InfluxDB with the results database, the executor running
//! in the test's runtime with its stream of run records.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use apimon::executor::results::RunResult;
use apimon::executor::{self, Control, Options, RunRecord};
use tokio::sync::mpsc;

use super::influxdb::InfluxServer;
use super::{free_port, require_binary};

pub const ADMIN: (&str, &str) = ("admin", "admin-pw");

/// An InfluxDB with an admin and the `apimon` database.
pub async fn influx() -> Option<InfluxServer> {
    let server = InfluxServer::start().await?;
    let (status, _) =
        server.query(None, "CREATE USER admin WITH PASSWORD 'admin-pw' WITH ALL PRIVILEGES").await;
    assert_eq!(status, 200);
    let (status, _) = server.query(Some(ADMIN), "CREATE DATABASE apimon").await;
    assert_eq!(status, 200);
    Some(server)
}

/// A tiny HTTP server: `/ok` answers 200, anything else 503.
pub async fn http_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut request = vec![0u8; 2048];
                let n = stream.read(&mut request).await.unwrap_or(0);
                let ok = String::from_utf8_lossy(&request[..n]).starts_with("GET /ok ");
                let status = if ok { "200 OK" } else { "503 Service Unavailable" };
                let _ = stream
                    .write_all(
                        format!(
                            "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        )
                        .as_bytes(),
                    )
                    .await;
            });
        }
    });
    format!("http://{address}")
}

pub struct Config {
    /// Its directory (scenarios/, runs/, buffer/, executor.yaml).
    pub dir: tempfile::TempDir,
    /// The executor's ingest listener (points from runs, `/metrics`).
    pub ingest_port: u16,
}

impl Config {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join("scenarios")).expect("mkdir");
        Self { dir, ingest_port: free_port() }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("executor.yaml")
    }

    pub fn playbook(&self, name: &str, tasks: &str) {
        let text = format!(
            "- hosts: localhost\n  connection: local\n  gather_facts: false\n  tasks:\n{tasks}"
        );
        std::fs::write(self.dir.path().join("scenarios").join(name), text).expect("write playbook");
    }

    /// Writes executor.yaml with `scenarios` (JSON objects), results to `influx_url`.
    pub fn write(&self, influx_url: &str, ansible: &Path, scenarios: &[serde_json::Value]) {
        let root = self.dir.path().display();
        let text = format!(
            "environment: test\nresults:\n  url: {influx_url}/write\n  database: apimon\n  username: admin\n  password: admin-pw\n  buffer_dir: {root}/buffer\nscenarios_dir: {root}/scenarios\nclouds_file: {root}/clouds.yaml\nansible_playbook: {}\nconcurrency: 4\ngrace_period_seconds: 20\nruns_dir: {root}/runs\nkeep_runs: 3\ningest_listen: 127.0.0.1:{}\nhealth_interval_seconds: 1\nload_limit: 1000000\nscenarios: {}\n",
            ansible.display(),
            self.ingest_port,
            serde_json::Value::Array(scenarios.to_vec())
        );
        let temporary = self.dir.path().join("executor.yaml.tmp");
        std::fs::write(&temporary, text).expect("write config");
        std::fs::rename(temporary, self.path()).expect("replace config");
    }
}

impl Config {
    /// Sets the top-level key `key` of executor.yaml to `value` (the
    /// tests' executors run whatever the suite's load: `load_limit` is
    /// a million unless a test sets it).
    pub fn set(&self, key: &str, value: &str) {
        let text = std::fs::read_to_string(self.path()).expect("executor.yaml");
        let prefix = format!("{key}: ");
        let mut lines: Vec<String> =
            text.lines().filter(|l| !l.starts_with(&prefix)).map(str::to_owned).collect();
        lines.push(format!("{prefix}{value}"));
        let temporary = self.dir.path().join("executor.yaml.tmp");
        std::fs::write(&temporary, lines.join("\n") + "\n").expect("write config");
        std::fs::rename(temporary, self.path()).expect("replace config");
    }
}

/// The Prometheus text a listener on 127.0.0.1:`port` serves at `/metrics`
/// (the executor's ingest listener, the health service's).
pub async fn metrics(port: u16) -> String {
    reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .expect("/metrics answers")
        .text()
        .await
        .expect("/metrics text")
}

/// The value of a `SELECT count(…)` query on `apimon` (0 without a series).
pub async fn count_of(server: &InfluxServer, query: &str) -> u64 {
    let (code, body) = server.query_in(Some(ADMIN), "apimon", query).await;
    assert_eq!(code, 200, "{query}: {body}");
    body["results"][0]["series"][0]["values"][0][1].as_u64().unwrap_or(0)
}

pub fn http_scenario(name: &str, cron: &str, url: &str) -> serde_json::Value {
    serde_json::json!({"name": name, "cron": cron, "timeout_seconds": 5, "runner": "http", "url": url, "method": "GET", "expect_status": 200})
}

pub fn ansible_scenario(name: &str, cron: &str, playbook: &str, timeout: u64) -> serde_json::Value {
    serde_json::json!({"name": name, "cron": cron, "timeout_seconds": timeout, "runner": "ansible", "playbook": playbook, "cloud": null, "extra_vars": {"marker": name}})
}

/// A running executor with its event stream.
pub struct Running {
    /// Controls the executor.
    pub controls: mpsc::UnboundedSender<Control>,
    events: mpsc::UnboundedReceiver<RunRecord>,
    /// The executor's task.
    pub task: tokio::task::JoinHandle<Result<executor::Totals, executor::ExecutorError>>,
    /// Every record received so far.
    pub seen: Vec<RunRecord>,
}

pub fn start(config: &Config) -> Running {
    let (controls, receiver) = mpsc::unbounded_channel();
    let (events_tx, events) = mpsc::unbounded_channel();
    let options = Options {
        reload_poll: Duration::from_millis(200),
        flush_retry: Duration::from_millis(300),
        events: Some(events_tx),
        ..Options::default()
    };
    let task = tokio::spawn(executor::run(config.path(), options, receiver));
    Running { controls, events, task, seen: Vec::new() }
}

impl Running {
    /// Waits for run records until `done` holds for all of them so far.
    pub async fn until(&mut self, what: &str, done: impl Fn(&[RunRecord]) -> bool) {
        let patience = Duration::from_secs(180);
        while !done(&self.seen) {
            match tokio::time::timeout(patience, self.events.recv()).await {
                Ok(Some(record)) => self.seen.push(record),
                _ => panic!("no more runs while waiting for {what}: {:#?}", self.seen),
            }
        }
    }

    pub async fn stop(mut self) -> (executor::Totals, Vec<RunRecord>) {
        self.controls.send(Control::Shutdown).expect("executor running");
        let totals = self.task.await.expect("join").expect("executor");
        while let Ok(record) = self.events.try_recv() {
            self.seen.push(record);
        }
        (totals, self.seen)
    }
}

/// The suite's `ansible-playbook` (scripts/test.sh installs ansible-core).
pub fn ansible_playbook() -> Option<PathBuf> {
    require_binary("ansible-playbook", "ansible-core (PyPI; scripts/test.sh installs it)")
}

/// How many of `records` are of `scenario` with `result`.
pub fn count(records: &[RunRecord], scenario: &str, result: RunResult) -> usize {
    records.iter().filter(|r| r.scenario == scenario && r.result == result).count()
}

/// Points in InfluxDB per (scenario, result).
pub async fn points(server: &InfluxServer) -> BTreeMap<(String, String), u64> {
    let (_, body) = server.query(Some(ADMIN), "SELECT count(duration_ms) FROM apimon.autogen.apimon_scenario GROUP BY scenario, result").await;
    let mut counts = BTreeMap::new();
    for series in body["results"][0]["series"].as_array().cloned().unwrap_or_default() {
        let scenario = series["tags"]["scenario"].as_str().unwrap_or_default().to_owned();
        let result = series["tags"]["result"].as_str().unwrap_or_default().to_owned();
        counts.insert((scenario, result), series["values"][0][1].as_u64().unwrap_or_default());
    }
    counts
}

pub fn tally(records: &[RunRecord]) -> BTreeMap<(String, String), u64> {
    let mut counts = BTreeMap::new();
    for record in records {
        *counts.entry((record.scenario.clone(), record.result.as_str().to_owned())).or_default() +=
            1;
    }
    counts
}

pub fn processes_with(marker: &str) -> usize {
    std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
                .filter(|cmdline| {
                    String::from_utf8_lossy(cmdline).replace('\0', " ").contains(marker)
                })
                .count()
        })
        .unwrap_or(0)
}

/// Runs every InfluxQL query of the dashboard `files` (paths from the
/// crate's root) on `apimon`, with Grafana's variables replaced (the
/// time filter, the interval, `$environment` = test, then `variables`):
/// each query with whether it returned rows. A query InfluxDB refuses fails.
pub async fn dashboard_queries(
    server: &InfluxServer,
    files: &[&str],
    variables: &[(&str, &str)],
) -> Vec<(String, bool)> {
    fn queries(value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, child) in map {
                    match (key.as_str(), child) {
                        ("query", serde_json::Value::String(q)) if q.contains(' ') => {
                            out.push(q.clone())
                        }
                        _ => queries(child, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|item| queries(item, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(file))
            .expect("dashboard");
        queries(&serde_json::from_str(&text).expect("dashboard JSON"), &mut all);
    }
    let mut results = Vec::new();
    for query in all {
        let mut q = query
            .replace("$timeFilter", "time > now() - 1h")
            .replace("$__interval", "10s")
            .replace("$environment", "test");
        for (name, value) in variables {
            q = q.replace(name, value);
        }
        let (status, body) = server.query_in(Some(ADMIN), "apimon", &q).await;
        let result = &body["results"][0];
        assert_eq!(status, 200, "{q}: {body}");
        assert!(result.get("error").is_none(), "{q}: {body}");
        results.push((q, result.get("series").is_some()));
    }
    results
}

/// Every query of the dashboard `files` returns rows.
pub async fn dashboard_queries_return_rows(
    server: &InfluxServer,
    files: &[&str],
    variables: &[(&str, &str)],
) {
    let results = dashboard_queries(server, files, variables).await;
    assert!(!results.is_empty(), "no queries in {files:?}");
    for (query, has_rows) in results {
        assert!(has_rows, "no data for a dashboard query: {query}");
    }
}

/// The suite's `openstack.cloud` collection and an Ansible whose Python
/// has openstacksdk and the InfluxDB client (scripts/test.sh installs
/// both), or `None` (skip) outside CI.
pub fn cloud_ansible() -> Option<(PathBuf, PathBuf)> {
    let ansible = ansible_playbook()?;
    let collections = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ansible-collections");
    let python = ansible.with_file_name("python3");
    let has_sdk = std::process::Command::new(&python)
        .args(["-c", "import openstack, influxdb"])
        .status()
        .is_ok_and(|s| s.success());
    let has_collection =
        collections.join("ansible_collections/openstack/cloud/MANIFEST.json").is_file();
    if !(has_sdk && has_collection) {
        let message = format!(
            "no openstacksdk beside {} or no openstack.cloud collection in {}: run scripts/test.sh",
            ansible.display(),
            collections.display()
        );
        super::skip(&message);
        return None;
    }
    Some((ansible, collections))
}
