//! `apimon executor` measuring a REAL OpenStack control plane: playbooks
//! written with the `openstack.cloud` collection and openstacksdk (from
//! PyPI), run by real `ansible-playbook`, their API requests, tasks and
//! runs read back from a REAL InfluxDB.

use std::path::Path;
use std::time::Duration;

use apimon::executor::results::RunResult;
use apimon::executor::Control;
use serde_json::Value;

use crate::support::executor::{
    ansible_scenario, cloud_ansible, count, influx, start, Config, ADMIN,
};
use crate::support::influxdb::InfluxServer;
use crate::support::openstack::TestCloud;

/// The test cloud's clouds.yaml plus a cloud `wrong` with a bad password.
fn clouds_with_a_wrong_one(cloud: &TestCloud) -> String {
    let text = std::fs::read_to_string(&cloud.clouds_file).expect("clouds.yaml");
    let (_, entries) = text.split_once("clouds:\n").expect("a clouds: mapping");
    let wrong = entries.replacen("apimon-test:", "wrong:", 1).replacen(
        "password: apimon",
        "password: not-the-password",
        1,
    );
    assert!(wrong.contains("not-the-password"), "{text}");
    format!("{text}{wrong}")
}

/// The scenario tree of these tests: the collection through ansible.cfg.
fn scenario_tree(config: &Config, collections: &Path, clouds: &str) {
    let root = config.dir.path();
    std::fs::write(
        root.join("scenarios/ansible.cfg"),
        format!("[defaults]\ncollections_path = {}\n", collections.display()),
    )
    .expect("ansible.cfg");
    std::fs::write(root.join("clouds.yaml"), clouds).expect("clouds.yaml");
}

/// Rows of an InfluxQL query on `apimon`: tags and columns in one object.
async fn rows(server: &InfluxServer, q: &str) -> Vec<serde_json::Map<String, Value>> {
    let (status, body) = server.query_in(Some(ADMIN), "apimon", q).await;
    assert_eq!(status, 200, "{q}: {body}");
    let mut out = Vec::new();
    for series in body["results"][0]["series"].as_array().cloned().unwrap_or_default() {
        let columns: Vec<String> = series["columns"]
            .as_array()
            .map(|c| c.iter().filter_map(|c| c.as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        for values in series["values"].as_array().cloned().unwrap_or_default() {
            let mut row = series["tags"].as_object().cloned().unwrap_or_default();
            for (column, value) in
                columns.iter().zip(values.as_array().cloned().unwrap_or_default())
            {
                row.insert(column.clone(), value);
            }
            out.push(row);
        }
    }
    out
}

/// Waits until `q` returns at least `n` rows.
async fn wait_rows(
    server: &InfluxServer,
    q: &str,
    n: usize,
) -> Vec<serde_json::Map<String, Value>> {
    let enough = || async {
        let found = rows(server, q).await;
        (found.len() >= n).then_some(found)
    };
    crate::support::eventually_async(
        &format!("{n} rows of {q}"),
        Duration::from_secs(120),
        enough,
        String::new,
    )
    .await
}

fn tag<'a>(row: &'a serde_json::Map<String, Value>, key: &str) -> &'a str {
    row.get(key).and_then(Value::as_str).unwrap_or_default()
}

