//! The host provider's test world: an sshd as the bastion and one as the
//! target host (through a relay the test can cut), stand-ins for systemctl
//! and the package manager, and a repository whose hosts are reached there.

use std::path::{Path, PathBuf};
use std::time::Duration;

use apimon::apply::{ApplyOptions, Outcome};
use apimon::machine::Machine;
use apimon::model::Secrets;
use apimon::plan::{Op, ProviderKind};
use apimon::reconcile::Plan;
use apimon::reconcile::{self, ReconcileError};

use super::influxdb::InfluxServer;
use super::sshd::{current_user, Relay, SshServer, SshWorld};
use super::{fixture_files_without_grafana, TestRepo};

/// Stand-in for systemctl (a unit with a unit file runs as systemd runs it;
/// a package's own unit is a flag file).
pub const FAKE_SYSTEMCTL: &str = include_str!("stand-in/systemctl");

/// Stand-in for dpkg/apt (installed packages are files).
pub const FAKE_PACKAGES: &str = include_str!("stand-in/pkg");

pub struct Setup {
    pub influx: InfluxServer,
    pub world: SshWorld,
    pub bastion: SshServer,
    pub target: SshServer,
    pub relay: Relay,
    pub root: tempfile::TempDir,
    pub repo: TestRepo,
    pub secrets_file: PathBuf,
    pub state_dir: tempfile::TempDir,
    pub known_hosts: PathBuf,
    pub binary: PathBuf,
}

/// Writes the stand-ins for systemctl and the package manager into the
/// test host's `<root>/.tools/`.
pub fn install_stand_ins(root: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let tools = root.join(".tools");
    std::fs::create_dir_all(&tools).expect("tools");
    for (name, script) in [("systemctl", FAKE_SYSTEMCTL), ("pkg", FAKE_PACKAGES)] {
        let path = tools.join(name);
        std::fs::write(&path, script).expect("script");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
}

/// An environment's `ssh:` section for a test host at `root` (its
/// stand-ins, a one-second settle time) behind the bastion at
/// 127.0.0.1:`bastion_port`, its hosts' sshd at `host_port`.
pub fn stand_in_ssh(root: &Path, bastion_port: u16, host_port: u16) -> String {
    format!(
        "    ssh:\n      user: {user}\n      bastion_address: 127.0.0.1\n      bastion_port: {bastion_port}\n      host_port: {host_port}\n      root: {r}\n      service_manager: {r}/.tools/systemctl\n      package_check: '{r}/.tools/pkg check {{package}}'\n      package_install: '{r}/.tools/pkg install {{package}}'\n      package_update: '{r}/.tools/pkg update'\n      unit_settle_seconds: 1\n",
        user = current_user(),
        r = root.display(),
    )
}

/// The fixture's `outside` network and its hosts (`192.168.10.<octet>`)
/// moved onto loopback addresses (`127.0.0.<octet>`).
pub fn outside_on_loopback(repo: &TestRepo, octets: &[&str]) {
    repo.edit("inventory/outside/networks.yaml", "cidr: 192.168.10.0/24", "cidr: 127.0.0.0/8");
    for octet in octets {
        repo.edit(
            "inventory/outside/hosts.yaml",
            &format!("address: 192.168.10.{octet}"),
            &format!("address: 127.0.0.{octet}"),
        );
    }
}

/// A small stand-in for an apimon binary (uploads stay quick): it answers
/// `--version` with `apimon <version>` and, as an executor (its unit's
/// ExecStart), runs until it is stopped.
pub fn fake_apimon(version: &str) -> Vec<u8> {
    format!("#!/bin/sh\nif [ \"$1\" = executor ]; then exec sleep 2147483647; fi\necho apimon {version}\n")
        .into_bytes()
}

/// Stops every unit the stand-in service manager in `tools` still runs
/// (their processes outlive the SSH sessions that started them).
pub fn stop_units(tools: &Path) {
    let Ok(entries) = std::fs::read_dir(tools.join("units")) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(unit) = name.strip_suffix(".pid") {
            let _ =
                std::process::Command::new(tools.join("systemctl")).args(["stop", unit]).status();
        }
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        stop_units(&self.root.path().join(".tools"));
    }
}

