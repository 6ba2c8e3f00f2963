//! Planning benchmark: generates a repository with about 10,000 resources,
//! then times loading, rendering and the pure plan (offline: all creates;
//! converged: all no-ops). Prints numbers; asserts nothing about speed.
//!
//! Run: `cargo bench --bench plan` (APIMON_BENCH_ENVS scales it).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use apimon::model::{self, Secrets};
use apimon::providers::registry::{Desired, Observed};
use apimon::providers::Model;
use apimon::render::{self, Templates};

/// The same corpus before the work on the core (commit 06e3b68), measured
/// on the 2-core machine in the sitting that made it faster: printed beside
/// the numbers, which vary by sitting (rerun the old commit to compare).
const BASELINE_LOAD_MS: f64 = 96.25;
const BASELINE_NOOP_MS: f64 = 19.53;
const BASELINE_DIFF_MS: f64 = 10.63;

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG7mB9bJ5cXf0cS2qkJ3pQy8nT4uV1wX2yZ3aB4cD5eF bench";

fn write(root: &Path, rel: &str, text: &str) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

/// One environment: 4 hosts, 100 security groups with 3 rules, 50
/// databases, 100 users with 2 grants each, Grafana with 20 dashboards.
fn generate(root: &Path, environments: usize) {
    let mut apimon = String::from("project: bench\nenvironments:\n");
    for e in 0..environments {
        let location = if e % 2 == 0 { "outside" } else { "inside" };
        let _ = write!(
            apimon,
            "  env{e}:\n    location: {location}\n    cloud: c{e}\n    influxdb: {{url: 'http://10.{e}.0.30:8086', admin_user: admin, results_database: db0, results_user: writer}}\n    grafana: {{url: 'http://10.{e}.0.40:3000', token: {{secret: token}}}}\n"
        );
        let dir = format!("inventory/env{e}");
        let mut hosts = String::from("hosts:\n");
        for (role, octet) in [("bastion", 10), ("executor", 20), ("influxdb", 30), ("grafana", 40)]
        {
            let _ = write!(hosts, "  - name: env{e}-{role}\n    role: {role}\n    flavor: s3.medium.2\n    image: Ubuntu 24.04\n    keypair: key\n    networks: [net]\n    address: 10.{e}.0.{octet}\n    security_groups: [sg0, sg1]\n");
            if role == "bastion" {
                hosts.push_str("    floating_ip: {network: ext}\n");
            }
            if role == "influxdb" {
                hosts.push_str("    volumes: [{name: data, size_gb: 50}]\n");
            }
        }
        write(root, &format!("{dir}/hosts.yaml"), &hosts);
        write(
            root,
            &format!("{dir}/keypairs.yaml"),
            &format!("keypairs:\n  - {{name: key, public_key: '{KEY}'}}\n"),
        );
        write(root, &format!("{dir}/networks.yaml"), &format!("networks:\n  - name: net\n    subnets: [{{name: subnet, cidr: 10.{e}.0.0/24}}]\n  - {{name: ext, external: true}}\n"));
        let mut groups = String::from("security_groups:\n");
        for g in 0..100 {
            let _ = write!(groups, "  - name: sg{g}\n    rules:\n      - {{protocol: tcp, ports: {}, remote_ip_prefix: 0.0.0.0/0}}\n      - {{protocol: udp, ports: '1000-2000', remote_ip_prefix: 10.0.0.0/8}}\n      - {{protocol: icmp, remote_group: sg0}}\n", 1000 + g);
        }
        write(root, &format!("{dir}/security_groups.yaml"), &groups);
        let mut influx = String::from("databases:\n");
        for d in 0..50 {
            let _ = write!(influx, "  - name: db{d}\n    retention_policies: [{{name: rp, duration: 4w, default: true}}]\n");
        }
        influx.push_str("users:\n  - {name: admin, admin: true, password: {secret: pw}}\n  - name: writer\n    password: {secret: pw}\n    grants: [{database: db0, privilege: WRITE}]\n  - name: reader\n    password: {secret: pw}\n    grants: [{database: db0, privilege: READ}]\n");
        for u in 0..97 {
            let _ = write!(influx, "  - name: user{u}\n    password: {{secret: pw}}\n    grants: [{{database: db{}, privilege: READ}}, {{database: db{}, privilege: WRITE}}]\n", u % 50, (u + 1) % 50);
        }
        write(root, &format!("{dir}/influxdb.yaml"), &influx);
        write(root, &format!("{dir}/grafana.yaml"), "folders: [{uid: bench, title: Bench}]\ndatasources: [{name: ds, database: db0, user: reader, default: true}]\n");
    }
    write(root, "apimon.yaml", &apimon);
    for d in 0..20 {
        write(root, &format!("dashboards/bench/d{d}.json"), &format!("{{\"uid\": \"d{d}\", \"title\": \"Dashboard {d}\", \"panels\": [{{\"type\": \"timeseries\", \"title\": \"p\"}}]}}"));
    }
}

