//! What the executor's work besides the scenarios costs, against the REAL
//! OpenStack control plane (tests/openstack/up.sh) and a REAL InfluxDB:
//!
//! - catalog probes: `apimon executor` (the built binary, as a process of
//!   its own) probing 100 endpoints of a region of the bench's own (one
//!   loopback server answers them), every second for 30 rounds; its CPU
//!   time per round and resident memory, against the same executor without
//!   probes, and what that makes at the default 30 s interval;
//! - log uploads: logs of 64 KiB and 4 MiB through the real swift-proxy,
//!   with the redaction they get before leaving the executor;
//! - one sweeper pass over 500 leftovers named after a finished run's job
//!   id (200 keypairs, 150 security groups, 100 networks, 50 ports), run by
//!   the executor: the pass's duration as its `apimon_sweep` point says.
//!
//! Prints the numbers; asserts nothing about speed.
//! Run: `APIMON_TEST_OPENSTACK=DIR cargo bench --bench monitoring` with a
//! control plane started by `tests/openstack/up.sh DIR`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

const ENDPOINTS: usize = 100;
const ROUNDS: u64 = 30;

/// CPU time (user + system) and resident memory of process `pid`.
fn usage(pid: u32) -> (Duration, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
    let ticks: u64 = fields.get(11).and_then(|u| u.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    // USER_HZ is 100 on Linux.
    (Duration::from_millis(ticks * 10), rss_kib)
}

/// An executor directory: executor.yaml (results to `influx`) plus `extra`.
fn executor_dir(influx: &str, clouds: &str, extra: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().display();
    std::fs::create_dir_all(dir.path().join("scenarios")).expect("mkdir");
    std::fs::write(dir.path().join("clouds.yaml"), clouds).expect("clouds");
    let text = format!(
        "environment: bench\nresults: {{url: '{influx}/write', database: apimon, username: admin, password: admin-pw, buffer_dir: {root}/buffer}}\nscenarios_dir: {root}/scenarios\nclouds_file: {root}/clouds.yaml\nruns_dir: {root}/runs\ningest_listen: 127.0.0.1:{}\nhealth_interval_seconds: 5\n{extra}",
        support::free_port()
    );
    std::fs::write(dir.path().join("executor.yaml"), text).expect("executor.yaml");
    dir
}

/// Runs `apimon executor` on `dir` for `seconds`; its CPU time and the
/// largest resident memory seen.
async fn measure(dir: &Path, seconds: u64) -> (Duration, u64) {
    let mut command = support::apimon_command(&[
        "executor",
        "--config",
        &dir.join("executor.yaml").to_string_lossy(),
    ]);
    command.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    let mut child = support::process::spawn(&mut command, "apimon executor");
    let mut peak = 0;
    // The first seconds are start-up; measure from there.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (start, _) = usage(child.id());
    for _ in 0..seconds {
        tokio::time::sleep(Duration::from_secs(1)).await;
        peak = peak.max(usage(child.id()).1);
    }
    let (end, _) = usage(child.id());
    support::process::stop(&mut child);
    (end.saturating_sub(start), peak)
}

/// A loopback server answering every request with a small version document.
async fn version_server() -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 4096];
                let body = r#"{"version": {"id": "v1", "status": "CURRENT"}}"#;
                while let Ok(n) = stream.read(&mut buffer).await {
                    if n == 0 {
                        return;
                    }
                    let answer = format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len());
                    if stream.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

async fn probes(api: &support::openstack::Api, clouds: &str, influx: &str) {
    let port = version_server().await;
    let region = format!("bench-probe-{:06x}", rand::random::<u32>() >> 8);
    api.create_region(&region).await;
    let service = api.create_service(&format!("bench-{region}")).await;
    let entries = clouds.split_once("clouds:\n").map(|(_, e)| e).unwrap_or_default();
    let bench_cloud = entries.replacen("apimon-test:", "bench:", 1).replacen(
        "region_name: RegionOne",
        &format!("region_name: {region}"),
        1,
    );
    let clouds = format!("clouds:\n{entries}{bench_cloud}");
    for i in 0..ENDPOINTS {
        api.add_endpoint(&service, &region, &format!("http://127.0.0.1:{port}/e{i}")).await;
    }
    let idle = executor_dir(influx, &clouds, "");
    let probing = executor_dir(
        influx,
        &clouds,
        "probes: [{cloud: bench, interval_seconds: 1, concurrency: 8}]\n",
    );
    let (idle_cpu, idle_rss) = measure(idle.path(), ROUNDS).await;
    let (cpu, rss) = measure(probing.path(), ROUNDS).await;
    let per_round = cpu.saturating_sub(idle_cpu).as_secs_f64() * 1000.0 / ROUNDS as f64;
    println!(
        "catalog probes, {} endpoints: {per_round:.1} ms CPU per round over an idle executor ({:.2} s CPU in {ROUNDS} s vs {:.2} s idle); \
at the default 30 s interval that is {:.3} % of one CPU; resident memory {} KiB (idle {} KiB)",
        ENDPOINTS,
        cpu.as_secs_f64(),
        idle_cpu.as_secs_f64(),
        per_round / 30_000.0 * 100.0,
        rss,
        idle_rss
    );
    api.remove_service(&service).await;
    api.remove_region(&region).await;
}

