//! `apimon health`: evaluates the repository's health rules against the
//! measurements every `settings.interval`, writes one `apimon_health`
//! point per service and serves the result (`/api/v1/health` as JSON,
//! `/metrics`, `/healthz`) on its loopback listener. The configuration and
//! its rules file are re-read when they change; rules that no longer check
//! are logged and the previous ones kept.
//!
//! Each evaluation also feeds the incidents ([`incidents`]: opened when a
//! service leaves ok, updated, resolved after `resolve_after` ok
//! evaluations, kept in `state_dir/incidents.json`), whose changes the
//! alerting policy ([`alerts`]) turns into notifications for the routes,
//! queued in the outbox (`state_dir/outbox`) and delivered by
//! [`crate::notify`]. `/api/v1/incidents` lists them.

pub mod alerts;
pub mod config;
pub mod deadman;
pub mod evaluate;
pub mod history;
mod http;
pub mod incidents;
pub mod page;

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
    /// The state directory (incidents, outbox) cannot be made.
    #[error("cannot use the state directory {dir}")]
    State {
        /// Directory.
        dir: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
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
    ledger: RwLock<incidents::Ledger>,
    held: RwLock<std::collections::BTreeMap<String, alerts::Held>>,
    notifier: RwLock<Option<Arc<crate::notify::Notifier>>>,
    store_failures: AtomicU64,
    history: RwLock<history::History>,
    windows: RwLock<Vec<crate::model::health::routes::Window>>,
}

/// How often the page's history is read again.
const HISTORY_REFRESH: Duration = Duration::from_secs(60);

/// How long an InfluxDB request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the configuration files are checked for changes.
const RELOAD_POLL: Duration = Duration::from_secs(2);

fn client(config: &Config) -> Result<(Client, Option<Credentials>), HealthError> {
    let client = Client::new(&config.url, config.ca_file.as_deref(), REQUEST_TIMEOUT, None)?;
    let credentials = config
        .credentials
        .as_ref()
        .map(|(user, password)| Credentials { user: user.clone(), password: password.clone() });
    Ok((client, credentials))
}

