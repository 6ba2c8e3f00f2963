//! The health service's listener: the page (`/`), the JSON API
//! (`/api/v1/health`, `/api/v1/incidents`), `/metrics` and `/healthz`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{page, Shared};

pub(super) fn router(shared: Arc<Shared>) -> axum::Router {
    use axum::routing::get;
    let health = Arc::clone(&shared);
    let metrics = Arc::clone(&shared);
    let listed = Arc::clone(&shared);
    let shown = Arc::clone(&shared);
    axum::Router::new()
        .route(
            "/",
            get(move || {
                let shared = Arc::clone(&shown);
                async move { axum::response::Html(render_page(&shared)) }
            }),
        )
        .route(
            "/api/v1/incidents",
            get(move || {
                let shared = Arc::clone(&listed);
                async move {
                    let ledger = shared.ledger.read().map(|l| l.clone()).unwrap_or_default();
                    axum::Json(serde_json::json!({"open": ledger.open, "recent": ledger.recent}))
                }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/api/v1/health",
            get(move || {
                let shared = Arc::clone(&health);
                async move {
                    let body = shared.last.read().ok().and_then(|last| {
                        last.as_ref().map(|(at, e)| serde_json::json!({"evaluated_at": at, "environments": e.environments, "errors": e.errors, "queries": e.queries}))
                    });
                    axum::Json(body.unwrap_or_else(|| serde_json::json!({"evaluated_at": null, "environments": {}, "errors": []})))
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let shared = Arc::clone(&metrics);
                async move { render_metrics(&shared) }
            }),
        )
}

fn render_page(shared: &Shared) -> String {
    let last = shared.last.read().ok().and_then(|l| l.clone());
    let ledger = shared.ledger.read().map(|l| l.clone()).unwrap_or_default();
    let history = shared.history.read().map(|h| h.clone()).unwrap_or_default();
    let windows = shared.windows.read().map(|w| w.clone()).unwrap_or_default();
    let routes = shared
        .notifier
        .read()
        .ok()
        .and_then(|n| n.as_ref().map(|n| n.counters()))
        .unwrap_or_default();
    page::render(&page::Snapshot {
        last: last.as_ref(),
        ledger: &ledger,
        history: &history,
        windows: &windows,
        routes: &routes,
        now: chrono::Utc::now(),
    })
}

fn render_metrics(shared: &Shared) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for (name, help, value) in [
        (
            "evaluations_total",
            "Evaluations of the health rules.",
            shared.evaluations.load(Ordering::Relaxed),
        ),
        (
            "query_errors_total",
            "Health queries InfluxDB refused or did not answer.",
            shared.query_errors.load(Ordering::Relaxed),
        ),
        (
            "write_failures_total",
            "Writes of apimon_health points that failed.",
            shared.write_failures.load(Ordering::Relaxed),
        ),
    ] {
        let _ = writeln!(out, "# HELP apimon_health_{name} {help}\n# TYPE apimon_health_{name} counter\napimon_health_{name} {value}");
    }
    let open = shared.ledger.read().map(|l| l.open.len()).unwrap_or_default();
    let _ = writeln!(out, "# HELP apimon_health_incidents_open Incidents open.\n# TYPE apimon_health_incidents_open gauge\napimon_health_incidents_open {open}");
    let store_failures = shared.store_failures.load(Ordering::Relaxed);
    let _ = writeln!(out, "# HELP apimon_health_store_failures_total Saves of the incidents that failed.\n# TYPE apimon_health_store_failures_total counter\napimon_health_store_failures_total {store_failures}");
    let counters = shared
        .notifier
        .read()
        .ok()
        .and_then(|n| n.as_ref().map(|n| n.counters()))
        .unwrap_or_default();
    let held = shared.held.read().map(|h| h.clone()).unwrap_or_default();
    let mut routes: std::collections::BTreeSet<&String> = counters.keys().collect();
    routes.extend(held.keys());
    for (name, help, kind) in [
        ("notifications_delivered_total", "Notifications a route took.", "counter"),
        (
            "notification_failures_total",
            "Delivery attempts that failed (each is retried).",
            "counter",
        ),
        ("notifications_pending", "Notifications waiting in the outbox.", "gauge"),
        (
            "notifications_dropped_total",
            "Notifications dropped (route gone, outbox full).",
            "counter",
        ),
        (
            "notifications_suppressed_total",
            "Notifications held back by a maintenance window.",
            "counter",
        ),
        (
            "notifications_rate_limited_total",
            "Notifications over a route's hourly limit.",
            "counter",
        ),
    ] {
        let _ =
            writeln!(out, "# HELP apimon_health_{name} {help}\n# TYPE apimon_health_{name} {kind}");
        for route in &routes {
            let c = counters.get(*route).copied().unwrap_or_default();
            let h = held.get(*route).copied().unwrap_or_default();
            let value = match name {
                "notifications_delivered_total" => c.delivered,
                "notification_failures_total" => c.failures,
                "notifications_pending" => c.pending,
                "notifications_dropped_total" => c.dropped,
                "notifications_suppressed_total" => h.suppressed,
                _ => h.rate_limited,
            };
            let _ = writeln!(
                out,
                "apimon_health_{name}{{route=\"{}\"}} {value}",
                route.replace(['"', '\\', '\n'], "")
            );
        }
    }
    let _ = writeln!(out, "# HELP apimon_health_service_state A service's state: 0 ok, 1 degraded, 2 outage.\n# TYPE apimon_health_service_state gauge");
    if let Ok(last) = shared.last.read() {
        for (environment, services) in
            last.as_ref().map(|(_, e)| &e.environments).into_iter().flatten()
        {
            for (service, health) in services {
                let _ = writeln!(
                    out,
                    "apimon_health_service_state{{environment=\"{}\",service=\"{}\"}} {}",
                    environment.replace('"', ""),
                    service.replace('"', ""),
                    health.state as u8
                );
            }
        }
    }
    out
}