pub fn ensure_group(name: &str) {
    let exists = || {
        std::process::Command::new("getent")
            .args(["group", name])
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !exists() {
        // Tests run in parallel: another one may create it first.
        let _ = std::process::Command::new("groupadd")
            .args(["--system", name])
            .stderr(std::process::Stdio::null())
            .status();
        assert!(exists(), "cannot create group {name}");
    }
}

impl Setup {
    pub async fn new() -> Option<Self> {
        let world = SshWorld::new()?;
        let influx = InfluxServer::start().await?;
        ensure_group("apimon");
        ensure_group("telegraf");
        let bastion = world.server("bastion");
        let target = world.server("target");
        let relay = Relay::start(&["127.0.0.20", "127.0.0.30", "127.0.0.40"], target.port).await;
        let root = tempfile::tempdir().expect("root");
        install_stand_ins(root.path());
        let repo = TestRepo::with_files(fixture_files_without_grafana());
        repo.edit("apimon.yaml", "http://192.168.10.30:8086", &influx.url());
        let ssh = stand_in_ssh(root.path(), bastion.port, relay.port);
        repo.edit(
            "apimon.yaml",
            "    location: outside\n",
            &format!("    location: outside\n{ssh}"),
        );
        outside_on_loopback(&repo, &["10", "20", "30"]);
        let known_hosts = world.known_hosts(&[
            (format!("[127.0.0.1]:{}", bastion.port), &bastion),
            (format!("[127.0.0.20]:{}", relay.port), &target),
            (format!("[127.0.0.30]:{}", relay.port), &target),
            (format!("[127.0.0.40]:{}", relay.port), &target),
        ]);
        let secrets = crate::support::outside_secrets();
        let secrets_file = repo.secrets_file(&secrets, 0o600);
        // A small stand-in for the apimon binary keeps uploads quick.
        let binary = world.dir.path().join("apimon-binary");
        std::fs::write(&binary, fake_apimon("stand-in")).expect("binary");
        Some(Self {
            influx,
            world,
            bastion,
            target,
            relay,
            root,
            repo,
            secrets_file,
            state_dir: tempfile::tempdir().expect("state"),
            known_hosts,
            binary,
        })
    }

    pub fn machine(&self) -> Machine {
        Machine {
            ssh_key: self.world.client_key(),
            known_hosts: self.known_hosts.clone(),
            executor_binary: Some(self.binary.clone()),
            clouds_file: None,
            release_key: None,
            on_bastion: false,
        }
    }

    /// Where this setup caches scenario repositories (no credentials).
    pub fn sources(&self) -> apimon::source::scenarios::SourceCache {
        apimon::source::scenarios::SourceCache::new(
            self.state_dir.path().join("scenario-repositories"),
            apimon::source::scenarios::ScopedAuth::default(),
            Some(self.known_hosts.clone()),
        )
    }

    /// The shared prepare → plan → apply harness, for this setup.
    pub fn harness(&self) -> super::harness::Harness {
        super::harness::Harness {
            machine: self.machine(),
            sources: Some(self.sources()),
            ..super::harness::Harness::outside(
                self.repo.path(),
                &self.secrets_file,
                self.state_dir.path(),
            )
        }
    }

    pub fn secrets(&self) -> Secrets {
        self.harness().secrets()
    }

    pub fn prepare(&self) -> Result<reconcile::Prepared, ReconcileError> {
        self.harness().try_prepare()
    }

    pub async fn plan(&self) -> Result<Plan, ReconcileError> {
        Ok(self.harness().try_plan(apimon::providers::Probe::default()).await?.0)
    }

    pub async fn apply_with(&self, options: &ApplyOptions) -> (Plan, Outcome) {
        let probe = apimon::providers::Probe::default();
        self.harness().apply(options, probe, || {}, |_| {}).await
    }

    pub async fn apply(&self) -> (Plan, Outcome) {
        self.apply_with(&ApplyOptions {
            parallelism: 4,
            max_attempts: 2,
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(50),
        })
        .await
    }

    pub fn file(&self, path: &str) -> PathBuf {
        self.root.path().join(path.trim_start_matches('/'))
    }

    pub fn restarts(&self, unit: &str) -> u32 {
        std::fs::read_to_string(
            self.root.path().join(".tools/units").join(format!("{unit}.restarts")),
        )
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
    }
}

pub fn host_changes(plan: &Plan) -> Vec<(String, String, Op)> {
    plan.changes
        .iter()
        .filter(|c| c.id.provider == ProviderKind::named("host") && c.op != Op::NoOp)
        .map(|c| (c.id.kind.to_string(), c.id.name.to_string(), c.op.clone()))
        .collect()
}

pub fn mode_owner(path: &Path) -> (u32, String) {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).expect("metadata");
    let group =
        std::process::Command::new("stat").args(["-c", "%U:%G"]).arg(path).output().expect("stat");
    (meta.mode() & 0o7777, String::from_utf8_lossy(&group.stdout).trim().to_owned())
}
