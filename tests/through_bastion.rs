//! Endpoints on an environment's private network, reached the way a
//! workstation reaches a real cloud's: only through the SSH bastion. A
//! network namespace holds the environment — a real influxd and the
//! Grafana double listening on 127.x addresses inside it, sshd for the
//! bastion and the hosts — and nothing routes into it; the bastion's sshd
//! (in inetd mode, inside the namespace) is reached through a listener on
//! this machine's loopback. `apply` from outside converges InfluxDB,
//! Grafana and the hosts; the proof is positive: the bastion's log shows
//! the `direct-tcpip` channels to InfluxDB and Grafana over one session,
//! influxd logs its peers as the namespace's own loopback, and the same
//! port outside the namespace leads only to the test's own listener. (The
//! issue's topology joins the namespace with a veth pair on loopback-range
//! addresses; the root namespace's own 127.0.0.0/8 route would take that
//! traffic, so the one way in here is the bastion's listener, and nothing
//! else is routed.)

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use apimon::apply::ApplyOptions;
use apimon::machine::Machine;
use apimon::plan::Op;

use crate::support::grafana::{GrafanaDouble, Version};
use crate::support::harness::Harness;
use crate::support::netns::{InetdSshd, NetNs};
use crate::support::sshd::SshWorld;
use crate::support::{fixture_files, free_port, require_binary, TestRepo};

struct World {
    client: SshWorld,
    sshd: InetdSshd,
    ns: NetNs,
    influxd: Child,
    influx_port: u16,
    /// The same port out here, held by the test for its whole run.
    outside: std::net::TcpListener,
    bastion_port: u16,
    influx_log: PathBuf,
    grafana: GrafanaDouble,
    root: tempfile::TempDir,
    repo: TestRepo,
    secrets_file: PathBuf,
    known_hosts: PathBuf,
    binary: PathBuf,
    state: tempfile::TempDir,
}

impl Drop for World {
    fn drop(&mut self) {
        crate::support::host::stop_units(&self.root.path().join(".tools"));
        crate::support::process::stop(&mut self.influxd);
    }
}

