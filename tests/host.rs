//! The host provider over SSH against REAL OpenSSH servers: one sshd as
//! the bastion and one as the target host, reached through the bastion
//! (`direct-tcpip`) via a relay the test can cut.
//!
//! These machines have no systemd and the tests must not install packages
//! system-wide, so the service manager and the package commands are
//! stand-ins configured in apimon.yaml (`service_manager`, `package_check`,
//! `package_install`): small shell scripts that keep unit and package state
//! in files under the per-test root. Everything else is real: SSH, host
//! keys, uploads, modes, owners, renames. Files are placed under that root
//! (`ssh.root`). The groups the rendered files use (`apimon`, `telegraf`)
//! are created on this machine if missing, as their packages would.

use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use apimon::apply::{ApplyOptions, Outcome};
use apimon::machine::Machine;
use apimon::model::secret::SecretStore;
use apimon::model::Secrets;
use apimon::plan::{Op, ProviderKind};
use apimon::reconcile::Plan;
use apimon::reconcile::{self, ReconcileError, Target};
use apimon::state::{self, LockedStore};

use crate::support::influxdb::InfluxServer;
use crate::support::sshd::{current_user, Relay, SshServer, SshWorld};
use crate::support::{fixture_files_without_grafana, TestRepo};

const FAKE_SYSTEMCTL: &str = r#"#!/bin/sh
# Stand-in for systemctl on a test host without systemd: unit state in files.
d="$(dirname "$0")/units"; mkdir -p "$d"; echo "$*" >> "$(dirname "$0")/systemctl.log"
case "$1" in
  daemon-reload) ;;
  enable) touch "$d/$2.enabled" ;;
  restart|start) touch "$d/$2.active"; n=$(cat "$d/$2.restarts" 2>/dev/null || echo 0); echo $((n+1)) > "$d/$2.restarts" ;;
  is-enabled) if [ -e "$d/$2.enabled" ]; then echo enabled; else echo disabled; exit 1; fi ;;
  is-active) if [ -e "$d/$2.active" ]; then echo active; else echo inactive; exit 3; fi ;;
  *) echo "unsupported: $*" >&2; exit 2 ;;
esac
"#;

const FAKE_PACKAGES: &str = r#"#!/bin/sh
# Stand-in for dpkg/apt on a test host: installed packages are files.
d="$(dirname "$0")/packages"; mkdir -p "$d"
case "$1" in
  check) [ -e "$d/$2" ] ;;
  install) touch "$d/$2"; echo "$2" >> "$(dirname "$0")/packages.log" ;;
esac
"#;

struct Setup {
    _influx: InfluxServer,
    world: SshWorld,
    bastion: SshServer,
    target: SshServer,
    relay: Relay,
    root: tempfile::TempDir,
    repo: TestRepo,
    secrets_file: PathBuf,
    state_dir: tempfile::TempDir,
    known_hosts: PathBuf,
    binary: PathBuf,
}