/// What the configuration files hold now (a change means a reload).
fn digest(path: &std::path::Path, config: Option<&Config>) -> Vec<u8> {
    let mut bytes = std::fs::read(path).unwrap_or_default();
    if let Some(config) = config {
        bytes.extend(std::fs::read(&config.rules_file).unwrap_or_default());
        // A rotated route secret is taken at once.
        if let Some(secrets) = &config.secrets_file {
            bytes.extend(std::fs::read(secrets).unwrap_or_default());
        }
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
    let state_error = |source| HealthError::State { dir: config.state_dir.clone(), source };
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&config.state_dir)
            .map_err(state_error)?;
    }
    let store = incidents::Store::new(&config.state_dir);
    if let Ok(mut ledger) = shared.ledger.write() {
        *ledger = store.load();
    }
    let notifier =
        crate::notify::Notifier::open(&config.state_dir.join("outbox")).map_err(state_error)?;
    notifier.set_targets(config.targets.clone());
    tokio::spawn(Arc::clone(&notifier).run(stop.clone()));
    if let Ok(mut slot) = shared.notifier.write() {
        *slot = Some(Arc::clone(&notifier));
    }
    let mut policy = alerts::Policy::default();
    let mut history_read: Option<tokio::time::Instant> = None;
    let started = chrono::Utc::now();
    if let Ok(mut windows) = shared.windows.write() {
        windows.clone_from(&config.rules.windows);
    }
    let app = http::router(Arc::clone(&shared));
    crate::serve::serve(&config.listen.to_string(), &config.allow_from, app, stop.clone())
        .await
        .map_err(|source| HealthError::Listen { address: config.listen, source })?;
    let _stop = stop.drop_guard();
    tracing::info!(listen = %config.listen, environments = ?config.environments, interval_s = config.rules.interval.as_secs(), "Health service started.");
    let mut known = digest(&path, Some(&config));
    let mut tick = tokio::time::interval(config.rules.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut poll = tokio::time::interval(RELOAD_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut http = writer(&config);
    loop {
        let reload = tokio::select! {
            _ = tick.tick() => {
                evaluate_once(&config, &influx, credentials.as_ref(), &http, &shared).await;
                let source = evaluate::Source { client: &influx, credentials: credentials.as_ref(), database: &config.database };
                let mut looks = std::collections::BTreeMap::new();
                for environment in &config.environments {
                    match deadman::look(&source, &config.deadman, environment, chrono::Utc::now(), started).await {
                        Ok(found) => {
                            looks.insert(environment.clone(), found);
                        }
                        Err(error) => tracing::warn!(%environment, %error, "The dead-man's switches cannot be read; they keep their state."),
                    }
                }
                let logs = failed_logs(&config, &influx, credentials.as_ref(), &shared).await;
                let points = incidents_once(&config, &shared, &store, &mut policy, &notifier, &looks, &logs);
                write(&config, &http, &shared, points).await;
                if history_read.is_none_or(|at| at.elapsed() >= HISTORY_REFRESH) {
                    let source = evaluate::Source { client: &influx, credentials: credentials.as_ref(), database: &config.database };
                    let read = history::read(&source, &config.environments).await;
                    if let Ok(mut history) = shared.history.write() {
                        *history = read;
                    }
                    history_read = Some(tokio::time::Instant::now());
                }
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
                    if new.state_dir != config.state_dir {
                        tracing::warn!(old = %config.state_dir.display(), new = %new.state_dir.display(), "state_dir changed; it takes effect when the service restarts.");
                    }
                    notifier.set_targets(new.targets.clone());
                    if let Ok(mut windows) = shared.windows.write() {
                        windows.clone_from(&new.rules.windows);
                    }
                    (config, influx, credentials) = (new, new_influx, new_credentials);
                    http = writer(&config);
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
    write(config, http, shared, lines).await;
    if let Ok(mut last) = shared.last.write() {
        *last = Some((now, evaluation));
    }
}

/// The client of the service's writes: InfluxDB's CA besides the system's
/// roots, no redirects.
fn writer(config: &Config) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none());
    let pem = config
        .ca_file
        .as_deref()
        .and_then(|path| crate::fsutil::read_limited(path, 1024 * 1024).ok());
    if let Some(certificate) = pem.and_then(|pem| reqwest::Certificate::from_pem(&pem).ok()) {
        builder = builder.add_root_certificate(certificate);
    }
    builder.build().unwrap_or_default()
}

/// Most failed runs' logs linked from one incident.
const MAX_LOGS: usize = 10;

/// The log links of the latest failed run of each scenario in the last
/// hour, by environment: asked only of environments with a failing
/// service in the last evaluation (one query each).
async fn failed_logs(
    config: &Config,
    influx: &Client,
    credentials: Option<&Credentials>,
    shared: &Shared,
) -> std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>> {
    let failing: Vec<String> = shared
        .last
        .read()
        .ok()
        .and_then(|l| {
            l.as_ref().map(|(_, e)| {
                e.environments
                    .iter()
                    .filter(|(_, s)| s.values().any(|h| h.state != crate::model::health::State::Ok))
                    .map(|(env, _)| env.clone())
                    .collect()
            })
        })
        .unwrap_or_default();
    let secrets: Vec<&str> =
        credentials.map(|c| c.password.expose().as_str()).into_iter().collect();
    let mut out = std::collections::BTreeMap::new();
    for environment in failing {
        let quoted = environment.replace('\\', "\\\\").replace('\'', "\\'");
        let query = format!("SELECT last(\"log_url\") FROM \"apimon_scenario\" WHERE \"environment\" = '{quoted}' AND \"result\" = 'failed' AND time > now() - 1h GROUP BY \"scenario\"");
        let Ok(results) = influx.query_in(&config.database, &[query], credentials, &secrets).await
        else {
            continue;
        };
        let links: std::collections::BTreeMap<String, String> = results
            .first()
            .into_iter()
            .flat_map(|r| &r.series)
            .filter_map(|s| {
                let scenario = s.tags.get("scenario")?.clone();
                let url = s.values.last()?.get(1)?.as_str()?.to_owned();
                url.starts_with("http").then_some((scenario, url))
            })
            .take(MAX_LOGS)
            .collect();
        out.insert(environment, links);
    }
    out
}

/// Writes `lines` to the results database; a failure is logged and counted.
async fn write(config: &Config, http: &reqwest::Client, shared: &Shared, lines: Vec<String>) {
    if lines.is_empty() {
        return;
    }
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

/// The `apimon_incident` point of one change (the Health dashboard's
/// annotations).
fn incident_point(
    incident: &incidents::Incident,
    change: incidents::Change,
    now_ns: i64,
) -> String {
    use crate::executor::lineproto::escape_tag;
    let text = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let change = match change {
        incidents::Change::Opened => "opened",
        incidents::Change::Updated => "updated",
        incidents::Change::Resolved => "resolved",
    };
    let services: Vec<&str> = incident.parts.keys().map(String::as_str).collect();
    format!(
        "apimon_incident,environment={},about={} id=\"{}\",change=\"{change}\",state=\"{}\",worst=\"{}\",services=\"{}\" {now_ns}",
        escape_tag(&incident.environment),
        escape_tag(&incident.about),
        text(&incident.id),
        incident.state.as_str(),
        incident.parts.values().map(|p| p.worst).max().unwrap_or(crate::model::health::State::Ok).as_str(),
        text(&services.join(","))
    )
}

/// Feeds the last evaluation to the incidents; queues what the routes are
/// to be told; saves the incidents when they changed.
fn incidents_once(
    config: &Config,
    shared: &Shared,
    store: &incidents::Store,
    policy: &mut alerts::Policy,
    notifier: &crate::notify::Notifier,
    looks: &std::collections::BTreeMap<String, Vec<deadman::Look>>,
    logs: &std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>,
) -> Vec<String> {
    let now = chrono::Utc::now();
    let Ok(last) = shared.last.read() else { return Vec::new() };
    let Some((_, evaluation)) = last.as_ref() else { return Vec::new() };
    let Ok(mut ledger) = shared.ledger.write() else { return Vec::new() };
    let before = ledger.clone();
    let mut changes = Vec::new();
    for environment in &config.environments {
        // An environment whose queries failed has no news: no incident
        // opens or resolves on a refused query.
        if evaluation.errors.iter().any(|e| &e.environment == environment) {
            continue;
        }
        let services = evaluation.environments.get(environment).cloned().unwrap_or_default();
        changes.extend(ledger.observe_services(
            environment,
            &services,
            now,
            config.rules.resolve_after,
        ));
    }
    for (environment, found) in looks {
        changes.extend(ledger.observe_switches(
            environment,
            found,
            now,
            config.rules.resolve_after,
        ));
    }
    // The latest failed runs' logs go with the services' incidents that
    // changed (opened or updated): what failed, readable from a message.
    for (id, change) in &changes {
        if let (Some(incident), incidents::Change::Opened | incidents::Change::Updated) =
            (ledger.get_mut(id), change)
        {
            if incident.about == incidents::SERVICES {
                if let Some(found) = logs.get(&incident.environment) {
                    incident.logs.clone_from(found);
                }
            }
        }
    }
    let now_ns = now.timestamp_nanos_opt().unwrap_or_default();
    let points: Vec<String> = changes
        .iter()
        .filter_map(|(id, change)| ledger.get(id).map(|i| incident_point(i, *change, now_ns)))
        .collect();
    for (id, change) in &changes {
        if let Some(incident) = ledger.get(id) {
            tracing::warn!(id = %id, change = ?change, environment = %incident.environment, about = %incident.about, state = incident.state.as_str(), "Incident.");
        }
    }
    let messages = policy.messages(
        &mut ledger,
        &changes,
        &config.rules.routes,
        &config.rules.windows,
        &config.links,
        now,
    );
    for outgoing in messages {
        if let Err(error) = notifier.enqueue(&outgoing.route, &outgoing.message) {
            // Not queued: its incidents are not told, and the next
            // evaluation tells them (as opened) once the outbox takes it.
            tracing::error!(route = %outgoing.route, %error, "Cannot queue a notification.");
            for id in &outgoing.incidents {
                if let Some(incident) = ledger.get_mut(id) {
                    incident.notified.remove(&outgoing.route);
                }
            }
        }
    }
    if let Ok(mut held) = shared.held.write() {
        *held = policy.held.clone();
    }
    if *ledger != before {
        if let Err(error) = store.save(&ledger) {
            shared.store_failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(%error, "Cannot save the incidents.");
        }
    }
    points
}
