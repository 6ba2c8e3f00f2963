//! `apimon executor` with real parts: ansible-playbook (PyPI ansible-core)
//! running local playbooks, a local HTTP server for the probe, and a REAL
//! InfluxDB that the points are read back from.

use std::path::{Path, PathBuf};
use std::time::Duration;

use apimon::executor::results::RunResult;
use apimon::executor::{self, Control, RunRecord};

use crate::support::executor::{
    ansible_playbook, ansible_scenario, count, http_scenario, http_server, influx, points,
    processes_with, start, tally, Config,
};
use crate::support::free_port;
use crate::support::influxdb::InfluxServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn playbooks_pass_fail_and_time_out_and_every_run_is_a_point_in_influxdb() {
    let Some(ansible) = ansible_playbook() else { return };
    let Some(server) = influx().await else { return };
    let config = Config::new();
    config.playbook("pass.yaml", "    - ansible.builtin.debug: {msg: \"all good {{ marker }}\"}\n");
    config.playbook("fail.yaml", "    - ansible.builtin.fail: {msg: broken}\n");
    config.playbook("hang.yaml", "    - ansible.builtin.command: sleep 3001\n");
    config.write(
        &server.url(),
        &ansible,
        &[
            ansible_scenario("passing", "*/4 * * * * *", "pass.yaml", 60),
            ansible_scenario("failing", "*/4 * * * * *", "fail.yaml", 60),
            ansible_scenario("hanging", "*/10 * * * * *", "hang.yaml", 3),
        ],
    );
    let mut running = start(&config);
    running
        .until("a pass, a failure and a timeout", |r| {
            count(r, "passing", RunResult::Passed) > 0
                && count(r, "failing", RunResult::Failed) > 0
                && count(r, "hanging", RunResult::Timeout) > 0
        })
        .await;
    let (totals, records) = running.stop().await;

    let runs = |scenario: &str, result: RunResult| {
        records.iter().filter(|r| r.scenario == scenario && r.result == result).collect::<Vec<_>>()
    };
    assert!(!runs("passing", RunResult::Passed).is_empty(), "{records:?}");
    assert!(runs("passing", RunResult::Passed).iter().all(|r| r.return_code == 0));
    assert!(!runs("failing", RunResult::Failed).is_empty(), "{records:?}");
    assert!(runs("failing", RunResult::Failed).iter().all(|r| r.return_code == 2), "{records:?}");
    let timeouts = runs("hanging", RunResult::Timeout);
    assert!(!timeouts.is_empty(), "{records:?}");
    // Killed at the timeout: `sleep 3001` would otherwise have run on.
    assert!(
        timeouts.iter().all(|r| r.duration >= Duration::from_secs(3) && r.return_code == -1),
        "{timeouts:?}"
    );
    assert_eq!(
        processes_with("sleep 3001"),
        0,
        "a timed-out playbook left its process group behind"
    );
    assert_eq!(totals.runs + totals.skipped, records.len() as u64);

    assert_eq!(points(&server).await, tally(&records), "every run and skip is exactly one point");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_run_has_a_job_id_its_own_directory_and_log_and_the_trees_ansible_cfg() {
    let Some(ansible) = ansible_playbook() else { return };
    let Some(server) = influx().await else { return };
    let config = Config::new();
    let scenarios = config.dir.path().join("scenarios");
    let jobs = config.dir.path().join("jobs");
    std::fs::create_dir_all(&jobs).expect("mkdir");
    // As in scenario repositories: playbooks/ beside roles/, found through
    // the tree's ansible.cfg (a path relative to the file itself).
    std::fs::create_dir_all(scenarios.join("playbooks")).expect("mkdir");
    std::fs::create_dir_all(scenarios.join("roles/marker/tasks")).expect("mkdir");
    std::fs::write(scenarios.join("ansible.cfg"), "[defaults]\nroles_path = ./roles\n")
        .expect("cfg");
    std::fs::write(
        scenarios.join("roles/marker/tasks/main.yaml"),
        format!(
            "- ansible.builtin.copy:\n    dest: \"{}/{{{{ lookup('env', 'TASK_EXECUTOR_JOB_ID') }}}}\"\n    content: \"{{{{ lookup('env', 'PWD') }}}}\"\n- ansible.builtin.debug: {{msg: role-ran}}\n",
            jobs.display()
        ),
    )
    .expect("role");
    std::fs::write(
        scenarios.join("playbooks/scenario_marker.yaml"),
        "- hosts: localhost\n  connection: local\n  gather_facts: false\n  roles: [marker]\n",
    )
    .expect("playbook");
    config.write(
        &server.url(),
        &ansible,
        &[ansible_scenario("marker", "* * * * * *", "playbooks/scenario_marker.yaml", 60)],
    );
    let mut running = start(&config);
    running.until("five passed runs", |r| count(r, "marker", RunResult::Passed) >= 5).await;
    let (_, records) = running.stop().await;
    let passed: Vec<&RunRecord> = records
        .iter()
        .filter(|r| r.scenario == "marker" && r.result == RunResult::Passed)
        .collect();
    let ids: std::collections::BTreeSet<&str> =
        passed.iter().filter_map(|r| r.job_id.as_deref()).collect();
    assert_eq!(ids.len(), passed.len(), "each run has its own job id: {passed:?}");
    assert!(ids.iter().all(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())));
    // The playbook saw its job id, and ran in its own directory.
    let mut directories = std::collections::BTreeSet::new();
    for id in &ids {
        let cwd = std::fs::read_to_string(jobs.join(id)).expect("the role wrote the job id");
        assert!(cwd.contains("/runs/marker/") && cwd.ends_with(id), "{cwd}");
        directories.insert(cwd);
    }
    assert_eq!(directories.len(), ids.len());
    // Only the newest three run directories stay, each with its log.
    let kept: Vec<PathBuf> = std::fs::read_dir(config.dir.path().join("runs/marker"))
        .expect("runs")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(kept.len(), 3, "{kept:?}");
    for dir in &kept {
        let log = std::fs::read_to_string(dir.join("output.log")).expect("log");
        assert!(log.contains("role-ran"), "{log}");
    }
    assert_eq!(points(&server).await, tally(&records));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_because_the_executor_stops_is_aborted_not_failed() {
    let Some(ansible) = ansible_playbook() else { return };
    let Some(server) = influx().await else { return };
    let config = Config::new();
    let started = config.dir.path().join("started");
    config.playbook(
        "long.yaml",
        &format!(
            "    - ansible.builtin.file: {{path: {}, state: touch}}\n    - ansible.builtin.command: sleep 3002\n",
            started.display()
        ),
    );
    config.write(
        &server.url(),
        &ansible,
        &[ansible_scenario("long", "* * * * * *", "long.yaml", 600)],
    );
    let running = start(&config);
    // The run is under way once its first task has run.
    let began = || async { started.exists().then_some(()) };
    let what = "the playbook to start";
    crate::support::eventually_async(what, Duration::from_secs(120), began, String::new).await;
    // The first stop waits for the run (grace period); the second kills it.
    running.controls.send(Control::Shutdown).expect("executor running");
    let (totals, records) = running.stop().await;
    let long: Vec<&RunRecord> = records.iter().filter(|r| r.scenario == "long").collect();
    assert!(
        long.iter().any(|r| r.result == RunResult::Aborted && r.return_code == -1),
        "{records:?}"
    );
    assert!(long.iter().all(|r| r.result != RunResult::Failed), "{records:?}");
    assert!(totals.killed >= 1, "{totals:?}");
    assert_eq!(processes_with("sleep 3002"), 0, "an aborted run left its process group behind");
    assert_eq!(points(&server).await, tally(&records), "every run is exactly one point");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_probe_passes_on_the_expected_status_and_fails_otherwise() {
    let Some(server) = influx().await else { return };
    let base = http_server().await;
    let config = Config::new();
    config.write(
        &server.url(),
        Path::new("ansible-playbook"),
        &[
            http_scenario("up", "* * * * * *", &format!("{base}/ok")),
            http_scenario("down", "* * * * * *", &format!("{base}/broken")),
        ],
    );
    let mut running = start(&config);
    running
        .until("two runs of each probe", |r| {
            r.iter().filter(|x| x.scenario == "up").count() >= 2
                && r.iter().filter(|x| x.scenario == "down").count() >= 2
        })
        .await;
    let (_, records) = running.stop().await;
    let up: Vec<_> = records.iter().filter(|r| r.scenario == "up").collect();
    let down: Vec<_> = records.iter().filter(|r| r.scenario == "down").collect();
    assert!(
        up.len() >= 2 && up.iter().all(|r| r.result == RunResult::Passed && r.return_code == 200),
        "{records:?}"
    );
    assert!(
        down.len() >= 2
            && down.iter().all(|r| r.result == RunResult::Failed && r.return_code == 503),
        "{records:?}"
    );
    assert_eq!(points(&server).await, tally(&records));
    dashboard_queries_read_the_points(&server).await;
}

/// Every InfluxQL query of the example dashboards runs on real points, and
/// the ones on `apimon_scenario` find data.
async fn dashboard_queries_read_the_points(server: &InfluxServer) {
    let results = crate::support::executor::dashboard_queries(
        server,
        &[
            "examples-repo/dashboards/apimon/scenarios.json",
            "examples-repo/dashboards/platform/executor.json",
        ],
        &[("$scenario", "(up|down)")],
    )
    .await;
    assert!(results.len() >= 10, "{results:?}");
    for (query, has_rows) in results {
        let expects_data = query.contains("apimon_scenario")
            && !query.contains("skipped")
            && !query.contains("SHOW TAG");
        assert!(has_rows || !expects_data, "no data for a dashboard query: {query}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_config_starts_new_scenarios_and_stops_removed_ones() {
    let Some(server) = influx().await else { return };
    let base = http_server().await;
    let config = Config::new();
    config.write(
        &server.url(),
        Path::new("ansible-playbook"),
        &[http_scenario("old", "* * * * * *", &format!("{base}/ok"))],
    );
    let mut running = start(&config);
    let runs_of = |name: &'static str, n: usize| {
        move |r: &[RunRecord]| r.iter().filter(|x| x.scenario == name).count() >= n
    };
    running.until("two runs of old", runs_of("old", 2)).await;
    config.write(
        &server.url(),
        Path::new("ansible-playbook"),
        &[http_scenario("new", "* * * * * *", &format!("{base}/ok"))],
    );
    let changed_at = chrono::Utc::now();
    running.until("two runs of new (the file change noticed)", runs_of("new", 2)).await;
    // SIGHUP's path: an explicit reload takes effect at once.
    config.write(
        &server.url(),
        Path::new("ansible-playbook"),
        &[http_scenario("newest", "* * * * * *", &format!("{base}/ok"))],
    );
    running.controls.send(Control::Reload).expect("running");
    let reloaded_at = chrono::Utc::now();
    running.until("a run of newest", runs_of("newest", 1)).await;
    let (_, records) = running.stop().await;

    let scheduled = |name: &str| {
        records.iter().filter(|r| r.scenario == name).map(|r| r.scheduled_at).collect::<Vec<_>>()
    };
    let slack = chrono::Duration::milliseconds(1000);
    assert!(!scheduled("old").is_empty());
    assert!(
        scheduled("old").iter().all(|t| *t <= changed_at + slack),
        "old kept running: {records:?}"
    );
    assert!(!scheduled("new").is_empty(), "new never ran: {records:?}");
    assert!(
        scheduled("new")
            .iter()
            .all(|t| *t >= changed_at - slack
                && *t <= reloaded_at + chrono::Duration::milliseconds(100)),
        "{records:?}"
    );
    assert!(!scheduled("newest").is_empty(), "reload did not start it: {records:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influxdb_down_then_up_loses_no_point() {
    let Some(mut server) = influx().await else { return };
    let base = http_server().await;
    let config = Config::new();
    config.write(
        &server.url(),
        Path::new("ansible-playbook"),
        &[http_scenario("probe", "* * * * * *", &format!("{base}/ok"))],
    );
    let mut running = start(&config);
    running.until("two runs", |r| r.len() >= 2).await;
    server.stop();
    let before = running.seen.len();
    running.until("four runs while InfluxDB is down", |r| r.len() >= before + 4).await;
    let buffer = config.dir.path().join("buffer/pending.lp");
    assert!(
        std::fs::metadata(&buffer).is_ok_and(|m| m.len() > 0),
        "points are buffered on disk while InfluxDB is down"
    );
    server.restart().await;
    let drained =
        || async { (!std::fs::metadata(&buffer).is_ok_and(|m| m.len() > 0)).then_some(()) };
    let what = "the buffer to drain";
    crate::support::eventually_async(what, Duration::from_secs(120), drained, String::new).await;
    let (_, records) = running.stop().await;
    assert!(records.len() >= 6, "{records:?}");
    assert_eq!(points(&server).await, tally(&records), "a point was lost while InfluxDB was down");
}

/// The `apimon executor` binary (`args` before `--config`) with one probe
/// a second whose target, like the results URL, is unreachable; returns
/// once the first run failed (its point waits in the buffer).
fn executor_binary_after_a_failed_run(
    args: &[&str],
    rust_log: Option<&str>,
) -> (Config, std::process::Child, crate::support::LogLines) {
    let config = Config::new();
    let port = free_port();
    // Results go nowhere reachable: they are buffered, which must not block shutdown.
    config.write(
        &format!("http://127.0.0.1:{port}"),
        Path::new("ansible-playbook"),
        &[http_scenario("probe", "* * * * * *", &format!("http://127.0.0.1:{port}/ok"))],
    );
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_apimon"));
    command.arg("executor").args(args).arg("--config").arg(config.path());
    match rust_log {
        Some(filter) => command.env("RUST_LOG", filter),
        None => command.env_remove("RUST_LOG"),
    };
    let mut child =
        crate::support::process::spawn(command.stderr(std::process::Stdio::piped()), "executor");
    let log = crate::support::LogLines::follow(child.stderr.take().expect("stderr"));
    log.wait_for("Scenario did not pass.", Duration::from_secs(30));
    (config, child, log)
}

#[test]
fn the_binary_reloads_on_sighup_and_stops_cleanly_on_sigterm() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let (config, mut child, log) = executor_binary_after_a_failed_run(&[], Some("info"));
    let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    kill(pid, Signal::SIGHUP).expect("SIGHUP");
    log.wait_for("Configuration reloaded.", Duration::from_secs(30));
    assert!(child.try_wait().expect("wait").is_none(), "SIGHUP must not stop the executor");
    kill(pid, Signal::SIGTERM).expect("SIGTERM");
    let status = child.wait().expect("wait");
    let stderr = log.wait_for("Executor stopped.", Duration::from_secs(30));
    assert!(status.success(), "{stderr}");
    assert!(
        config.dir.path().join("buffer/pending.lp").exists(),
        "undelivered points stay on disk"
    );
}

/// `apimon render` of `repo`: outside-executor's executor.yaml, loaded as
/// the executor loads it.
fn rendered_executor_config(repo: &crate::support::TestRepo) -> executor::config::Config {
    let out = tempfile::tempdir().expect("temp dir");
    let output = crate::support::apimon(&[
        "render",
        "--repo",
        &repo.path().to_string_lossy(),
        "--out",
        &out.path().to_string_lossy(),
    ]);
    assert_eq!(output.status.code(), Some(0));
    let path = out.path().join("outside/outside-executor/etc/apimon/executor.yaml");
    executor::config::load(&path).expect("rendered config parses")
}

#[test]
fn the_rendered_executor_config_is_what_the_executor_reads() {
    let repo = crate::support::TestRepo::fixture();
    repo.edit(
        "apimon.yaml",
        "        password: {secret: outside_probe_password}\n",
        "        password: {secret: outside_probe_password}\n        probes:\n          catalog: {interval: 1m, skip: [object-store]}\n        sweeper: {age: 3h, dry_run: true}\n    logs:\n      cloud: production\n      container: apimon-logs\n      retention: 14d\n      temp_url_key: {secret: outside_logs_key}\n",
    );
    repo.edit(
        "inventory/outside/hosts.yaml",
        "    address: 192.168.10.20\n",
        "    address: 192.168.10.20\n    availability_zone: eu-de-02\n",
    );
    let config = rendered_executor_config(&repo);
    assert_eq!(config.environment, "outside");
    assert_eq!(config.scenarios.len(), 2);
    assert_eq!(config.scenarios["list_servers"].runner.kind(), "ansible");
    assert_eq!(config.scenarios["iam_probe"].cron, "0 * * * * *");
    let probe = &config.probes["production"];
    assert_eq!(probe.interval, std::time::Duration::from_secs(60));
    assert_eq!((probe.interface.as_str(), probe.concurrency), ("public", 8));
    assert!(probe.skip.contains("object-store"));
    let sweeper = &config.sweepers["production"];
    assert_eq!((sweeper.age.as_secs(), sweeper.interval.as_secs()), (3 * 3600, 20 * 60));
    assert!(sweeper.dry_run && !sweeper.platform_project);
    assert_eq!(sweeper.select, executor::sweeper::Select::JobIds);
    assert_eq!(config.results.zone.as_deref(), Some("eu-de-02"), "the declared zone");
    assert_eq!(config.zone_file, None, "a declared zone is the zone");
    let logs = config.logs.as_ref().expect("logs");
    assert_eq!((logs.cloud.as_str(), logs.container.as_str()), ("production", "apimon-logs"));
    assert_eq!(logs.retention.as_secs(), 14 * 86_400);
    assert!(!logs.public);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn structured_vars_reach_the_playbook_at_inventory_precedence() {
    let Some(ansible) = ansible_playbook() else { return };
    let Some(server) = influx().await else { return };
    let config = Config::new();
    let scenarios = config.dir.path().join("scenarios");
    let out = config.dir.path().join("seen.json");
    // The tree's own inventory (through its ansible.cfg) stays in use.
    std::fs::create_dir_all(scenarios.join("inventory")).expect("mkdir");
    std::fs::write(scenarios.join("ansible.cfg"), "[defaults]\ninventory = inventory/hosts.yaml\n")
        .expect("cfg");
    std::fs::write(
        scenarios.join("inventory/hosts.yaml"),
        "all:\n  vars:\n    from_tree: yes-tree\n",
    )
    .expect("inventory");
    std::fs::write(
        scenarios.join("vars.yaml"),
        format!(
            "- hosts: localhost\n  gather_facts: false\n  vars:\n    region: from-play\n  tasks:\n    - ansible.builtin.set_fact:\n        flavor: from-set-fact\n    - ansible.builtin.copy:\n        dest: {}\n        content: \"{{{{ {{'servers': servers, 'limits': limits, 'region': region, 'flavor': flavor, 'from_tree': from_tree}} | to_json }}}}\"\n",
            out.display()
        ),
    )
    .expect("playbook");
    let mut scenario = ansible_scenario("vars", "* * * * * *", "vars.yaml", 60);
    scenario["vars"] = serde_json::json!({
        "servers": ["a", "b"],
        "limits": {"cores": 4, "ids": [1, 2]},
        "region": "from-inventory",
        "flavor": "from-inventory",
    });
    config.write(&server.url(), &ansible, &[scenario]);
    let mut running = start(&config);
    running.until("a passed run", |r| count(r, "vars", RunResult::Passed) > 0).await;
    let (_, records) = running.stop().await;
    assert!(records.iter().all(|r| r.result != RunResult::Failed), "{records:#?}");
    let seen: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).expect("the playbook wrote"))
            .expect("json");
    assert_eq!(
        seen,
        serde_json::json!({
            "servers": ["a", "b"],
            "limits": {"cores": 4, "ids": [1, 2]},
            // The playbook's own vars and set_fact win over inventory vars.
            "region": "from-play",
            "flavor": "from-set-fact",
            "from_tree": "yes-tree",
        })
    );
}

#[test]
fn with_log_format_json_every_log_line_is_a_json_object() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let (_config, mut child, log) =
        executor_binary_after_a_failed_run(&["--log-format", "json"], None);
    let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    kill(pid, Signal::SIGTERM).expect("SIGTERM");
    assert!(child.wait().expect("wait").success());
    let text = log.wait_for("Executor stopped.", Duration::from_secs(30));
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    let run = lines
        .iter()
        .find(|l| l["fields"]["message"] == "Scenario did not pass.")
        .expect("the run's line");
    assert_eq!(run["level"], "WARN");
    assert_eq!(run["fields"]["result"], "failed");
    assert_eq!(run["span"]["scenario"], "probe", "{run}");
    assert!(lines.iter().all(|l| l["timestamp"].is_string() && l["target"].is_string()));
}

#[test]
fn results_via_direct_renders_an_executor_that_writes_to_influxdb_itself() {
    let repo = crate::support::TestRepo::fixture();
    repo.edit(
        "apimon.yaml",
        "      results_user: telegraf\n",
        "      results_user: telegraf\n      results_via: direct\n",
    );
    let out = crate::support::render_outside(&repo);
    let path = out.path().join("outside/outside-executor/etc/apimon/executor.yaml");
    let config = executor::config::load(&path).expect("rendered config parses");
    assert_eq!(config.results.url, "http://192.168.10.30:8086/write");
    assert_eq!(config.results.database, "apimon");
    let (user, _) = config.results.credentials.expect("credentials");
    assert_eq!(user, "telegraf");
    let text = std::fs::read_to_string(&path).expect("read");
    assert!(!text.contains("telegraf-pw"), "render redacts secrets:\n{text}");
}

/// The load governor reads the host's real load average: with a limit of
/// 0 (the load is always at or above 0 × the CPUs) every fire is recorded
/// `skipped` with `reason=overloaded`, in the records and in InfluxDB;
/// with a huge limit the same probe runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_governor_skips_runs_on_an_overloaded_host_and_runs_them_otherwise() {
    let Some(server) = influx().await else { return };
    let base = http_server().await;
    let run = |limit: &'static str| {
        let (server, base) = (&server, &base);
        async move {
            let config = Config::new();
            let probe = http_scenario("probe", "* * * * * *", &format!("{base}/ok"));
            config.write(&server.url(), Path::new("ansible-playbook"), &[probe]);
            config.set("load_limit", limit);
            let mut running = start(&config);
            running.until("two fires", |r| r.len() >= 2).await;
            running.stop().await.1
        }
    };
    let held = run("0").await;
    assert!(
        held.iter().all(|r| r.result == RunResult::Skipped && r.reason == Some("overloaded")),
        "{held:?}"
    );
    let query = "SELECT count(duration_ms) FROM apimon_scenario WHERE reason = 'overloaded'";
    let counted = crate::support::executor::count_of(&server, query).await;
    assert!(counted >= 2, "{query}: {counted}");
    let ran = run("1000000").await;
    assert!(ran.iter().any(|r| r.result == RunResult::Passed), "{ran:?}");
    assert!(ran.iter().all(|r| r.reason != Some("overloaded")), "{ran:?}");
}

