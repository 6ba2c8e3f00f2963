//! `apimon bootstrap` from a workstation directory against the suite's
//! OpenStack control plane, a real InfluxDB, and a real sshd standing in
//! for the bastion and the InfluxDB host. The daemon really runs on the
//! "bastion": a stand-in service manager starts the unit file's ExecStart
//! in a mount namespace where the host's /etc/apimon, /var/lib/apimon and
//! /usr/local/bin are the real paths, and starts it again after exit 75.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::git::GitRemote;
use crate::support::host::{ensure_group, stand_in_ssh};
use crate::support::influxdb::InfluxServer;
use crate::support::openstack::{Api, TestCloud};
use crate::support::sshd::{Relay, SshServer, SshWorld};
use crate::support::{free_port, text};

pub(crate) struct Setup {
    pub(crate) env: String,
    _cloud: TestCloud,
    pub(crate) api: Api,
    pub(crate) influx: InfluxServer,
    world: SshWorld,
    _sshd: SshServer,
    _relay: Relay,
    root: tempfile::TempDir,
    pub(crate) git: GitRemote,
    secrets_file: PathBuf,
    state_dir: tempfile::TempDir,
    known_hosts: PathBuf,
    clouds_file: PathBuf,
    pub(crate) port: u16,
}

/// Stops the daemon (and any unit) the stand-in started, however the test ends.
impl Drop for Setup {
    fn drop(&mut self) {
        crate::support::host::stop_units(&self.tools());
    }
}

/// Where the environment's addresses come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Addresses {
    /// `ssh.bastion_address` and every host's `address` in the repository.
    InRepository,
    /// Neither: the bastion's floating IP (from an external network of
    /// loopback-range addresses) and the hosts' fixed addresses (a /29 of
    /// loopback-range addresses) are the cloud's, found when needed.
    FromCloud,
}

/// The external network and the environment's subnet of [`Addresses::FromCloud`].
const CLOUD_EXTERNAL: &str = "127.77.0";
const CLOUD_SUBNET: &str = "127.76.0";

fn inventory(
    env: &str,
    net: &str,
    client_key: &str,
    addresses: Addresses,
) -> Vec<(String, String)> {
    let dir = format!("inventory/{env}");
    let from_cloud = addresses == Addresses::FromCloud;
    let host = |name: &str, role: &str, octet: u8| {
        let address =
            if from_cloud { String::new() } else { format!("    address: {net}.{octet}\n") };
        format!("  - name: {env}-{name}\n    role: {role}\n    flavor: s3.small.1\n    image: Ubuntu 24.04\n    keypair: {env}-key\n    networks: [{env}-net]\n{address}    security_groups: [{env}-ssh]\n")
    };
    let (external, cidr) = if from_cloud {
        (format!("{env}-ext"), format!("{net}.0/29"))
    } else {
        ("admin_external_net".to_owned(), format!("{net}.0/24"))
    };
    vec![
        (
            format!("{dir}/hosts.yaml"),
            format!(
                "hosts:\n{}    floating_ip: {{network: {external}}}\n{}",
                host("bastion", "bastion", 10),
                host("influxdb", "influxdb", 30)
            ),
        ),
        (format!("{dir}/keypairs.yaml"), format!("keypairs:\n  - name: {env}-key\n    public_key: {client_key}\n")),
        (
            format!("{dir}/networks.yaml"),
            format!("networks:\n  - name: {env}-net\n    subnets:\n      - {{name: {env}-subnet, cidr: {cidr}, gateway_ip: {net}.1, enable_dhcp: false}}\n  - name: {external}\n    external: true\n"),
        ),
        (
            format!("{dir}/security_groups.yaml"),
            format!("security_groups:\n  - name: {env}-ssh\n    description: SSH\n    rules:\n      - {{protocol: tcp, ports: 22, remote_ip_prefix: 0.0.0.0/0}}\n"),
        ),
        (
            format!("{dir}/influxdb.yaml"),
            format!("databases:\n  - name: apimon\nusers:\n  - name: admin\n    admin: true\n    password: {{secret: {env}_admin}}\n  - name: telegraf\n    password: {{secret: {env}_telegraf}}\n    grants:\n      - {{database: apimon, privilege: WRITE}}\n"),
        ),
    ]
}

