//! What a merged commit may not do alone, against a real daemon, git
//! remote and InfluxDB: widen apimon's authority. A commit that moves the
//! InfluxDB endpoint to another host — a listener on another loopback
//! address, counting the credentials it hears — is held until an operator
//! approves it with the approval token; the listener hears nothing before
//! (read after the daemon reported the hold) and the admin's credentials
//! after (the positive control). Approvals name the commit and its digest:
//! one given for an earlier commit does not carry over; the webhook secret
//! approves nothing; a restart compares with the last commit applied.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::daemon::{head, Daemon, World, APPROVAL_TOKEN, WEBHOOK_SECRET};

/// An HTTP listener on another loopback address that answers every
/// request with `{}` and counts those carrying credentials.
struct Listener {
    url: String,
    heard: Arc<AtomicUsize>,
}

impl Listener {
    async fn start() -> Self {
        let socket = tokio::net::TcpListener::bind("127.0.0.2:0").await.expect("bind 127.0.0.2");
        let port = socket.local_addr().expect("address").port();
        let heard = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&heard);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = socket.accept().await {
                let counter = Arc::clone(&counter);
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buffer = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65536 {
                        match stream.read(&mut buffer).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => head.extend_from_slice(&buffer[..n]),
                        }
                    }
                    let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
                    if text.contains("\r\nauthorization: basic") || text.contains("&p=") {
                        counter.fetch_add(1, Ordering::SeqCst);
                    }
                    let answer = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}";
                    let _ = stream.write_all(answer.as_bytes()).await;
                });
            }
        });
        Self { url: format!("http://127.0.0.2:{port}"), heard }
    }

    fn heard(&self) -> usize {
        self.heard.load(Ordering::SeqCst)
    }
}

/// Commits apimon.yaml with the InfluxDB endpoint at `to`; the commit.
fn move_influxdb(world: &World, to: &str) -> String {
    let text = std::fs::read_to_string(world.git.work().join("apimon.yaml")).expect("apimon.yaml");
    let from = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("url: http://127.0.0."))
        .map(|rest| format!("http://127.0.0.{rest}"))
        .expect("an InfluxDB URL on loopback");
    world.git.edit("apimon.yaml", &format!("url: {from}"), &format!("url: {to}"));
    let commit = world.git.commit("move InfluxDB");
    world.git.push(false);
    commit
}

async fn held(daemon: &Daemon, commit: &str) -> serde_json::Value {
    daemon
        .wait_status(&format!("commit {commit} held"), Duration::from_secs(60), |s| {
            s["held"]["commit"] == commit
        })
        .await
}