/// The converged view: everything exists exactly as declared and is owned.
fn time<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut samples = Vec::with_capacity(runs);
    let mut last = None;
    for _ in 0..runs {
        let start = Instant::now();
        last = Some(f());
        samples.push(start.elapsed());
    }
    samples.sort();
    (samples[samples.len() / 2], last.expect("at least one run"))
}

fn main() {
    let environments: usize =
        std::env::var("APIMON_BENCH_ENVS").ok().and_then(|v| v.parse().ok()).unwrap_or(12);
    let dir = tempfile::tempdir().expect("temp dir");
    generate(dir.path(), environments);

    let (load, state) =
        time(5, || model::load_repository(dir.path()).expect("generated repository is valid"));
    let templates = Templates::new(&state.templates).expect("templates");
    let selected = state.select(None).expect("all");
    let (render, rendered) = time(5, || {
        render::render_all(&state, &selected, &templates, &Secrets::Redacted).expect("render")
    });
    let model = Model {
        state: &state,
        rendered: &rendered,
        secrets: &Secrets::Redacted,
        executor_binary: None,
    };
    let (build, desired) = time(5, || Desired::build(&model, &selected));
    let policies: BTreeMap<String, model::Policy> =
        selected.iter().map(|e| (e.name.clone(), e.policy)).collect();
    let resources = desired.len();

    let plan_against = |observed: &Observed| {
        apimon::plan::assemble(desired.diff(observed), Vec::new(), &policies, false).expect("plan")
    };
    let (offline, plan) = time(11, || plan_against(&Observed::default()));
    assert_eq!(plan.summary.create, resources);
    let observed = Observed::as_applied(&desired);
    let (noop, plan) = time(11, || plan_against(&observed));
    assert_eq!(plan.summary.unchanged, resources);
    let (diff_only, _) = time(11, || desired.diff(&observed).len());

    println!("resources: {resources} in {environments} environments");
    println!("baseline (the core before #30, this corpus, this machine, 2026-12-07): load + validate {BASELINE_LOAD_MS} ms, converged no-op plan {BASELINE_NOOP_MS} ms, diff {BASELINE_DIFF_MS} ms");
    println!("load + validate (median of 5):          {:>9.2} ms", load.as_secs_f64() * 1e3);
    println!("render (median of 5):                   {:>9.2} ms", render.as_secs_f64() * 1e3);
    println!("desired sets (median of 5):             {:>9.2} ms", build.as_secs_f64() * 1e3);
    println!("pure plan, offline (median of 11):      {:>9.2} ms", offline.as_secs_f64() * 1e3);
    println!("pure plan, converged no-op (median of 11): {:>6.2} ms", noop.as_secs_f64() * 1e3);
    println!(
        "  of which the diff (median of 11):        {:>6.2} ms",
        diff_only.as_secs_f64() * 1e3
    );
}
