//! No-op plan of an environment with 200 executor servers
//! (`APIMON_BENCH_SERVERS`) against a REAL OpenStack control plane
//! (tests/openstack/up.sh): the servers (with a keypair, a security group,
//! a network and a subnet) are created first, then the environment is
//! planned again and again. Prints wall time and API requests per plan;
//! asserts nothing about speed.
//!
//! The servers are declared to the provider directly, as its desired set:
//! what is measured is the provider's observe and plan, not the repository.
//!
//! Run: `cargo bench --bench openstack`. It uses the cloud in
//! `$APIMON_TEST_OPENSTACK` if set, else starts one with up.sh (installing
//! its Debian packages on first use) and stops it afterwards.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use apimon::apply::{execute, ApplyOptions, ChangeError};
use apimon::model::{Direction, Protocol, Remote, Rule};
use apimon::plan::{diff, DesiredItem, DesiredSet, Op, ProviderKind, ResourceId};
use apimon::providers::openstack::{rule_name, OpenstackProvider, OpenstackSpec, ServerSpec};
use apimon::providers::{Provider, Scope};

const PLANS: usize = 5;
const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG7mB9bJ5cXf0cS2qkJ3pQy8nT4uV1wX2yZ3aB4cD5eF bench";

/// The cloud, and whether this run started it (and so must stop it).
struct Cloud {
    dir: PathBuf,
    started_here: bool,
}

impl Cloud {
    fn get() -> Option<Self> {
        if let Some(dir) = std::env::var_os("APIMON_TEST_OPENSTACK") {
            return Some(Self { dir: PathBuf::from(dir), started_here: false });
        }
        let dir =
            std::env::temp_dir().join(format!("apimon-bench-openstack-{}", std::process::id()));
        let up = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openstack/up.sh");
        eprintln!("starting OpenStack with {} (about a minute) ...", up.display());
        let status = Command::new(up).arg(&dir).status().ok()?;
        status.success().then_some(Self { dir, started_here: true })
    }
}

impl Drop for Cloud {
    fn drop(&mut self) {
        if self.started_here {
            let down = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openstack/down.sh");
            let _ = Command::new(down).arg(&self.dir).status();
        }
    }
}

fn id(env: &str, kind: &'static str, name: &str) -> ResourceId {
    ResourceId::new(env, ProviderKind::named("openstack"), kind, name)
}

/// A keypair, a security group with two rules, a network with a subnet, and the servers.
fn desired(env: &str, servers: usize) -> DesiredSet<OpenstackSpec> {
    let mut set = DesiredSet::new();
    let mut put = |id: ResourceId, spec, depends_on| {
        set.insert(id, DesiredItem::new(spec, depends_on));
    };
    if servers == 0 {
        return set;
    }
    let (key, group, network, subnet) =
        (format!("{env}-key"), format!("{env}-sg"), format!("{env}-net"), format!("{env}-subnet"));
    put(
        id(env, "keypair", &key),
        OpenstackSpec::Keypair(apimon::providers::openstack::Keypair {
            public_key: KEY.to_owned(),
        }),
        vec![],
    );
    put(
        id(env, "security_group", &group),
        OpenstackSpec::SecurityGroup(apimon::providers::openstack::SecurityGroup {
            description: "bench".to_owned(),
        }),
        vec![],
    );
    for rule in [
        Rule {
            direction: Direction::Ingress,
            protocol: Protocol::Tcp,
            ports: Some((22, 22)),
            remote: Remote::Cidr("0.0.0.0/0".parse().expect("cidr")),
        },
        Rule {
            direction: Direction::Ingress,
            protocol: Protocol::Icmp,
            ports: None,
            remote: Remote::Any,
        },
    ] {
        put(
            id(env, "security_group_rule", &rule_name(&group, &rule)),
            OpenstackSpec::SecurityGroupRule(apimon::providers::openstack::SecurityGroupRule {
                group: group.clone(),
                rule,
            }),
            vec![id(env, "security_group", &group)],
        );
    }
    put(
        id(env, "network", &network),
        OpenstackSpec::Network(apimon::providers::openstack::Network {}),
        vec![],
    );
    put(
        id(env, "subnet", &subnet),
        OpenstackSpec::Subnet(apimon::providers::openstack::Subnet {
            network: network.clone(),
            cidr: "10.77.0.0/16".to_owned(),
            gateway_ip: None,
            dns_nameservers: vec![],
            enable_dhcp: true,
        }),
        vec![id(env, "network", &network)],
    );
    let user_data = "#cloud-config\n".to_owned();
    let user_data_sha256 = "bench-user-data".to_owned();
    for n in 0..servers {
        let spec = ServerSpec {
            flavor: "m1.small".to_owned(),
            image: "Ubuntu 24.04".to_owned(),
            keypair: key.clone(),
            availability_zone: None,
            networks: vec![network.clone()],
            address: None,
            security_groups: BTreeSet::from([group.clone()]),
            metadata: BTreeMap::from([("index".to_owned(), n.to_string())]),
            user_data_sha256: user_data_sha256.clone(),
            user_data: user_data.clone(),
            error: None,
            resize: false,
            resize_pending: false,
            building: false,
            role: Some(apimon::model::Role::Executor),
            root_volume_gb: None,
        };
        put(
            id(env, "server", &format!("{env}-executor-{n:03}")),
            OpenstackSpec::Server(spec),
            vec![
                id(env, "keypair", &key),
                id(env, "security_group", &group),
                id(env, "network", &network),
                id(env, "subnet", &subnet),
            ],
        );
    }
    set
}