async fn uploads(clouds_file: &Path) {
    use apimon::executor::keystone::{CloudAuth, Session};
    use apimon::executor::logs::{redact::Redactor, swift::Container};
    let http = reqwest::Client::new();
    let auth = CloudAuth::load(clouds_file, "apimon-test").expect("clouds entry");
    let mut session = Session::new(auth, http.clone());
    let name = format!("bench-logs-{:06x}", rand::random::<u32>() >> 8);
    // The daemon's `logs.container` makes it on a platform; here, one PUT.
    let token = session.token().await.expect("token").clone();
    let storage = apimon::providers::keystone::object_store(&token, None).expect("object store");
    let made = http
        .put(format!("{storage}/{name}"))
        .header("X-Auth-Token", token.value.expose())
        .header("X-Container-Meta-Temp-URL-Key", "bench-temp-url-key")
        .send()
        .await
        .expect("container");
    assert!(made.status().is_success(), "{}", made.status());
    let mut container = Container { session: &mut session, http: &http, name: &name };
    container.check().await.expect("container");
    let redactor = Redactor::new(["apimon-secret-value".to_owned(), "another-secret".to_owned()]);
    for (size, count) in [(64 * 1024, 200), (4 * 1024 * 1024, 10)] {
        let line = "TASK [Create a server] ok: [localhost] => apimon-secret-value and more text\n";
        let text: String = line.repeat(size / line.len() + 1)[..size].to_owned();
        let started = Instant::now();
        let mut redacting = Duration::ZERO;
        for i in 0..count {
            let before = Instant::now();
            let body = redactor.redact(&text).into_bytes();
            redacting += before.elapsed();
            container
                .put(&format!("bench/{size}/{i}/output.log"), body, Duration::from_secs(3600))
                .await
                .expect("upload");
        }
        let elapsed = started.elapsed();
        println!(
            "log uploads, {} KiB each: {count} in {:.2} s ({:.1} logs/s, {:.1} MiB/s), of which redaction {:.1} ms",
            size / 1024,
            elapsed.as_secs_f64(),
            count as f64 / elapsed.as_secs_f64(),
            (size * count) as f64 / 1_048_576.0 / elapsed.as_secs_f64(),
            redacting.as_secs_f64() * 1000.0
        );
    }
}

async fn sweep(
    api: &support::openstack::Api,
    clouds: &str,
    influx: &support::influxdb::InfluxServer,
) {
    let job = format!("{:032x}", rand::random::<u128>());
    let prefix = format!("bench-{}", &job[..12]);
    let started = Instant::now();
    let network = api.create_network(&format!("{prefix}-ports")).await;
    for i in 0..200 {
        api.create_keypair(&format!("{prefix}-key-{i}")).await;
    }
    for i in 0..150 {
        api.create_tagged_security_group(&format!("{prefix}-sg-{i}"), &[]).await;
    }
    for i in 0..99 {
        api.create_network(&format!("{prefix}-net-{i}")).await;
    }
    for i in 0..50 {
        api.create_port(&network, &format!("{prefix}-port-{i}")).await;
    }
    println!("sweeper: 500 leftovers made in {:.1} s", started.elapsed().as_secs_f64());
    let dir = executor_dir(&influx.url(), clouds, "sweepers: [{cloud: apimon-test, interval_seconds: 3600, age_seconds: 0, platform_project: true}]\n");
    // The finished run that left them.
    std::fs::create_dir_all(dir.path().join(format!("runs/bench/20260101T000000.000Z-{job}")))
        .expect("run dir");
    let mut command = support::apimon_command(&[
        "executor",
        "--config",
        &dir.path().join("executor.yaml").to_string_lossy(),
    ]);
    command.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    let mut child = support::process::spawn(&mut command, "apimon executor");
    let deadline = Instant::now() + Duration::from_secs(900);
    let mut pass = Value::Null;
    while Instant::now() < deadline {
        let (_, body) = influx
            .query_in(
                Some(("admin", "admin-pw")),
                "apimon",
                "SELECT deleted, failed, duration_ms FROM apimon_sweep WHERE \"kind\" = 'all'",
            )
            .await;
        pass = body["results"][0]["series"][0]["values"][0].clone();
        if !pass.is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    support::process::stop(&mut child);
    println!(
        "sweeper: one pass over 500 leftovers (200 keypairs, 150 security groups, 100 networks, 50 ports): deleted {}, failed {}, {:.1} s",
        pass[1], pass[2], pass[3].as_f64().unwrap_or_default() / 1000.0
    );
    let left = api.names_containing(&prefix).await;
    println!("sweeper: {} of them left after the pass", left.len());
}

fn main() {
    let Some(dir) = std::env::var_os("APIMON_TEST_OPENSTACK") else {
        println!("monitoring bench: set APIMON_TEST_OPENSTACK to a control plane started by tests/openstack/up.sh");
        return;
    };
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let cloud =
            support::openstack::TestCloud { clouds_file: Path::new(&dir).join("clouds.yaml") };
        let clouds = std::fs::read_to_string(&cloud.clouds_file).expect("clouds.yaml");
        let api = cloud.api().await;
        let influx = support::executor::influx().await.expect("influxd");
        probes(&api, &clouds, &influx.url()).await;
        uploads(&cloud.clouds_file).await;
        sweep(&api, &clouds, &influx).await;
    });
}