impl Setup {
    async fn new() -> Option<Self> {
        Self::with(Addresses::InRepository).await
    }

    pub(crate) async fn with(addresses: Addresses) -> Option<Self> {
        let cloud = TestCloud::get()?;
        let influx = InfluxServer::start().await?;
        let world = SshWorld::new()?;
        let git = GitRemote::new()?;
        ensure_group("apimon");
        // Unique per test: the stories run in parallel against one cloud.
        static SETUPS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = SETUPS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let env = format!("boot{}x{n}", std::process::id());
        let twin = format!("{env}twin");
        let sshd = world.server("bastion");
        let api = cloud.api().await;
        let from_cloud = addresses == Addresses::FromCloud;
        // Every address the cloud may give the hosts: one sshd answers at each.
        let listen: Vec<String> = if from_cloud {
            let external = format!("{env}-ext");
            api.create_external_network(&external, &format!("{CLOUD_EXTERNAL}.0/29")).await;
            (2..=6)
                .flat_map(|i| [format!("{CLOUD_EXTERNAL}.{i}"), format!("{CLOUD_SUBNET}.{i}")])
                .collect()
        } else {
            vec!["127.0.0.30".to_owned()]
        };
        let relay =
            Relay::start(&listen.iter().map(String::as_str).collect::<Vec<_>>(), sshd.port).await;
        let root = tempfile::tempdir().expect("root");
        crate::support::host::install_stand_ins(root.path());
        let ssh = if from_cloud {
            stand_in_ssh(root.path(), relay.port, relay.port)
                .replace("      bastion_address: 127.0.0.1\n", "")
        } else {
            stand_in_ssh(root.path(), sshd.port, relay.port)
        };
        let port = free_port();
        let apimon_yaml = format!(
            "project: apimon\ndefaults:\n  max_deletes: 20\nenvironments:\n  {env}:\n    location: outside\n    cloud: apimon-test\n    influxdb:\n      url: {url}\n      admin_user: admin\n      results_database: apimon\n      results_user: telegraf\n{ssh}    daemon:\n      repository:\n        url: {repository}\n        poll_interval_seconds: 1\n      listen: 127.0.0.1:{port}\n      webhook_secret: {{secret: {env}_webhook}}\n  {twin}:\n    location: inside\n    cloud: apimon-twin\n    influxdb:\n      url: {url}\n      admin_user: admin\n      results_database: apimon\n      results_user: telegraf\n",
            url = influx.url(),
            ssh = ssh,
            repository = git.file_url(),
        );
        let client_key = std::fs::read_to_string(world.client_key().with_extension("pub"))
            .expect("client key")
            .trim()
            .to_owned();
        let mut files = vec![("apimon.yaml".to_owned(), apimon_yaml)];
        let net = if from_cloud { CLOUD_SUBNET } else { "127.0.0" };
        files.extend(inventory(&env, net, &client_key, addresses));
        files.extend(inventory(&twin, "192.168.77", &client_key, Addresses::InRepository));
        git.write(&files);
        git.commit("an environment with a daemon");
        git.push(false);
        let dir = world.dir.path();
        let secrets_file = dir.join("secrets.yaml");
        std::fs::write(
            &secrets_file,
            format!("{env}_admin: admin-pw\n{env}_telegraf: telegraf-pw\n{env}_webhook: a-webhook-secret-of-32-characters\n{twin}_admin: twin-admin-pw\n{twin}_telegraf: twin-telegraf-pw\n"),
        )
        .expect("secrets");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&secrets_file, std::fs::Permissions::from_mode(0o600))
            .expect("chmod");
        // The workstation knows both clouds; the daemon gets its own only.
        let suite = std::fs::read_to_string(&cloud.clouds_file).expect("clouds.yaml");
        let (_, entry) = suite.split_once("  apimon-test:\n").expect("apimon-test");
        let clouds_file = dir.join("clouds.yaml");
        std::fs::write(&clouds_file, format!("{suite}  apimon-twin:\n{entry}"))
            .expect("clouds.yaml");
        // Keys by address, or by name where the cloud gives the addresses.
        let known_hosts = world.known_hosts(&[
            (format!("[127.0.0.1]:{}", sshd.port), &sshd),
            (format!("[127.0.0.30]:{}", relay.port), &sshd),
            (format!("[{env}-bastion]:{}", relay.port), &sshd),
            (format!("[{env}-influxdb]:{}", relay.port), &sshd),
            // The operator's other hosts: never copied to the bastion.
            ("unrelated.example.net".to_owned(), &sshd),
        ]);
        Some(Self {
            env,
            api,
            _cloud: cloud,
            influx,
            world,
            _sshd: sshd,
            _relay: relay,
            root,
            git,
            secrets_file,
            state_dir: tempfile::tempdir().expect("state"),
            known_hosts,
            clouds_file,
            port,
        })
    }

    fn tools(&self) -> PathBuf {
        self.root.path().join(".tools")
    }

    pub(crate) fn host_file(&self, path: &str) -> PathBuf {
        self.root.path().join(path.trim_start_matches('/'))
    }

    pub(crate) fn read(&self, path: &str) -> String {
        std::fs::read_to_string(self.host_file(path)).unwrap_or_default()
    }

    /// `apimon bootstrap --env <env> --yes` from the workstation: (exit, stdout, stderr).
    fn bootstrap(&self) -> (Option<i32>, String, String) {
        self.bootstrap_with(Path::new(env!("CARGO_BIN_EXE_apimon")))
    }

    /// Bootstrap installing `binary` on the bastion.
    fn bootstrap_with(&self, binary: &Path) -> (Option<i32>, String, String) {
        let output = self.command(binary).output().expect("apimon bootstrap");
        let (stdout, stderr) = text(&output);
        (output.status.code(), stdout, stderr)
    }

    /// `apimon bootstrap --env <env> --yes` from the workstation.
    fn command(&self, binary: &Path) -> std::process::Command {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_apimon"));
        command
            .args(["bootstrap", "--yes", "--wait-seconds", "300", "--env", &self.env, "--repo"])
            .arg(self.git.work())
            .arg("--secrets")
            .arg(&self.secrets_file)
            .arg("--state-dir")
            .arg(self.state_dir.path())
            .arg("--clouds-file")
            .arg(&self.clouds_file)
            .arg("--daemon-ssh-key")
            .arg(self.world.client_key())
            .arg("--approval-token")
            .arg(self.approval_token())
            .arg("--scenario-signers")
            .arg(self.scenario_signers())
            .env("APIMON_SSH_KEY", self.world.client_key())
            .env("APIMON_SSH_KNOWN_HOSTS", &self.known_hosts)
            .env("APIMON_EXECUTOR_BINARY", binary);
        command
    }

    /// The operator's approval token file (bootstrap installs it).
    fn approval_token(&self) -> PathBuf {
        let path = self.world.dir.path().join("approval-token");
        if !path.exists() {
            std::fs::write(&path, "operator-approval-0123456789abcdef0123456789\n").expect("token");
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .expect("chmod");
        }
        path
    }

    /// The operator's allowed signers of scenario commits (bootstrap
    /// installs them; this world has no scenario repository).
    fn scenario_signers(&self) -> PathBuf {
        let path = self.world.dir.path().join("scenario-signers");
        if !path.exists() {
            std::fs::write(&path, "qa@example.test ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEXAMPLEEXAMPLEEXAMPLEEXAMPLEEXAMPLEEXAMPLE\n").expect("signers");
        }
        path
    }

    /// Waits until `commit` is held (it widens apimon's authority) and
    /// approves it as an operator does: `apimon approve --commit`.
    async fn approve_held(&self, commit: &str) {
        self.wait_status(&format!("commit {commit} held"), |s| s["held"]["commit"] == commit).await;
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_apimon"))
            .args(["approve", "--commit", commit, "--daemon"])
            .arg(format!("http://127.0.0.1:{}", self.port))
            .arg("--token-file")
            .arg(self.approval_token())
            .output()
            .expect("apimon approve");
        let (stdout, stderr) = text(&output);
        assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    }

    pub(crate) async fn status(&self) -> Option<Value> {
        let url = format!("http://127.0.0.1:{}/status", self.port);
        reqwest::get(url).await.ok()?.json().await.ok()
    }

    /// Waits until `/status` satisfies `done`; the daemon's log on timeout.
    pub(crate) async fn wait_status(&self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let check = || async { self.status().await.filter(|status| done(status)) };
        let context = || format!("daemon log:\n{}", self.read("/.tools/apimon.log"));
        crate::support::eventually_async(what, Duration::from_secs(300), check, context).await
    }

    fn daemon_pid(&self) -> String {
        self.read("/.tools/units/apimon.child").trim().to_owned()
    }

    fn mode(&self, path: &str) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(self.host_file(path))
            .map(|m| m.permissions().mode() & 0o7777)
            .unwrap_or(0)
    }
}

