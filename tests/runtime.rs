//! The scenario runtime, end to end with real parts: apimon installs a
//! pinned Python environment (ansible-core, openstacksdk and the InfluxDB
//! client from PyPI, the `openstack.cloud` collection from an archive in
//! the repository) over SSH on the suite's sshd host, and `apimon
//! executor` runs scenario playbooks (tests/scenarios/) with it against the
//! REAL OpenStack control plane, results into a REAL InfluxDB. Then a pin
//! moves (a new runtime, the old one kept), a broken pin fails cleanly
//! (the runtime in service keeps running scenarios), and a revert rolls
//! back without installing.

use std::path::{Path, PathBuf};

use apimon::executor::results::RunResult;
use apimon::plan::Op;

use crate::support::executor::{
    ansible_scenario, cloud_ansible, count, influx, start, Config, ADMIN,
};
use crate::support::host::{host_changes, Setup};
use crate::support::openstack::TestCloud;

/// Exact pins: what an operator writes.
const PINS: &str = "runtime:\n  python:\n    - ansible-core==2.19.4\n    - openstacksdk==4.14.0\n    - influxdb==5.3.2\n  collections:\n    - runtime/collections/openstack-cloud-2.5.0.tar.gz\n";

/// The runtime in service on the test host and the one kept for rollback.
fn in_service(setup: &Setup) -> (String, Option<String>) {
    let base = setup.file("/opt/apimon/runtime");
    let link = |name: &str| {
        std::fs::read_link(base.join(name)).ok().map(|p| p.to_string_lossy().into_owned())
    };
    (link("current").expect("a runtime in service"), link("previous"))
}

/// The collection as a Galaxy archive, built with `ansible-galaxy
/// collection build` from the suite's copy (taken from PyPI's `ansible`
/// package by scripts/test.sh, which ships the files without a galaxy.yml).
fn collection_archive(ansible: &Path, collections: &Path, out: &Path) {
    let source = collections.join("ansible_collections/openstack/cloud");
    let work = tempfile::tempdir().expect("temp dir");
    let tree = work.path().join("cloud");
    let copied =
        std::process::Command::new("cp").arg("-r").arg(&source).arg(&tree).status().expect("cp");
    assert!(copied.success());
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tree.join("MANIFEST.json")).expect("MANIFEST.json"),
    )
    .expect("manifest");
    let mut info = manifest["collection_info"].as_object().cloned().expect("collection_info");
    info.retain(|_, value| !value.is_null());
    for generated in ["MANIFEST.json", "FILES.json"] {
        std::fs::remove_file(tree.join(generated)).expect("remove");
    }
    // JSON is YAML.
    std::fs::write(tree.join("galaxy.yml"), serde_json::Value::Object(info).to_string())
        .expect("galaxy.yml");
    let built = std::process::Command::new(ansible.with_file_name("ansible-galaxy"))
        .args(["collection", "build", "--output-path"])
        .arg(work.path())
        .arg(&tree)
        .output()
        .expect("ansible-galaxy");
    assert!(built.status.success(), "{}", String::from_utf8_lossy(&built.stderr));
    std::fs::create_dir_all(out.parent().expect("dir")).expect("mkdir");
    std::fs::copy(work.path().join("openstack-cloud-2.5.0.tar.gz"), out).expect("archive");
}

