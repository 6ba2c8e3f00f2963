//! Hostile git content, as a hostile server or contributor makes it:
//! trees written with `git hash-object --literally` whose entries are named
//! to escape the export (an absolute path, a subtree named `..`, a `.git`
//! directory), served by a real `git daemon` and over file://, to
//! `validate`, `plan --offline` (a scenario repository a pull request
//! names) and the daemon (the platform repository itself); a pack past
//! the daemon's fetch bound through a throttled server; an export changed
//! on disk while the daemon was stopped; an unsigned hostile commit.
//! Each is refused with the entry's path, and nothing is written outside
//! the export: the tests look at the directories around it.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::daemon::{head, Daemon, World, WEBHOOK_SECRET};
use crate::support::git::GitRemote;
use crate::support::hostile::{self, Entry, Throttle};
use crate::support::{apimon_command, free_port, text, TestRepo};

fn entry(mode: &str, name: &[u8], id: &str) -> Entry {
    (mode.to_owned(), name.to_vec(), id.to_owned())
}

/// Hostile additions to a root tree, each with what the refusal must name:
/// a file at an absolute path under `outside`, a subtree `..` holding a
/// file, and a `.GIT` directory holding a config.
fn hostile_entries(git_dir: &Path, outside: &Path) -> Vec<(Entry, String)> {
    let payload = hostile::blob(git_dir, b"pwned\n");
    let holding = hostile::tree(git_dir, &[entry("100644", b"pwned", &payload)]);
    let config = hostile::tree(git_dir, &[entry("100644", b"config", &payload)]);
    let absolute = outside.join("pwned-absolute").display().to_string();
    vec![
        (entry("100644", absolute.as_bytes(), &payload), format!("tree entry {absolute} has a /")),
        (entry("40000", b"..", &holding), "tree entry .. is named . or ..".to_owned()),
        (entry("40000", b".GIT", &config), "tree entry .GIT is named like .git".to_owned()),
    ]
}

/// A scenario repository with one valid commit on main.
fn scenario_remote() -> Option<GitRemote> {
    let remote = GitRemote::new()?;
    remote.write(&[(
        "playbooks/scenario1_token.yaml".to_owned(),
        "- hosts: localhost\n  gather_facts: false\n  tasks: []\n".to_owned(),
    )]);
    remote.commit("scenarios");
    remote.push(false);
    Some(remote)
}

#[test]
fn validate_and_plan_refuse_a_hostile_scenario_repository_and_write_nothing_outside() {
    let Some(mut remote) = scenario_remote() else { return };
    let git_url = remote.serve();
    let origin = remote.origin_path();
    let base = hostile::entries(&origin, "main");
    let parent = String::from_utf8(
        Command::new("git")
            .arg("--git-dir")
            .arg(&origin)
            .args(["rev-parse", "main"])
            .output()
            .expect("git")
            .stdout,
    )
    .expect("utf-8");
    let scratch = tempfile::tempdir().expect("temp dir");
    let outside = scratch.path().join("outside");
    std::fs::create_dir(&outside).expect("mkdir");
    for (hostile_entry, expected) in hostile_entries(&origin, &outside) {
        let tree = hostile::tree(&origin, &hostile::with(base.clone(), vec![hostile_entry]));
        let commit = hostile::commit(&origin, &tree, Some(parent.trim()), "hostile");
        // Reachable from a branch, as a pushed commit is.
        hostile::set_branch(&origin, &format!("hostile-{}", &commit[..8]), &commit);
        for url in [git_url.clone(), remote.file_url()] {
            let repo = TestRepo::fixture();
            let apimon = std::fs::read_to_string(repo.path().join("apimon.yaml")).expect("read");
            repo.write(
                "apimon.yaml",
                &format!("{apimon}scenario_repository:\n  url: {url}\n  commit: {commit}\n"),
            );
            let cache = scratch.path().join("cache");
            let repo_arg = repo.path().display().to_string();
            for args in [
                vec!["validate", "--repo", &repo_arg],
                vec!["plan", "--offline", "--repo", &repo_arg],
            ] {
                let output = apimon_command(&args)
                    .env("APIMON_CACHE_DIR", &cache)
                    .output()
                    .expect("run apimon");
                let (stdout, stderr) = text(&output);
                assert_eq!(output.status.code(), Some(1), "{args:?} {url}\n{stdout}\n{stderr}");
                assert!(stderr.contains(&expected), "{args:?} {url}: {stderr}");
                assert!(stderr.contains("apimon.yaml:"), "no file:line:column: {stderr}");
                assert!(stderr.contains(&commit), "the commit is not named: {stderr}");
                // Nothing escaped: the target of the absolute entry, the
                // directories around the export, the repository.
                assert_eq!(std::fs::read_dir(&outside).expect("outside").count(), 0);
                assert_eq!(hostile::files_outside_git_caches(&cache), Vec::<String>::new());
                assert!(!scratch.path().join("pwned").exists());
                assert!(!repo.path().join("pwned").exists());
            }
        }
    }
}

