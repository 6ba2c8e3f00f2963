//! `apimon health` against a REAL InfluxDB: synthetic `openstack_api.*`
//! points, written as openstacksdk writes them, drive a service through
//! ok → degraded → outage → ok; the example repository's own rules decide.

use std::time::Duration;

use crate::support::executor::{influx, ADMIN};

use crate::support::health::Service;

/// The example repository's rules with a short window and interval (the
/// rules' meaning is theirs; only the timing is the test's).
fn rules() -> String {
    let example = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples-repo/health.yaml"),
    )
    .expect("examples-repo/health.yaml");
    let (_, rest) = example.split_once("\nflag_templates:").expect("flag_templates");
    format!("settings:\n  interval: 1s\n  window_from: 4s\n  window_to: 1s\n  resolve_after: 2\nflag_templates:{rest}")
}

/// One request of `service` answered with `status`, as openstacksdk
/// reports it (now).
fn request(service: &str, status: u16) -> String {
    format!("openstack_api.{service},environment=outside,method=GET,name=root,service_type={service},status_code={status} attempted=1i,duration=120i,status_code_val={status}i,{status}=1i")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synthetic_requests_drive_a_service_from_ok_to_degraded_to_outage_and_back() {
    let Some(server) = influx().await else { return };
    let service = Service::start(&server, &rules());
    let port = service.port;

    // Requests keep coming; `phase` says how they are answered.
    let phase = std::sync::Arc::new(std::sync::atomic::AtomicU8::new(0));
    let writer = {
        let (phase, url) = (std::sync::Arc::clone(&phase), server.url());
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            for round in 0u64.. {
                let failing = match phase.load(std::sync::atomic::Ordering::Relaxed) {
                    1 => round % 5 == 0,
                    2 => true,
                    _ => false,
                };
                let status = if failing { 503 } else { 200 };
                let body = [request("compute", status), request("network", 200)].join("\n");
                let _ = http
                    .post(format!("{url}/write"))
                    .query(&[("db", "apimon")])
                    .basic_auth(ADMIN.0, Some(ADMIN.1))
                    .body(body)
                    .send()
                    .await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let state_of = |service: &'static str| async move {
        let Ok(answer) = reqwest::get(format!("http://127.0.0.1:{port}/api/v1/health")).await
        else {
            return String::new();
        };
        let body: serde_json::Value = answer.json().await.unwrap_or_default();
        body["environments"]["outside"][service]["state"].as_str().unwrap_or_default().to_owned()
    };
    let mut seen = Vec::new();
    for (step, want) in [(0u8, "ok"), (1, "degraded"), (2, "outage"), (0, "ok")] {
        phase.store(step, std::sync::atomic::Ordering::Relaxed);
        let mut state = String::new();
        for _ in 0..200 {
            state = state_of("compute").await;
            if state == want {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(state, want, "after {seen:?}");
        assert_eq!(state_of("network").await, "ok", "a healthy neighbour stays ok");
        seen.push(state);
    }
    // The states are in InfluxDB too, with the values that decided them.
    let (_, body) = server
        .query_in(
            Some(ADMIN),
            "apimon",
            "SELECT \"state\", \"weight\" FROM apimon_health WHERE \"service\" = 'compute'",
        )
        .await;
    let states: std::collections::BTreeSet<String> = body["results"][0]["series"][0]["values"]
        .as_array()
        .map(|rows| rows.iter().filter_map(|r| r[1].as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    assert_eq!(states.into_iter().collect::<Vec<_>>(), ["degraded", "ok", "outage"]);
    let metrics = crate::support::executor::metrics(port).await;
    assert!(metrics.contains("apimon_health_query_errors_total 0\n"), "{metrics}");
    // The example's Health dashboard reads them: its panels' queries, with
    // Grafana's variables filled in, return rows (states and incidents).
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("examples-repo/dashboards/apimon/health.json"),
        )
        .expect("health.json"),
    )
    .expect("JSON");
    let queries = dashboard["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["query"].as_str().map(str::to_owned))
        .chain(dashboard["annotations"]["list"][0]["query"].as_str().map(str::to_owned));
    for query in queries {
        let query = query
            .replace("$environment", "outside")
            .replace("$timeFilter", "time > now() - 1h")
            .replace("$__interval", "1s");
        let (_, body) = server.query_in(Some(ADMIN), "apimon", &query).await;
        assert!(
            body["results"][0]["series"][0]["values"].as_array().is_some_and(|v| !v.is_empty()),
            "{query}: {body}"
        );
    }
    writer.abort();
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_influxdb_refuses_is_an_error_not_an_empty_result() {
    let Some(server) = influx().await else { return };
    // Lexes and groups, but InfluxDB has no such function.
    let rules = "settings: {interval: 1s}\nflag_templates:\n  broken:\n    query: 'SELECT no_such_function(\"duration\") FROM /^openstack_api\\./ WHERE \"service_type\" =~ /$service/ AND $window GROUP BY \"service_type\"'\n    op: gt\n    threshold: 1\nflags:\n  - {name: odd, template: broken, services: [compute]}\nexpressions:\n  - {name: degraded, expression: odd, weight: 1}\n";
    let service = Service::start(&server, rules);
    let port = service.port;
    let mut body = serde_json::Value::Null;
    for _ in 0..100 {
        if let Ok(answer) = reqwest::get(format!("http://127.0.0.1:{port}/api/v1/health")).await {
            body = answer.json().await.unwrap_or_default();
            if body["errors"].as_array().is_some_and(|e| !e.is_empty()) {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let error = &body["errors"][0];
    assert_eq!(error["template"], "broken", "{body}");
    assert!(error["message"].as_str().is_some_and(|m| m.contains("no_such_function")), "{body}");
    let metrics = crate::support::executor::metrics(port).await;
    assert!(!metrics.contains("apimon_health_query_errors_total 0\n"), "{metrics}");
    service.stop().await;
}

#[test]
fn the_rendered_health_config_is_what_the_service_reads_on_the_first_bastion() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples-repo");
    let out = tempfile::tempdir().expect("temp dir");
    let output = crate::support::apimon(&[
        "render",
        "--repo",
        &repo.to_string_lossy(),
        "--out",
        &out.path().to_string_lossy(),
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", crate::support::text(&output).1);
    let host = out.path().join("outside/outside-bastion");
    let unit = std::fs::read_to_string(host.join("etc/systemd/system/apimon-health.service"))
        .expect("the unit on the first bastion");
    assert!(
        unit.contains("ExecStart=/usr/local/bin/apimon health --config /etc/apimon/health.yaml")
    );
    assert!(unit.contains("NoNewPrivileges=yes") && unit.contains("ProtectSystem=strict"));
    assert!(
        !out.path().join("outside/outside-executor/etc/apimon/health.yaml").exists(),
        "one host per environment"
    );
    // Its files, where the test put them.
    let etc = host.join("etc/apimon");
    let config = std::fs::read_to_string(etc.join("health.yaml"))
        .expect("health.yaml")
        .replace("/etc/apimon/", &format!("{}/", etc.display()))
        .replace("/var/lib/apimon/health", &out.path().join("state").display().to_string());
    // `apimon render` writes every file 0644; the host provider writes
    // this one 0600, as the service demands.
    std::fs::set_permissions(
        etc.join("health-secrets.yaml"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("mode");
    let local = out.path().join("health.yaml");
    std::fs::write(&local, config).expect("config");
    let config = apimon::health::config::load(&local).expect("the rendered config loads");
    assert_eq!(config.environments, ["outside"]);
    assert_eq!(config.listen.to_string(), "127.0.0.1:8190", "loopback unless health.yaml says");
    assert_eq!(config.deadman.executors["outside"], ["outside-executor"]);
    assert!(config.deadman.scenarios["outside"].contains_key("token_issue"));
    assert_eq!(config.rules.expressions.len(), 2, "the repository's rules as they are");
}