/// Runs each of `scenarios` (tests/scenarios/playbooks/scenario_<name>.yaml)
/// once with `ansible`; returns the records of the finished runs.
async fn run_scenarios(
    cloud: &TestCloud,
    ansible: &Path,
    scenarios: &[&str],
) -> (Vec<apimon::executor::RunRecord>, crate::support::influxdb::InfluxServer) {
    let server = influx().await.expect("influxd");
    let config = Config::new();
    let root = config.dir.path();
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios/playbooks");
    std::fs::create_dir_all(root.join("scenarios/playbooks")).expect("mkdir");
    for entry in std::fs::read_dir(&source).expect("scenarios") {
        let path = entry.expect("entry").path();
        std::fs::copy(
            &path,
            root.join("scenarios/playbooks").join(path.file_name().expect("name")),
        )
        .expect("copy");
    }
    std::fs::copy(&cloud.clouds_file, root.join("clouds.yaml")).expect("clouds.yaml");
    let list: Vec<serde_json::Value> = scenarios
        .iter()
        .map(|name| {
            let mut scenario = ansible_scenario(
                name,
                "*/2 * * * * *",
                &format!("playbooks/scenario_{name}.yaml"),
                600,
            );
            scenario["cloud"] = "apimon-test".into();
            scenario
        })
        .collect();
    config.write(&server.url(), ansible, &list);
    let mut running = start(&config);
    running
        .until("one finished run of each scenario", |records| {
            scenarios.iter().all(|name| {
                records.iter().any(|r| r.scenario == *name && r.result != RunResult::Skipped)
            })
        })
        .await;
    let (_, records) = running.stop().await;
    (records.into_iter().filter(|r| r.result != RunResult::Skipped).collect(), server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_runtime_runs_real_scenarios_survives_a_broken_pin_and_rolls_back() {
    let Some(cloud) = TestCloud::get() else { return };
    let Some((suite_ansible, collections)) = cloud_ansible() else { return };
    let Some(setup) = Setup::new().await else { return };
    collection_archive(
        &suite_ansible,
        &collections,
        &setup.repo.path().join("runtime/collections/openstack-cloud-2.5.0.tar.gz"),
    );
    let apimon_yaml = std::fs::read_to_string(setup.repo.path().join("apimon.yaml")).expect("read");
    setup.repo.write("apimon.yaml", &format!("{apimon_yaml}{PINS}"));

    // Installed over SSH: one visible change, then nothing to do.
    let (plan, outcome) = setup.apply().await;
    assert!(outcome.is_success(), "{outcome:#?}");
    let runtime_changes: Vec<_> =
        host_changes(&plan).into_iter().filter(|(kind, ..)| kind == "runtime").collect();
    assert_eq!(
        runtime_changes,
        vec![("runtime".to_owned(), "outside-executor".to_owned(), Op::Create)]
    );
    // executor.yaml names the runtime's ansible-playbook: it was written
    // only after the runtime was installed (the executor reloads it at
    // once; a runner that does not exist yet would make error runs).
    let done = |kind: &str, name: &str| {
        outcome.applied.iter().position(|id| id.kind == kind && id.name.ends_with(name))
    };
    let (runtime_at, config_at) =
        (done("runtime", "outside-executor"), done("file", ":/etc/apimon/executor.yaml"));
    assert!(
        runtime_at.is_some() && config_at.is_some() && runtime_at < config_at,
        "runtime at {runtime_at:?}, executor.yaml at {config_at:?}: {:?}",
        outcome.applied
    );
    let (first, _) = in_service(&setup);
    let first_dir = setup.file("/opt/apimon/runtime").join(&first);
    assert_eq!(
        std::fs::read_to_string(first_dir.join(".apimon-runtime")).expect("marker").trim(),
        first
    );
    let rendered = std::fs::read_to_string(setup.file("/etc/apimon/executor.yaml")).expect("read");
    assert!(
        rendered.contains("ansible_playbook: \"/opt/apimon/runtime/current/bin/ansible-playbook\""),
        "{rendered}"
    );
    assert!(
        host_changes(&setup.plan().await.expect("plan")).is_empty(),
        "unchanged pins are a no-op"
    );

    // The executor runs the scenarios with it: the collection and
    // openstacksdk come from the runtime, nothing from the suite's own.
    let ansible: PathBuf = setup.file("/opt/apimon/runtime/current/bin/ansible-playbook");
    let (records, server) =
        run_scenarios(&cloud, &ansible, &["token", "list_servers", "network", "server"]).await;
    for name in ["token", "list_servers", "network", "server"] {
        assert!(count(&records, name, RunResult::Passed) >= 1, "{name}: {records:#?}");
    }
    assert!(records.iter().all(|r| r.result == RunResult::Passed), "{records:#?}");
    // openstacksdk's metrics (the runtime has the InfluxDB client) arrived.
    let (_, body) = server
        .query_in(
            Some(ADMIN),
            "apimon",
            "SELECT count(\"duration\") FROM /^openstack_api\\./ GROUP BY service_type",
        )
        .await;
    let services: Vec<&str> = body["results"][0]["series"]
        .as_array()
        .map(|s| s.iter().filter_map(|s| s["tags"]["service_type"].as_str()).collect())
        .unwrap_or_default();
    assert!(services.contains(&"compute") && services.contains(&"network"), "{body}");
    let left = cloud.api().await.networks("apimon-").await;
    assert!(
        left.iter().all(|n| !n["name"].as_str().unwrap_or_default().ends_with("-net")),
        "a scenario left a network: {left:?}"
    );

    // A moved pin: a new runtime in service, the first one kept.
    let moved =
        PINS.replace("    - influxdb==5.3.2\n", "    - influxdb==5.3.2\n    - six==1.17.0\n");
    setup.repo.write("apimon.yaml", &format!("{apimon_yaml}{moved}"));
    let (plan, outcome) = setup.apply().await;
    assert!(outcome.is_success(), "{outcome:#?}");
    let (second, previous) = in_service(&setup);
    assert_ne!(second, first);
    assert_eq!(previous.as_deref(), Some(first.as_str()));
    assert!(first_dir.join(".apimon-runtime").is_file(), "the previous runtime is kept");
    assert!(host_changes(&plan).iter().any(|(kind, _, op)| kind == "runtime"
        && *op == Op::Update { reason: format!("runtime {first} → {second}") }));

    // A broken pin: the change fails, naming the host and pip's complaint;
    // the runtime in service stays and still runs scenarios.
    let broken = moved.replace("openstacksdk==4.14.0", "openstacksdk==4.14.0.post999");
    setup.repo.write("apimon.yaml", &format!("{apimon_yaml}{broken}"));
    let (_, outcome) = setup.apply().await;
    let failure = outcome
        .failed
        .iter()
        .find(|(id, _)| id.kind == "runtime")
        .map(|(_, error)| format!("{error:#}"))
        .expect("the runtime change failed");
    assert!(
        failure.contains("outside-executor") && failure.contains("installing runtime"),
        "{failure}"
    );
    assert!(failure.contains("openstacksdk==4.14.0.post999"), "pip's error is shown: {failure}");
    assert_eq!(in_service(&setup).0, second, "a failed install must not switch runtimes");
    let (records, _) = run_scenarios(&cloud, &ansible, &["list_servers"]).await;
    assert!(
        !records.is_empty() && records.iter().all(|r| r.result == RunResult::Passed),
        "{records:#?}"
    );

    // Reverting the pins rolls back to the kept runtime without installing.
    setup.repo.write("apimon.yaml", &format!("{apimon_yaml}{PINS}"));
    let started = std::time::Instant::now();
    let (plan, outcome) = setup.apply().await;
    assert!(outcome.is_success(), "{outcome:#?}");
    assert!(host_changes(&plan).iter().any(|(kind, _, op)| kind == "runtime"
        && *op == Op::Update { reason: format!("runtime {second} → {first}") }));
    assert_eq!(in_service(&setup), (first.clone(), Some(second.clone())));
    eprintln!("rollback took {:?}", started.elapsed());
    let dirs: Vec<String> = std::fs::read_dir(setup.file("/opt/apimon/runtime"))
        .expect("runtimes")
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let mut dirs = dirs;
    dirs.sort();
    let mut expected = vec![first, second];
    expected.sort();
    assert_eq!(dirs, expected, "only the runtime in service and the previous one stay");
}
