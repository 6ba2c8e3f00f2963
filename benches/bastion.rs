//! What reaching InfluxDB through the environment's SSH bastion costs: the
//! InfluxDB provider's observation of a real influxd, directly and then
//! `via: bastion` (a real sshd, `direct-tcpip` channels over one shared
//! session), each repeated; prints the median per observation, the HTTP
//! requests each makes (the same both ways) and the latency added per
//! request; asserts nothing about speed.
//!
//! Run: `cargo bench --bench bastion` (needs `influxd` and `sshd`).

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use apimon::machine::Machine;
use apimon::model::secret::SecretStore;
use apimon::model::Secrets;
use apimon::providers::influxdb::InfluxdbProvider;
use apimon::providers::{Probe, Provider, Scope};

const ROUNDS: usize = 30;

#[tokio::main]
async fn main() {
    let Some(server) = support::influxdb::InfluxServer::start().await else {
        eprintln!("influxd is not installed; nothing measured");
        return;
    };
    let Some(world) = support::sshd::SshWorld::new() else {
        eprintln!("sshd is not installed; nothing measured");
        return;
    };
    let bastion = world.server("bastion");
    let known_hosts = world.known_hosts(&[(format!("[127.0.0.1]:{}", bastion.port), &bastion)]);
    let repo = support::TestRepo::with_files(support::fixture_files_without_grafana());
    repo.edit("apimon.yaml", "http://192.168.10.30:8086", &server.url());
    let ssh = format!(
        "    ssh:\n      user: {}\n      bastion_address: 127.0.0.1\n      bastion_port: {}\n",
        support::sshd::current_user(),
        bastion.port
    );
    repo.edit("apimon.yaml", "    location: outside\n", &format!("    location: outside\n{ssh}"));
    let secrets_file = repo.secrets_file(&support::fixture_secrets(), 0o600);
    let secrets = Secrets::Resolved(SecretStore::load(Some(&secrets_file), []).expect("secrets"));
    let machine = Machine {
        ssh_key: world.client_key(),
        known_hosts,
        executor_binary: None,
        clouds_file: None,
        release_key: None,
        on_bastion: false,
    };

    let mut medians = Vec::new();
    for via in ["direct", "bastion"] {
        let url_line = format!("      url: {}\n", server.url());
        if via == "direct" {
            repo.edit("apimon.yaml", &url_line, &format!("{url_line}      via: direct\n"));
        } else {
            repo.edit("apimon.yaml", "      via: direct\n", "      via: bastion\n");
        }
        let state = apimon::model::load_repository(repo.path()).expect("the repository loads");
        let env = &state.environments["outside"];
        let locators = apimon::providers::locate::Locators::new();
        let context = apimon::providers::Context {
            state: &state,
            secrets: &secrets,
            machine: &machine,
            locators: &locators,
        };
        let provider = InfluxdbProvider::for_environment(env, &context).expect("provider");
        let scope = Scope {
            env: "outside".into(),
            fingerprints: Default::default(),
            owned: Vec::new(),
            probe: Probe::default(),
            pass: 0,
        };
        // The first observation opens the session (through the bastion).
        let started = Instant::now();
        provider.observe(&scope).await.expect("observe");
        let first = started.elapsed();
        let mut samples: Vec<Duration> = Vec::new();
        let before = provider.requests();
        for _ in 0..ROUNDS {
            let started = Instant::now();
            provider.observe(&scope).await.expect("observe");
            samples.push(started.elapsed());
        }
        let requests = (provider.requests() - before) / ROUNDS;
        samples.sort();
        let median = samples[samples.len() / 2];
        println!(
            "{via:>7}: first observation {:>7.1} ms; then median {:>6.2} ms, slowest {:>6.2} ms; {requests} HTTP request(s) each",
            first.as_secs_f64() * 1e3,
            median.as_secs_f64() * 1e3,
            samples[samples.len() - 1].as_secs_f64() * 1e3
        );
        medians.push((median, requests));
    }
    let ((direct, requests), (tunnelled, _)) = (medians[0], medians[1]);
    let added = tunnelled.saturating_sub(direct).as_secs_f64() * 1e3 / requests.max(1) as f64;
    println!("added latency per request through the bastion: {added:.2} ms");
}
