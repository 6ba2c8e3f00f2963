//! Units that must stay up, with the real case seen on a real cloud: the
//! executor's ingest port (127.0.0.1:8187) taken by another process. The
//! executor host runs the real `apimon executor` under the suite's stand-in
//! service manager (its unit's ExecStart, `Restart=on-failure`, `show`
//! answering as systemd does): it exits at once, `apply` fails the unit's
//! change with the executor's own last lines, and the daemon reports it
//! failed and restarts it with its backoff, not on every poll; once the
//! port is free, both converge (the positive control).

use std::time::Duration;

use apimon::plan::Op;

use crate::support::daemon::Daemon;
use crate::support::free_port;
use crate::support::git::GitRemote;
use crate::support::host::Setup;

/// The executor's ingest port, as its configuration renders it.
const INGEST: &str = "127.0.0.1:8187";

/// One test at a time holds the port or runs an executor on it.
static PORT: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The setup with the real apimon as the executor's binary.
async fn setup_with_real_executor() -> Option<Setup> {
    let setup = Setup::new().await?;
    std::fs::copy(env!("CARGO_BIN_EXE_apimon"), &setup.binary).expect("binary");
    Some(setup)
}

/// Another process on the executor's port.
fn take_port() -> std::net::TcpListener {
    std::net::TcpListener::bind(INGEST)
        .unwrap_or_else(|e| panic!("{INGEST} must be free for this test: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_whose_port_is_taken_fails_its_change_with_its_last_lines() {
    // Held until the setup (and its executor) is gone.
    let _port = PORT.lock().await;
    let Some(setup) = setup_with_real_executor().await else { return };
    let taken = take_port();
    let (_, outcome) = setup.apply().await;
    let failure = outcome
        .failed
        .iter()
        .find(|(id, _)| id.name.ends_with(":apimon-executor"))
        .map(|(_, error)| error.to_string())
        .unwrap_or_else(|| panic!("the executor's unit did not fail: {outcome}"));
    assert!(failure.contains("unit apimon-executor"), "{failure}");
    assert!(failure.contains("is not active") || failure.contains("was restarted"), "{failure}");
    assert!(failure.contains(&format!("cannot listen on {INGEST}")), "{failure}");
    // Everything else converged.
    assert_eq!(outcome.failed.len(), 1, "{outcome}");

    drop(taken);
    let (_, outcome) = setup.apply().await;
    assert!(outcome.is_success(), "{outcome}");
    let plan = setup.plan().await.expect("plan");
    assert!(plan.changes.iter().all(|c| c.op == Op::NoOp), "not converged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_reports_a_unit_that_does_not_stay_up_and_retries_it_with_backoff() {
    let _port = PORT.lock().await;
    let Some(setup) = setup_with_real_executor().await else { return };
    let Some(git) = GitRemote::new() else { return };
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", setup.repo.path().display()))
        .arg(git.work())
        .status()
        .expect("cp");
    assert!(copied.success());
    git.commit("the platform with an executor");
    git.push(false);
    let port = free_port();
    let state = tempfile::tempdir().expect("state");
    let config = state.path().join("daemon.yaml");
    std::fs::write(
        &config,
        format!(
            "repository:\n  url: {url}\n  branch: main\n  poll_interval_seconds: 1\nstate_dir: {state}/state\nsecrets_file: {secrets}\nssh_key: {key}\nssh_known_hosts: {known}\nenvironments: [outside]\nlisten: 127.0.0.1:{port}\nparallelism: 2\nattempts: 1\n",
            url = git.file_url(),
            state = state.path().display(),
            secrets = setup.secrets_file.display(),
            key = setup.world.client_key().display(),
            known = setup.known_hosts.display(),
        ),
    )
    .expect("daemon.yaml");
    let taken = take_port();
    let envs = [("APIMON_EXECUTOR_BINARY", setup.binary.as_path())];
    let daemon = Daemon::start_with(&config, port, state.path().join("daemon.log"), &envs).await;
    let unit = "outside/host.unit/outside-executor:apimon-executor";
    let status = daemon
        .wait_status("the unit failed", Duration::from_secs(120), |s| {
            s["environments"]["outside"]["failed"][unit].is_string()
        })
        .await;
    let error = status["environments"]["outside"]["failed"][unit].to_string();
    assert!(error.contains(&format!("cannot listen on {INGEST}")), "{error}");
    assert_eq!(status["environments"]["outside"]["outcome"], "failed");

    // Polled every second, it is restarted on its backoff only: fewer
    // restarts than reconciles, and a pass that holds it for its retry.
    let restarts = setup.restarts("apimon-executor");
    let seen = status["reconciles"].as_u64().unwrap_or(0);
    let held_for_retry = std::cell::Cell::new(false);
    let status = daemon
        .wait_status("six more reconciles", Duration::from_secs(60), |s| {
            let pending = s["environments"]["outside"]["pending"].to_string();
            if pending.contains("its last attempt failed") {
                held_for_retry.set(true);
            }
            s["reconciles"].as_u64().unwrap_or(0) >= seen + 6
        })
        .await;
    let reconciles = status["reconciles"].as_u64().unwrap_or(0) - seen;
    let more = u64::from(setup.restarts("apimon-executor") - restarts);
    assert!(more < reconciles, "{more} restarts in {reconciles} reconciles");
    assert!(
        held_for_retry.get()
            || status["environments"]["outside"]["pending"]
                .to_string()
                .contains("its last attempt failed"),
        "never held for its retry: {status}"
    );
    assert!(status["environments"]["outside"]["failed"][unit].is_string(), "{status}");

    // The port is free: the next retry converges.
    drop(taken);
    daemon
        .wait_status("converged", Duration::from_secs(120), |s| {
            s["environments"]["outside"]["failed"].as_object().is_some_and(|f| f.is_empty())
                && matches!(
                    s["environments"]["outside"]["outcome"].as_str(),
                    Some("success" | "no_changes")
                )
        })
        .await;
}
