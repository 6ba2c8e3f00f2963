//! `scripts/dev-stack.sh`: the local stack comes up on the suite's real
//! services (its OpenStack control plane, a real InfluxDB, a real sshd as
//! the bastion and the hosts), the daemon converges the example
//! repository's `outside` there (servers, InfluxDB, the hosts' files over
//! SSH), the executor runs with the configuration written to its host and
//! its scenarios put points into InfluxDB, a commit goes through to the
//! running executor, and `down` stops exactly what `up` started.

use std::path::Path;
use std::time::Duration;

use crate::support::openstack::TestCloud;

fn script(args: &[&str], cloud: &TestCloud) -> std::process::Output {
    let dir = cloud.clouds_file.parent().expect("control plane dir");
    std::process::Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/dev-stack.sh"))
        .args(args)
        .env("APIMON_TEST_OPENSTACK", dir)
        .env("APIMON_DEV_BINARY", env!("CARGO_BIN_EXE_apimon"))
        .output()
        .expect("dev-stack.sh")
}

fn value(env: &str, key: &str) -> String {
    env.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{key} in {env}"))
        .to_owned()
}

async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    probe: impl FnMut() -> F,
) -> T {
    crate::support::eventually_async(what, Duration::from_secs(180), probe, String::new).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_stack_runs_the_example_platform_and_stops_cleanly() {
    let Some(cloud) = TestCloud::get() else { return };
    if crate::support::require_binary("influxd", "influxdb").is_none() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("stack");
    let root_arg = root.to_string_lossy().into_owned();
    let up = script(&["up", &root_arg], &cloud);
    let (stdout, stderr) = crate::support::text(&up);
    assert_eq!(up.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("apimon dev stack is up"), "{stdout}");
    let env = std::fs::read_to_string(root.join("env")).expect("env");
    let daemon = value(&env, "APIMON_DEV_DAEMON");
    let influx = value(&env, "APIMON_DEV_INFLUXDB");
    let http = reqwest::Client::new();
    let status = || async {
        http.get(format!("{daemon}/status"))
            .send()
            .await
            .ok()?
            .json::<serde_json::Value>()
            .await
            .ok()
    };

    // The example's `outside`, applied as is to the local control plane.
    let converged = eventually("outside converged", || async {
        let s = status().await?;
        // A drift pass after the first apply reports `no_changes`.
        let outcome = &s["environments"]["outside"]["outcome"];
        (outcome == "success" || outcome == "no_changes").then_some(s)
    })
    .await;
    let first = converged["last_good_commit"].as_str().expect("commit").to_owned();
    // The hosts were configured over SSH: the executor host's files.
    let hosts = Path::new(&value(&env, "APIMON_DEV_HOSTS")).to_path_buf();
    let executor_yaml = std::fs::read_to_string(hosts.join("etc/apimon/executor.yaml"))
        .expect("executor.yaml on the executor host");
    assert!(executor_yaml.contains("token_issue"), "{executor_yaml}");
    // The example leaves the executor's zone to Nova: apimon asked Nova when
    // it wrote the host's files (the control plane's one zone is `nova`).
    assert!(executor_yaml.contains("zone_file: \"/etc/apimon/zone\""), "{executor_yaml}");
    let zone = std::fs::read_to_string(hosts.join("etc/apimon/zone")).expect("zone file");
    assert_eq!(zone, "nova\n");
    let units = std::fs::read_to_string(hosts.join(".tools/systemctl.log")).expect("units");
    assert!(units.contains("enable apimon-executor"), "{units}");
    // The executor's runs are points in the local InfluxDB.
    eventually("a passed scenario in InfluxDB", || async {
        let body: serde_json::Value = http
            .get(format!("{influx}/query"))
            .basic_auth("admin", Some("admin-dev-pw"))
            .query(&[
                ("db", "apimon"),
                ("q", "SELECT count(duration_ms) FROM apimon_scenario WHERE result = 'passed'"),
            ])
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        body["results"][0]["series"][0]["values"][0][1].as_u64().filter(|n| *n > 0)
    })
    .await;

    // The health service the daemon deployed to the bastion evaluates the
    // local cloud's services from those measurements; its page shows them.
    let health = value(&env, "APIMON_DEV_HEALTH");
    let measured = eventually("the health service measuring identity", || async {
        let body: serde_json::Value =
            http.get(format!("{health}/api/v1/health")).send().await.ok()?.json().await.ok()?;
        let identity = &body["environments"]["outside"]["identity"];
        identity["values"].as_object().is_some_and(|v| !v.is_empty()).then(|| body.clone())
    })
    .await;
    assert_eq!(measured["errors"], serde_json::json!([]), "{measured}");
    let page =
        http.get(format!("{health}/")).send().await.expect("page").text().await.expect("html");
    assert!(page.contains("<tr data-service=\"identity\" data-state="), "{page}");
    assert!(page.contains("<tr data-service=\"compute\" data-state="), "{page}");

    // A commit goes through: to InfluxDB, and over SSH to the executor
    // host, whose new configuration the running executor takes.
    let repo = root.join("repo");
    let influxdb_yaml = repo.join("inventory/outside/influxdb.yaml");
    let text = std::fs::read_to_string(&influxdb_yaml).expect("influxdb.yaml");
    std::fs::write(&influxdb_yaml, text.replacen("duration: 4w", "duration: 5w", 1)).expect("edit");
    let schedule = repo.join("scenarios/schedule.yaml");
    let text = std::fs::read_to_string(&schedule).expect("schedule.yaml");
    assert!(text.contains("cron: \"*/5 * * * *\""), "{text}");
    // And a scenario whose playbook Ansible cannot load: the executor's
    // syntax check finds it, and the daemon's status names it.
    let text = text.replacen("cron: \"*/5 * * * *\"", "cron: \"*/7 * * * *\"", 1)
        + "\n  - scenario: unloadable\n    environments: [outside]\n    cron: \"0 0 1 1 *\"\n";
    std::fs::write(&schedule, text).expect("edit");
    std::fs::write(
        repo.join("scenarios/unloadable.yaml"),
        "description: A module no collection has.\ntimeout: 1m\nansible:\n  playbook: playbooks/unloadable.yaml\n  cloud: production\n",
    )
    .expect("scenario");
    std::fs::write(
        repo.join("scenarios/playbooks/unloadable.yaml"),
        "- hosts: localhost\n  gather_facts: false\n  tasks:\n    - no_such.collection.module: {x: 1}\n",
    )
    .expect("playbook");
    let added = std::process::Command::new("git")
        .args(["add", "-A"])
        .current_dir(&repo)
        .status()
        .expect("git");
    assert!(added.success());
    let commit = std::process::Command::new("git")
        .args([
            "-c",
            "user.name=dev",
            "-c",
            "user.email=dev@localhost",
            "commit",
            "-qm",
            "keep five weeks, and a playbook that cannot load",
        ])
        .current_dir(&repo)
        .status()
        .expect("git");
    assert!(commit.success());
    eventually("the new commit applied", || async {
        let s = status().await?;
        let commit = s["environments"]["outside"]["commit"].as_str()?.to_owned();
        let outcome = &s["environments"]["outside"]["outcome"];
        (commit != first && (outcome == "success" || outcome == "no_changes")).then_some(())
    })
    .await;
    eventually("the executor on the new schedule", || async {
        let log = std::fs::read_to_string(root.join("logs/executor.log")).ok()?;
        log.contains("scenario=list_servers cron=0 */7 * * * *").then_some(())
    })
    .await;
    // The executor reports it after the rollout; the daemon reads the
    // report when it next observes the host (a trigger observes all).
    let findings = eventually("the daemon's status names the unloadable playbook", || async {
        let _ = http.post(format!("{daemon}/trigger")).send().await;
        let s = status().await?;
        let findings = s["environments"]["outside"]["findings"].as_array()?.clone();
        findings
            .iter()
            .any(|f| f["subject"] == "outside-executor" && f["items"].get("unloadable").is_some())
            .then_some(findings)
    })
    .await;
    let complaint = findings[0]["items"]["unloadable"].as_str().unwrap_or_default();
    assert!(complaint.contains("no_such.collection.module"), "{findings:?}");
    assert_eq!(findings[0]["items"].as_object().map(|o| o.len()), Some(1), "{findings:?}");

    let pids: Vec<i32> = ["influxd", "sshd", "daemon", "executor", "follow", "health"]
        .iter()
        .map(|name| {
            std::fs::read_to_string(root.join("pids").join(format!("{name}.pid")))
                .expect("pid file")
                .trim()
                .parse()
                .expect("pid")
        })
        .collect();
    let down = script(&["down", &root_arg], &cloud);
    assert_eq!(down.status.code(), Some(0), "{}", crate::support::text(&down).1);
    for pid in pids {
        // A zombie (not reaped by whoever adopted it) has stopped too.
        let alive = std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            stat.rsplit(')').next().is_some_and(|rest| !rest.trim_start().starts_with('Z'))
        });
        assert!(!alive, "process {pid} still runs after down");
    }
}
