//! The fault suite: `apimon apply` killed with SIGKILL at several points,
//! a state directory that runs out of room mid-apply, and the daemon's git
//! remote gone. Each case ends with a rerun that converges with every
//! created resource owned, nothing duplicated and nothing pruned that
//! should stay. (InfluxDB stopped mid-apply: `influxdb::influxdb_stopped_…`;
//! the OpenStack APIs gone mid-apply: `openstack::the_control_plane_gone_…`;
//! SIGTERM while a commit is prepared: `daemon_safety::shutdown_is_honoured_…`;
//! an SSH connection cut mid-upload: `host::a_connection_killed_…`; a kill
//! while servers build: `openstack::a_kill_while_servers_build_…`.)

use std::collections::BTreeSet;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use apimon::state;

use crate::support::daemon::{head, World};
use crate::support::influxdb::InfluxServer;
use crate::support::{apimon, apimon_command, fixture_files_without_grafana, TestRepo};

const ADMIN: (&str, &str) = ("admin", "outside-admin-pw");
const USERS: usize = 40;

/// A fixture whose `outside` InfluxDB is a real server and declares many users.
struct Bulk {
    server: InfluxServer,
    repo: TestRepo,
    secrets: PathBuf,
    state_dir: tempfile::TempDir,
}

impl Bulk {
    async fn new() -> Option<Self> {
        let server = InfluxServer::start().await?;
        let repo = TestRepo::with_files(fixture_files_without_grafana());
        repo.edit("apimon.yaml", "http://192.168.10.30:8086", &server.url());
        let users: String = (0..USERS)
            .map(|i| format!("  - name: bulk{i}\n    password: {{secret: outside_influxdb_telegraf_password}}\n"))
            .collect();
        repo.edit("inventory/outside/influxdb.yaml", "users:\n", &format!("users:\n{users}"));
        let secrets = repo.secrets_file(&crate::support::outside_secrets(), 0o600);
        Some(Self { server, repo, secrets, state_dir: tempfile::tempdir().expect("state") })
    }

    fn args(&self) -> Vec<String> {
        vec![
            "apply".into(),
            "--auto-approve".into(),
            "--env".into(),
            "outside".into(),
            "--parallelism".into(),
            "1".into(),
            "--repo".into(),
            self.repo.path().display().to_string(),
            "--secrets".into(),
            self.secrets.display().to_string(),
            "--state-dir".into(),
            self.state_dir.path().display().to_string(),
        ]
    }

    fn command(&self) -> std::process::Command {
        let args = self.args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        apimon_command(&args)
    }

    async fn users(&self) -> BTreeSet<String> {
        let (_, body) = self.server.query(Some(ADMIN), "SHOW USERS").await;
        body["results"][0]["series"][0]["values"]
            .as_array()
            .map(|rows| rows.iter().filter_map(|r| r[0].as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    }

    /// The users apimon records as its own.
    fn owned_users(&self) -> BTreeSet<String> {
        let state = state::read(self.state_dir.path()).expect("state is consistent JSON");
        state
            .environments
            .get("outside")
            .map(|e| {
                e.owned
                    .iter()
                    .filter(|id| id.kind == "user")
                    .map(|id| id.name.to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A rerun converges; afterwards every user exists once and is owned.
    async fn converges(&self) {
        let args = self.args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = apimon(&args);
        let (stdout, stderr) = crate::support::text(&output);
        assert_eq!(output.status.code(), Some(0), "the rerun failed:\n{stdout}\n{stderr}");
        let users = self.users().await;
        let owned = self.owned_users();
        for i in 0..USERS {
            let user = format!("bulk{i}");
            assert!(users.contains(&user), "{user} missing after the rerun");
            assert!(owned.contains(&user), "{user} exists but is not recorded as apimon's");
        }
        let again = apimon(&[
            "plan",
            "--env",
            "outside",
            "--repo",
            args[7],
            "--secrets",
            args[9],
            "--state-dir",
            args[11],
        ]);
        assert_eq!(
            again.status.code(),
            Some(0),
            "not converged:\n{}",
            crate::support::text(&again).0
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_any_point_of_an_apply_loses_no_ownership() {
    for kill_after in [1, 12, 30] {
        let Some(bulk) = Bulk::new().await else { return };
        let mut child = bulk
            .command()
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("apply");
        let started = Instant::now();
        while bulk.users().await.iter().filter(|u| u.starts_with("bulk")).count() < kill_after {
            assert!(started.elapsed() < Duration::from_secs(120), "the apply made no progress");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        child.kill().expect("SIGKILL");
        let _ = child.wait();
        // Every user the killed apply made is recorded as apimon's already.
        let made: BTreeSet<String> =
            bulk.users().await.into_iter().filter(|u| u.starts_with("bulk")).collect();
        let owned = bulk.owned_users();
        assert!(
            made.is_subset(&owned),
            "killed after {kill_after}: made {made:?}, owned {owned:?}"
        );
        bulk.converges().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_directory_out_of_room_stops_the_apply_and_the_rerun_converges() {
    let Some(bulk) = Bulk::new().await else { return };
    // A file size limit as small as a few records: the store fills up mid-apply.
    let limit = 3_000;
    let mut command = bulk.command();
    // SAFETY: setrlimit is async-signal-safe; nothing else runs in the child.
    unsafe {
        command.pre_exec(move || {
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_FSIZE, limit, limit)
                .map_err(std::io::Error::from)
        });
    }
    let output = command.output().expect("apply");
    let (stdout, stderr) = crate::support::text(&output);
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("the state store cannot be written"), "{stdout}\n{stderr}");
    let made: BTreeSet<String> =
        bulk.users().await.into_iter().filter(|u| u.starts_with("bulk")).collect();
    assert!(made.len() < USERS, "the apply went on without recording: {}", made.len());
    let owned = bulk.owned_users();
    assert!(made.is_subset(&owned), "made {made:?}, owned {owned:?}");
    bulk.converges().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_git_remote_gone_keeps_the_daemon_up_and_it_converges_when_it_is_back() {
    let Some(world) = World::new().await else { return };
    let daemon = world.converged_daemon(1, "").await;
    let good = head(&world);
    let origin = world.git.origin_path();
    let moved = origin.with_extension("moved");
    std::fs::rename(&origin, &moved).expect("remove the remote");
    let status = daemon
        .wait_status("the missing remote reported", Duration::from_secs(30), |s| {
            s["last_error"].as_str().is_some_and(|e| e.contains("git"))
        })
        .await;
    assert_eq!(status["last_good_commit"], good.as_str());
    let health = reqwest::get(format!("{}/healthz", daemon.url())).await.expect("healthz");
    assert_eq!(health.status().as_u16(), 200);
    std::fs::rename(&moved, &origin).expect("bring the remote back");
    world.add_user("after_outage");
    let commit = world.git.commit("after the outage");
    world.git.push(false);
    daemon.wait_converged(&commit).await;
    assert!(world.users().await.contains(&"after_outage".to_owned()));
}