const KNOWN: &str = r#"- hosts: localhost
  gather_facts: false
  vars:
    network: "apimon-measured-{{ lookup('env', 'TASK_EXECUTOR_JOB_ID') }}"
  tasks:
    - name: List networks
      openstack.cloud.networks_info:
      tags: ["metric=list_networks", "az=nova", "service=network"]
    - name: Create a network
      openstack.cloud.network:
        name: "{{ network }}"
      tags: ["metric=create_network"]
    - name: Delete the network
      openstack.cloud.network:
        name: "{{ network }}"
        state: absent
    - name: Stop a server that does not exist
      openstack.cloud.server_action:
        server: apimon-no-such-server
        action: stop
      ignore_errors: true
    - name: Wrong credentials
      openstack.cloud.networks_info:
        cloud: wrong
      ignore_errors: true
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_and_task_of_a_real_scenario_reaches_influxdb_even_across_an_outage() {
    let Some(cloud) = TestCloud::get() else { return };
    let Some((ansible, collections)) = cloud_ansible() else { return };
    let Some(mut server) = influx().await else { return };
    let config = Config::new();
    scenario_tree(&config, &collections, &clouds_with_a_wrong_one(&cloud));
    std::fs::write(config.dir.path().join("scenarios/known.yaml"), KNOWN).expect("playbook");
    let mut scenario = ansible_scenario("known", "* * * * * *", "known.yaml", 300);
    scenario["cloud"] = "apimon-test".into();
    config.write(&server.url(), &ansible, &[scenario]);
    // InfluxDB is down while the scenario runs: everything waits on disk.
    server.stop();
    let mut running = start(&config);
    running.until("a finished run", |r| r.iter().any(|r| r.result != RunResult::Skipped)).await;
    let run = running.seen.iter().find(|r| r.result != RunResult::Skipped).cloned().expect("run");
    // The failures were ignored: Ansible, and so the run, passed.
    assert_eq!(run.result, RunResult::Passed, "{run:?}");
    let job = run.job_id.clone().expect("job id");
    let buffer = std::fs::read_to_string(config.dir.path().join("buffer/pending.lp"))
        .expect("points buffered while InfluxDB is down");
    assert!(buffer.contains("openstack_api.network,") && buffer.contains(&job));
    let health = crate::support::executor::metrics(config.ingest_port).await;
    assert!(
        health.contains("apimon_executor_runs_total{scenario=\"known\",result=\"passed\"}")
            && !health.contains("apimon_executor_points_buffered 0\n"),
        "{health}"
    );
    server.restart().await;

    // Every API request of the run, with openstacksdk's names and the run's tags.
    let requests = wait_rows(
        &server,
        &format!("SELECT \"duration\", status_code_val FROM /^openstack_api\\./ WHERE job_id = '{job}' GROUP BY *"),
        4,
    )
    .await;
    let has = |service: &str, method: &str, name: &str, status: &str| {
        requests.iter().any(|r| {
            tag(r, "service_type") == service
                && tag(r, "method") == method
                && tag(r, "name") == name
                && tag(r, "status_code") == status
                && tag(r, "scenario") == "known"
                && tag(r, "environment") == "test"
                && r["duration"].as_i64().is_some()
        })
    };
    assert!(has("network", "GET", "networks", "200"), "{requests:#?}");
    assert!(has("network", "POST", "networks", "201"), "{requests:#?}");
    assert!(has("network", "DELETE", "network", "204"), "{requests:#?}");
    assert!(has("compute", "GET", "server", "404"), "the 4xx request is recorded: {requests:#?}");
    assert!(
        requests.iter().any(|r| tag(r, "method") == "POST" && r["duration"].as_i64() > Some(0)),
        "{requests:#?}"
    );
    // A request carries the tags of the task it belongs to.
    assert!(
        requests.iter().any(|r| tag(r, "name") == "networks"
            && tag(r, "method") == "GET"
            && tag(r, "az") == "nova"
            && tag(r, "metric") == "list_networks"),
        "{requests:#?}"
    );

    // Every task, ignored failures as such.
    let tasks = wait_rows(
        &server,
        &format!("SELECT duration_ms, message FROM apimon_task WHERE job_id = '{job}' GROUP BY *"),
        5,
    )
    .await;
    let state = |task: &str| {
        tasks.iter().find(|t| tag(t, "task") == task).map(|t| tag(t, "state").to_owned())
    };
    assert_eq!(state("List networks").as_deref(), Some("ok"), "{tasks:#?}");
    assert_eq!(state("Create a network").as_deref(), Some("changed"), "{tasks:#?}");
    assert_eq!(state("Stop a server that does not exist").as_deref(), Some("failed_ignored"));
    assert_eq!(state("Wrong credentials").as_deref(), Some("failed_ignored"), "{tasks:#?}");
    let wrong = tasks.iter().find(|t| tag(t, "task") == "Wrong credentials").expect("task");
    assert!(wrong["message"].as_str().is_some_and(|m| m.contains("401")), "{wrong:?}");
    let listed = tasks.iter().find(|t| tag(t, "task") == "List networks").expect("task");
    assert_eq!(
        (tag(listed, "az"), tag(listed, "metric"), tag(listed, "service")),
        ("nova", "list_networks", "network")
    );
    let summary = wait_rows(
        &server,
        &format!(
            "SELECT ignored, failed, ok FROM apimon_playbook WHERE job_id = '{job}' GROUP BY *"
        ),
        1,
    )
    .await;
    assert_eq!(summary[0]["ignored"].as_i64(), Some(2), "{summary:?}");
    assert_eq!(summary[0]["failed"].as_i64(), Some(0), "{summary:?}");
    wait_rows(&server, "SELECT buffered FROM apimon_executor WHERE environment = 'test'", 1).await;
    let (_, records) = running.stop().await;
    assert!(count(&records, "known", RunResult::Failed) == 0, "{records:?}");
    fill_the_example_tier(&server, "one_day").await;
    crate::support::executor::dashboard_queries_return_rows(
        &server,
        &["examples-repo/dashboards/apimon/api.json"],
        &[("$scenario", "known"), ("$service", "network"), ("$tier", "one_day")],
    )
    .await;
    let left = cloud.api().await.networks("apimon-measured-").await;
    assert!(left.is_empty(), "{left:?}");
}