/// `world`'s origin with a commit on main whose tree is HEAD's plus `extra`.
fn push_tree_with(world: &World, extra: Vec<Entry>) -> String {
    let origin = world.git.origin_path();
    let parent = head(world);
    let tree = hostile::tree(&origin, &hostile::with(hostile::entries(&origin, "main"), extra));
    let commit = hostile::commit(&origin, &tree, Some(&parent), "hostile");
    hostile::set_branch(&origin, "main", &commit);
    commit
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_refuses_a_hostile_platform_commit_and_keeps_the_commit_in_force() {
    daemon_refuses_hostile_commits(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_refuses_a_hostile_platform_commit_served_by_git_daemon() {
    daemon_refuses_hostile_commits(true).await;
}

/// Each hostile commit pushed to the daemon's repository, over file:// or
/// from a real `git daemon`.
async fn daemon_refuses_hostile_commits(over_git_daemon: bool) {
    let Some(mut world) = World::new().await else { return };
    let url = if over_git_daemon { world.git.serve() } else { world.git.file_url() };
    let port = free_port();
    let config = world.config(&url, port, 1, "");
    let daemon = Daemon::start(&config, port, world.dir.path().join("daemon.log")).await;
    let good = head(&world);
    daemon.wait_converged(&good).await;
    let outside = world.dir.path().join("outside");
    std::fs::create_dir(&outside).expect("mkdir");
    let origin = world.git.origin_path();
    let state = world.dir.path().join("state");
    for (hostile_entry, expected) in hostile_entries(&origin, &outside) {
        let commit = push_tree_with(&world, vec![hostile_entry]);
        let status = daemon
            .wait_status("the hostile commit refused", Duration::from_secs(30), |s| {
                s["rejected"]["commit"] == commit.as_str()
            })
            .await;
        let errors = status["rejected"]["errors"].to_string();
        assert!(errors.contains(&expected), "{errors}");
        assert_eq!(status["last_good_commit"], good.as_str(), "{status:#}");
        assert_eq!(std::fs::read_dir(&outside).expect("outside").count(), 0);
        let commits: Vec<String> = std::fs::read_dir(state.join("commits"))
            .expect("commits")
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(commits, vec![good.clone()], "only the commit in force is exported");
        assert!(!state.join("pwned").exists() && !world.dir.path().join("pwned").exists());
        // Put main back: the next hostile commit is made on the good one.
        hostile::set_branch(&origin, "main", &good);
    }
    let status = daemon.status().await;
    assert_eq!(status["environments"]["outside"]["commit"], good.as_str(), "{status:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_unsigned_commit_is_refused_for_its_signature_before_anything_is_written() {
    let Some(world) = World::new().await else { return };
    let Some((daemon, _, signed)) = world.signed_daemon().await else { return };

    let outside = world.dir.path().join("outside");
    std::fs::create_dir(&outside).expect("mkdir");
    let origin = world.git.origin_path();
    let (hostile_entry, _) = hostile_entries(&origin, &outside).remove(1);
    let commit = push_tree_with(&world, vec![hostile_entry]);
    let status = daemon
        .wait_status("the unsigned commit refused", Duration::from_secs(30), |s| {
            s["rejected"]["commit"] == commit.as_str()
        })
        .await;
    // Refused for its signature: had its tree been exported first, the
    // refusal would name the tree entry.
    let errors = status["rejected"]["errors"].to_string();
    assert!(errors.contains("not signed by an allowed key"), "{errors}");
    assert!(!errors.contains("tree entry"), "{errors}");
    assert!(!world.dir.path().join("state/commits").join(&commit).exists());
    assert_eq!(status["last_good_commit"], signed.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_past_its_bound_through_a_throttled_server_fails_and_the_commit_in_force_stays() {
    let Some(mut world) = World::new().await else { return };
    world.git.serve();
    let upstream = world.git.daemon_port().expect("git daemon port");
    // 256 KiB/s: the pack takes seconds to arrive, and keeps moving.
    let throttle = Throttle::start(upstream, 256 * 1024);
    let url = format!("git://127.0.0.1:{}/origin.git", throttle.port);
    let port = free_port();
    let config = world.config(&url, port, 3600, "");
    let text = std::fs::read_to_string(&config)
        .expect("config")
        .replace("  branch: main\n", "  branch: main\n  max_fetch_bytes: 1048576\n");
    std::fs::write(&config, text).expect("config");
    // A watchdog of one second: the fetch takes longer, and must keep it fed.
    let notify_path = world.dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).expect("notify socket");
    let envs: Vec<(&str, &Path)> =
        vec![("NOTIFY_SOCKET", &notify_path), ("WATCHDOG_USEC", Path::new("1000000"))];
    let daemon =
        Daemon::start_with(&config, port, world.dir.path().join("daemon.log"), &envs).await;
    let messages = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let collected = std::sync::Arc::clone(&messages);
    notify.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
    let listening = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let listen = std::sync::Arc::clone(&listening);
    let reader = std::thread::spawn(move || {
        let mut buffer = [0u8; 256];
        while listen.load(std::sync::atomic::Ordering::SeqCst) {
            if let Ok(n) = notify.recv(&mut buffer) {
                let message = String::from_utf8_lossy(&buffer[..n]).into_owned();
                collected.lock().expect("lock").push(message);
            }
        }
    });
    let good = head(&world);
    daemon.wait_converged(&good).await;
    // From here on, the only work is the fetch.
    messages.lock().expect("lock").clear();

    // 3 MiB that do not compress: past the 1 MiB bound.
    let noise: String =
        (0..3 * 1024 * 1024 / 32).map(|_| format!("{:032x}\n", rand::random::<u128>())).collect();
    world.git.write(&[("dashboards/noise.txt".to_owned(), noise)]);
    let big = world.git.commit("a large file");
    world.git.push(false);
    assert_eq!(daemon.trigger(WEBHOOK_SECRET).await, 202);
    let status = daemon
        .wait_status("the large commit refused", Duration::from_secs(60), |s| {
            s["rejected"]["commit"] == big.as_str()
        })
        .await;
    let errors = status["rejected"]["errors"].to_string();
    assert!(errors.contains("past the limit of 1048576 bytes"), "{errors}");
    assert_eq!(status["last_good_commit"], good.as_str());
    // Not fetched again on the next run; the daemon carries on.
    let before = daemon.status().await;
    assert_eq!(daemon.trigger(WEBHOOK_SECRET).await, 202);
    let after = daemon.wait_reconciles(&before, 1).await;
    assert_eq!(after["environments"]["outside"]["commit"], good.as_str(), "{after:#}");
    assert_eq!(daemon.log_text().matches("past the limit of 1048576 bytes").count(), 1);
    listening.store(false, std::sync::atomic::Ordering::SeqCst);
    reader.join().expect("reader");
    let messages = messages.lock().expect("lock").clone();
    assert!(messages.iter().any(|m| m == "WATCHDOG=1"), "{messages:?}");
    assert!(
        !messages.iter().any(|m| m == "WATCHDOG=trigger"),
        "{messages:?}\n{}",
        daemon.log_text()
    );
    drop(throttle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_changed_while_the_daemon_was_stopped_is_not_applied() {
    let Some(world) = World::new().await else { return };
    let port = free_port();
    let config = world.config(&world.git.file_url(), port, 3600, "");
    let log = world.dir.path().join("daemon.log");
    let mut daemon = Daemon::start(&config, port, log.clone()).await;
    let good = head(&world);
    daemon.wait_converged(&good).await;
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(daemon.wait_exit(Duration::from_secs(30)).success());
    drop(daemon);

    // Someone edits the export of the commit in force on disk.
    let file =
        world.dir.path().join("state/commits").join(&good).join("inventory/outside/influxdb.yaml");
    let text = std::fs::read_to_string(&file).expect("export");
    let tampered = text.replacen(
        "users:\n",
        "users:\n  - name: tampered\n    password: {secret: outside_influxdb_telegraf_password}\n",
        1,
    );
    assert_ne!(text, tampered);
    std::fs::write(&file, tampered).expect("tamper");

    let daemon = Daemon::start(&config, port, world.dir.path().join("daemon2.log")).await;
    daemon.wait_converged(&good).await;
    assert!(!world.users().await.contains(&"tampered".to_owned()));
    assert_eq!(std::fs::read_to_string(&file).expect("export"), text, "exported afresh");
}
