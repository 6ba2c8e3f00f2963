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

use std::path::Path;
use std::time::Duration;

use apimon::apply::ApplyOptions;
use apimon::plan::{Op, ProviderKind};
use apimon::state;

use crate::support::host::{host_changes, mode_owner, Setup};

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
    let packages = std::fs::read_to_string(setup.root.path().join(".tools/packages.log"))
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

const KEY: &str = "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmQINBGHtest0BEADkeyfortheapimontestsuiteonly\n=abcd\n-----END PGP PUBLIC KEY BLOCK-----\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vendor_apt_repository_gets_a_keyring_and_a_signed_source_before_its_packages() {
    let Some(setup) = Setup::new().await else { return };
    let apimon_yaml = std::fs::read_to_string(setup.repo.path().join("apimon.yaml")).expect("read");
    let repositories = "apt_repositories:\n  influxdata:\n    uri: https://repos.influxdata.com/debian\n    suite: stable\n    key: apt/influxdata-archive.asc\n    packages:\n      executor: [telegraf]\n      influxdb: [influxdb2-cli]\n";
    setup.repo.write("apt/influxdata-archive.asc", KEY);
    setup.repo.write("apimon.yaml", &format!("{apimon_yaml}{repositories}"));
    let (plan, outcome) = setup.apply().await;
    assert!(outcome.is_success(), "{outcome:#?}");
    let repository_changes = |plan: &apimon::reconcile::Plan| {
        host_changes(plan)
            .into_iter()
            .filter(|(kind, ..)| kind == "apt_repository")
            .collect::<Vec<_>>()
    };
    assert_eq!(repository_changes(&plan).len(), 2, "one per host that installs from it");

    let keyring = setup.file("/etc/apt/keyrings/apimon-influxdata.asc");
    assert_eq!(std::fs::read_to_string(&keyring).expect("keyring"), KEY);
    assert_eq!(mode_owner(&keyring), (0o644, "root:root".to_owned()));
    assert_eq!(
        std::fs::read_to_string(setup.file("/etc/apt/sources.list.d/apimon-influxdata.sources"))
            .expect("source entry"),
        "# Written by apimon (apt_repositories.influxdata in apimon.yaml).\nTypes: deb\nURIs: https://repos.influxdata.com/debian\nSuites: stable\nComponents: main\nSigned-By: /etc/apt/keyrings/apimon-influxdata.asc\n"
    );
    // The package lists are refreshed before a package from it is installed.
    let log = std::fs::read_to_string(setup.root.path().join(".tools/packages.log")).expect("log");
    let lines: Vec<&str> = log.lines().collect();
    let first_update = lines.iter().position(|l| *l == "update").expect("an update");
    for package in ["telegraf", "influxdb2-cli"] {
        let installed = lines.iter().position(|l| *l == package).expect(package);
        assert!(first_update < installed, "{package} installed before the update: {log}");
    }
    assert!(host_changes(&setup.plan().await.expect("plan")).is_empty(), "spurious diff");

    // A rotated key: the repositories change and the lists are refreshed;
    // nothing is installed again.
    let rotated = KEY.replace("onlY", "only2").replace("keyfor", "newkeyfor");
    setup.repo.write("apt/influxdata-archive.asc", &rotated);
    let (plan, outcome) = setup.apply().await;
    assert!(outcome.is_success(), "{outcome:#?}");
    assert_eq!(
        host_changes(&plan).iter().map(|(kind, ..)| kind.as_str()).collect::<Vec<_>>(),
        vec!["apt_repository", "apt_repository"],
        "{:?}",
        host_changes(&plan)
    );
    assert_eq!(std::fs::read_to_string(&keyring).expect("keyring"), rotated);
    let log = std::fs::read_to_string(setup.root.path().join(".tools/packages.log")).expect("log");
    assert_eq!(log.lines().filter(|l| *l == "telegraf").count(), 1, "{log}");

    // No longer declared: removed, lists refreshed.
    setup.repo.write("apimon.yaml", &apimon_yaml);
    let (plan, outcome) = setup.apply().await;
    assert!(outcome.is_success(), "{outcome:#?}");
    assert!(
        repository_changes(&plan).iter().all(|(_, _, op)| *op == Op::Delete)
            && repository_changes(&plan).len() == 2,
        "{:?}",
        host_changes(&plan)
    );
    assert!(!keyring.exists());
    assert!(!setup.file("/etc/apt/sources.list.d/apimon-influxdata.sources").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grafana_is_installed_from_its_vendor_configured_and_reached_with_the_admin_password() {
    use crate::support::grafana::{GrafanaDouble, Version};
    let Some(setup) = Setup::new().await else { return };
    crate::support::host::ensure_group("grafana");
    // The Grafana API is the double (no Grafana server here); the host side is real.
    let grafana = GrafanaDouble::start("adm1n-pw", Version::V11Late).await;
    let hosts = std::fs::read_to_string(setup.repo.path().join("inventory/outside/hosts.yaml"))
        .expect("hosts");
    setup.repo.write(
        "inventory/outside/hosts.yaml",
        &format!("{hosts}  - name: outside-grafana\n    role: grafana\n    flavor: s3.medium.2\n    image: Ubuntu 24.04\n    keypair: outside-key\n    networks: [outside-net]\n    address: 127.0.0.40\n    volumes:\n      - {{name: data, size_gb: 10}}\n"),
    );
    setup.repo.edit(
        "apimon.yaml",
        "    location: outside\n",
        &format!("    location: outside\n    grafana:\n      url: {}\n      admin_password: {{secret: outside_grafana_admin_password}}\n", grafana.url),
    );
    setup.repo.write(
        "inventory/outside/grafana.yaml",
        "folders:\n  - {uid: apimon, title: API Monitoring}\ndatasources:\n  - {name: apimon-outside, database: apimon, user: grafana, default: true}\n",
    );
    let apimon_yaml = std::fs::read_to_string(setup.repo.path().join("apimon.yaml")).expect("read");
    setup.repo.write("apt/grafana.asc", KEY);
    setup.repo.write(
        "apimon.yaml",
        &format!("{apimon_yaml}apt_repositories:\n  grafana:\n    uri: https://apt.grafana.com\n    suite: stable\n    key: apt/grafana.asc\n    packages:\n      grafana: [grafana]\n"),
    );
    let secrets = std::fs::read_to_string(&setup.secrets_file).expect("secrets");
    std::fs::write(
        &setup.secrets_file,
        format!("{secrets}outside_grafana_admin_password: adm1n-pw\n"),
    )
    .expect("secrets");

    let (_, outcome) = setup.apply().await;
    assert!(outcome.is_success(), "{outcome:#?}");
    let ini = setup.file("/etc/grafana/grafana.ini");
    let text = std::fs::read_to_string(&ini).expect("grafana.ini uploaded");
    assert_eq!(mode_owner(&ini), (0o640, "root:grafana".to_owned()), "it holds the admin password");
    for line in [
        "admin_password = \"\"\"adm1n-pw\"\"\"".to_owned(),
        "allow_sign_up = false".to_owned(),
        format!("root_url = {}", grafana.url),
        "data = /var/lib/grafana".to_owned(),
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?} missing from:\n{text}");
    }
    assert!(setup.file("/etc/apt/keyrings/apimon-grafana.asc").is_file());
    let log = std::fs::read_to_string(setup.root.path().join(".tools/packages.log")).expect("log");
    let lines: Vec<&str> = log.lines().collect();
    let update = lines.iter().position(|l| *l == "update").expect("lists refreshed");
    let installed = lines.iter().position(|l| *l == "grafana").expect("grafana installed");
    assert!(update < installed, "{log}");
    assert_eq!(setup.restarts("grafana-server"), 1);
    // Its data volume is mounted where grafana.ini keeps the database.
    let prepared = setup.prepare().expect("prepare");
    let user_data = &prepared.rendered.hosts["outside-grafana"].user_data;
    assert!(user_data.contains("\"/var/lib/grafana\""), "{user_data}");
    // apimon reached the API with the admin password alone.
    assert!(grafana.datasource("apimon-outside").is_some());
    assert!(grafana.dashboard("apimon-scenarios").is_some());
    let plan = setup.plan().await.expect("plan");
    assert!(
        !plan.summary.has_changes(),
        "spurious diff: {:?}",
        plan.changes
            .iter()
            .filter(|c| c.op != Op::NoOp)
            .map(|c| c.id.to_string())
            .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_binary_that_does_not_start_never_replaces_the_running_one() {
    let Some(setup) = Setup::new().await else { return };
    assert!(setup.apply().await.1.is_success());
    let installed = setup.file("/usr/local/bin/apimon");
    let running = std::fs::read(&installed).expect("binary");
    // A build for the wrong machine, say: it does not start.
    std::fs::write(&setup.binary, b"#!/bin/sh\necho 'cannot execute binary file' >&2\nexit 126\n")
        .expect("binary");
    let (_, outcome) = setup.apply().await;
    let failure = binary_failure(&outcome, "the binary change failed");
    assert!(failure.contains("does not pass its start check"), "{failure}");
    assert!(failure.contains("cannot execute binary file"), "{failure}");
    assert_eq!(
        std::fs::read(&installed).expect("binary"),
        running,
        "the running binary was replaced"
    );
    assert_eq!(
        setup.restarts("apimon-executor"),
        1,
        "restarted for a binary that was not installed"
    );
    let leftovers: Vec<_> = std::fs::read_dir(installed.parent().expect("dir"))
        .expect("dir")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().contains("apimon-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_release_is_downloaded_checked_and_installed_and_another_file_never() {
    let Some(setup) = Setup::new().await else { return };
    let releases = tempfile::tempdir().expect("releases");
    let Some(server) = crate::support::FileServer::start(releases.path()) else { return };
    let release = crate::support::host::fake_apimon("9.9.9");
    std::fs::write(releases.path().join("apimon-9.9.9"), &release).expect("release");
    let sha256 = apimon::digest::sha256_hex(&release);
    let url = format!("http://127.0.0.1:{}/apimon-9.9.9", server.port);
    setup.repo.edit(
        "apimon.yaml",
        "project: ",
        &format!("apimon_binary:\n  url: {url}\n  sha256: {sha256}\nproject: "),
    );
    let (_, outcome) = setup.apply().await;
    assert!(outcome.is_success(), "{outcome}");
    let installed = setup.file("/usr/local/bin/apimon");
    assert_eq!(std::fs::read(&installed).expect("installed"), release);
    assert!(setup.plan().await.expect("plan").changes.iter().all(|c| c.op == Op::NoOp));

    // The file at the URL is not the one apimon.yaml names: refused.
    std::fs::write(releases.path().join("apimon-9.9.9"), b"#!/bin/sh\necho tampered\n")
        .expect("tampered");
    let other = apimon::digest::sha256_hex(&crate::support::host::fake_apimon("9.9.10"));
    setup.repo.edit("apimon.yaml", &sha256, &other);
    let (_, outcome) = setup.apply().await;
    let failure = binary_failure(&outcome, "the download was refused");
    assert!(failure.contains(&format!("apimon_binary {url}")), "{failure}");
    assert!(failure.contains(&format!("not the {other} apimon.yaml names")), "{failure}");
    assert_eq!(
        std::fs::read(&installed).expect("installed"),
        release,
        "a wrong file was installed"
    );
}

/// The error of the change to the executor's apimon binary in `outcome`.
fn binary_failure(outcome: &apimon::apply::Outcome, what: &str) -> String {
    outcome
        .failed
        .iter()
        .find(|(id, _)| id.name.ends_with(":/usr/local/bin/apimon"))
        .map(|(_, error)| error.to_string())
        .unwrap_or_else(|| panic!("{what}: no failure of the binary change in {outcome}"))
}

/// `file` signed with `key` in the apimon-release namespace: `file.sig`.
fn sign(file: &std::path::Path, key: &std::path::Path, keygen: &std::path::Path) {
    let signed = std::process::Command::new(keygen)
        .args(["-Y", "sign", "-n", "apimon-release", "-f"])
        .arg(key)
        .arg(file)
        .output()
        .expect("ssh-keygen -Y sign");
    assert!(signed.status.success(), "{}", String::from_utf8_lossy(&signed.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_release_key_only_a_release_it_signed_is_installed() {
    let Some(setup) = Setup::new().await else { return };
    let Some(keygen) = crate::support::require_binary("ssh-keygen", "openssh-client") else {
        return;
    };
    let releases = tempfile::tempdir().expect("releases");
    let Some(server) = crate::support::FileServer::start(releases.path()) else { return };
    let keys = tempfile::tempdir().expect("keys");
    let Some((trusted, trusted_public)) = crate::support::ssh_key_pair(keys.path(), "release")
    else {
        return;
    };
    let Some((other, _)) = crate::support::ssh_key_pair(keys.path(), "someone-else") else {
        return;
    };
    let trusted_file = keys.path().join("release_key.pub");
    std::fs::write(&trusted_file, trusted_public).expect("release key");
    let release = crate::support::host::fake_apimon("9.9.9");
    let file = releases.path().join("apimon-9.9.9");
    std::fs::write(&file, &release).expect("release");
    let sha256 = apimon::digest::sha256_hex(&release);
    let base = format!("http://127.0.0.1:{}", server.port);
    let mut harness = setup.harness();
    harness.machine.release_key = Some(trusted_file);
    let options = apimon::apply::ApplyOptions {
        parallelism: 4,
        max_attempts: 1,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(50),
    };
    let apply = || harness.apply(&options, apimon::providers::Probe::default(), || {}, |_| {});
    let installed = setup.file("/usr/local/bin/apimon");

    // No signature at all: refused.
    setup.repo.edit(
        "apimon.yaml",
        "project: ",
        &format!("apimon_binary:\n  url: {base}/apimon-9.9.9\n  sha256: {sha256}\nproject: "),
    );
    let (_, outcome) = apply().await;
    let failure = binary_failure(&outcome, "an unsigned release was refused");
    assert!(failure.contains("no signature_url: only signed releases are installed"), "{failure}");
    // Signed by another key: refused.
    sign(&file, &other, &keygen);
    setup.repo.edit(
        "apimon.yaml",
        &format!("sha256: {sha256}\n"),
        &format!("sha256: {sha256}\n  signature_url: {base}/apimon-9.9.9.sig\n"),
    );
    let (_, outcome) = apply().await;
    let failure = binary_failure(&outcome, "a release signed by another key was refused");
    assert!(failure.contains("not signed by the release key"), "{failure}");
    assert_ne!(std::fs::read(&installed).unwrap_or_default(), release, "installed unsigned");
    // Signed by the release key: installed.
    std::fs::remove_file(releases.path().join("apimon-9.9.9.sig")).expect("rm");
    sign(&file, &trusted, &keygen);
    // The refusal above is remembered per process for the same signature
    // URL and key; a new signature file is another download, by another URL.
    std::fs::rename(releases.path().join("apimon-9.9.9.sig"), releases.path().join("good.sig"))
        .expect("rename");
    setup.repo.edit("apimon.yaml", "apimon-9.9.9.sig", "good.sig");
    let (_, outcome) = apply().await;
    assert!(outcome.is_success(), "{outcome}");
    assert_eq!(std::fs::read(&installed).expect("installed"), release);
}