/// Fills the example repository's retention tier `tier` from the points
/// written so far, with the SELECT of each of its continuous queries into
/// that tier (as apimon composes them), run once by hand over the last
/// hour: what InfluxDB's continuous-query service does every interval.
async fn fill_the_example_tier(server: &InfluxServer, tier: &str) {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples-repo");
    let state = apimon::model::load_repository(&examples).expect("the example repository");
    let database = state.environments["outside"]
        .influxdb
        .databases
        .iter()
        .find(|d| d.name == "apimon")
        .cloned()
        .expect("database apimon");
    let (status, body) = server
        .query(
            Some(ADMIN),
            &format!("CREATE RETENTION POLICY \"{tier}\" ON apimon DURATION 1d REPLICATION 1"),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let queries: Vec<_> = database.continuous_queries.iter().filter(|q| q.into == tier).collect();
    assert_eq!(queries.len(), 3, "openstack_api, apimon_task and apimon_scenario");
    for query in queries {
        let statement = apimon::providers::influxdb::continuous_query_statement("apimon", query);
        let inner = statement
            .split_once(" BEGIN ")
            .and_then(|(_, rest)| rest.strip_suffix(" END"))
            .expect("BEGIN … END");
        // The test's points are in the database's default policy.
        let inner = inner
            .replace(&format!("\"apimon\".\"{}\".", query.from), "\"apimon\".\"autogen\".")
            .replacen(" GROUP BY ", " WHERE time > now() - 1h GROUP BY ", 1);
        let (status, body) = server.query_in(Some(ADMIN), "apimon", &inner).await;
        assert!(status == 200 && body["results"][0].get("error").is_none(), "{inner}: {body}");
    }
}

const LEAKY: &str = r#"- hosts: localhost
  gather_facts: false
  tasks:
    - name: Create a network
      openstack.cloud.network:
        name: "apimon-leak-{{ lookup('env', 'TASK_EXECUTOR_JOB_ID') }}"
    - name: Hang
      ansible.builtin.command: sleep 3004
"#;

const CLEANUP: &str = r#"- hosts: localhost
  gather_facts: false
  tasks:
    - name: Delete what the run created
      openstack.cloud.network:
        name: "apimon-leak-{{ lookup('env', 'TASK_EXECUTOR_JOB_ID') }}"
        state: absent
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_at_its_timeout_or_by_a_stop_runs_its_cleanup_and_leaves_nothing_behind() {
    let Some(cloud) = TestCloud::get() else { return };
    let Some((ansible, collections)) = cloud_ansible() else { return };
    let Some(server) = influx().await else { return };
    let config = Config::new();
    let clouds = std::fs::read_to_string(&cloud.clouds_file).expect("clouds.yaml");
    scenario_tree(&config, &collections, &clouds);
    std::fs::write(config.dir.path().join("scenarios/leaky.yaml"), LEAKY).expect("playbook");
    std::fs::write(config.dir.path().join("scenarios/cleanup.yaml"), CLEANUP).expect("playbook");
    // Long enough to create the network, even on a loaded machine.
    let mut scenario = ansible_scenario("leaky", "*/2 * * * * *", "leaky.yaml", 45);
    scenario["cloud"] = "apimon-test".into();
    scenario["cleanup_playbook"] = "cleanup.yaml".into();
    scenario["cleanup_timeout_seconds"] = 120.into();
    config.write(&server.url(), &ansible, &[scenario]);
    let api = cloud.api().await;
    let mut running = start(&config);
    running.until("a timeout", |r| count(r, "leaky", RunResult::Timeout) > 0).await;
    let timed_out =
        running.seen.iter().find(|r| r.result == RunResult::Timeout).cloned().expect("timeout");
    assert_eq!(timed_out.cleanup, Some(RunResult::Passed), "{timed_out:?}");
    let job = timed_out.job_id.clone().expect("job id");
    // The run did create its network (its task point says so) ...
    let created = wait_rows(
        &server,
        &format!("SELECT duration_ms FROM apimon_task WHERE job_id = '{job}' AND task = 'Create a network' AND state = 'changed'"),
        1,
    )
    .await;
    assert_eq!(created.len(), 1);
    // ... and the cleanup removed it.
    let name = format!("apimon-leak-{job}");
    assert!(api.networks(&name).await.is_empty(), "{name} left behind");
    let point = wait_rows(
        &server,
        &format!(
            "SELECT cleanup FROM apimon_scenario WHERE job_id = '{job}' AND result = 'timeout'"
        ),
        1,
    )
    .await;
    assert_eq!(point[0]["cleanup"].as_str(), Some("passed"), "{point:?}");

    // The next run is stopped by apimon once its network exists: aborted, cleaned up.
    let made = || async { (!api.networks("apimon-leak-").await.is_empty()).then_some(()) };
    let what = "the next run to create its network";
    crate::support::eventually_async(what, Duration::from_secs(120), made, String::new).await;
    running.controls.send(Control::Shutdown).expect("running");
    let (_, records) = running.stop().await;
    let aborted: Vec<_> = records.iter().filter(|r| r.result == RunResult::Aborted).collect();
    assert_eq!(aborted.len(), 1, "{records:?}");
    assert_eq!(aborted[0].cleanup, Some(RunResult::Passed), "{records:?}");
    assert!(records.iter().all(|r| r.result != RunResult::Failed), "{records:?}");
    let left = api.networks("apimon-leak-").await;
    assert!(left.is_empty(), "a killed run left its network behind: {left:?}");
}

/// A server on loopback answering 200 to every request until its task is
/// aborted (then the port refuses), and one that accepts and never answers.
async fn test_endpoints() -> ((String, tokio::task::JoinHandle<()>), String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let answering = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/", answering.local_addr().expect("address"));
    let task = tokio::spawn(async move {
        let mut open = tokio::task::JoinSet::new();
        loop {
            let Ok((mut stream, _)) = answering.accept().await else { return };
            open.spawn(async move {
                let mut buffer = vec![0u8; 4096];
                let _ = stream.read(&mut buffer).await;
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
                    )
                    .await;
            });
        }
    });
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let silent_url = format!("http://{}/", silent.local_addr().expect("address"));
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    ((url, task), silent_url)
}