fn scope(env: &str, owned: &DesiredSet<OpenstackSpec>) -> Scope {
    Scope {
        env: env.to_owned(),
        fingerprints: BTreeMap::new(),
        owned: owned.keys().cloned().collect(),
        probe: apimon::providers::Probe::default(),
        pass: 0,
    }
}

/// Plans and applies `want`; returns the number of changes applied.
async fn converge(
    env: &str,
    clouds: &Path,
    want: &DesiredSet<OpenstackSpec>,
    owned: &DesiredSet<OpenstackSpec>,
) -> usize {
    let provider = Arc::new(
        OpenstackProvider::open(env, "apimon-test", want, Some(clouds))
            .expect("clouds.yaml")
            .expect("cloud apimon-test"),
    );
    // The scope's owned list speaks for the keypair; the rest carry marks.
    let observed = provider.observe(&scope(env, owned)).await.expect("observe");
    let changes = diff(want, &observed, true);
    let options = ApplyOptions { parallelism: 10, ..ApplyOptions::default() };
    let outcome = execute(
        &changes,
        &options,
        move |change| {
            let provider = Arc::clone(&provider);
            async move {
                provider
                    .apply(&change)
                    .await
                    .map_err(|e| ChangeError::from_error(OpenstackProvider::classify(&e), e))
            }
        },
        |_| {},
        &CancellationToken::new(),
    )
    .await;
    assert!(outcome.is_success(), "converging failed: {:?}", outcome.failed);
    changes.iter().filter(|c| c.op != Op::NoOp).count()
}

