//! Scheduling precision of the executor: the delay between each cron
//! instant and the start of the scenario's process, over 100 runs (10
//! scenarios every second, with `/bin/true` standing in for
//! ansible-playbook so the measurement is the scheduler's, not Ansible's).
//! Prints median and max; asserts nothing about speed.

use std::time::Duration;

use apimon::executor::{self, Control, Options};
use tokio::sync::mpsc;

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().display();
    let scenarios: Vec<serde_json::Value> = (0..10)
        .map(|i| serde_json::json!({"name": format!("s{i}"), "cron": "* * * * * *", "timeout_seconds": 5, "runner": "ansible", "playbook": "none.yaml", "cloud": null, "extra_vars": {}}))
        .collect();
    // Results go to a closed port: buffered on disk, as while telegraf is down.
    let config = format!(
        "environment: bench\nresults: {{url: 'http://127.0.0.1:9/write', database: apimon, buffer_dir: '{root}/buffer'}}\nscenarios_dir: {root}\nclouds_file: {root}/clouds.yaml\nansible_playbook: /bin/true\nconcurrency: 10\ningest_listen: null\nscenarios: {}\n",
        serde_json::Value::Array(scenarios)
    );
    let path = dir.path().join("executor.yaml");
    std::fs::write(&path, config).expect("write config");

    let (controls, receiver) = mpsc::unbounded_channel();
    let (events, mut records) = mpsc::unbounded_channel();
    let options = Options { events: Some(events), ..Options::default() };
    let task = tokio::spawn(executor::run(path, options, receiver));
    let mut delays = Vec::new();
    while delays.len() < 100 {
        let record = tokio::time::timeout(Duration::from_secs(30), records.recv())
            .await
            .expect("runs keep coming")
            .expect("executor running");
        let delay = record.started_at - record.scheduled_at;
        delays.push(delay.num_microseconds().unwrap_or(i64::MAX));
    }
    controls.send(Control::Shutdown).expect("running");
    let _ = task.await;
    delays.sort_unstable();
    println!("runs: {}", delays.len());
    println!(
        "delay from cron instant to process start, median: {:>8.3} ms",
        delays[delays.len() / 2] as f64 / 1e3
    );
    println!(
        "delay from cron instant to process start, p95:    {:>8.3} ms",
        delays[delays.len() * 95 / 100] as f64 / 1e3
    );
    println!(
        "delay from cron instant to process start, max:    {:>8.3} ms",
        delays[delays.len() - 1] as f64 / 1e3
    );
}
