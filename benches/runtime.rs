//! Rolling out a scenario runtime to one executor over SSH (the suite's
//! sshd host through its bastion): the first install (pip from PyPI, warm
//! pip cache after the first bench run), a moved pin (a second runtime
//! beside the first), and a rollback (the kept runtime switched back, no
//! install). Prints wall time per step; asserts nothing about speed.
//!
//! Run: `cargo bench --bench runtime` (needs sshd and influxd, as the
//! suite; network access to PyPI).

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Instant;

const PINS: &str = "runtime:\n  python:\n    - ansible-core==2.19.4\n    - openstacksdk==4.14.0\n    - influxdb==5.3.2\n";

#[tokio::main]
async fn main() {
    let Some(setup) = support::host::Setup::new().await else {
        eprintln!("no sshd or influxd; nothing measured");
        return;
    };
    let (_, outcome) = setup.apply().await;
    assert!(outcome.is_success(), "{outcome:#?}");
    let apimon_yaml =
        std::fs::read_to_string(setup.repo.path().join("apimon.yaml")).expect("apimon.yaml");
    let moved =
        PINS.replace("    - influxdb==5.3.2\n", "    - influxdb==5.3.2\n    - six==1.17.0\n");
    for (step, pins) in [
        ("first runtime (venv, pip install, switch)", PINS),
        ("a moved pin (a second runtime, switch)", moved.as_str()),
        ("rollback (switch to the kept runtime)", PINS),
    ] {
        setup.repo.write("apimon.yaml", &format!("{apimon_yaml}{pins}"));
        let start = Instant::now();
        let (plan, outcome) = setup.apply().await;
        let elapsed = start.elapsed();
        assert!(outcome.is_success(), "{outcome:#?}");
        let changes = support::host::host_changes(&plan).len();
        println!("{step}: {:.1} s ({changes} host change(s))", elapsed.as_secs_f64());
    }
}
