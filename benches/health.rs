//! One evaluation of the health rules for 70 services × 3 environments
//! (the size of the successor's production configuration) against a REAL
//! InfluxDB holding a minute of requests for each: the number of queries
//! (one per flag template and environment, whatever the number of flags
//! and services) and the time.
//!
//! Prints the numbers; asserts nothing about speed.
//! Run: `cargo bench --bench health` (needs `influxd`, Debian package influxdb).

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use apimon::health::evaluate::{evaluate, Source};
use apimon::providers::influxdb::client::{Client, Credentials};

const SERVICES: usize = 70;
const ENVIRONMENTS: [&str; 3] = ["outside", "inside", "third"];

fn main() {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let Some(server) = support::executor::influx().await else {
            println!("health bench: no influxd (Debian package influxdb)");
            return;
        };
        let services: Vec<String> = (0..SERVICES).map(|i| format!("service-{i:02}")).collect();
        // A request a second for a minute, per service and environment.
        let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
        let mut lines = Vec::new();
        for environment in ENVIRONMENTS {
            for service in &services {
                for second in 0..60i64 {
                    let status = if second % 7 == 0 { 503 } else { 200 };
                    lines.push(format!(
                        "openstack_api.{service},environment={environment},service_type={service},status_code={status} attempted=1i,duration={}i {}",
                        100 + second,
                        now - (second + 150) * 1_000_000_000
                    ));
                }
            }
        }
        for chunk in lines.chunks(5_000) {
            assert_eq!(server.write(("admin", "admin-pw"), "apimon", &chunk.join("\n")).await, 204);
        }
        let example = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples-repo/health.yaml"))
            .expect("the example's health.yaml");
        let list = format!("[{}]", services.join(", "));
        let rules_text = example
            .lines()
            .map(|l| match l.find("services: [") {
                Some(at) => format!("{}services: {list}}}", &l[..at]),
                None => l.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        let environments: Vec<String> = ENVIRONMENTS.iter().map(|e| (*e).to_owned()).collect();
        let rules = apimon::model::health::check_rules(std::path::Path::new("health.yaml"), &rules_text, &environments)
            .expect("rules check")
            .expect("rules");
        let flags = rules.flags.len();
        let client = Client::new(&server.url(), None, Duration::from_secs(60), None).expect("client");
        let credentials = Credentials { user: "admin".into(), password: apimon::model::Sensitive::new("admin-pw".into()) };
        let source = Source { client: &client, credentials: Some(&credentials), database: "apimon" };
        let mut times = Vec::new();
        let mut queries = 0;
        for _ in 0..5 {
            let started = Instant::now();
            let evaluation = evaluate(&source, &rules, &environments).await;
            times.push(started.elapsed());
            queries = evaluation.queries;
            assert!(evaluation.errors.is_empty(), "{:?}", evaluation.errors);
            let evaluated: usize = evaluation.environments.values().map(|s| s.len()).sum();
            assert_eq!(evaluated, SERVICES * ENVIRONMENTS.len());
        }
        times.sort();
        println!(
            "health: one evaluation of {SERVICES} services × {} environments ({flags} flags): {queries} queries (one per template and environment; one per flag and service would be {}), median {:.0} ms, best {:.0} ms, over {} requests stored",
            ENVIRONMENTS.len(),
            flags * SERVICES * ENVIRONMENTS.len(),
            times[times.len() / 2].as_secs_f64() * 1000.0,
            times[0].as_secs_f64() * 1000.0,
            lines.len()
        );
    });
}