/// What says nothing about the cloud is not recorded as its failure: a
/// playbook Ansible cannot load (an unknown module: exit 4 before any task)
/// and a runner that cannot start are `error` runs with a reason, in the
/// records and in InfluxDB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_playbook_ansible_cannot_load_and_a_runner_that_cannot_start_are_errors_not_failures() {
    let Some(server) = influx().await else { return };
    let Some(ansible) = ansible_playbook() else { return };
    let run = |runner: PathBuf| {
        let server = &server;
        async move {
            let config = Config::new();
            config.playbook(
                "unloadable.yaml",
                "    - name: a module no collection has\n      apimon_no_such.collection.module: {}\n",
            );
            let scenario = ansible_scenario("unloadable", "* * * * * *", "unloadable.yaml", 60);
            config.write(&server.url(), &runner, &[scenario]);
            let mut running = start(&config);
            // A slow run makes the next fire `skipped` (busy): not what is tested.
            let ran = |r: &[RunRecord]| r.iter().filter(|x| x.result != RunResult::Skipped).count();
            running.until("two runs", |r| ran(r) >= 2).await;
            let records = running.stop().await.1;
            records.into_iter().filter(|r| r.result != RunResult::Skipped).collect::<Vec<_>>()
        }
    };
    let unloadable = run(ansible).await;
    assert!(
        unloadable.iter().all(|r| r.result == RunResult::Error
            && r.reason == Some("playbook")
            && r.return_code == 4),
        "{unloadable:#?}"
    );
    let missing = run(PathBuf::from("/nonexistent/apimon-test/ansible-playbook")).await;
    assert!(
        missing.iter().all(|r| r.result == RunResult::Error && r.reason == Some("runner")),
        "{missing:#?}"
    );
    for reason in ["playbook", "runner"] {
        let query = format!("SELECT count(duration_ms) FROM apimon_scenario WHERE scenario = 'unloadable' AND result = 'error' AND reason = '{reason}'");
        let counted = crate::support::executor::count_of(&server, &query).await;
        assert!(counted >= 2, "{reason}: {counted}");
    }
    let (_, failed) = server
        .query_in(
            Some(("admin", "admin-pw")),
            "apimon",
            "SELECT count(duration_ms) FROM apimon_scenario WHERE scenario = 'unloadable' AND result = 'failed'",
        )
        .await;
    assert!(failed["results"][0]["series"].is_null(), "recorded as the cloud's failure: {failed}");
}

