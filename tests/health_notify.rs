//! The health service's incidents and notifications against real
//! receivers: synthetic `openstack_api.*` points in a real influxd drive
//! services through outages; a webhook receiver checks every signature
//! with Python's `hmac`, a matrix-synapse homeserver and aiosmtpd (STARTTLS
//! required) receive the messages, read back on their side.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::executor::{influx, ADMIN};
use crate::support::health::Service;
use crate::support::influxdb::InfluxServer;
use crate::support::notify::{Homeserver, SmtpServer, WebhookReceiver};

/// Rules over `services`: under 90 % answered is degraded, none answered
/// an outage; evaluated every second over the last 4 s.
fn rules(services: &[String], tail: &str) -> String {
    format!(
        r#"settings: {{interval: 1s, window_from: 4s, window_to: 1s, resolve_after: 2}}
flag_templates:
  success_rate:
    query: >-
      SELECT 100 * sum("good") / sum("total") AS "rate" FROM
      (SELECT count("attempted") AS "total", 0 * count("attempted") AS "good" FROM /^openstack_api\./
      WHERE "service_type" =~ /$service/ AND "environment" = '$environment' AND $window GROUP BY "service_type"),
      (SELECT count("attempted") AS "good", 0 * count("attempted") AS "total" FROM /^openstack_api\./
      WHERE "service_type" =~ /$service/ AND "environment" = '$environment' AND "status_code" =~ /^([23][0-9][0-9]|404)$/ AND $window GROUP BY "service_type")
      GROUP BY "service_type"
    op: lt
    threshold: 90
flags:
  - {{name: failing, template: success_rate, services: [{list}]}}
  - {{name: down, template: success_rate, threshold: 1, services: [{list}]}}
expressions:
  - {{name: degraded, expression: failing, weight: 1}}
  - {{name: outage, expression: down, weight: 2}}
{tail}"#,
        list = services.join(", ")
    )
}

/// How each service's requests are answered: 0 all fine, 1 one in five
/// failing (degraded), 2 all failing (outage).
type Phases = Arc<Mutex<BTreeMap<String, u8>>>;