pub(crate) fn converged_at(status: &Value, env: &str, commit: &str) -> bool {
    status["environments"][env]["commit"] == commit
        && matches!(status["environments"][env]["outcome"].as_str(), Some("success" | "no_changes"))
}

/// A setup bootstrapped from nothing: the platform, then the daemon on
/// the bastion, which reports the environment converged with the store
/// handed over; its `/status`.
pub(crate) async fn bootstrapped() -> Option<(Setup, Value)> {
    let setup = Setup::new().await?;
    let env = setup.env.clone();
    let (code, stdout, stderr) = setup.bootstrap();
    assert_eq!(
        code,
        Some(0),
        "{stdout}\n{stderr}\ndaemon log:\n{}",
        setup.read("/.tools/apimon.log")
    );
    assert!(stdout.contains(&format!("reports {env} converged")), "{stdout}");
    let status = setup.status().await.expect("the daemon answers");
    let seen = status["last_seen_commit"].as_str().expect("a commit").to_owned();
    // The state store was handed over: the daemon's first run created nothing.
    assert_eq!(status["environments"][env.as_str()]["outcome"], "no_changes", "{status}");
    assert_eq!(status["environments"][env.as_str()]["commit"], seen.as_str());
    for host in ["bastion", "influxdb"] {
        assert_eq!(setup.api.servers(&format!("{env}-{host}")).await.len(), 1, "{host}");
    }
    Some((setup, status))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_installs_only_its_environments_credentials_and_a_rerun_is_a_no_op() {
    let Some((setup, _)) = bootstrapped().await else { return };
    let env = setup.env.clone();
    let secrets = setup.read("/etc/apimon/secrets.yaml");
    assert!(secrets.contains(&format!("{env}_admin")), "{secrets}");
    assert!(
        !secrets.contains("twin"),
        "another environment's secret reached the bastion: {secrets}"
    );
    assert_eq!(setup.mode("/etc/apimon/secrets.yaml"), 0o600);
    let clouds = setup.read("/etc/apimon/clouds.yaml");
    assert!(clouds.contains("apimon-test") && !clouds.contains("apimon-twin"), "{clouds}");
    assert_eq!(setup.mode("/etc/apimon/clouds.yaml"), 0o600);
    assert_eq!(setup.mode("/etc/apimon/webhook_secret"), 0o600);
    // The operator's approval token, a trust anchor no commit renders.
    assert_eq!(setup.mode("/etc/apimon/approval_token"), 0o600);
    assert_eq!(
        setup.read("/etc/apimon/approval_token").trim(),
        std::fs::read_to_string(setup.approval_token()).expect("token").trim()
    );
    assert_eq!(setup.mode("/etc/apimon/scenario_allowed_signers"), 0o600);
    assert!(setup.read("/etc/apimon/scenario_allowed_signers").starts_with("qa@example.test "));
    let known_hosts = setup.read("/etc/apimon/known_hosts");
    assert!(known_hosts.contains("[127.0.0.30]:"), "{known_hosts}");
    assert!(!known_hosts.contains("unrelated.example.net"), "{known_hosts}");
    assert_eq!(setup.mode("/var/lib/apimon/state.json"), 0o600);
    let daemon_yaml = setup.read("/etc/apimon/daemon.yaml");
    assert!(daemon_yaml.contains(&format!("runs_on: \"{env}/{env}-bastion\"")), "{daemon_yaml}");
    assert!(setup.read("/etc/systemd/system/apimon.service").contains("ProtectSystem=strict"));

    // Again: nothing to do, the same daemon runs on.
    let pid = setup.daemon_pid();
    let calls = setup.read("/.tools/systemctl.log");
    let (code, stdout, stderr) = setup.bootstrap();
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("Nothing to do"), "{stdout}");
    assert_eq!(setup.daemon_pid(), pid, "a second bootstrap started another daemon");
    let new_calls = setup.read("/.tools/systemctl.log")[calls.len()..].to_owned();
    assert!(!new_calls.contains("stop") && !new_calls.contains("start"), "{new_calls}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_restarts_itself_for_its_own_configuration_and_for_a_pinned_release() {
    let Some((setup, status)) = bootstrapped().await else { return };
    let env = setup.env.clone();
    let pid = setup.daemon_pid();
    // A commit that changes the daemon's own configuration: it writes its
    // daemon.yaml, restarts itself (exit 75) and the new process converges.
    let started = status["started_at"].clone();
    setup.git.edit(
        "apimon.yaml",
        "        poll_interval_seconds: 1\n",
        "        poll_interval_seconds: 2\n",
    );
    let commit = setup.git.commit("the daemon polls every 2 s");
    setup.git.push(false);
    setup
        .wait_status("the restarted daemon converged", |s| {
            s["started_at"] != started && converged_at(s, &env, &commit)
        })
        .await;
    assert!(
        setup.read("/.tools/apimon.exits").contains("exit 75"),
        "{}",
        setup.read("/.tools/apimon.exits")
    );
    assert!(setup.read("/etc/apimon/daemon.yaml").contains("poll_interval_seconds: 2"));
    assert_ne!(setup.daemon_pid(), pid);

    let status = setup.status().await.expect("the daemon answers");
    let mut bytes = std::fs::read(env!("CARGO_BIN_EXE_apimon")).expect("binary");
    // The version pinned in the repository: the daemon downloads it,
    // installs it on its own bastion and restarts into it.
    let releases = tempfile::tempdir().expect("releases");
    let Some(server) = crate::support::FileServer::start(releases.path()) else { return };
    bytes.extend_from_slice(b"# pinned in apimon.yaml\n");
    std::fs::write(releases.path().join("apimon"), &bytes).expect("release");
    let restarts = setup.read("/.tools/apimon.exits").matches("exit 75").count();
    let started = status["started_at"].clone();
    setup.git.edit(
        "apimon.yaml",
        "project: ",
        &format!(
            "apimon_binary:\n  url: http://127.0.0.1:{}/apimon\n  sha256: {}\nproject: ",
            server.port,
            apimon::digest::sha256_hex(&bytes)
        ),
    );
    let commit = setup.git.commit("apimon pinned");
    setup.git.push(false);
    // A new release pin widens apimon's authority: an operator approves it.
    setup.approve_held(&commit).await;
    setup
        .wait_status("the daemon restarted into the pinned release", |s| {
            s["started_at"] != started && converged_at(s, &env, &commit)
        })
        .await;
    assert_eq!(std::fs::read(setup.host_file("/usr/local/bin/apimon")).expect("installed"), bytes);
    assert_eq!(
        setup.read("/.tools/apimon.exits").matches("exit 75").count(),
        restarts + 1,
        "{}",
        setup.read("/.tools/apimon.exits")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_yaml_that_does_not_start_is_rolled_back_and_held() {
    let Some((setup, _)) = bootstrapped().await else { return };
    let env = setup.env.clone();
    let before = setup.read("/etc/apimon/daemon.yaml");
    // Another process holds a loopback port: a daemon.yaml listening there
    // is valid and loads, but no daemon can start with it.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("address").port();
    let listen = |port: u16| format!("      listen: 127.0.0.1:{port}\n");
    setup.git.edit("apimon.yaml", &listen(setup.port), &listen(port));
    let commit = setup.git.commit("the daemon listens on a taken port");
    setup.git.push(false);
    // The daemon writes it, hands over (exit 75), the new process cannot
    // bind and exits before READY=1; at the next start the unit's
    // ExecStartPre puts the previous daemon.yaml back.
    let status = setup
        .wait_status("the hand-over rolled back", |s| {
            s["rollback"]["pending"]["commit"] == commit.as_str()
                && s["environments"][env.as_str()]["commit"] == commit.as_str()
        })
        .await;
    assert_eq!(setup.read("/etc/apimon/daemon.yaml"), before, "the previous daemon.yaml is back");
    let exits = setup.read("/.tools/apimon.exits");
    let after_handover = exits.rsplit_once("exit 75").map(|(_, rest)| rest).unwrap_or_default();
    assert!(after_handover.contains("exit 1"), "the new process did not fail: {exits}");
    let log = setup.read("/.tools/apimon.log");
    assert!(log.contains("rolled back to the previous daemon files"), "{log}");
    // The commit's other changes converge; the same daemon.yaml is held, not written again.
    let pending = status["environments"][env.as_str()]["pending"].to_string();
    assert!(
        pending.contains("/etc/apimon/daemon.yaml") && pending.contains("rolled back"),
        "{pending}"
    );
    let seen = status["reconciles"].as_u64().unwrap_or(0);
    let status = setup
        .wait_status("two more reconciles", |s| s["reconciles"].as_u64().unwrap_or(0) >= seen + 2)
        .await;
    assert_eq!(setup.read("/etc/apimon/daemon.yaml"), before, "written again: {status}");
    drop(taken);

    // A commit that no longer asks for it: converged, the record gone.
    setup.git.edit("apimon.yaml", &listen(port), &listen(setup.port));
    let revert = setup.git.commit("the daemon listens where it did");
    setup.git.push(false);
    setup
        .wait_status("converged without the roll-back", |s| {
            converged_at(s, &env, &revert) && s["rollback"].is_null()
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_another_bootstrap_took_is_never_used() {
    let Some((setup, _)) = bootstrapped().await else { return };
    // A store another bootstrap took and did not hand back is never used.
    let taken = setup.host_file("/var/lib/apimon/state.taken");
    std::fs::write(&taken, "token=0123 by=elsewhere at=then\n").expect("mark");
    let (code, stdout, stderr) = setup.bootstrap();
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("taken by another `apimon bootstrap`") && stderr.contains("by=elsewhere"),
        "{stderr}"
    );
    std::fs::remove_file(&taken).expect("unmark");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemons_own_host_is_held_then_replaced_by_a_bootstrap_killed_once_and_resumed() {
    let Some((setup, _)) = bootstrapped().await else { return };
    let env = setup.env.clone();
    let taken = setup.host_file("/var/lib/apimon/state.taken");
    // A commit that changes cloud-init for every server: the InfluxDB
    // server is replaced, the daemon's own bastion is held, with the reason.
    let bastion_before = setup.api.server(&format!("{env}-bastion")).await["id"].clone();
    let influxdb_before = setup.api.server(&format!("{env}-influxdb")).await["id"].clone();
    let template = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("templates/cloud-init.yaml.hbs"),
    )
    .expect("template");
    setup.git.write(&[(
        "templates/cloud-init.yaml.hbs".to_owned(),
        format!("{template}\n# rebuilt for the bootstrap test\n"),
    )]);
    let commit = setup.git.commit("new cloud-init for every server");
    setup.git.push(false);
    // A template override widens apimon's authority: an operator approves it.
    setup.approve_held(&commit).await;
    let bastion_id = format!("{env}/openstack.server/{env}-bastion");
    let status = setup
        .wait_status("the bastion's replacement held", |s| {
            s["environments"][env.as_str()]["commit"] == commit.as_str()
                && s["environments"][env.as_str()]["pending"]
                    .as_array()
                    .is_some_and(|p| p.iter().any(|c| c["id"] == bastion_id.as_str()))
        })
        .await;
    let pending = status["environments"][env.as_str()]["pending"].to_string();
    assert!(pending.contains("the daemon's own host"), "{pending}");
    assert_eq!(setup.api.server(&format!("{env}-bastion")).await["id"], bastion_before);
    assert_ne!(setup.api.server(&format!("{env}-influxdb")).await["id"], influxdb_before);

    // The documented way to apply what the daemon holds, here with a new
    // apimon: bootstrap stops the daemon, takes its store, replaces the
    // bastion, installs the new binary, hands the store back and starts it.
    let upgraded = setup.world.dir.path().join("apimon-upgraded");
    let mut bytes = std::fs::read(env!("CARGO_BIN_EXE_apimon")).expect("binary");
    bytes.extend_from_slice(b"\n# a new build\n");
    std::fs::write(&upgraded, &bytes).expect("upgraded binary");
    std::fs::set_permissions(&upgraded, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    // Killed once it took the store: the daemon stays stopped, its store
    // marked; the re-run resumes with the store this machine holds.
    let mut killed = setup
        .command(&upgraded)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("bootstrap");
    let start = Instant::now();
    while !taken.exists() {
        assert!(start.elapsed() < Duration::from_secs(120), "bootstrap never took the store");
        assert!(
            killed.try_wait().expect("wait").is_none(),
            "bootstrap ended before taking the store"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    killed.kill().expect("SIGKILL");
    let _ = killed.wait();
    assert!(setup.read("/.tools/units/apimon.pid").is_empty(), "the daemon still runs");
    let (code, stdout, stderr) = setup.bootstrap_with(&upgraded);
    assert_eq!(
        code,
        Some(0),
        "{stdout}\n{stderr}\ndaemon log:\n{}",
        setup.read("/.tools/apimon.log")
    );
    assert!(stdout.contains("Resuming"), "{stdout}");
    assert!(stdout.contains(&format!("reports {env} converged at commit {commit}")), "{stdout}");
    assert_ne!(setup.api.server(&format!("{env}-bastion")).await["id"], bastion_before);
    assert_eq!(setup.api.servers(&format!("{env}-bastion")).await.len(), 1);
    assert_eq!(std::fs::read(setup.host_file("/usr/local/bin/apimon")).expect("installed"), bytes);
    assert!(!taken.exists(), "the store was not handed back");
    let status = setup.status().await.expect("the new daemon answers");
    assert_eq!(status["environments"][env.as_str()]["outcome"], "no_changes", "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_ahead_of_the_checkout_is_taken_back_only_with_take_over_and_it_is_logged() {
    let Some((setup, _)) = bootstrapped().await else { return };
    let env = setup.env.clone();
    let before = crate::support::daemon::head_of(&setup.git);
    setup.git.edit(
        &format!("inventory/{env}/influxdb.yaml"),
        "users:\n",
        &format!("users:\n  - name: reader\n    password: {{secret: {env}_telegraf}}\n"),
    );
    let ahead = setup.git.commit("a user the checkout will lack");
    setup.git.push(false);
    setup
        .wait_status("the daemon applied the newer commit", |s| converged_at(s, &env, &ahead))
        .await;
    // The workstation's checkout is older than what the daemon applied
    // (as when the daemon follows another repository).
    setup.git.reset_hard(&before);
    let (code, stdout, stderr) = setup.bootstrap();
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains(&format!("applied commit {ahead}, which this checkout")), "{stderr}");
    assert!(stderr.contains("--take-over"), "{stderr}");
    assert!(setup.read("/var/lib/apimon/take-over.log").is_empty());

    let output = setup
        .command(Path::new(env!("CARGO_BIN_EXE_apimon")))
        .arg("--take-over")
        .output()
        .expect("apimon bootstrap --take-over");
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stderr.contains(&format!("taking the daemon on {env}-bastion back")), "{stderr}");
    let log = setup.read("/var/lib/apimon/take-over.log");
    assert!(
        log.contains(&format!("take-over: the daemon applied {ahead}; bootstrap applies {before}")),
        "{log}"
    );
    assert_eq!(setup.mode("/var/lib/apimon/take-over.log"), 0o600);
}

/// `apimon bootstrap` from an empty project whose repository names no
/// address at all: it creates the network, the router and the bastion,
/// reaches the bastion at the floating IP Neutron allocated and the hosts
/// at the fixed addresses Neutron gave their ports, installs the daemon
/// (which reaches them from the bastion at their fixed addresses) and
/// waits for converged — one command, and the repository is left as is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_from_an_empty_project_takes_every_address_from_the_cloud_and_writes_none_back() {
    let Some(setup) = Setup::with(Addresses::FromCloud).await else { return };
    let env = setup.env.clone();
    let git = |args: &[&str]| {
        let output =
            std::process::Command::new("git").args(args).current_dir(setup.git.work()).output();
        String::from_utf8_lossy(&output.expect("git").stdout).trim().to_owned()
    };
    let head = git(&["rev-parse", "HEAD"]);
    let (code, stdout, stderr) = setup.bootstrap();
    let log = || setup.read("/.tools/apimon.log");
    assert_eq!(code, Some(0), "{stdout}\n{stderr}\ndaemon log:\n{}", log());
    assert!(stdout.contains(&format!("reports {env} converged")), "{stdout}");

    let bastion = setup.api.server(&format!("{env}-bastion")).await;
    let id = bastion["id"].as_str().expect("server id");
    let floating = setup.api.floating_ips_of(id).await;
    assert_eq!(floating.len(), 1, "{floating:?}");
    let address = floating[0]["floating_ip_address"].as_str().expect("address").to_owned();
    assert!(address.starts_with(&format!("{CLOUD_EXTERNAL}.")), "{address}");
    let told =
        format!("The bastion {env}-bastion is at {address}: its floating IP as the cloud says");
    assert!(stderr.contains(&told), "{stderr}");
    for host in ["bastion", "influxdb"] {
        let server = setup.api.server(&format!("{env}-{host}")).await;
        let fixed = server["addresses"][format!("{env}-net")][0]["addr"].as_str().unwrap_or("");
        assert!(fixed.starts_with(&format!("{CLOUD_SUBNET}.")), "{host}: {server}");
    }
    // The daemon observed every host from the bastion, at the cloud's
    // fixed addresses, and found the platform as bootstrap left it.
    let status = setup.status().await.expect("the daemon answers");
    assert_eq!(status["environments"][env.as_str()]["outcome"], "no_changes", "{status}");
    assert!(setup.read("/etc/influxdb/influxdb.conf").contains("[http]"), "influxdb host's file");
    assert!(!setup.read("/etc/apimon/known_hosts").is_empty());
    // Nothing written back: no commit, no change in the checkout.
    assert_eq!(git(&["rev-parse", "HEAD"]), head);
    assert_eq!(git(&["status", "--porcelain"]), "");
}