fn ensure_group(name: &str) {
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
    async fn new() -> Option<Self> {
        let world = SshWorld::new()?;
        let influx = InfluxServer::start().await?;
        ensure_group("apimon");
        ensure_group("telegraf");
        let bastion = world.server("bastion");
        let target = world.server("target");
        let relay = Relay::start(&["127.0.0.20", "127.0.0.30"], target.port).await;
        let root = tempfile::tempdir().expect("root");
        let r = root.path().display().to_string();
        for (name, script) in [("fake-systemctl", FAKE_SYSTEMCTL), ("fake-pkg", FAKE_PACKAGES)] {
            let path = root.path().join(name);
            std::fs::write(&path, script).expect("script");
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        let repo = TestRepo::with_files(fixture_files_without_grafana());
        repo.edit("apimon.yaml", "http://192.168.10.30:8086", &influx.url());
        let ssh = format!(
            "    ssh:\n      user: {user}\n      bastion_address: 127.0.0.1\n      bastion_port: {bastion}\n      host_port: {relay}\n      service_manager: {r}/fake-systemctl\n      root: {r}\n      package_check: '{r}/fake-pkg check {{package}}'\n      package_install: '{r}/fake-pkg install {{package}}'\n",
            user = current_user(),
            bastion = bastion.port,
            relay = relay.port,
        );
        repo.edit(
            "apimon.yaml",
            "    location: outside\n",
            &format!("    location: outside\n{ssh}"),
        );
        repo.edit("inventory/outside/networks.yaml", "cidr: 192.168.10.0/24", "cidr: 127.0.0.0/8");
        for octet in ["10", "20", "30"] {
            repo.edit(
                "inventory/outside/hosts.yaml",
                &format!("address: 192.168.10.{octet}"),
                &format!("address: 127.0.0.{octet}"),
            );
        }
        let known_hosts = world.known_hosts(&[
            (format!("[127.0.0.1]:{}", bastion.port), &bastion),
            (format!("[127.0.0.20]:{}", relay.port), &target),
            (format!("[127.0.0.30]:{}", relay.port), &target),
        ]);
        let secrets = crate::support::outside_secrets();
        let secrets_file = repo.secrets_file(&secrets, 0o600);
        // A small stand-in for the apimon binary keeps uploads quick.
        let binary = world.dir.path().join("apimon-binary");
        std::fs::write(&binary, b"#!/bin/sh\necho apimon stand-in\n").expect("binary");
        Some(Self {
            _influx: influx,
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

    fn machine(&self) -> Machine {
        Machine {
            ssh_key: self.world.client_key(),
            known_hosts: self.known_hosts.clone(),
            executor_binary: Some(self.binary.clone()),
            clouds_file: None,
        }
    }

    fn secrets(&self) -> Secrets {
        Secrets::Resolved(
            SecretStore::load(Some(&self.secrets_file), std::iter::empty()).expect("secrets"),
        )
    }

    fn prepare(&self) -> Result<reconcile::Prepared, ReconcileError> {
        reconcile::prepare(
            self.repo.path(),
            &["outside".to_owned()],
            &self.secrets(),
            Target::Live(&self.machine()),
        )
    }

    async fn plan(&self) -> Result<Plan, ReconcileError> {
        let prepared = self.prepare()?;
        reconcile::plan(&prepared, &state::read(self.state_dir.path()).expect("state"), false).await
    }

    async fn apply_with(&self, options: &ApplyOptions) -> (Plan, Outcome) {
        let prepared = self.prepare().expect("prepare");
        let store = LockedStore::open(self.state_dir.path()).expect("lock");
        let plan =
            reconcile::plan(&prepared, &store.load().expect("state"), false).await.expect("plan");
        let outcome =
            reconcile::apply(&store, &prepared, &plan, options, |_| {}, &CancellationToken::new())
                .await
                .expect("apply");
        (plan, outcome)
    }

    async fn apply(&self) -> (Plan, Outcome) {
        self.apply_with(&ApplyOptions {
            parallelism: 4,
            max_attempts: 2,
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(50),
        })
        .await
    }

    fn file(&self, path: &str) -> PathBuf {
        self.root.path().join(path.trim_start_matches('/'))
    }

    fn restarts(&self, unit: &str) -> u32 {
        std::fs::read_to_string(self.root.path().join("units").join(format!("{unit}.restarts")))
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0)
    }
}

fn host_changes(plan: &Plan) -> Vec<(String, String, Op)> {
    plan.changes
        .iter()
        .filter(|c| c.id.provider == ProviderKind::named("host") && c.op != Op::NoOp)
        .map(|c| (c.id.kind.clone(), c.id.name.clone(), c.op.clone()))
        .collect()
}

fn mode_owner(path: &Path) -> (u32, String) {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).expect("metadata");
    let group =
        std::process::Command::new("stat").args(["-c", "%U:%G"]).arg(path).output().expect("stat");
    (meta.mode() & 0o7777, String::from_utf8_lossy(&group.stdout).trim().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_apply_uploads_and_restarts_and_the_second_changes_nothing() {
    let Some(setup) = Setup::new().await else { return };
    let (plan, outcome) = setup.apply().await;
    assert!(outcome.is_success(), "{outcome:#?}");
    assert!(host_changes(&plan).len() >= 10, "{:?}", host_changes(&plan));

    let telegraf = setup.file("/etc/telegraf/telegraf.conf");
    let text = std::fs::read_to_string(&telegraf).expect("telegraf.conf uploaded");
    assert!(
        text.contains("password = \"outside-telegraf-pw\""),
        "the real secret goes into the target file"
    );
    assert_eq!(mode_owner(&telegraf), (0o640, "root:telegraf".to_owned()));
    assert!(setup.file("/etc/apimon/executor.yaml").is_file());
    assert!(setup.file("/etc/influxdb/influxdb.conf").is_file());
    assert!(setup.file("/etc/apimon/scenarios/playbooks/list_servers.yaml").is_file());
    assert_eq!(
        std::fs::read(setup.file("/usr/local/bin/apimon")).expect("binary"),
        std::fs::read(&setup.binary).expect("binary")
    );
    assert_eq!(mode_owner(&setup.file("/usr/local/bin/apimon")).0, 0o755);
    for unit in ["telegraf", "apimon-executor", "influxdb"] {
        assert_eq!(setup.restarts(unit), 1, "{unit} restarts");
    }
    let packages = std::fs::read_to_string(setup.root.path().join("packages.log"))
        .expect("packages installed");
    for package in ["ansible-core", "telegraf", "influxdb"] {
        assert!(packages.lines().any(|l| l == package), "{packages}");
    }
    // Two hosts, one connection each for the whole apply.
    let connections = setup.relay.accepted();
    assert_eq!(connections, 2, "connections are reused across changes to one host");

    let plan = setup.plan().await.expect("plan");
    assert!(host_changes(&plan).is_empty(), "spurious diff: {:?}", host_changes(&plan));
    for unit in ["telegraf", "apimon-executor", "influxdb"] {
        assert_eq!(setup.restarts(unit), 1, "a no-op plan restarted {unit}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_template_change_updates_exactly_that_file_and_restarts_its_unit() {
    let Some(setup) = Setup::new().await else { return };
    assert!(setup.apply().await.1.is_success());
    let template = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("templates/telegraf.conf.hbs"),
    )
    .expect("template");
    setup.repo.write(
        "templates/telegraf.conf.hbs",
        &template.replace("interval = \"10s\"", "interval = \"30s\""),
    );
    let (plan, outcome) = setup.apply().await;
    assert!(outcome.is_success(), "{outcome:#?}");
    assert_eq!(
        host_changes(&plan),
        vec![
            (
                "file".to_owned(),
                "outside-executor:/etc/telegraf/telegraf.conf".to_owned(),
                Op::Update { reason: "content changed (template telegraf.conf.hbs)".into() }
            ),
            (
                "unit".to_owned(),
                "outside-executor:telegraf".to_owned(),
                Op::Update { reason: "restart: a file it depends on changed".into() }
            ),
        ]
    );
    assert!(std::fs::read_to_string(setup.file("/etc/telegraf/telegraf.conf"))
        .expect("file")
        .contains("interval = \"30s\""));
    assert_eq!(setup.restarts("telegraf"), 2);
    assert_eq!(setup.restarts("apimon-executor"), 1);
    assert_eq!(setup.restarts("influxdb"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_killed_mid_upload_leaves_the_old_file_and_the_next_apply_converges() {
    let Some(setup) = Setup::new().await else { return };
    let big = |seed: u8| -> String {
        (0..3_000_000u32)
            .map(|i| char::from(b'a' + ((i.wrapping_mul(31) as u8).wrapping_add(seed) % 26)))
            .collect()
    };
    setup.repo.write("scenarios/playbooks/data.txt", &big(1));
    assert!(setup.apply().await.1.is_success());
    let target = setup.file("/etc/apimon/scenarios/playbooks/data.txt");
    let old = std::fs::read(&target).expect("uploaded");

    setup.repo.write("scenarios/playbooks/data.txt", &big(2));
    let options = ApplyOptions {
        parallelism: 1,
        max_attempts: 1,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(10),
    };
    // The plan reads little; the upload of 3 MB is cut after 1 MB.
    setup.relay.cut_after(1_000_000);
    let (_, outcome) = tokio::time::timeout(Duration::from_secs(120), setup.apply_with(&options))
        .await
        .expect("the apply must end, not hang, when the connection is cut");
    setup.relay.disarm();
    let failure = outcome
        .failed
        .iter()
        .find(|(id, _)| id.name.ends_with("data.txt"))
        .map(|(_, m)| m.to_string())
        .expect("the upload failed");
    assert!(failure.contains("outside-executor"), "{failure}");
    assert_eq!(std::fs::read(&target).expect("still there"), old, "the old file must be intact");

    let (_, outcome) = setup.apply().await;
    assert!(outcome.is_success(), "{outcome:#?}");
    assert_eq!(std::fs::read(&target).expect("file"), big(2).into_bytes());
    let leftovers: Vec<_> = std::fs::read_dir(target.parent().expect("dir"))
        .expect("dir")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().contains("apimon-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    assert!(host_changes(&setup.plan().await.expect("plan")).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_key_mismatch_is_refused() {
    let Some(mut setup) = Setup::new().await else { return };
    setup.known_hosts = setup.world.known_hosts(&[
        (format!("[127.0.0.1]:{}", setup.bastion.port), &setup.bastion),
        (format!("[127.0.0.20]:{}", setup.relay.port), &setup.bastion),
        (format!("[127.0.0.30]:{}", setup.relay.port), &setup.bastion),
    ]);
    let error = setup.plan().await.expect_err("a changed host key must be refused");
    let text = format!("{:#}", anyhow::Error::from(error));
    assert!(text.contains("host key of outside-"), "{text}");
    assert!(text.contains("does not match the key recorded at"), "{text}");
    assert!(
        !setup.file("/etc/telegraf/telegraf.conf").exists(),
        "nothing may be written to an unverified host"
    );
    let _ = &setup.target;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_host_key_is_refused_too() {
    let Some(mut setup) = Setup::new().await else { return };
    setup.known_hosts =
        setup.world.known_hosts(&[(format!("[127.0.0.1]:{}", setup.bastion.port), &setup.bastion)]);
    let error = setup.plan().await.expect_err("an unknown host key must be refused");
    let text = format!("{:#}", anyhow::Error::from(error));
    assert!(text.contains("refused: no entry for outside-"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_bastion_is_a_clear_error_naming_it() {
    let Some(setup) = Setup::new().await else { return };
    let closed = crate::support::free_port();
    setup.repo.edit(
        "apimon.yaml",
        &format!("bastion_port: {}", setup.bastion.port),
        &format!("bastion_port: {closed}"),
    );
    let error = setup.plan().await.expect_err("no bastion");
    let text = format!("{:#}", anyhow::Error::from(error));
    assert!(
        text.contains(&format!("cannot connect to bastion outside-bastion (127.0.0.1:{closed})")),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_removed_from_the_repository_is_deleted_from_the_host() {
    let Some(setup) = Setup::new().await else { return };
    setup.repo.write("scenarios/playbooks/notes.txt", "kept while declared\n");
    assert!(setup.apply().await.1.is_success());
    let on_host = setup.file("/etc/apimon/scenarios/playbooks/notes.txt");
    assert!(on_host.is_file());
    // A file on the host that apimon never created stays, declared or not.
    let foreign = setup.file("/etc/apimon/scenarios/playbooks/made-by-hand.txt");
    std::fs::write(&foreign, "mine").expect("write");

    std::fs::remove_file(setup.repo.path().join("scenarios/playbooks/notes.txt")).expect("remove");
    let (plan, outcome) = setup.apply().await;
    assert_eq!(
        host_changes(&plan),
        vec![(
            "file".to_owned(),
            "outside-executor:/etc/apimon/scenarios/playbooks/notes.txt".to_owned(),
            Op::Delete
        )]
    );
    assert!(outcome.is_success(), "{outcome:#?}");
    assert!(!on_host.exists(), "the file is still on the host");
    assert!(foreign.is_file(), "a file apimon did not create was removed");
    assert!(host_changes(&setup.plan().await.expect("plan")).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_edited_by_hand_is_restored_and_its_unit_restarted() {
    let Some(setup) = Setup::new().await else { return };
    assert!(setup.apply().await.1.is_success());
    let telegraf = setup.file("/etc/telegraf/telegraf.conf");
    std::fs::write(&telegraf, "# edited by hand\n").expect("edit");
    let (plan, outcome) = setup.apply().await;
    assert!(outcome.is_success(), "{outcome:#?}");
    let changes = host_changes(&plan);
    assert!(
        changes.iter().any(|(kind, name, op)| kind == "unit"
            && name == "outside-executor:telegraf"
            && matches!(op, Op::Update { reason } if reason.contains("telegraf.conf"))),
        "{changes:?}"
    );
    assert!(std::fs::read_to_string(&telegraf).expect("file").contains("[agent]"));
    assert_eq!(setup.restarts("telegraf"), 2, "the restored file must restart its unit");
    assert_eq!(setup.restarts("apimon-executor"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_host_key_is_refused_even_when_it_is_also_listed() {
    let Some(mut setup) = Setup::new().await else { return };
    let text = std::fs::read_to_string(&setup.known_hosts).expect("known_hosts");
    let revoked = setup.world.dir.path().join("known_hosts_revoked");
    std::fs::write(&revoked, format!("{text}@revoked * {}\n", setup.target.public_key()))
        .expect("write");
    setup.known_hosts = revoked;
    let error = setup.plan().await.expect_err("a revoked key must be refused");
    let text = format!("{:#}", anyhow::Error::from(error));
    assert!(text.contains("the key is revoked at"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_records_of_a_removed_hosts_files_are_forgotten() {
    let Some(setup) = Setup::new().await else { return };
    assert!(setup.apply().await.1.is_success());
    let owned_on = |host: &str| {
        let state = state::read(setup.state_dir.path()).expect("state");
        state.environments["outside"]
            .owned
            .iter()
            .filter(|id| id.provider == ProviderKind::named("host") && id.name.starts_with(host))
            .count()
    };
    assert!(owned_on("outside-executor:") > 5);
    let hosts = std::fs::read_to_string(setup.repo.path().join("inventory/outside/hosts.yaml"))
        .expect("hosts");
    let start = hosts.find("  - name: outside-executor\n").expect("executor");
    setup.repo.write("inventory/outside/hosts.yaml", &hosts[..start]);
    setup.repo.write("scenarios/schedule.yaml", "schedule: []\n");
    let (_, outcome) = setup.apply().await;
    assert!(outcome.is_success(), "{outcome:#?}");
    assert_eq!(owned_on("outside-executor:"), 0, "records of the removed host's files remain");
    assert!(owned_on("outside-influxdb:") > 0, "records of the remaining host were dropped");
}