#[test]
fn an_executor_whose_zone_is_left_to_nova_reads_the_zone_file_apimon_writes() {
    let repo = crate::support::TestRepo::fixture();
    let config = rendered_executor_config(&repo);
    assert_eq!(config.results.zone, None);
    assert_eq!(config.zone_file.as_deref(), Some(Path::new(apimon::layout::EXECUTOR_ZONE_PATH)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_point_carries_the_executors_zone_from_the_metadata_service_or_its_config() {
    let Some(server) = influx().await else { return };
    let base = http_server().await;
    // Nova's metadata document, as the metadata service serves it.
    let metadata = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let metadata_url = format!(
        "http://{}/openstack/latest/meta_data.json",
        metadata.local_addr().expect("address")
    );
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut stream, _)) = metadata.accept().await {
            let mut request = vec![0u8; 2048];
            let _ = stream.read(&mut request).await;
            let body =
                r#"{"uuid": "x", "availability_zone": "az-meta-1", "name": "outside-executor"}"#;
            let answer = format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
            let _ = stream.write_all(answer.as_bytes()).await;
        }
    });
    let config = Config::new();
    config.write(
        &server.url(),
        Path::new("ansible-playbook"),
        &[http_scenario("up", "* * * * * *", &format!("{base}/ok"))],
    );
    config.set("zone_metadata_url", &metadata_url);
    let mut running = start(&config);
    running.until("a run", |r| r.iter().any(|r| r.result == RunResult::Passed)).await;
    let zones = |measurement: &'static str| {
        let server = &server;
        async move {
            let (_, body) = server
                .query_in(
                    Some(crate::support::executor::ADMIN),
                    "apimon",
                    &format!("SHOW TAG VALUES FROM \"{measurement}\" WITH KEY = \"zone\""),
                )
                .await;
            body["results"][0]["series"][0]["values"]
                .as_array()
                .map(|rows| {
                    rows.iter().filter_map(|r| r[1].as_str().map(str::to_owned)).collect::<Vec<_>>()
                })
                .unwrap_or_default()
        }
    };
    let mut seen = Vec::new();
    for _ in 0..100 {
        seen = zones("apimon_scenario").await;
        if !seen.is_empty() && !zones("apimon_executor").await.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(seen, ["az-meta-1"]);
    assert_eq!(zones("apimon_executor").await, ["az-meta-1"]);

    // The zone file apimon writes (Nova's answer when it applied the
    // server) comes before the metadata service.
    let zone_file = config.dir.path().join("zone");
    std::fs::write(&zone_file, "az-file-3\n").expect("zone file");
    config.set("zone_file", &zone_file.display().to_string());
    for _ in 0..100 {
        seen = zones("apimon_scenario").await;
        if seen.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(seen, ["az-file-3", "az-meta-1"]);

    // A zone in executor.yaml wins, and a reload applies it.
    config.set("zone", "az-conf-2");
    for _ in 0..100 {
        seen = zones("apimon_scenario").await;
        if seen.len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(seen, ["az-conf-2", "az-file-3", "az-meta-1"]);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_playbook_ansible_cannot_load_is_reported_after_the_rollout_before_it_runs() {
    let Some(ansible) = ansible_playbook() else { return };
    let Some(server) = influx().await else { return };
    let config = Config::new();
    config.playbook("good.yaml", "    - ansible.builtin.debug: {msg: fine}\n");
    config.playbook("bad.yaml", "    - no_such.collection.module: {x: 1}\n");
    // Once a year: the check, not a run, must tell.
    let yearly = |name: &str| ansible_scenario(name, "0 0 0 1 1 *", &format!("{name}.yaml"), 60);
    config.write(&server.url(), &ansible, &[yearly("good"), yearly("bad")]);
    let running = start(&config);
    let metrics = || crate::support::executor::metrics(config.ingest_port);
    let mut text = String::new();
    for _ in 0..150 {
        text = metrics().await;
        if text.contains("apimon_executor_playbook_unloadable{") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(text.contains("apimon_executor_playbook_unloadable{scenario=\"bad\"} 1"), "{text}");
    assert!(!text.contains("apimon_executor_playbook_unloadable{scenario=\"good\"}"), "{text}");
    // The report the daemon reads when it observes the host.
    let report = std::fs::read_to_string(config.dir.path().join("runs/.unloadable.json"))
        .expect("the syntax check's report");
    let report: std::collections::BTreeMap<String, String> =
        serde_json::from_str(&report).expect("JSON");
    assert_eq!(report.keys().collect::<Vec<_>>(), ["bad"], "{report:?}");
    assert!(report["bad"].contains("no_such.collection.module"), "{report:?}");
    let (_, body) = server
        .query_in(
            Some(crate::support::executor::ADMIN),
            "apimon",
            "SELECT last(unloadable) FROM apimon_executor",
        )
        .await;
    let mut last = body["results"][0]["series"][0]["values"][0][1].as_i64();
    for _ in 0..50 {
        if last == Some(1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (_, body) = server
            .query_in(
                Some(crate::support::executor::ADMIN),
                "apimon",
                "SELECT last(unloadable) FROM apimon_executor",
            )
            .await;
        last = body["results"][0]["series"][0]["values"][0][1].as_i64();
    }
    assert_eq!(last, Some(1), "the health point counts it");

    // Mended and rolled out again: nothing is reported.
    config.playbook("bad.yaml", "    - ansible.builtin.debug: {msg: mended}\n");
    config.write(&server.url(), &ansible, &[yearly("good"), yearly("bad"), yearly("good2")]);
    config.playbook("good2.yaml", "    - ansible.builtin.debug: {msg: also}\n");
    for _ in 0..150 {
        text = metrics().await;
        if !text.contains("apimon_executor_playbook_unloadable{") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!text.contains("apimon_executor_playbook_unloadable{"), "{text}");
    running.stop().await;
}
