//! `apimon health`: evaluates the repository's health rules against the
//! measurements every `settings.interval`, writes one `apimon_health`
//! point per service and serves the result (`/api/v1/health` as JSON,
//! `/metrics`, `/healthz`) on its loopback listener. The configuration and
//! its rules file are re-read when they change; rules that no longer check
//! are logged and the previous ones kept.
//!
//! Issue #32, first part: incidents, notifications, maintenance windows,
//! dead-man's switches, the HTML page and the deployment by the daemon are
//! not built yet.

pub mod config;
pub mod evaluate;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::providers::influxdb::client::{Client, Credentials};
use config::{Config, ConfigError};
use evaluate::Evaluation;

/// Controls a running health service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Re-read the configuration (SIGHUP).
    Reload,
    /// Stop (SIGTERM).
    Shutdown,
}

/// The service could not start.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The InfluxDB client cannot be made.
    #[error(transparent)]
    Influxdb(#[from] crate::providers::influxdb::InfluxdbError),
    /// The listener cannot be bound.
    #[error("cannot listen on {address}")]
    Listen {
        /// Address.
        address: std::net::SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// What the listener shows.
#[derive(Debug, Default)]
struct Shared {
    last: RwLock<Option<(chrono::DateTime<chrono::Utc>, Evaluation)>>,
    evaluations: AtomicU64,
    query_errors: AtomicU64,
    write_failures: AtomicU64,
}

/// How long an InfluxDB request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the configuration files are checked for changes.
const RELOAD_POLL: Duration = Duration::from_secs(2);

fn client(config: &Config) -> Result<(Client, Option<Credentials>), HealthError> {
    let client = Client::new(&config.url, None, REQUEST_TIMEOUT, None)?;
    let credentials = config
        .credentials
        .as_ref()
        .map(|(user, password)| Credentials { user: user.clone(), password: password.clone() });
    Ok((client, credentials))
}

/// What the configuration files hold now (a change means a reload).
fn digest(path: &std::path::Path, config: Option<&Config>) -> Vec<u8> {
    let mut bytes = std::fs::read(path).unwrap_or_default();
    if let Some(rules) = config.map(|c| &c.rules_file) {
        bytes.extend(std::fs::read(rules).unwrap_or_default());
    }
    crate::digest::sha256_hex(&bytes).into_bytes()
}

/// Runs the service until [`Control::Shutdown`] (or the sender is dropped).
///
/// # Errors
/// The configuration cannot be used at start, or the listener not bound.
pub async fn run(
    path: PathBuf,
    mut controls: mpsc::UnboundedReceiver<Control>,
) -> Result<(), HealthError> {
    let mut config = config::load(&path)?;
    let (mut influx, mut credentials) = client(&config)?;
    let shared = Arc::new(Shared::default());
    let stop = CancellationToken::new();
    let app = router(Arc::clone(&shared));
    crate::serve::serve(&config.listen.to_string(), &[], app, stop.clone())
        .await
        .map_err(|source| HealthError::Listen { address: config.listen, source })?;
    let _stop = stop.drop_guard();
    tracing::info!(listen = %config.listen, environments = ?config.environments, interval_s = config.rules.interval.as_secs(), "Health service started.");
    let mut known = digest(&path, Some(&config));
    let mut tick = tokio::time::interval(config.rules.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut poll = tokio::time::interval(RELOAD_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let http = reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build().unwrap_or_default();
    loop {
        let reload = tokio::select! {
            _ = tick.tick() => {
                evaluate_once(&config, &influx, credentials.as_ref(), &http, &shared).await;
                false
            }
            _ = poll.tick() => digest(&path, Some(&config)) != known,
            control = controls.recv() => match control {
                Some(Control::Reload) => true,
                Some(Control::Shutdown) | None => break,
            },
        };
        if reload {
            known = digest(&path, Some(&config));
            match config::load(&path).and_then(|c| {
                client(&c)
                    .map(|(i, cr)| (c, i, cr))
                    .map_err(|e| ConfigError::Invalid(vec![e.to_string()]))
            }) {
                Ok((new, new_influx, new_credentials)) => {
                    if new.listen != config.listen {
                        tracing::warn!(old = %config.listen, new = %new.listen, "listen changed; it takes effect when the service restarts.");
                    }
                    if new.rules.interval != config.rules.interval {
                        tick = tokio::time::interval(new.rules.interval);
                        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    }
                    (config, influx, credentials) = (new, new_influx, new_credentials);
                    known = digest(&path, Some(&config));
                    tracing::info!(path = %path.display(), "Configuration reloaded.");
                }
                Err(error) => {
                    tracing::error!(path = %path.display(), %error, "The new configuration is invalid; keeping the previous one.")
                }
            }
        }
    }
    tracing::info!("Health service stopped.");
    Ok(())
}

async fn evaluate_once(
    config: &Config,
    influx: &Client,
    credentials: Option<&Credentials>,
    http: &reqwest::Client,
    shared: &Shared,
) {
    let source = evaluate::Source { client: influx, credentials, database: &config.database };
    let evaluation = evaluate::evaluate(&source, &config.rules, &config.environments).await;
    shared.evaluations.fetch_add(1, Ordering::Relaxed);
    shared.query_errors.fetch_add(evaluation.errors.len() as u64, Ordering::Relaxed);
    for error in &evaluation.errors {
        tracing::error!(environment = %error.environment, template = %error.template, message = %error.message, "InfluxDB refused a health query.");
    }
    let now = chrono::Utc::now();
    let lines = evaluate::points(&evaluation, now.timestamp_nanos_opt().unwrap_or_default());
    if !lines.is_empty() {
        let mut request = http
            .post(format!("{}/write", config.url))
            .query(&[("db", config.database.as_str()), ("precision", "ns")])
            .body(lines.join("\n"));
        if let Some((user, password)) = &config.credentials {
            request = request.basic_auth(user, Some(password.expose()));
        }
        match request.send().await {
            Ok(response) if response.status().is_success() => {}
            Ok(response) => {
                shared.write_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(status = %response.status(), "InfluxDB refused the health points.");
            }
            Err(error) => {
                shared.write_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %crate::error::chain(&error), "Cannot write the health points.");
            }
        }
    }
    if let Ok(mut last) = shared.last.write() {
        *last = Some((now, evaluation));
    }
}

fn router(shared: Arc<Shared>) -> axum::Router {
    use axum::routing::get;
    let health = Arc::clone(&shared);
    let metrics = Arc::clone(&shared);
    axum::Router::new()
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