impl World {
    async fn new() -> Option<Self> {
        let influxd = require_binary("influxd", "influxdb")?;
        let client = SshWorld::new()?;
        let ns = NetNs::new()?;
        let dir = client.dir.path().to_owned();
        let mut sshd =
            InetdSshd::new(&dir.join("inetd"), &client.client_key().with_extension("pub"))?;

        // InfluxDB inside, on a port that is free out here too.
        // InfluxDB's port inside is one this test holds out here, so
        // nothing else can take it meanwhile.
        let outside = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let influx_port = outside.local_addr().expect("address").port();
        let data = dir.join("influxdb");
        std::fs::create_dir_all(&data).expect("influx dir");
        let config = format!(
            "reporting-disabled = true\nbind-address = \"127.0.0.1:{rpc}\"\n[meta]\n  dir = \"{d}/meta\"\n[data]\n  dir = \"{d}/data\"\n  wal-dir = \"{d}/wal\"\n  query-log-enabled = false\n[http]\n  bind-address = \"127.0.0.1:{influx_port}\"\n  auth-enabled = true\n  log-enabled = true\n[monitor]\n  store-enabled = false\n",
            rpc = free_port(),
            d = data.display()
        );
        std::fs::write(data.join("influxdb.conf"), config).expect("influx config");
        let influx_log = data.join("influxd.log");
        let mut command = ns.command(&influxd);
        command
            .arg("-config")
            .arg(data.join("influxdb.conf"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&influx_log).expect("log"));
        let influxd = crate::support::process::spawn(&mut command, "influxd in a namespace");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ns.answers(&format!("127.0.0.1:{influx_port}")) {
            assert!(
                Instant::now() < deadline,
                "influxd did not start; see {}",
                influx_log.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        // The Grafana double inside, at the grafana host's address.
        let grafana =
            GrafanaDouble::start_on(ns.listen("127.0.0.40:3000"), "glsa_token", Version::V11Late);

        // The bastion: reached from out here only. The hosts: inside.
        let bastion = std::net::TcpListener::bind("127.0.0.1:0").expect("bastion listener");
        let bastion_port = bastion.local_addr().expect("address").port();
        sshd.serve(bastion, &ns);
        for address in ["127.0.0.20", "127.0.0.30", "127.0.0.40"] {
            sshd.serve(ns.listen(&format!("{address}:22")), &ns);
        }
        let key = sshd.public_key();
        let known_hosts = dir.join("known_hosts");
        let lines: String = [
            format!("[127.0.0.1]:{bastion_port}"),
            "127.0.0.20".into(),
            "127.0.0.30".into(),
            "127.0.0.40".into(),
        ]
        .iter()
        .map(|pattern| format!("{pattern} {key}\n"))
        .collect();
        std::fs::write(&known_hosts, lines).expect("known_hosts");

        let root = tempfile::tempdir().expect("root");
        crate::support::host::install_stand_ins(root.path());
        crate::support::host::ensure_group("apimon");
        crate::support::host::ensure_group("telegraf");
        crate::support::host::ensure_group("grafana");

        let repo = TestRepo::with_files(fixture_files());
        repo.edit(
            "apimon.yaml",
            "      url: http://192.168.10.30:8086\n",
            &format!("      url: http://127.0.0.1:{influx_port}\n      via: bastion\n"),
        );
        repo.edit(
            "apimon.yaml",
            "      url: http://192.168.10.40:3000\n",
            "      url: http://127.0.0.40:3000\n      via: bastion\n",
        );
        let ssh = crate::support::host::stand_in_ssh(root.path(), bastion_port, 22);
        repo.edit(
            "apimon.yaml",
            "    location: outside\n",
            &format!("    location: outside\n{ssh}"),
        );
        crate::support::host::outside_on_loopback(&repo, &["10", "20", "30", "40"]);
        let secrets = crate::support::outside_secrets();
        let secrets_file = repo.secrets_file(&secrets, 0o600);
        let binary = dir.join("apimon-binary");
        std::fs::write(&binary, crate::support::host::fake_apimon("stand-in")).expect("binary");
        Some(Self {
            client,
            sshd,
            ns,
            influxd,
            influx_port,
            outside,
            bastion_port,
            influx_log,
            grafana,
            root,
            repo,
            secrets_file,
            known_hosts,
            binary,
            state: tempfile::tempdir().expect("state"),
        })
    }

    fn harness(&self) -> Harness {
        Harness {
            machine: Machine {
                ssh_key: self.client.client_key(),
                known_hosts: self.known_hosts.clone(),
                executor_binary: Some(self.binary.clone()),
                clouds_file: None,
                release_key: None,
                on_bastion: false,
            },
            ..Harness::outside(self.repo.path(), &self.secrets_file, self.state.path())
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influxdb_grafana_and_the_hosts_on_a_private_network_converge_through_the_bastion() {
    let Some(world) = World::new().await else { return };
    let options = ApplyOptions {
        parallelism: 4,
        max_attempts: 2,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(50),
    };
    let probe = apimon::providers::Probe::default();
    let (plan, outcome) = world.harness().apply(&options, probe, || {}, |_| {}).await;
    let applied = |provider: &str| {
        outcome.applied.iter().filter(|id| id.provider.as_str() == provider).count()
    };
    // OpenStack is out of reach here (no clouds.yaml): everything else converges.
    let failed: Vec<_> = outcome
        .failed
        .iter()
        .filter(|(id, _)| id.provider.as_str() != "openstack")
        .map(|(id, e)| format!("{id}: {e}"))
        .collect();
    assert!(failed.is_empty(), "{failed:#?}");
    assert!(
        applied("influxdb") > 0 && applied("grafana") > 0 && applied("host") > 0,
        "{outcome}\n{plan:?}"
    );
    let probe = apimon::providers::Probe::default();
    let (again, _) = world.harness().try_plan(probe).await.expect("plan");
    let left: Vec<_> = again
        .changes
        .iter()
        .filter(|c| c.op != Op::NoOp && c.id.provider.as_str() != "openstack")
        .map(|c| c.id.to_string())
        .collect();
    assert!(left.is_empty(), "not converged through the bastion: {left:?}");

    // The way it went: channels through the bastion to both endpoints …
    let log = world.sshd.log();
    let influx_target = format!("target 127.0.0.1 port {}", world.influx_port);
    assert!(log.contains("direct-tcpip") && log.contains(&influx_target), "{log}");
    assert!(log.contains("target 127.0.0.40 port 3000"), "{log}");
    // … all over one SSH session to the bastion, shared by the endpoints
    // and the hosts' connections.
    let sessions = log
        .lines()
        .filter(|l| {
            l.contains("Connection from") && l.contains(&format!(" port {}", world.bastion_port))
        })
        .count();
    assert_eq!(sessions, 1, "{log}");
    // … influxd heard them from the namespace's own loopback …
    let heard = std::fs::read_to_string(&world.influx_log).unwrap_or_default();
    assert!(heard.lines().any(|l| l.contains("127.0.0.1 - admin")), "{heard}");
    assert!(world.grafana.requests() > 0);
    // … and out here the same port leads to the test's own listener, not
    // to influxd: the connection made is the one the test accepts.
    let stream = std::net::TcpStream::connect(("127.0.0.1", world.influx_port)).expect("connect");
    let (_, peer) = world.outside.accept().expect("accept");
    assert_eq!(peer, stream.local_addr().expect("address"));
    assert!(world.ns.answers(&format!("127.0.0.1:{}", world.influx_port)));
}
