//! The health service's status page in a real browser: Debian's chromium,
//! headless, loads it from a service driven by synthetic requests in a
//! real influxd; the test reads the DOM chromium rendered and keeps a
//! screenshot (target/test-artifacts/status-page.png). Chromium is kept on
//! the machine: every other host resolves to nothing and goes to a proxy
//! that does not exist.

use std::path::Path;
use std::time::Duration;

use crate::support::executor::{influx, ADMIN};
use crate::support::health::Service;

fn chromium(args: &[&str], profile: &Path) -> std::process::Output {
    let binary = crate::support::require_binary("chromium", "chromium").expect("checked");
    std::process::Command::new(binary)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"])
        .args(["--disable-background-networking", "--disable-component-update", "--disable-sync"])
        .args(["--disable-default-apps", "--disable-extensions", "--metrics-recording-only"])
        .args([
            "--proxy-server=http://127.0.0.1:9",
            "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .expect("chromium")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_an_outage_its_incident_and_a_window_in_a_real_browser() {
    if crate::support::require_binary("chromium", "chromium").is_none() {
        return;
    }
    let Some(server) = influx().await else { return };
    let now = chrono::Utc::now();
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples-repo/health.yaml"),
    )
    .expect("examples-repo/health.yaml");
    let (_, rest) = example.split_once("\nflag_templates:").expect("flag_templates");
    // The test's own window instead of the example's weekly one.
    let rest = rest.split("\nmaintenance_windows:").next().unwrap_or(rest);
    let rules = format!(
        "settings:\n  interval: 1s\n  window_from: 4s\n  window_to: 1s\nflag_templates:{rest}\nmaintenance_windows:\n  - {{name: network-upgrade, services: [network], start: '{}', end: '{}'}}\n",
        (now - chrono::Duration::hours(1)).to_rfc3339(),
        (now + chrono::Duration::hours(2)).to_rfc3339()
    );
    let service = Service::start(&server, &rules);
    let url = server.url();
    let writer = tokio::spawn(async move {
        let http = reqwest::Client::new();
        loop {
            let line = |service: &str, status: u16| {
                format!("openstack_api.{service},environment=outside,method=GET,name=root,service_type={service},status_code={status} attempted=1i,duration=120i,status_code_val={status}i")
            };
            let _ = http
                .post(format!("{url}/write"))
                .query(&[("db", "apimon")])
                .basic_auth(ADMIN.0, Some(ADMIN.1))
                .body([line("compute", 503), line("network", 200)].join("\n"))
                .send()
                .await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    for _ in 0..300 {
        let incidents = service.get("/api/v1/incidents").await;
        let health = service.get("/api/v1/health").await;
        if incidents["open"].as_array().is_some_and(|o| !o.is_empty())
            && health["environments"]["outside"]["compute"]["state"] == "outage"
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let page = format!("http://127.0.0.1:{}/", service.port);
    let profile = tempfile::tempdir().expect("profile");
    let dom = chromium(&["--dump-dom", &page], profile.path());
    let html = String::from_utf8_lossy(&dom.stdout).into_owned();
    assert!(dom.status.success(), "{}", String::from_utf8_lossy(&dom.stderr));
    assert!(html.contains("<tr data-service=\"compute\" data-state=\"outage\">"), "{html}");
    assert!(html.contains("<tr data-service=\"network\" data-state=\"ok\">"), "{html}");
    assert!(html.contains("class=\"incident outage\" data-incident=\"outside-"), "{html}");
    assert!(html.contains("data-window=\"network-upgrade\""), "{html}");
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).expect("artifacts");
    let shot = artifacts.join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    let taken = chromium(
        &["--window-size=1280,900", &format!("--screenshot={}", shot.display()), &page],
        profile.path(),
    );
    assert!(taken.status.success(), "{}", String::from_utf8_lossy(&taken.stderr));
    let png = std::fs::read(&shot).expect("screenshot");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    writer.abort();
    service.stop().await;
}