/// Writes a request of every service every 50 ms, as openstacksdk reports it.
fn drive(server: &InfluxServer, phases: &Phases) -> tokio::task::JoinHandle<()> {
    let (phases, url) = (Arc::clone(phases), server.url());
    tokio::spawn(async move {
        let http = reqwest::Client::new();
        for round in 0u64.. {
            let lines: Vec<String> = phases
                .lock()
                .map(|p| p.clone())
                .unwrap_or_default()
                .iter()
                .map(|(service, phase)| {
                    let failing = match phase {
                        1 => round % 5 == 0,
                        2 => true,
                        _ => false,
                    };
                    let status = if failing { 503 } else { 200 };
                    format!("openstack_api.{service},environment=outside,method=GET,name=root,service_type={service},status_code={status} attempted=1i,duration=120i,status_code_val={status}i")
                })
                .collect();
            let _ = http
                .post(format!("{url}/write"))
                .query(&[("db", "apimon")])
                .basic_auth(ADMIN.0, Some(ADMIN.1))
                .body(lines.join("\n"))
                .send()
                .await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}

/// Writes `lines(now in seconds)` every 300 ms until aborted.
fn keep_writing(
    server: &InfluxServer,
    lines: impl Fn(i64) -> String + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    let url = server.url();
    tokio::spawn(async move {
        loop {
            let _ = reqwest::Client::new()
                .post(format!("{url}/write"))
                .query(&[("db", "apimon"), ("precision", "s")])
                .basic_auth(ADMIN.0, Some(ADMIN.1))
                .body(lines(chrono::Utc::now().timestamp()))
                .send()
                .await;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
}

fn set(phases: &Phases, service: &str, phase: u8) {
    if let Ok(mut p) = phases.lock() {
        p.insert(service.to_owned(), phase);
    }
}

async fn until<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    until_or(what, &mut probe, String::new).await
}

/// As [`until`], saying `context()` when it times out.
async fn until_or<T>(
    what: &str,
    probe: &mut impl AsyncFnMut() -> Option<T>,
    context: impl Fn() -> String,
) -> T {
    for _ in 0..600 {
        if let Some(found) = probe().await {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}\n{}", context());
}

/// What waits in the service's outbox, with the last error of each.
fn outbox(service: &Service) -> String {
    std::fs::read_dir(service.state_dir().join("outbox"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

/// The value of `name{route="<route>"}` in the service's `/metrics`.
async fn counter(service: &Service, name: &str, route: &str) -> u64 {
    let text = crate::support::executor::metrics(service.port).await;
    let key = format!("{name}{{route=\"{route}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(key.as_str()))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The changes (`opened`, …) a webhook message reports, with incident ids.
fn changes(body: &serde_json::Value) -> Vec<(String, String)> {
    body["incidents"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|i| {
                    let field = |k: &str| i[k].as_str().unwrap_or_default().to_owned();
                    (field("change"), field("id"))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_webhook_gets_open_and_resolve_and_what_waits_for_a_down_receiver_outlives_a_restart(
) {
    let Some(server) = influx().await else { return };
    let Some(mut receiver) = WebhookReceiver::start("hook-key") else { return };
    let services = vec!["compute".to_owned(), "network".to_owned()];
    let route = format!(
        "routes:\n  - name: hook\n    webhook: {{url: '{}', secret: {{secret: hook_key}}}}\n",
        receiver.url()
    );
    let service =
        Service::start_with(&server, &rules(&services, &route), "hook_key: hook-key\n", "");
    let phases: Phases = Arc::default();
    set(&phases, "compute", 0);
    set(&phases, "network", 0);
    let writer = drive(&server, &phases);

    // A scenario run failed and its log is in object storage.
    let log = "http://127.0.0.1:9/v1/AUTH_p/apimon-logs/outside/list_servers/run-1/output.log";
    let answer = reqwest::Client::new()
        .post(format!("{}/write", server.url()))
        .query(&[("db", "apimon")])
        .basic_auth(ADMIN.0, Some(ADMIN.1))
        .body(format!("apimon_scenario,environment=outside,result=failed,scenario=list_servers duration_ms=5i,log_url=\"{log}\""))
        .send()
        .await
        .expect("write");
    assert!(answer.status().is_success());

    // compute fails: opened; it recovers: resolved. Every message signed.
    set(&phases, "compute", 2);
    let opened = until("an opened incident at the webhook", async || {
        receiver.received().iter().find_map(|r| {
            changes(&r.body).into_iter().find(|(c, _)| c == "opened").map(|(_, id)| id)
        })
    })
    .await;
    set(&phases, "compute", 0);
    until("its resolve at the webhook", async || {
        receiver
            .received()
            .iter()
            .any(|r| changes(&r.body).contains(&("resolved".to_owned(), opened.clone())))
            .then_some(())
    })
    .await;
    let got = receiver.received();
    assert!(got.iter().all(|r| r.ok), "a signature Python's hmac does not accept: {got:?}");
    let first = got.iter().find(|r| !changes(&r.body).is_empty()).expect("a message");
    assert_eq!(first.body["environment"], "outside");
    assert_eq!(first.body["incidents"][0]["logs"]["list_servers"], log, "{first:?}");
    let worst = &first.body["incidents"][0]["parts"]["compute"]["worst"];
    assert!(worst == "outage" || worst == "degraded", "{first:?}");
    assert!(first.body["incidents"][0]["parts"].get("network").is_none(), "{first:?}");

    // The receiver rejects a body that is not the one signed.
    let body = br#"{"environment":"outside","incidents":[]}"#;
    let signature = apimon::notify::sinks::signature("hook-key", body);
    let tampered = reqwest::Client::new()
        .post(receiver.url())
        .header("X-Apimon-Signature", signature)
        .body(r#"{"environment":"inside","incidents":[]}"#)
        .send()
        .await
        .expect("receiver");
    assert_eq!(tampered.status(), 401);
    assert!(!receiver.received().last().expect("recorded").ok);

    // The receiver goes away; a new incident's message waits in the
    // outbox, failing, through a restart of the service.
    receiver.stop();
    set(&phases, "network", 2);
    let failures = until("failed deliveries", async || {
        let n = counter(&service, "apimon_health_notification_failures_total", "hook").await;
        (n >= 1).then_some(n)
    })
    .await;
    assert!(failures >= 1);
    let incident = service.get("/api/v1/incidents").await;
    let open = incident["open"][0]["id"].as_str().expect("an open incident").to_owned();
    let queued = std::fs::read_dir(service.state_dir().join("outbox")).expect("outbox").count();
    assert!(queued >= 1, "nothing in the outbox");
    let service = service.restart().await;
    let after = until("the incidents after the restart", async || {
        let body = service.get("/api/v1/incidents").await;
        body["open"][0]["id"].as_str().map(str::to_owned)
    })
    .await;
    assert_eq!(after, open, "the open incident survived the restart");
    receiver.resume();
    until("the queued message delivered after the restart", async || {
        receiver
            .received()
            .iter()
            .any(|r| r.ok && changes(&r.body).contains(&("opened".to_owned(), open.clone())))
            .then_some(())
    })
    .await;
    until("an empty outbox", async || {
        let pending = std::fs::read_dir(service.state_dir().join("outbox"))
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                    .count()
            })
            .unwrap_or(1);
        (pending == 0).then_some(())
    })
    .await;
    writer.abort();
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_holds_back_forty_failing_services_which_then_make_one_message_and_limits_hold() {
    let Some(server) = influx().await else { return };
    let Some(receiver) = WebhookReceiver::start("hook-key") else { return };
    let services: Vec<String> = (0..40).map(|i| format!("svc{i:02}")).collect();
    let route = |extra: &str| {
        format!(
            "routes:\n  - name: hook\n    reminder: 1s\n    rate_limit: 2\n    webhook: {{url: '{}', secret: {{secret: hook_key}}}}\n{extra}",
            receiver.url()
        )
    };
    let now = chrono::Utc::now();
    let window = format!(
        "maintenance_windows:\n  - {{name: upgrade, start: '{}', end: '{}'}}\n",
        (now - chrono::Duration::hours(1)).to_rfc3339(),
        (now + chrono::Duration::hours(1)).to_rfc3339()
    );
    let service = Service::start_with(
        &server,
        &rules(&services, &route(&window)),
        "hook_key: hook-key\n",
        "",
    );
    let phases: Phases = Arc::default();
    for s in &services {
        set(&phases, s, 2);
    }
    let writer = drive(&server, &phases);
    until("a suppressed notification", async || {
        (counter(&service, "apimon_health_notifications_suppressed_total", "hook").await >= 1)
            .then_some(())
    })
    .await;
    let incidents = service.get("/api/v1/incidents").await;
    assert_eq!(incidents["open"].as_array().map(Vec::len), Some(1), "{incidents}");
    assert!(receiver.received().is_empty(), "a window must hold notifications back");

    // The window goes (a reload): the open incident is told once, all
    // forty services in one message; reminders every second, two messages
    // an hour at most.
    let rules_file = service.state_dir().with_file_name("rules.yaml");
    std::fs::write(&rules_file, rules(&services, &route(""))).expect("rules");
    until("the rate limit", async || {
        (counter(&service, "apimon_health_notifications_rate_limited_total", "hook").await >= 1)
            .then_some(())
    })
    .await;
    let got = receiver.received();
    assert_eq!(got.len(), 2, "{got:?}");
    let opened = &got[0].body["incidents"];
    assert_eq!(opened.as_array().map(Vec::len), Some(1), "one incident: {opened}");
    assert_eq!(opened[0]["change"], "opened");
    assert_eq!(opened[0]["parts"].as_object().map(|p| p.len()), Some(40));
    assert_eq!(got[1].body["incidents"][0]["change"], "reminder");
    writer.abort();
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_matrix_room_and_a_mailbox_behind_starttls_get_open_update_and_resolve() {
    let Some(server) = influx().await else { return };
    let Some(smtp) = SmtpServer::start() else { return };
    let Some(homeserver) = Homeserver::start().await else { return };
    let services = vec!["compute".to_owned()];
    let routes = format!(
        "routes:\n  - name: chat\n    matrix: {{homeserver: '{}', room: '{}', access_token: {{secret: matrix_token}}}}\n  - name: mail\n    email: {{smtp_host: 127.0.0.1, smtp_port: {}, ca_file: '{}', from: apimon@example.org, to: [oncall@example.org]}}\n",
        homeserver.url,
        homeserver.room,
        smtp.port,
        smtp.ca_file.display()
    );
    let service = Service::start_with(
        &server,
        &rules(&services, &routes),
        &format!("matrix_token: {}\n", homeserver.token),
        "page_url: http://status.example.org/\n",
    );
    let phases: Phases = Arc::default();
    set(&phases, "compute", 0);
    let writer = drive(&server, &phases);
    // A full window of answered requests first: from there a failing
    // share goes down through degraded before any outage.
    until("compute evaluated ok", async || {
        let health = service.get("/api/v1/health").await;
        (health["environments"]["outside"]["compute"]["state"] == "ok").then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    for (phase, word) in [(1u8, "[opened]"), (2, "[updated]"), (0, "[resolved]")] {
        set(&phases, "compute", phase);
        let mut probe = async || {
            let room = homeserver.messages().await;
            let mails = smtp.mails();
            (room.iter().any(|m| m.contains(word)) && mails.iter().any(|m| m.contains(word)))
                .then_some(())
        };
        until_or(&format!("{word} in the room and the mailbox"), &mut probe, || outbox(&service))
            .await;
    }
    // Opened degraded, updated to an outage (and, as the window drains,
    // through the states between), resolved last; the same in both.
    let room = homeserver.messages().await;
    assert!(
        room[0].contains("[opened] services: compute: degraded"),
        "{room:?}\n{}",
        homeserver.log()
    );
    assert!(room[1].contains("[updated] services: compute: outage (down, failing)"), "{room:?}");
    assert!(room.last().is_some_and(|m| m.contains("[resolved]")), "{room:?}");
    assert!(room[0].contains("Status page: http://status.example.org/"), "{room:?}");
    let mails = smtp.mails();
    assert_eq!(mails.len(), room.len(), "{mails:?}");
    for mail in &mails {
        assert!(mail.starts_with("X-Received-Over-TLS: True"), "{mail}");
        assert!(mail.contains("Subject: [apimon] outside: 1 incident change"), "{mail}");
        assert!(mail.contains("To: oncall@example.org"), "{mail}");
    }
    let delivered = counter(&service, "apimon_health_notifications_delivered_total", "chat").await;
    assert_eq!(delivered as usize, room.len());
    writer.abort();
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_executor_a_scenario_that_stopped_and_failing_reconciles_each_open_an_incident() {
    let Some(server) = influx().await else { return };
    let services = vec!["compute".to_owned()];
    let extra = "deadman:\n  executor_interval_seconds: 1\n  executors: {outside: [never-reported]}\n  scenarios: {outside: {probe: '* * * * * *', fresh: '* * * * * *'}}\n  reconcile_bound_seconds: 5\n";
    let write = |lines: Vec<String>| {
        let url = server.url();
        async move {
            let answer = reqwest::Client::new()
                .post(format!("{url}/write"))
                .query(&[("db", "apimon"), ("precision", "s")])
                .basic_auth(ADMIN.0, Some(ADMIN.1))
                .body(lines.join("\n"))
                .send()
                .await
                .expect("write");
            assert!(answer.status().is_success(), "{}", answer.status());
        }
    };
    let now = chrono::Utc::now().timestamp();
    // Minutes ago: the executor e1's last health point, the scenario
    // probe's last run, the daemon's last good reconcile; since: failures.
    write(vec![
        format!("apimon_executor,environment=outside,executor=e1 running=0i {}", now - 120),
        format!(
            "apimon_scenario,environment=outside,scenario=probe,result=passed duration_ms=5i {}",
            now - 120
        ),
        format!(
            "apimon_reconcile,environment=outside outcome=\"success\",commit=\"a\" {}",
            now - 300
        ),
        format!("apimon_reconcile,environment=outside outcome=\"failed\",commit=\"b\" {}", now - 2),
    ])
    .await;
    let service = Service::start_with(&server, &rules(&services, ""), "", extra);
    // e2 and the scenario `fresh` keep reporting.
    let keep = keep_writing(&server, |now| {
        format!("apimon_executor,environment=outside,executor=e2 running=0i {now}\napimon_scenario,environment=outside,scenario=fresh,result=passed duration_ms=5i {now}")
    });
    let abouts = |body: &serde_json::Value| -> Vec<String> {
        let mut list: Vec<String> = body["open"]
            .as_array()
            .map(|o| o.iter().filter_map(|i| i["about"].as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        list.sort();
        list
    };
    let want = ["executor:e1", "executor:never-reported", "reconcile", "scenario:probe"];
    let open = until("the switches' incidents", async || {
        let list = abouts(&service.get("/api/v1/incidents").await);
        (list == want).then_some(list)
    })
    .await;
    assert_eq!(open, want, "e2 and `fresh` report: no incident of theirs");
    let body = service.get("/api/v1/incidents").await;
    let detail = body["open"].to_string();
    assert!(detail.contains("executor e1 has sent no health point since"), "{detail}");
    assert!(detail.contains("the daemon's reconciles have not succeeded since"), "{detail}");

    // e1 comes back and the daemon succeeds: both resolve.
    let back = keep_writing(&server, |now| {
        format!("apimon_executor,environment=outside,executor=e1 running=0i {now}\napimon_reconcile,environment=outside outcome=\"no_changes\",commit=\"c\" {now}")
    });
    until("e1 and the reconciles resolved", async || {
        let body = service.get("/api/v1/incidents").await;
        let recent: Vec<&str> = body["recent"]
            .as_array()
            .map(|r| r.iter().filter_map(|i| i["about"].as_str()).collect())
            .unwrap_or_default();
        (recent.contains(&"executor:e1") && recent.contains(&"reconcile")).then_some(())
    })
    .await;
    keep.abort();
    back.abort();
    service.stop().await;
}
