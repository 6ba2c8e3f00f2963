//! The daemon's test world: a real InfluxDB, a git remote holding the
//! fixture repository, and the `apimon daemon` binary with its endpoint.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::git::GitRemote;
use super::influxdb::InfluxServer;
use super::{fixture_files_without_grafana, free_port};

pub const ADMIN: (&str, &str) = ("admin", "outside-admin-pw");
pub const WEBHOOK_SECRET: &str = "hook-s3cret-0123456789abcdef";
/// The approval token (`approval_token_file`): the only bearer of `/approve`.
pub const APPROVAL_TOKEN: &str = "approve-0123456789abcdef0123456789abcdef";

/// Everything a daemon test needs.
pub struct World {
    pub influx: InfluxServer,
    pub git: GitRemote,
    pub dir: tempfile::TempDir,
}

impl World {
    pub async fn new() -> Option<Self> {
        let influx = InfluxServer::start().await?;
        let git = GitRemote::new()?;
        let files: Vec<(String, String)> = fixture_files_without_grafana()
            .into_iter()
            .map(|(path, text)| {
                let text = if path == "apimon.yaml" {
                    text.replace("http://192.168.10.30:8086", &influx.url())
                } else {
                    text
                };
                (path, text)
            })
            .collect();
        git.write(&files);
        git.commit("initial desired state");
        git.push(false);
        let dir = tempfile::tempdir().expect("temp dir");
        let secrets = crate::support::outside_secrets();
        let secrets_path = dir.path().join("secrets.yaml");
        std::fs::write(&secrets_path, secrets).expect("secrets");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&secrets_path, std::fs::Permissions::from_mode(0o600))
            .expect("chmod");
        let webhook_secret = dir.path().join("webhook_secret");
        std::fs::write(&webhook_secret, WEBHOOK_SECRET).expect("webhook secret");
        std::fs::set_permissions(&webhook_secret, std::fs::Permissions::from_mode(0o600))
            .expect("chmod");
        let approval_token = dir.path().join("approval_token");
        std::fs::write(&approval_token, APPROVAL_TOKEN).expect("approval token");
        std::fs::set_permissions(&approval_token, std::fs::Permissions::from_mode(0o600))
            .expect("chmod");
        Some(Self { influx, git, dir })
    }

    /// daemon.yaml for `url`, plus `extra` lines.
    /// A daemon following the local remote (poll every `poll_seconds`,
    /// `extra` appended to its configuration), started and converged to HEAD.
    pub async fn converged_daemon(&self, poll_seconds: u64, extra: &str) -> Daemon {
        let daemon = self.start_daemon(poll_seconds, extra).await;
        daemon.wait_converged(&head(self)).await;
        daemon
    }

    /// A daemon following the local remote with an sd_notify socket (and
    /// `watchdog_usec` when given), started; the socket it notifies.
    pub async fn start_notifying_daemon(
        &self,
        poll_seconds: u64,
        watchdog_usec: Option<&str>,
    ) -> (Daemon, std::os::unix::net::UnixDatagram) {
        let port = free_port();
        let config = self.config(&self.git.file_url(), port, poll_seconds, "");
        let notify_path = self.dir.path().join("notify.sock");
        let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).expect("notify socket");
        let mut envs: Vec<(&str, &std::path::Path)> = vec![("NOTIFY_SOCKET", &notify_path)];
        if let Some(usec) = watchdog_usec {
            envs.push(("WATCHDOG_USEC", std::path::Path::new(usec)));
        }
        let daemon =
            Daemon::start_with(&config, port, self.dir.path().join("daemon.log"), &envs).await;
        (daemon, notify)
    }

    /// A daemon following the local remote, started (not yet converged).
    pub async fn start_daemon(&self, poll_seconds: u64, extra: &str) -> Daemon {
        let port = free_port();
        let config = self.config(&self.git.file_url(), port, poll_seconds, extra);
        Daemon::start(&config, port, self.dir.path().join("daemon.log")).await
    }

    pub fn config(&self, url: &str, port: u16, poll_seconds: u64, extra: &str) -> PathBuf {
        let root = self.dir.path().display();
        let text = format!(
            "repository:\n  url: {url}\n  branch: main\n  poll_interval_seconds: {poll_seconds}\nstate_dir: {root}/state\nsecrets_file: {root}/secrets.yaml\nenvironments: [outside]\nlisten: 127.0.0.1:{port}\nwebhook_secret_file: {root}/webhook_secret\napproval_token_file: {root}/approval_token\nparallelism: 2\n{extra}",
        );
        let path = self.dir.path().join("daemon.yaml");
        std::fs::write(&path, text).expect("daemon.yaml");
        path
    }

    pub async fn users(&self) -> Vec<String> {
        let (_, body) = self.influx.query(Some(ADMIN), "SHOW USERS").await;
        body["results"][0]["series"][0]["values"]
            .as_array()
            .map(|rows| rows.iter().filter_map(|r| r[0].as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    }

    pub async fn wait_for_user(&self, user: &str, present: bool, timeout: Duration) -> Duration {
        let start = Instant::now();
        loop {
            if self.users().await.iter().any(|u| u == user) == present {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < timeout,
                "user {user} present={present} not reached within {timeout:?}; users: {:?}",
                self.users().await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Commits `count` users named `<prefix><i>`, starts a daemon applying
    /// one change at a time, and returns once the first `started` exist.
    pub async fn start_bulk(
        &self,
        prefix: &str,
        count: usize,
        started: usize,
    ) -> (Daemon, PathBuf, String) {
        let mut users = String::new();
        for i in 0..count {
            users.push_str(&format!("  - name: {prefix}{i}\n    password: {{secret: outside_influxdb_telegraf_password}}\n"));
        }
        self.git.edit("inventory/outside/influxdb.yaml", "users:\n", &format!("users:\n{users}"));
        let commit = self.git.commit(&format!("{count} users"));
        self.git.push(false);
        let port = free_port();
        let config = self.config(&self.git.file_url(), port, 1, "");
        let text = std::fs::read_to_string(&config)
            .expect("config")
            .replace("parallelism: 2", "parallelism: 1");
        std::fs::write(&config, text).expect("config");
        let daemon = Daemon::start(&config, port, self.dir.path().join("daemon.log")).await;
        let start = Instant::now();
        while self.users().await.iter().filter(|u| u.starts_with(prefix)).count() < started {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "apply did not start: {}",
                daemon.log_text()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        (daemon, config, commit)
    }

    /// A signing key and an allowed-signers file naming it; a commit adding
    /// user `signed` signed with it and pushed; a daemon requiring signed
    /// commits started and converged on it. `None` (skip) without ssh-keygen.
    pub async fn signed_daemon(&self) -> Option<(Daemon, std::path::PathBuf, String)> {
        let (key, public) = super::ssh_key_pair(self.dir.path(), "ops@example.test")?;
        let signers = self.dir.path().join("allowed_signers");
        std::fs::write(&signers, format!("ops@example.test {public}")).expect("allowed signers");
        // The initial commit is unsigned: a signed one on top before starting.
        self.add_user("signed");
        let signed = self.git.commit_signed("signed change", &key);
        self.git.push(false);
        let port = free_port();
        let config = self.config(&self.git.file_url(), port, 1, "");
        let text = std::fs::read_to_string(&config).expect("config").replace(
            "  branch: main\n",
            &format!("  branch: main\n  ssh_allowed_signers: {}\n", signers.display()),
        );
        std::fs::write(&config, text).expect("config");
        let daemon = Daemon::start(&config, port, self.dir.path().join("daemon.log")).await;
        daemon.wait_converged(&signed).await;
        Some((daemon, key, signed))
    }

    /// Pushes an unsigned commit adding user `unsigned` and waits until
    /// `daemon` refuses it for its signature; the daemon's status then.
    pub async fn push_unsigned_and_wait_refused(&self, daemon: &Daemon) -> serde_json::Value {
        self.push_and_wait_refused(daemon, "unsigned", None).await
    }

    /// Pushes a commit adding user `user`, signed with `key` (or not), and
    /// waits until `daemon` refuses it for its signature; its status then.
    pub async fn push_and_wait_refused(
        &self,
        daemon: &Daemon,
        user: &str,
        key: Option<&std::path::Path>,
    ) -> serde_json::Value {
        self.add_user(user);
        let commit = match key {
            Some(key) => self.git.commit_signed(&format!("{user} change"), key),
            None => self.git.commit(&format!("{user} change")),
        };
        self.git.push(false);
        let status = daemon
            .wait_status(&format!("the {user} commit refused"), Duration::from_secs(30), |s| {
                s["rejected"]["commit"] == commit.as_str()
            })
            .await;
        assert!(
            status["rejected"]["errors"].to_string().contains("not signed by an allowed key"),
            "{status:#}"
        );
        status
    }

    pub fn add_user(&self, name: &str) {
        self.git.edit("inventory/outside/influxdb.yaml", "users:\n", &format!("users:\n  - name: {name}\n    password: {{secret: outside_influxdb_telegraf_password}}\n"));
    }
}

/// A running daemon binary.
pub struct Daemon {
    pub child: Child,
    pub port: u16,
    pub log: PathBuf,
}

impl Daemon {
    pub async fn start(config: &std::path::Path, port: u16, log: PathBuf) -> Self {
        Self::start_with(config, port, log, &[]).await
    }

    pub async fn start_with(
        config: &std::path::Path,
        port: u16,
        log: PathBuf,
        envs: &[(&str, &std::path::Path)],
    ) -> Self {
        Self::spawn(env!("CARGO_BIN_EXE_apimon").as_ref(), config, port, log, envs, Some("info"))
            .await
    }

    /// Started from the apimon binary at `binary` (a copy, as installed),
    /// as systemd starts a service (`INVOCATION_ID` set).
    pub async fn start_binary(
        binary: &std::path::Path,
        config: &std::path::Path,
        port: u16,
        log: PathBuf,
    ) -> Self {
        let envs = [("INVOCATION_ID", std::path::Path::new("apimon-test-invocation"))];
        Self::spawn(binary, config, port, log, &envs, Some("info")).await
    }

    /// Started as an operator would: no RUST_LOG, the default levels.
    pub async fn start_default_logging(config: &std::path::Path, port: u16, log: PathBuf) -> Self {
        Self::spawn(env!("CARGO_BIN_EXE_apimon").as_ref(), config, port, log, &[], None).await
    }

    async fn spawn(
        binary: &std::path::Path,
        config: &std::path::Path,
        port: u16,
        log: PathBuf,
        envs: &[(&str, &std::path::Path)],
        rust_log: Option<&str>,
    ) -> Self {
        let mut command = Command::new(binary);
        match rust_log {
            Some(level) => command.env("RUST_LOG", level),
            None => command.env_remove("RUST_LOG"),
        };
        let child = super::process::spawn(
            command
                .args(["daemon", "--config", &config.to_string_lossy()])
                .envs(envs.iter().map(|(k, v)| (*k, *v)))
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).expect("log")),
            "apimon daemon",
        );
        let daemon = Self { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        while reqwest::get(format!("{}/healthz", daemon.url())).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "daemon did not serve /healthz: {}",
                daemon.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        daemon
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn status(&self) -> serde_json::Value {
        reqwest::get(format!("{}/status", self.url()))
            .await
            .expect("status")
            .json()
            .await
            .expect("status JSON")
    }

    pub async fn wait_status(
        &self,
        what: &str,
        timeout: Duration,
        ok: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let last = std::sync::Mutex::new(serde_json::Value::Null);
        let check = || async {
            let status = self.status().await;
            let done = ok(&status).then(|| status.clone());
            *last.lock().expect("lock") = status;
            done
        };
        let context = || {
            let status = last.lock().expect("lock").clone();
            format!("status: {status:#}\nlog:\n{}", self.log_text())
        };
        super::eventually_async(what, timeout, check, context).await
    }

    /// Waits until `runs` more reconciles have finished than `status` shows.
    pub async fn wait_reconciles(
        &self,
        status: &serde_json::Value,
        runs: u64,
    ) -> serde_json::Value {
        let seen = status["reconciles"].as_u64().unwrap_or(0);
        self.wait_status(&format!("{runs} more reconcile(s)"), Duration::from_secs(60), |s| {
            s["reconciles"].as_u64().unwrap_or(0) >= seen + runs
        })
        .await
    }

    /// `POST /trigger` with `token`; the HTTP status.
    pub async fn trigger(&self, token: &str) -> u16 {
        reqwest::Client::new()
            .post(format!("{}/trigger", self.url()))
            .bearer_auth(token)
            .send()
            .await
            .expect("post")
            .status()
            .as_u16()
    }

    pub async fn wait_converged(&self, commit: &str) -> serde_json::Value {
        self.wait_status(&format!("outside converged to {commit}"), Duration::from_secs(60), |s| {
            s["environments"]["outside"]["commit"] == commit
                && matches!(
                    s["environments"]["outside"]["outcome"].as_str(),
                    Some("success" | "no_changes")
                )
        })
        .await
    }

    /// Waits until the log has a line with `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) {
        let found = || self.log_text().contains(needle).then_some(());
        super::eventually(&format!("{needle:?} in the log"), timeout, found, || self.log_text());
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).expect("pid"));
        nix::sys::signal::kill(pid, signal).expect("signal");
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let log = self.log.clone();
        let child = &mut self.child;
        let exited = || child.try_wait().expect("wait");
        let context = || std::fs::read_to_string(&log).unwrap_or_default();
        super::eventually("the daemon to exit", timeout, exited, context)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        super::process::stop(&mut self.child);
    }
}

pub fn head(world: &World) -> String {
    head_of(&world.git)
}

/// The commit checked out in `git`'s work tree.
pub fn head_of(git: &GitRemote) -> String {
    let output = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(git.work())
        .output()
        .expect("git");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

pub fn github_signature(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(WEBHOOK_SECRET.as_bytes()).expect("key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}