#[tokio::main]
async fn main() {
    let Some(cloud) = Cloud::get() else {
        eprintln!("no OpenStack control plane could be started; nothing measured");
        return;
    };
    let clouds = cloud.dir.join("clouds.yaml");
    let env = format!("bench{}", std::process::id());
    let servers: usize =
        std::env::var("APIMON_BENCH_SERVERS").ok().and_then(|n| n.parse().ok()).unwrap_or(200);
    let want = desired(&env, servers);

    let started = Instant::now();
    let applied = converge(&env, &clouds, &want, &want).await;
    println!(
        "converge: {applied} changes ({servers} servers) in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let mut cold = Vec::new();
    let mut warm = Vec::new();
    let mut requests = Vec::new();
    for _ in 0..PLANS {
        let provider = OpenstackProvider::open(&env, "apimon-test", &want, Some(&clouds))
            .expect("clouds.yaml")
            .expect("cloud");
        // Cold: authentication and version discovery, then the plan.
        let begin = Instant::now();
        let observed = provider.observe(&scope(&env, &want)).await.expect("observe");
        let changes = diff(&want, &observed, true);
        cold.push(begin.elapsed());
        assert!(changes.iter().all(|c| c.op == Op::NoOp), "not converged");
        let before = provider.requests();
        // Warm: the same provider again (what the daemon's drift check does).
        let begin = Instant::now();
        let observed = provider.observe(&scope(&env, &want)).await.expect("observe");
        let changes = diff(&want, &observed, true);
        warm.push(begin.elapsed());
        requests.push(provider.requests() - before);
        assert_eq!(changes.len(), want.len());
    }
    let millis = |d: &Duration| d.as_secs_f64() * 1000.0;
    let median = |mut v: Vec<Duration>| {
        v.sort();
        millis(&v[v.len() / 2])
    };
    println!(
        "no-op plan of {} resources ({servers} servers), median of {PLANS}: {:.0} ms with authentication, {:.0} ms on a connected session; {} API requests per plan (after authentication)",
        want.len(),
        median(cold),
        median(warm),
        requests.iter().max().copied().unwrap_or_default()
    );

    // Leave the cloud as it was.
    let started = Instant::now();
    let removed = converge(&env, &clouds, &desired(&env, 0), &want).await;
    println!("cleanup: {removed} deletions in {:.1} s", started.elapsed().as_secs_f64());

    let environments: usize =
        std::env::var("APIMON_BENCH_SHARED_ENVS").ok().and_then(|n| n.parse().ok()).unwrap_or(17);
    if environments > 0 {
        shared_project(&clouds, &env, environments, 50).await;
    }
}

/// `servers` servers spread over `environments` environments of one cloud
/// project, planned together as a live plan does (one observation pass:
/// the environments share each list).
async fn shared_project(clouds: &Path, base: &str, environments: usize, servers: usize) {
    let names: Vec<String> = (0..environments).map(|e| format!("{base}s{e}")).collect();
    let wants: Vec<DesiredSet<OpenstackSpec>> = names
        .iter()
        .enumerate()
        .map(|(e, name)| {
            desired(name, servers / environments + usize::from(e < servers % environments))
        })
        .collect();
    let started = Instant::now();
    for (name, want) in names.iter().zip(&wants) {
        converge(name, clouds, want, want).await;
    }
    println!(
        "converge: {servers} servers in {environments} environments of one project in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let mut times = Vec::new();
    let mut requests = Vec::new();
    for _ in 0..PLANS {
        let providers: Vec<Arc<OpenstackProvider>> = names
            .iter()
            .zip(&wants)
            .map(|(name, want)| {
                let provider = OpenstackProvider::open(name, "apimon-test", want, Some(clouds));
                Arc::new(provider.expect("clouds.yaml").expect("cloud"))
            })
            .collect();
        // Authenticated once (the session is shared by the credentials).
        providers[0].observe(&scope(&names[0], &wants[0])).await.expect("observe");
        let before: usize = providers.iter().map(|p| p.requests()).sum();
        let pass = apimon::providers::registry::next_pass();
        let begin = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for ((provider, name), want) in providers.iter().zip(&names).zip(&wants) {
            let (provider, want) = (Arc::clone(provider), want.clone());
            let scope = Scope { pass, ..scope(name, &want) };
            tasks.spawn(async move {
                let observed = provider.observe(&scope).await.expect("observe");
                assert!(diff(&want, &observed, true).iter().all(|c| c.op == Op::NoOp));
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.expect("observe task");
        }
        times.push(begin.elapsed());
        requests.push(providers.iter().map(|p| p.requests()).sum::<usize>() - before);
    }
    times.sort();
    println!(
        "no-op plan of {environments} environments ({servers} servers) in one project, median of {PLANS}: {:.0} ms on a connected session; {} API requests per plan",
        times[times.len() / 2].as_secs_f64() * 1000.0,
        requests.iter().max().copied().unwrap_or_default()
    );
    for (name, want) in names.iter().zip(&wants) {
        converge(name, clouds, &desired(name, 0), want).await;
    }
}