#[tokio::test]
async fn catalog_probes_measure_every_endpoint_and_a_stopped_or_silent_one_fails() {
    let Some(cloud) = TestCloud::get() else { return };
    let Some(server) = influx().await else { return };
    let api = cloud.api().await;
    let suffix = format!("{:08x}", rand::random::<u32>());
    let ((url, answering), silent_url) = test_endpoints().await;
    let (ok_type, silent_type) = (format!("probe-ok-{suffix}"), format!("probe-silent-{suffix}"));
    let ok_service = api.register_service(&ok_type, &url).await;
    let silent_service = api.register_service(&silent_type, &silent_url).await;
    let expected = api.public_service_types().await;
    assert!(expected.contains(&ok_type) && expected.len() > 4, "{expected:?}");

    let config = Config::new();
    config.write(&server.url(), Path::new("ansible-playbook"), &[]);
    std::fs::copy(&cloud.clouds_file, config.dir.path().join("clouds.yaml")).expect("clouds.yaml");
    config.set(
        "probes",
        r#"[{"cloud": "apimon-test", "interval_seconds": 1, "timeout_seconds": 1, "skip": ["object-store"]}]"#,
    );
    let running = start(&config);

    // Every public RegionOne endpoint but the skipped one gets points.
    let probed = |rows: Vec<serde_json::Map<String, Value>>| -> std::collections::BTreeSet<String> {
        rows.iter()
            .filter_map(|r| r.get("value").and_then(Value::as_str).map(str::to_owned))
            .collect()
    };
    let wanted: std::collections::BTreeSet<String> =
        expected.iter().filter(|t| *t != "object-store").cloned().collect();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..150 {
        seen = probed(rows(&server, "SHOW TAG VALUES FROM /^openstack_api\\./ WITH KEY = \"service_type\" WHERE \"probe\" = 'catalog'").await);
        if wanted.is_subset(&seen) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(wanted.is_subset(&seen), "probed {seen:?}, catalog {wanted:?}");
    assert!(!seen.contains("object-store"), "a skipped service was probed");
    let ok = rows(
        &server,
        &format!("SELECT * FROM \"openstack_api.{ok_type}\" WHERE \"probe\" = 'catalog'"),
    )
    .await;
    assert!(ok.iter().any(|r| r.get("status_code") == Some(&Value::from("200"))), "{ok:?}");
    let silent = rows(&server, &format!("SELECT * FROM \"openstack_api.{silent_type}\"")).await;
    assert!(
        !silent.is_empty() && silent.iter().all(|r| r.get("failed") == Some(&Value::from(1))),
        "{silent:?}"
    );
    let identity =
        rows(&server, "SELECT * FROM \"openstack_api.identity\" WHERE \"probe\" = 'catalog'").await;
    assert!(
        identity.iter().any(|r| r
            .get("status_code")
            .and_then(Value::as_str)
            .is_some_and(|s| s.starts_with('2') || s.starts_with('3'))),
        "{identity:?}"
    );

    // The test's own service stops: its points go from ok to failed.
    answering.abort();
    let _ = answering.await;
    let stopped_at = chrono::Utc::now().to_rfc3339();
    let mut failed = Vec::new();
    for _ in 0..100 {
        failed = rows(&server, &format!("SELECT * FROM \"openstack_api.{ok_type}\" WHERE \"failed\" = 1 AND time > '{stopped_at}'")).await;
        if !failed.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!failed.is_empty(), "no failed probe after the endpoint stopped");
    assert!(failed.iter().all(|r| r.get("status_code").is_none_or(Value::is_null)), "{failed:?}");

    let metrics = crate::support::executor::metrics(config.ingest_port).await;
    assert!(metrics.contains("apimon_executor_probes_total "), "{metrics}");
    running.stop().await;
    api.remove_service(&ok_service).await;
    api.remove_service(&silent_service).await;
}

/// A playbook that makes a network, subnet, router with an interface,
/// security group and keypair named after its job id, then waits far past
/// its timeout: killed there, it never reaches a cleanup.
const LEAK: &str = r#"- hosts: localhost
  gather_facts: false
  vars:
    prefix: "leak-{{ lookup('env', 'TASK_EXECUTOR_JOB_ID')[:12] }}"
  tasks:
    - openstack.cloud.network:
        name: "{{ prefix }}-net"
    - openstack.cloud.subnet:
        name: "{{ prefix }}-subnet"
        network_name: "{{ prefix }}-net"
        cidr: 192.0.2.0/24
    - openstack.cloud.router:
        name: "{{ prefix }}-router"
        interfaces: ["{{ prefix }}-subnet"]
    - openstack.cloud.security_group:
        name: "{{ prefix }}-sg"
    - openstack.cloud.keypair:
        name: "{{ prefix }}-key"
        public_key: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG7mB9bJ5cXf0cS2qkJ3pQy8nT4uV1wX2yZ3aB4cD5eF leak
    - ansible.builtin.pause:
        seconds: 600
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweeper_deletes_exactly_what_a_killed_run_left_and_spares_look_alikes() {
    let Some(cloud) = TestCloud::get() else { return };
    let Some((ansible, collections)) = cloud_ansible() else { return };
    let Some(server) = influx().await else { return };
    let api = cloud.api().await;
    let config = Config::new();
    let clouds = std::fs::read_to_string(&cloud.clouds_file).expect("clouds.yaml");
    scenario_tree(&config, &collections, &clouds);
    std::fs::write(config.dir.path().join("scenarios/leak.yaml"), LEAK).expect("playbook");
    // Once, a few seconds from now: one run, one set of leftovers.
    use chrono::Timelike;
    let at = chrono::Utc::now() + chrono::Duration::seconds(3);
    let once = format!("{} {} {} * * *", at.second(), at.minute(), at.hour());
    let mut scenario = ansible_scenario("leak", &once, "leak.yaml", 45);
    scenario["cloud"] = "apimon-test".into();
    config.write(&server.url(), &ansible, &[scenario]);
    let mut running = start(&config);
    running
        .until("a run killed at its timeout", |r| r.iter().any(|r| r.result == RunResult::Timeout))
        .await;
    let run = running.seen.iter().find(|r| r.result == RunResult::Timeout).cloned().expect("run");
    let job = run.job_id.clone().expect("job id");
    let prefix = format!("leak-{}", &job[..12]);
    let leaked = api.names_containing(&prefix).await;
    for kind in ["network", "subnet", "router", "security_group", "keypair"] {
        assert!(
            leaked.iter().any(|n| n.starts_with(&format!("{kind}/"))),
            "{kind} not left: {leaked:?}"
        );
    }
    // Look-alikes: a platform-marked group carrying the job id, and an
    // unmarked network of nobody's run.
    let marks = ["apimon:managed=true".to_owned(), "apimon:env=test".to_owned()];
    let platform = api.create_tagged_security_group(&format!("{prefix}-platform"), &marks).await;
    let other = api.create_network(&format!("leak-{:012x}-net", rand::random::<u64>() >> 16)).await;

    // The scenario stops; a sweeper takes over (age 0: all is old enough).
    config.write(&server.url(), &ansible, &[]);
    config.set(
        "sweepers",
        r#"[{"cloud": "apimon-test", "interval_seconds": 1, "age_seconds": 0, "platform_project": true}]"#,
    );
    let mut left = leaked.clone();
    for _ in 0..300 {
        left = api.names_containing(&prefix).await;
        if left.iter().all(|n| n.ends_with("-platform")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(
        left.into_iter().collect::<Vec<_>>(),
        [format!("security_group/{prefix}-platform")],
        "the leftovers go, the platform's look-alike stays"
    );
    assert!(api.security_group_exists(&platform).await);
    let sweeps =
        rows(&server, "SELECT * FROM apimon_sweep WHERE \"kind\" = 'network' AND \"deleted\" > 0")
            .await;
    assert!(!sweeps.is_empty(), "no apimon_sweep point counts the deleted network");
    running.stop().await;
    let survived = api.get(&format!("http://127.0.0.1:9696/v2.0/networks/{other}")).await;
    assert_eq!(survived["network"]["id"], other.as_str(), "a network of nobody's run was deleted");
    api.delete_network(&other).await;
    api.delete_security_group(&platform).await;
}

#[tokio::test]
async fn the_sweeper_refuses_a_project_that_holds_the_platform() {
    let Some(cloud) = TestCloud::get() else { return };
    let Some(server) = influx().await else { return };
    let api = cloud.api().await;
    let marks = ["apimon:managed=true".to_owned(), "apimon:env=test".to_owned()];
    let platform = api
        .create_tagged_security_group(&format!("platform-{:08x}", rand::random::<u32>()), &marks)
        .await;
    let config = Config::new();
    config.write(&server.url(), Path::new("ansible-playbook"), &[]);
    std::fs::copy(&cloud.clouds_file, config.dir.path().join("clouds.yaml")).expect("clouds.yaml");
    config.set("sweepers", r#"[{"cloud": "apimon-test", "interval_seconds": 1, "age_seconds": 0, "select": "project"}]"#);
    let running = start(&config);
    let mut refused = Vec::new();
    for _ in 0..150 {
        refused = rows(&server, "SELECT * FROM apimon_sweep WHERE \"refused\" = 1").await;
        if !refused.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!refused.is_empty(), "no refused pass recorded");
    let deleted = rows(&server, "SELECT * FROM apimon_sweep WHERE \"deleted\" > 0").await;
    assert!(deleted.is_empty(), "a refused sweeper deleted: {deleted:?}");
    running.stop().await;
    assert!(api.security_group_exists(&platform).await);
    api.delete_security_group(&platform).await;
}

/// A playbook whose output carries a secret of the clouds file.
const TALK: &str = r#"- hosts: localhost
  gather_facts: false
  tasks:
    - ansible.builtin.debug:
        msg: "job {{ lookup('env', 'TASK_EXECUTOR_JOB_ID') }} secret=not-the-password"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_logs_reach_swift_redacted_with_links_and_survive_an_outage_of_the_store() {
    let Some(cloud) = TestCloud::get() else { return };
    let Some(ansible) = crate::support::executor::ansible_playbook() else { return };
    let Some(server) = influx().await else { return };
    let os_dir = std::path::PathBuf::from(std::env::var_os("APIMON_TEST_OPENSTACK").expect("set"));
    let Some(mut proxy) = crate::support::swift::SwiftProxy::start(&os_dir) else { return };
    let api = cloud.api().await;
    let suffix = format!("{:08x}", rand::random::<u32>());
    let region = format!("logs-{suffix}");
    api.region_with(
        &region,
        "object-store",
        &format!("http://127.0.0.1:{}/v1/AUTH_%(project_id)s", proxy.port),
    )
    .await;

    // `logs`: the test cloud through the test's own proxy.
    let clouds = clouds_with_a_wrong_one(&cloud);
    let (_, entries) = clouds.split_once("clouds:\n").expect("clouds");
    let test_entry = entries.split("\n  wrong:").next().expect("entry");
    let logs_entry = test_entry.replacen("apimon-test:", "logs:", 1).replacen(
        "region_name: RegionOne",
        &format!("region_name: {region}"),
        1,
    );
    let config = Config::new();
    std::fs::write(config.dir.path().join("clouds.yaml"), format!("{clouds}{logs_entry}\n"))
        .expect("clouds");
    std::fs::write(config.dir.path().join("scenarios/talk.yaml"), TALK).expect("playbook");
    config.write(
        &server.url(),
        &ansible,
        &[ansible_scenario("talk", "* * * * * *", "talk.yaml", 60)],
    );
    config.set("keep_runs", "100");
    let container = format!("apimon-logs-{suffix}");
    // The daemon makes the container (`logs.container`, tests/openstack.rs);
    // the executor only uploads, and waits while it is missing.
    let key = [("X-Container-Meta-Temp-URL-Key", format!("key-{suffix}"))];
    let key: Vec<(&str, &str)> = key.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, ..) = api.swift(reqwest::Method::PUT, &container, &key, false).await;
    assert_eq!(status, 201);
    config.set("logs", &format!(r#"{{"cloud": "logs", "container": "{container}", "retention_seconds": 3600, "temp_url_key": "key-{suffix}"}}"#));
    let mut running = start(&config);

    let linked = |r: &[apimon::executor::RunRecord]| {
        r.iter().any(|r| r.result == RunResult::Passed && r.log_url.is_some())
    };
    running.until("a run with a log link", linked).await;
    let run = running.seen.iter().find(|r| r.log_url.is_some()).cloned().expect("run");
    let link = run.log_url.clone().expect("link");
    assert!(
        link.contains(&format!(":{}/v1/AUTH_", proxy.port)) && link.contains("temp_url_sig="),
        "{link}"
    );
    // The link works without a token once the upload is done.
    let mut body = String::new();
    for _ in 0..100 {
        let answer = reqwest::get(&link).await.expect("swift");
        if answer.status() == 200 {
            body = answer.text().await.unwrap_or_default();
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let job = run.job_id.clone().expect("job");
    assert!(body.contains(&format!("job {job}")), "{body}");
    assert!(
        body.contains("secret=***") && !body.contains("not-the-password"),
        "not redacted: {body}"
    );
    let object = link
        .split(&format!("/{container}/"))
        .nth(1)
        .and_then(|o| o.split('?').next())
        .expect("object");
    let (status, headers, _) =
        api.swift(reqwest::Method::HEAD, &format!("{container}/{object}"), &[], false).await;
    assert_eq!(status, 200);
    assert!(headers.contains_key("x-delete-at"), "no expiry: {headers:?}");
    let points =
        rows(&server, &format!("SELECT log_url FROM apimon_scenario WHERE job_id = '{job}'")).await;
    assert!(
        points.iter().any(|p| p.get("log_url").and_then(Value::as_str) == Some(link.as_str())),
        "{points:?}"
    );

    // The store goes away while runs go on; nothing is lost once it is back.
    proxy.stop();
    let before = running.seen.len();
    running
        .until("three runs during the outage", |r| {
            r[before..].iter().filter(|r| r.result == RunResult::Passed).count() >= 3
        })
        .await;
    proxy.resume();
    let jobs: Vec<String> = running.seen.iter().filter_map(|r| r.job_id.clone()).collect();
    let mut missing = jobs.clone();
    for _ in 0..150 {
        let (_, _, listing) = api.swift(reqwest::Method::GET, &container, &[], false).await;
        missing.retain(|job| !listing.contains(job.as_str()));
        if missing.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let metrics = crate::support::executor::metrics(config.ingest_port).await;
    assert!(missing.is_empty(), "logs lost: {missing:?} of {jobs:?}\n{metrics}\n{}", proxy.log());
    assert!(
        !metrics.contains("apimon_executor_log_upload_failures_total 0\n"),
        "the outage was not counted: {metrics}"
    );
    running.stop().await;
    api.remove_region(&region).await;
}
