//! `apimon daemon` end to end: real git repositories (file:// and
//! `git daemon`), a REAL InfluxDB as the target, the binary itself with
//! its HTTP endpoint, and real signals.

use std::time::Duration;

use serde_json::json;

use crate::support::daemon::{
    github_signature, head, Daemon, World, ADMIN, APPROVAL_TOKEN, WEBHOOK_SECRET,
};
use crate::support::free_port;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_commit_converges_over_git_daemon_and_the_time_is_printed() {
    let Some(mut world) = World::new().await else { return };
    let url = world.git.serve();
    let port = free_port();
    let config = world.config(&url, port, 1, "");
    let daemon = Daemon::start(&config, port, world.dir.path().join("daemon.log")).await;
    daemon.wait_converged(&head(&world)).await;

    world.add_user("pushed");
    let commit = world.git.commit("add user pushed");
    world.git.push(false);
    let took = world.wait_for_user("pushed", true, Duration::from_secs(60)).await;
    println!("push to converged: {} ms (poll interval 1 s)", took.as_millis());
    let status = daemon.wait_converged(&commit).await;
    assert_eq!(status["last_good_commit"], commit.as_str());

    let metrics = reqwest::get(format!("{}/metrics", daemon.url()))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains(
            "apimon_changes_applied_total{provider=\"influxdb\",kind=\"user\",op=\"create\"}"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("apimon_last_applied_commit_timestamp_seconds{environment=\"outside\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("apimon_reconcile_duration_seconds_count"), "{metrics}");
    assert!(!daemon.log_text().contains("-pw"), "a secret reached the log");
    // Each pass leaves an apimon_reconcile point (the health service's
    // dead-man's switch reads them), written as the results user.
    let mut rows = serde_json::Value::Null;
    for _ in 0..100 {
        let (_, body) = world
            .influx
            .query_in(
                Some(ADMIN),
                "apimon",
                "SELECT \"outcome\", \"commit\" FROM apimon_reconcile WHERE \"environment\" = 'outside'",
            )
            .await;
        rows = body["results"][0]["series"][0]["values"].clone();
        if rows.as_array().is_some_and(|r| r.iter().any(|row| row[2] == commit.as_str())) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rows = rows.as_array().cloned().unwrap_or_default();
    assert!(rows.iter().any(|row| row[2] == commit.as_str() && row[1] == "success"), "{rows:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_with_a_bad_signature_are_refused_and_good_ones_trigger() {
    let Some(world) = World::new().await else { return };
    // A long poll interval: only webhooks can bring the next commit in.
    let (daemon, notify) = world.start_notifying_daemon(3600, None).await;
    notify.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut datagram = [0u8; 64];
    let n = notify.recv(&mut datagram).expect("sd_notify datagram");
    assert_eq!(&datagram[..n], b"READY=1", "Type=notify needs READY=1");
    daemon.wait_converged(&head(&world)).await;

    let body = br#"{"ref":"refs/heads/main"}"#.to_vec();
    let client = reqwest::Client::new();
    let hook = format!("{}/hooks/git", daemon.url());
    let before = daemon.status().await;
    let bad = client
        .post(&hook)
        .header("X-Hub-Signature-256", "sha256=00")
        .body(body.clone())
        .send()
        .await
        .expect("post");
    assert_eq!(bad.status().as_u16(), 401);
    let unsigned = client.post(&hook).body(body.clone()).send().await.expect("post");
    assert_eq!(unsigned.status().as_u16(), 401);
    // Triggers are taken in order: had a refused webhook queued one, the
    // manual trigger's reconcile would be the second, not the first.
    assert_eq!(daemon.trigger(WEBHOOK_SECRET).await, 202);
    let after = daemon
        .wait_status("the manual trigger's reconcile", Duration::from_secs(30), |s| {
            s["last_trigger"] == "manual"
        })
        .await;
    assert_eq!(
        after["reconciles"].as_u64(),
        before["reconciles"].as_u64().map(|n| n + 1),
        "a refused webhook triggered a reconcile: {after:#}"
    );

    world.add_user("hooked");
    world.git.commit("add user hooked");
    world.git.push(false);
    let other_branch = br#"{"ref":"refs/heads/feature"}"#.to_vec();
    let ignored = client
        .post(&hook)
        .header("X-Hub-Signature-256", github_signature(&other_branch))
        .body(other_branch)
        .send()
        .await
        .expect("post");
    assert_eq!(ignored.status().as_u16(), 202);
    let good = client
        .post(&hook)
        .header("X-Hub-Signature-256", github_signature(&body))
        .body(body.clone())
        .send()
        .await
        .expect("post");
    assert_eq!(good.status().as_u16(), 202);
    world.wait_for_user("hooked", true, Duration::from_secs(30)).await;

    assert_eq!(daemon.trigger("wrong").await, 401);
    assert_eq!(daemon.trigger(WEBHOOK_SECRET).await, 202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_commit_is_reported_and_the_last_good_one_stays_in_force() {
    let Some(world) = World::new().await else { return };
    let daemon = world.converged_daemon(1, "").await;
    let good = head(&world);

    world.add_user("never");
    world.git.edit(
        "inventory/outside/hosts.yaml",
        "    flavor: s3.large.2",
        "    flavour: s3.large.2",
    );
    let bad = world.git.commit("typo");
    world.git.push(false);
    let status = daemon
        .wait_status("the bad commit rejected", Duration::from_secs(30), |s| {
            s["rejected"]["commit"] == bad.as_str()
        })
        .await;
    assert_eq!(status["last_good_commit"], good.as_str());
    let errors = status["rejected"]["errors"].to_string();
    assert!(
        errors.contains(
            "inventory/outside/hosts.yaml:13:5: hosts[1].flavour: unknown field `flavour`"
        ),
        "{errors}"
    );
    // Two more polls see the same bad commit; it never applies.
    daemon.wait_reconciles(&status, 2).await;
    assert!(!world.users().await.contains(&"never".to_owned()), "the bad commit was applied");

    world.git.edit(
        "inventory/outside/hosts.yaml",
        "    flavour: s3.large.2",
        "    flavor: s3.large.2",
    );
    let fixed = world.git.commit("fix typo");
    world.git.push(false);
    daemon.wait_converged(&fixed).await;
    assert!(world.users().await.contains(&"never".to_owned()));
    assert!(daemon.status().await["rejected"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_force_push_is_followed_and_what_it_removed_is_pruned() {
    let Some(world) = World::new().await else { return };
    let daemon = world.converged_daemon(1, "").await;
    let base = head(&world);

    world.add_user("rewritten");
    let doomed = world.git.commit("add user rewritten");
    world.git.push(false);
    daemon.wait_converged(&doomed).await;
    assert!(world.users().await.contains(&"rewritten".to_owned()));

    world.git.reset_hard(&base);
    world.add_user("replacement");
    let rewritten = world.git.commit("add user replacement instead");
    world.git.push(true);
    daemon.wait_converged(&rewritten).await;
    let users = world.users().await;
    assert!(
        users.contains(&"replacement".to_owned()) && !users.contains(&"rewritten".to_owned()),
        "{users:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_is_repaired_on_the_drift_schedule() {
    let Some(world) = World::new().await else { return };
    let daemon = world.converged_daemon(3600, "drift_cron: '*/2 * * * * *'\n").await;

    let (status, _) = world.influx.query(Some(ADMIN), "DROP USER telegraf").await;
    assert_eq!(status, 200);
    let took = world.wait_for_user("telegraf", true, Duration::from_secs(30)).await;
    println!("drift repaired after {} ms", took.as_millis());
    let metrics = reqwest::get(format!("{}/metrics", daemon.url()))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(metrics.contains("apimon_drift_found_total{environment=\"outside\"}"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_signed_by_an_allowed_key_applies_and_an_unsigned_one_is_refused() {
    let Some(world) = World::new().await else { return };
    let Some((daemon, _, signed)) = world.signed_daemon().await else { return };
    assert!(world.users().await.contains(&"signed".to_owned()));

    let status = world.push_unsigned_and_wait_refused(&daemon).await;
    assert_eq!(status["last_good_commit"], signed.as_str());
    assert!(!world.users().await.contains(&"unsigned".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_an_apply_leaves_a_consistent_state_and_the_next_start_converges() {
    let Some(world) = World::new().await else { return };
    let (mut daemon, config, commit) = world.start_bulk("bulk", 60, 3).await;
    let port = daemon.port;
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    let exit = daemon.wait_exit(Duration::from_secs(30));
    assert!(exit.success(), "{exit:?}\n{}", daemon.log_text());

    let state_dir = world.dir.path().join("state");
    let state = apimon::state::read(&state_dir).expect("state file is consistent JSON");
    let run = state.history.last().expect("the interrupted run is recorded");
    assert_eq!(run.result, apimon::state::RunResult::Partial);
    let existing = world.users().await;
    let owned_users: Vec<String> = state.environments["outside"]
        .owned
        .iter()
        .filter(|id| id.kind == "user")
        .map(|id| id.name.to_string())
        .collect();
    assert!(
        owned_users.iter().all(|u| existing.contains(u)),
        "state claims users that do not exist: {owned_users:?} vs {existing:?}"
    );
    let bulk_created = existing.iter().filter(|u| u.starts_with("bulk")).count();
    assert!(bulk_created < 60, "the apply was not interrupted");
    assert_eq!(
        owned_users.iter().filter(|u| u.starts_with("bulk")).count(),
        bulk_created,
        "every user created is recorded as owned"
    );

    let log = world.dir.path().join("daemon2.log");
    let daemon = Daemon::start(&config, port, log).await;
    daemon.wait_converged(&commit).await;
    assert_eq!(world.users().await.iter().filter(|u| u.starts_with("bulk")).count(), 60);
}

/// A world whose `outside` reports drift only, and its daemon (a drift
/// pass every two seconds), converged.
async fn report_only_daemon() -> Option<(World, Daemon)> {
    let world = World::new().await?;
    world.git.edit(
        "apimon.yaml",
        "  outside:\n    location: outside\n",
        "  outside:\n    location: outside\n    policy: {drift: report}\n",
    );
    let commit = world.git.commit("report drift only");
    world.git.push(false);
    let daemon = world.start_daemon(3600, "drift_cron: '*/2 * * * * *'\n").await;
    daemon.wait_converged(&commit).await;
    Some((world, daemon))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_only_drift_is_reported_as_pending_and_left_alone() {
    let Some((world, daemon)) = report_only_daemon().await else { return };

    let (status, _) = world.influx.query(Some(ADMIN), "DROP USER telegraf").await;
    assert_eq!(status, 200);
    let status = daemon
        .wait_status("drift reported as pending", Duration::from_secs(30), |s| {
            s["environments"]["outside"]["pending"]
                .as_array()
                .is_some_and(|p| p.iter().any(|c| c["id"] == "outside/influxdb.user/telegraf"))
        })
        .await;
    assert_eq!(status["environments"]["outside"]["outcome"], "pending");
    assert!(
        status["environments"]["outside"]["drift_found"].as_u64().unwrap_or(0) >= 1,
        "{status:#}"
    );
    // Two more drift passes leave it alone too.
    daemon.wait_reconciles(&status, 2).await;
    assert!(
        !world.users().await.contains(&"telegraf".to_owned()),
        "report-only drift was repaired"
    );
}

#[test]
fn the_systemd_units_verify() {
    let Some(analyze) = crate::support::require_binary("systemd-analyze", "systemd") else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    // Both units from their one source, the templates.
    let repo = crate::support::TestRepo::fixture();
    let out = crate::support::render_outside(&repo);
    let rendered = out.path();
    for unit in ["apimon.service", "apimon-executor.service"] {
        // The daemon's unit template has no placeholders; the executor's is
        // taken as rendered for the fixture's executor.
        let source = match unit {
            "apimon.service" => std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("templates/apimon.service.hbs"),
            _ => rendered.join("outside/outside-executor/etc/systemd/system").join(unit),
        };
        let text = std::fs::read_to_string(&source)
            .unwrap_or_else(|e| panic!("{}: {e}", source.display()));
        assert!(
            text.contains("NoNewPrivileges=yes")
                && text.contains("ProtectSystem=strict")
                && text.contains("ProtectHome=yes")
                && text.contains("PrivateTmp=yes"),
            "{unit} lacks hardening"
        );
        assert!(
            text.contains("ReadWritePaths=/var/lib/apimon") && text.contains("User=apimon"),
            "{unit}"
        );
        let path = dir.path().join(unit);
        std::fs::write(&path, text.replace("/usr/local/bin/apimon", env!("CARGO_BIN_EXE_apimon")))
            .expect("write unit");
        crate::support::systemd_verify(&analyze, &path, unit);
    }
    let daemon_unit = std::fs::read_to_string(dir.path().join("apimon.service")).expect("unit");
    assert!(daemon_unit.contains("Type=notify") && daemon_unit.contains("WatchdogSec="));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ssh_remote_is_followed_and_an_unknown_host_key_is_refused() {
    use crate::support::sshd::{current_user, SshWorld};
    let Some(world) = World::new().await else { return };
    let Some(ssh) = SshWorld::new() else { return };
    let server = ssh.server("git");
    let url = format!(
        "ssh://{}@127.0.0.1:{}{}",
        current_user(),
        server.port,
        world.git.origin_path().display()
    );
    let known_hosts = ssh.known_hosts(&[]);
    let extra = format!(
        "ssh_key: {}\nssh_known_hosts: {}\n",
        ssh.client_key().display(),
        known_hosts.display()
    );
    let port = free_port();
    let config = world.config(&url, port, 1, &extra);
    let text = std::fs::read_to_string(&config).expect("config");
    let text = text.replace(
        "  branch: main\n",
        &format!("  branch: main\n  ssh_key: {}\n", ssh.client_key().display()),
    );
    std::fs::write(&config, text).expect("config");
    let daemon = Daemon::start(&config, port, world.dir.path().join("daemon.log")).await;
    let status = daemon
        .wait_status("the unknown host key refused", Duration::from_secs(30), |s| {
            s["last_error"].as_str().is_some_and(|e| e.contains("refusing SSH host key"))
        })
        .await;
    assert!(status["last_good_commit"].is_null(), "{status:#}");
    // A refused host key is permanent: no retry storm, the daemon waits for
    // something to change and looks again at its next poll.
    assert_eq!(status["waiting_for_change"], true, "{status:#}");
    assert!(!daemon.log_text().contains("retrying"), "{}", daemon.log_text());
    // The operator adds the key: the same daemon goes on, no restart.
    ssh.known_hosts(&[(format!("[127.0.0.1]:{}", server.port), &server)]);
    daemon.wait_converged(&head(&world)).await;
    world.add_user("over_ssh");
    let commit = world.git.commit("add user over_ssh");
    world.git.push(false);
    daemon.wait_converged(&commit).await;
    assert!(world.users().await.contains(&"over_ssh".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_stops_at_once() {
    let Some(world) = World::new().await else { return };
    let (mut daemon, _, _) = world.start_bulk("many", 200, 2).await;
    // Freeze InfluxDB so the change in progress cannot finish: the first
    // SIGTERM must then wait for it, the second must not.
    world.influx.pause();
    world.influx.wait_request_pending(Duration::from_secs(30)).await;
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    daemon.wait_log("Shutdown requested", Duration::from_secs(10));
    let still_running = daemon.child.try_wait().expect("wait").is_none();
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    let exit = daemon.wait_exit(Duration::from_secs(5));
    world.influx.resume();
    assert!(
        still_running,
        "the first SIGTERM must wait for the change in progress: {}",
        daemon.log_text()
    );
    assert!(!exit.success(), "a forced stop exits non-zero: {exit:?}");
    assert!(daemon.log_text().contains("Second shutdown request"), "{}", daemon.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_smart_http_remote_with_a_token_is_followed() {
    use crate::support::git_http::GitHttp;
    let Some(world) = World::new().await else { return };
    let root = world.git.origin_path().parent().expect("parent").to_owned();
    let server = GitHttp::start(root, Some("s3cret-token")).await;
    let url = format!("{}/origin.git", server.url);
    let token_file = world.dir.path().join("git_token");
    std::fs::write(&token_file, "s3cret-token\n").expect("token");
    std::fs::set_permissions(&token_file, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    let port = free_port();
    let config = world.config(&url, port, 1, "");
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        text.replace(
            "  branch: main\n",
            &format!("  branch: main\n  token_file: {}\n", token_file.display()),
        ),
    )
    .expect("config");
    let daemon = Daemon::start(&config, port, world.dir.path().join("daemon.log")).await;
    daemon.wait_converged(&head(&world)).await;
    world.add_user("over_http");
    let commit = world.git.commit("add user over_http");
    world.git.push(false);
    daemon.wait_converged(&commit).await;
    assert!(world.users().await.contains(&"over_http".to_owned()));
    assert!(!daemon.log_text().contains("s3cret-token"), "the token reached the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_failure_waits_for_a_new_commit_instead_of_retrying() {
    let Some(world) = World::new().await else { return };
    // InfluxDB refuses a shard group longer than the policy: no retry helps.
    world.git.edit(
        "inventory/outside/influxdb.yaml",
        "{name: four_weeks, duration: 4w, default: true}",
        "{name: four_weeks, duration: 4w, default: true}\n      - {name: short, duration: 1h, shard_duration: 1d}",
    );
    world.git.commit("an impossible retention policy");
    world.git.push(false);
    let daemon = world.start_daemon(1, "").await;
    let status = daemon
        .wait_status("the permanent failure", Duration::from_secs(60), |s| {
            s["waiting_for_change"] == true
        })
        .await;
    assert!(status["last_error"].as_str().is_some_and(|e| e.contains("short")), "{status:#}");
    // Polls go on and find the same commit: no new attempt, no new error.
    daemon.wait_reconciles(&status, 3).await;
    let failures = daemon.log_text().matches("Reconcile failed").count();
    assert_eq!(failures, 1, "{}", daemon.log_text());

    world.git.edit(
        "inventory/outside/influxdb.yaml",
        "{name: short, duration: 1h, shard_duration: 1d}",
        "{name: short, duration: 1d, shard_duration: 1h}",
    );
    let fixed = world.git.commit("a possible retention policy");
    world.git.push(false);
    let status = daemon.wait_converged(&fixed).await;
    assert_eq!(status["waiting_for_change"], false, "{status:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_reconcile_trips_the_watchdog() {
    let Some(world) = World::new().await else { return };
    let (daemon, notify) = world.start_notifying_daemon(3600, Some("2000000")).await;
    daemon.wait_converged(&head(&world)).await;
    notify.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    let mut datagram = [0u8; 64];
    let receive = |buffer: &mut [u8]| {
        let n = notify.recv(buffer).expect("sd_notify datagram");
        String::from_utf8_lossy(&buffer[..n]).into_owned()
    };
    // Idle and converged: fed.
    while receive(&mut datagram) != "WATCHDOG=1" {}
    // A reconcile that cannot make progress: InfluxDB is frozen.
    world.influx.pause();
    assert_eq!(daemon.trigger(WEBHOOK_SECRET).await, 202);
    let mut seen = Vec::new();
    loop {
        let message = receive(&mut datagram);
        if message == "WATCHDOG=trigger" {
            break;
        }
        seen.push(message);
    }
    world.influx.resume();
    assert!(daemon.log_text().contains("no progress"), "{}", daemon.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_the_log_has_each_applied_change_and_no_dependency_chatter() {
    let Some(world) = World::new().await else { return };
    let port = free_port();
    let config = world.config(&world.git.file_url(), port, 1, "");
    let daemon =
        Daemon::start_default_logging(&config, port, world.dir.path().join("daemon.log")).await;
    daemon.wait_converged(&head(&world)).await;
    let log = daemon.log_text();
    assert!(
        log.contains("Applied change.") && log.contains("resource=outside/influxdb.user/admin"),
        "{log}"
    );
    let chatter: Vec<&str> =
        log.lines().filter(|line| !line.contains(" apimon::") && !line.trim().is_empty()).collect();
    assert!(chatter.is_empty(), "lines from dependencies at the default level: {chatter:#?}");
    assert!(!log.contains('\u{1b}'), "colour codes in a log that is not a terminal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approving_one_pending_change_over_http_leaves_the_others_pending() {
    let Some((world, daemon)) = report_only_daemon().await else { return };
    for user in ["telegraf", "grafana"] {
        let (status, _) = world.influx.query(Some(ADMIN), &format!("DROP USER {user}")).await;
        assert_eq!(status, 200);
    }
    let pending_ids = |s: &serde_json::Value| -> Vec<String> {
        s["environments"]["outside"]["pending"]
            .as_array()
            .map(|p| p.iter().filter_map(|c| c["id"].as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    };
    daemon
        .wait_status("both users pending", Duration::from_secs(30), |s| {
            let ids = pending_ids(s);
            ["telegraf", "grafana"]
                .iter()
                .all(|u| ids.contains(&format!("outside/influxdb.user/{u}")))
        })
        .await;

    // Not pending, or no token: refused.
    let client = reqwest::Client::new();
    let approve = |body: serde_json::Value, token: &str| {
        client.post(format!("{}/approve", daemon.url())).bearer_auth(token).json(&body).send()
    };
    let refused =
        approve(json!({"id": "outside/influxdb.user/admin"}), APPROVAL_TOKEN).await.expect("post");
    assert_eq!(refused.status().as_u16(), 404);
    let refused =
        approve(json!({"id": "outside/influxdb.user/telegraf"}), "wrong").await.expect("post");
    assert_eq!(refused.status().as_u16(), 401);
    // The webhook secret (which GitLab sends with every delivery) approves nothing.
    let refused = approve(json!({"id": "outside/influxdb.user/telegraf"}), WEBHOOK_SECRET)
        .await
        .expect("post");
    assert_eq!(refused.status().as_u16(), 401);
    // A digest other than the one shown: the change moved since; refused.
    let refused =
        approve(json!({"id": "outside/influxdb.user/telegraf", "digest": "0000"}), APPROVAL_TOKEN)
            .await
            .expect("post");
    assert_eq!(refused.status().as_u16(), 409);

    // From the command line, through the daemon's configuration.
    let output = crate::support::apimon(&[
        "approve",
        "--id",
        "outside/influxdb.user/telegraf",
        "--config",
        &world.dir.path().join("daemon.yaml").to_string_lossy(),
    ]);
    let (stdout, stderr) = crate::support::text(&output);
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("approved outside/influxdb.user/telegraf"), "{stdout}");
    world.wait_for_user("telegraf", true, Duration::from_secs(30)).await;
    // The other stays pending, through more drift passes.
    let status = daemon.status().await;
    let status = daemon.wait_reconciles(&status, 2).await;
    assert!(
        pending_ids(&status).contains(&"outside/influxdb.user/grafana".to_owned()),
        "{status:#}"
    );
    assert!(
        !world.users().await.contains(&"grafana".to_owned()),
        "an unapproved change was applied"
    );

    // A whole environment.
    let accepted = approve(json!({"environment": "outside"}), APPROVAL_TOKEN).await.expect("post");
    assert_eq!(accepted.status().as_u16(), 202);
    world.wait_for_user("grafana", true, Duration::from_secs(30)).await;
}

/// A copy of the apimon binary at `path`, put in place by a rename, as a
/// package upgrade does (a running binary cannot be written).
fn install_binary(path: &std::path::Path) {
    let staged = path.with_extension("new");
    std::fs::copy(env!("CARGO_BIN_EXE_apimon"), &staged).expect("copy binary");
    std::fs::rename(&staged, path).expect("install binary");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_own_binary_or_configuration_restarts_the_daemon_between_reconciles() {
    let Some(world) = World::new().await else { return };
    let bin = tempfile::tempdir().expect("bin dir");
    let binary = bin.path().join("apimon");
    install_binary(&binary);
    let port = free_port();
    let config = world.config(&world.git.file_url(), port, 1, "");
    let log = world.dir.path().join("daemon.log");
    let mut daemon = Daemon::start_binary(&binary, &config, port, log.clone()).await;
    daemon.wait_converged(&head(&world)).await;

    // A configuration that could not start a daemon is refused: it runs on.
    let good = std::fs::read_to_string(&config).expect("config");
    std::fs::write(&config, good.replace("parallelism: 2", "parallelism: [2]")).expect("write");
    daemon.wait_log("Not restarting", Duration::from_secs(30));
    assert!(daemon.child.try_wait().expect("wait").is_none(), "{}", daemon.log_text());

    // A valid one: the daemon stops with 75 for its service manager, after
    // the reconcile at hand (a commit pushed with it is applied, by this
    // process or the next).
    world.add_user("restart_probe");
    world.git.commit("add user restart_probe");
    world.git.push(false);
    std::fs::write(&config, good.replace("parallelism: 2", "parallelism: 3")).expect("write");
    let status = daemon.wait_exit(Duration::from_secs(60));
    assert_eq!(status.code(), Some(75), "{}", daemon.log_text());
    assert!(daemon.log_text().contains("its configuration"), "{}", daemon.log_text());

    // The new process converges, then an upgraded binary restarts it too.
    let mut daemon = Daemon::start_binary(&binary, &config, port, log).await;
    daemon.wait_converged(&head(&world)).await;
    assert!(world.users().await.contains(&"restart_probe".to_owned()));
    install_binary(&binary);
    let status = daemon.wait_exit(Duration::from_secs(60));
    assert_eq!(status.code(), Some(75), "{}", daemon.log_text());
    assert!(daemon.log_text().contains("its binary"), "{}", daemon.log_text());
}