async fn approve(daemon: &Daemon, body: serde_json::Value, token: &str) -> u16 {
    reqwest::Client::new()
        .post(format!("{}/approve", daemon.url()))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("post")
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_sending_the_influxdb_admin_elsewhere_waits_for_an_operator_and_only_then_is_heard(
) {
    let Some(world) = World::new().await else { return };
    let before = head(&world);
    let daemon = world.converged_daemon(1, "").await;
    let listener = Listener::start().await;
    let commit = move_influxdb(&world, &listener.url);

    let status = held(&daemon, &commit).await;
    let widenings = status["held"]["widenings"].to_string();
    assert!(
        widenings
            .contains("environments.outside.influxdb.url: http://127.0.0.1 → http://127.0.0.2"),
        "{status:#}"
    );
    assert_eq!(status["last_good_commit"], before.as_str(), "the commit in force stays");
    // A whole reconcile with the commit in force, after the hold was reported.
    assert_eq!(daemon.trigger(WEBHOOK_SECRET).await, 202);
    let status = daemon.wait_reconciles(&status, 1).await;
    assert_eq!(status["held"]["commit"], commit.as_str());
    assert_eq!(listener.heard(), 0, "credentials went to the new host before an approval");

    // Neither the webhook secret nor a wrong digest approves it.
    let digest = status["held"]["digest"].as_str().expect("digest").to_owned();
    assert_eq!(
        approve(&daemon, json!({"commit": commit, "digest": digest}), WEBHOOK_SECRET).await,
        401
    );
    assert_eq!(
        approve(&daemon, json!({"commit": commit, "digest": "0123"}), APPROVAL_TOKEN).await,
        409
    );
    assert_eq!(listener.heard(), 0);

    // The operator approves what the command prints.
    let config = world.dir.path().join("daemon.yaml");
    let output = crate::support::apimon(&[
        "approve",
        "--commit",
        &commit,
        "--config",
        &config.to_string_lossy(),
    ]);
    let (stdout, stderr) = crate::support::text(&output);
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("environments.outside.influxdb.url: http://127.0.0.1 → http://127.0.0.2"),
        "{stdout}"
    );
    assert!(stdout.contains(&format!("approved commit {commit}")), "{stdout}");
    crate::support::eventually(
        "the approved endpoint hears the admin's credentials",
        Duration::from_secs(60),
        || (listener.heard() > 0).then_some(()),
        || daemon.log_text(),
    );
    let status = daemon.status().await;
    assert!(status["held"].is_null(), "{status:#}");
    assert_eq!(status["last_good_commit"], commit.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_names_one_commit_and_does_not_carry_over_to_the_next() {
    let Some(world) = World::new().await else { return };
    let daemon = world.converged_daemon(1, "").await;
    let (first, second) = (Listener::start().await, Listener::start().await);
    let one = move_influxdb(&world, &first.url);
    let status = held(&daemon, &one).await;
    let digest = status["held"]["digest"].as_str().expect("digest").to_owned();
    let two = move_influxdb(&world, &second.url);
    let status = held(&daemon, &two).await;
    assert_ne!(status["held"]["digest"].as_str(), Some(digest.as_str()));
    // The first commit's approval: not held any more, and not the second's digest.
    assert_eq!(
        approve(&daemon, json!({"commit": one, "digest": digest}), APPROVAL_TOKEN).await,
        404
    );
    assert_eq!(
        approve(&daemon, json!({"commit": two, "digest": digest}), APPROVAL_TOKEN).await,
        409
    );
    let status = daemon.wait_reconciles(&status, 2).await;
    assert_eq!(status["held"]["commit"], two.as_str());
    assert_eq!((first.heard(), second.heard()), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_daemon_compares_with_the_last_commit_applied() {
    let Some(world) = World::new().await else { return };
    let before = head(&world);
    let mut daemon = world.converged_daemon(1, "").await;
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    daemon.wait_exit(Duration::from_secs(30));
    let listener = Listener::start().await;
    let commit = move_influxdb(&world, &listener.url);
    let daemon = world.start_daemon(1, "").await;
    let status = held(&daemon, &commit).await;
    assert!(status["held"]["widenings"].to_string().contains("influxdb.url"), "{status:#}");
    let status = daemon
        .wait_status("the last commit applied in force again", Duration::from_secs(60), |s| {
            s["last_good_commit"] == before.as_str()
        })
        .await;
    let status = daemon.wait_reconciles(&status, 1).await;
    assert_eq!(status["held"]["commit"], commit.as_str());
    assert_eq!(listener.heard(), 0, "a restart let the commit through (last applied: {before})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_the_trust_store_holds_signers_only_their_signed_commits_are_taken() {
    let Some(world) = World::new().await else { return };
    let anchor = world.dir.path().join("trust_allowed_signers");
    let extra = format!("allowed_signers_file: {}\n", anchor.display());
    // No signers installed: commits need no signature.
    let daemon = world.converged_daemon(1, &extra).await;
    let Some((key, public)) = crate::support::ssh_key_pair(world.dir.path(), "ops@example.test")
    else {
        return;
    };
    // The operator installs signers (bootstrap --allowed-signers writes this file).
    std::fs::write(&anchor, format!("ops@example.test {public}")).expect("signers");
    world.push_unsigned_and_wait_refused(&daemon).await;
    // Signed, by a real key the trust store does not list: refused too.
    let other_dir = tempfile::tempdir().expect("dir");
    let (other, _) =
        crate::support::ssh_key_pair(other_dir.path(), "ops@example.test").expect("a second key");
    world.push_and_wait_refused(&daemon, "wrongly_signed", Some(&other)).await;
    world.add_user("signed");
    let signed = world.git.commit_signed("signed change", &key);
    world.git.push(false);
    daemon.wait_converged(&signed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_listener_serves_the_forge_the_webhook_and_nothing_else() {
    let Some(world) = World::new().await else { return };
    let port = crate::support::free_port();
    // Another loopback address stands for the bastion's network side;
    // 127.0.0.1 for the forge's range.
    let extra = format!("webhook: {{listen: '127.0.0.3:{port}', allow_from: [127.0.0.1/32]}}\n");
    let daemon = world.converged_daemon(3600, &extra).await;
    let side = format!("http://127.0.0.3:{port}");
    let client = reqwest::Client::new();
    // Nothing of the API is there.
    for (method, path) in
        [("GET", "/status"), ("POST", "/approve"), ("POST", "/trigger"), ("GET", "/metrics")]
    {
        let request = client.request(method.parse().expect("method"), format!("{side}{path}"));
        let status = request.bearer_auth(APPROVAL_TOKEN).send().await.expect("request").status();
        assert_eq!(status.as_u16(), 404, "{method} {path} on the webhook listener");
    }
    // A signed push to the followed branch brings the commit in.
    world.add_user("hooked");
    let commit = world.git.commit("add user hooked");
    world.git.push(false);
    let body = br#"{"ref":"refs/heads/main"}"#.to_vec();
    let unsigned = client.post(format!("{side}/hooks/git")).body(body.clone()).send().await;
    assert_eq!(unsigned.expect("post").status().as_u16(), 401);
    let signed = client
        .post(format!("{side}/hooks/git"))
        .header("X-Hub-Signature-256", crate::support::daemon::github_signature(&body))
        .body(body)
        .send()
        .await
        .expect("post");
    assert_eq!(signed.status().as_u16(), 202);
    daemon.wait_converged(&commit).await;

    // From outside `allow_from` (another source address), the connection
    // is closed before a byte is read.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind("127.0.0.9:0".parse().expect("address")).expect("bind 127.0.0.9");
    let mut stream = socket
        .connect(format!("127.0.0.3:{port}").parse().expect("address"))
        .await
        .expect("connect");
    let _ =
        stream.write_all(b"POST /hooks/git HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n").await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "answered: {:?}",
        String::from_utf8_lossy(&answer)
    );
}
