//! The daemon under attack and mishap: a bad webhook secret, slow or
//! half-sent requests, replayed deliveries, credentials in the remote's
//! URL, a commit whose template would recurse forever, and destructive
//! changes that wait for a maintenance window while drift is report-only.

use std::io::Write as _;

use chrono::Timelike;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use crate::support::daemon::{github_signature, head, Daemon, World, WEBHOOK_SECRET};
use crate::support::free_port;

/// Runs `apimon daemon` expecting it to refuse to start; its stderr.
fn refused_start(config: &std::path::Path) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_apimon"))
        .args(["daemon", "--config", &config.to_string_lossy()])
        .output()
        .expect("run daemon");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    stderr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_or_readable_webhook_secret_is_refused_at_start() {
    let Some(world) = World::new().await else { return };
    let config = world.config(&world.git.file_url(), free_port(), 1, "");
    let secret = world.dir.path().join("webhook_secret");
    std::fs::write(&secret, "").expect("empty");
    let stderr = refused_start(&config);
    assert!(stderr.contains("holds 0 bytes; it must hold at least 16"), "{stderr}");
    std::fs::write(&secret, WEBHOOK_SECRET).expect("secret");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let stderr = refused_start(&config);
    assert!(stderr.contains("has mode 0644; it must be 0600 or stricter"), "{stderr}");
    assert!(!stderr.contains(WEBHOOK_SECRET), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_git_token_file_others_can_read_is_refused_at_start() {
    let Some(world) = World::new().await else { return };
    let config = world.config(&world.git.file_url(), free_port(), 1, "");
    let token = world.dir.path().join("git_token");
    std::fs::write(&token, "s3cret-token\n").expect("token");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let text = std::fs::read_to_string(&config).expect("config").replace(
        "  branch: main\n",
        &format!("  branch: main\n  token_file: {}\n", token.display()),
    );
    std::fs::write(&config, text).expect("config");
    let stderr = refused_start(&config);
    assert!(
        stderr.contains("repository token file") && stderr.contains("has mode 0640"),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cret-token"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_requests_do_not_stop_healthz_and_are_cut_off() {
    let Some(world) = World::new().await else { return };
    let daemon = world.start_daemon(3600, "").await;
    let mut idle = Vec::new();
    for _ in 0..200 {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", daemon.port)).expect("connect");
        stream.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n").expect("half a request");
        idle.push(stream);
    }
    let health = reqwest::get(format!("{}/healthz", daemon.url())).await.expect("healthz");
    assert_eq!(health.status().as_u16(), 200);
    // The server gives up on them: each reads end of stream (or a 408).
    for stream in &mut idle {
        stream.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
        let mut buffer = [0u8; 256];
        let read = std::io::Read::read(stream, &mut buffer);
        assert!(
            matches!(read, Ok(0))
                || read.as_ref().is_ok_and(|n| buffer[..*n].starts_with(b"HTTP/1.1 408")),
            "a half-sent request was kept open: {read:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_delivery_triggers_nothing() {
    let Some(world) = World::new().await else { return };
    let daemon = world.converged_daemon(3600, "").await;
    let body = br#"{"ref":"refs/heads/main"}"#.to_vec();
    let send = || {
        reqwest::Client::new()
            .post(format!("{}/hooks/git", daemon.url()))
            .header("X-Hub-Signature-256", github_signature(&body))
            .header("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958")
            .body(body.clone())
            .send()
    };
    assert_eq!(send().await.expect("post").status().as_u16(), 202);
    assert_eq!(send().await.expect("post").status().as_u16(), 200, "the replay is ignored");
    assert!(daemon.log_text().contains("seen before; ignored"), "{}", daemon.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_in_the_remote_url_never_show() {
    let Some(world) = World::new().await else { return };
    let port = free_port();
    let url = format!("http://apimon:hunter2-token@127.0.0.1:{}/origin.git", free_port());
    let config = world.config(&url, port, 1, "");
    let daemon = Daemon::start(&config, port, world.dir.path().join("daemon.log")).await;
    let status = daemon
        .wait_status("the unreachable remote reported", Duration::from_secs(60), |s| {
            s["last_error"].is_string()
        })
        .await;
    let shown = format!("{status}\n{}", daemon.log_text());
    assert!(shown.contains("apimon:***@127.0.0.1"), "{shown}");
    assert!(!shown.contains("hunter2"), "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_with_a_recursive_template_is_rejected_and_the_daemon_stays_up() {
    let Some(world) = World::new().await else { return };
    let daemon = world.converged_daemon(1, "").await;
    let good = head(&world);
    world.git.write(&[(
        "templates/influxdb.conf.hbs".to_owned(),
        "{{#*inline \"x\"}}a{{> x}}{{/inline}}{{> x}}\n".to_owned(),
    )]);
    let bad = world.git.commit("a template that recurses");
    world.git.push(false);
    let status = daemon
        .wait_status("the recursive template rejected", Duration::from_secs(30), |s| {
            s["rejected"]["commit"] == bad.as_str()
        })
        .await;
    assert!(status["rejected"]["errors"].to_string().contains("partials"), "{status:#}");
    assert_eq!(status["last_good_commit"], good.as_str());
    let health = reqwest::get(format!("{}/healthz", daemon.url())).await.expect("healthz");
    assert_eq!(health.status().as_u16(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_waiting_for_its_window_is_not_relabelled_drift_and_applies_when_it_opens() {
    let Some(world) = World::new().await else { return };
    world.git.edit(
        "apimon.yaml",
        "  outside:\n    location: outside\n",
        "  outside:\n    location: outside\n    policy: {drift: report}\n",
    );
    // A user with a grant: dropping both deletes the grant first, and the
    // user's deletion waits on it (held as a dependent).
    world.git.edit(
        "inventory/outside/influxdb.yaml",
        "users:\n",
        "users:\n  - name: doomed\n    password: {secret: outside_influxdb_telegraf_password}\n    grants:\n      - {database: apimon, privilege: READ}\n",
    );
    let with_user = world.git.commit("a user to remove later");
    world.git.push(false);
    // A window that opens about 20 s from now, for a minute.
    let opens = chrono::Utc::now() + chrono::Duration::seconds(20);
    let window = format!(
        "maintenance_windows: [{{cron: '{} {} {} * * *', duration_minutes: 1}}]\ndrift_cron: '*/2 * * * * *'\n",
        opens.second(),
        opens.minute(),
        opens.hour(),
    );
    let port = free_port();
    let config = world.config(&world.git.file_url(), port, 1, &window);
    let daemon = Daemon::start(&config, port, world.dir.path().join("daemon.log")).await;
    daemon.wait_converged(&with_user).await;
    world.git.edit(
        "inventory/outside/influxdb.yaml",
        "  - name: doomed\n    password: {secret: outside_influxdb_telegraf_password}\n    grants:\n      - {database: apimon, privilege: READ}\n",
        "",
    );
    let removal = world.git.commit("remove the user");
    world.git.push(false);
    let waiting = daemon
        .wait_status("the deletion held for the window", Duration::from_secs(30), |s| {
            s["last_good_commit"] == removal.as_str()
                && s["environments"]["outside"]["pending"]
                    .as_array()
                    .is_some_and(|p| p.iter().any(|c| c["id"] == "outside/influxdb.user/doomed"))
        })
        .await;
    // Drift passes come and go; the deletion still waits for the window.
    let later = daemon.wait_reconciles(&waiting, 3).await;
    let pending = later["environments"]["outside"]["pending"].to_string();
    assert!(
        pending.contains("maintenance window") && !pending.contains("report-only"),
        "{pending}"
    );
    assert!(pending.contains("influxdb.grant"), "the grant waits too: {pending}");
    assert!(world.users().await.contains(&"doomed".to_owned()));
    // The window opens (drift passes every two seconds come first): the
    // grant and the user go, and nothing is left pending.
    world.wait_for_user("doomed", false, Duration::from_secs(90)).await;
    let done = daemon.wait_reconciles(&daemon.status().await, 1).await;
    let pending = done["environments"]["outside"]["pending"].to_string();
    assert!(!pending.contains("doomed"), "{pending}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_honoured_while_a_commit_is_being_prepared() {
    let Some(world) = World::new().await else { return };
    // A commit whose preparation hangs: its scenario repository is on a
    // server that accepts connections and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    let (accepted, connected) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
            let _ = accepted.send(());
        }
    });
    let apimon = std::fs::read_to_string(world.git.work().join("apimon.yaml")).expect("read");
    world.git.write(&[(
        "apimon.yaml".to_owned(),
        format!("{apimon}scenario_repository:\n  url: http://127.0.0.1:{port}/scenarios.git\n  branch: main\n"),
    )]);
    world.git.commit("scenarios from a server that hangs");
    world.git.push(false);
    let mut daemon = world.start_daemon(1, "").await;
    connected.recv_timeout(Duration::from_secs(60)).expect("the daemon contacts the server");
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    let status = daemon.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "{status:?}: {}", daemon.log_text());
    assert!(daemon.log_text().contains("Daemon stopping."), "{}", daemon.log_text());
}
