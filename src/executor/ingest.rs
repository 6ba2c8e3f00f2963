//! Points from scenario runs into the results buffer.
//!
//! Two sources: openstacksdk's own metrics reporting, which each playbook
//! run is pointed at through a per-run `OS_CLIENT_SECURE_FILE` (InfluxDB
//! HTTP writes to this executor's loopback listener, `<scenario>:<job id>`
//! as the database name), and the file the Ansible callback writes in the
//! run's directory. Both go through [`Ingest::accept`]: every line checked,
//! the run's tags added (environment, scenario, job id), a timestamp made
//! explicit, then the same disk-buffered path as the run results, so an
//! InfluxDB outage loses nothing. The listener also serves the executor's
//! health as Prometheus text (`GET /metrics`).

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};

use super::health::Health;
use super::lineproto::{self, Precision};
use super::results::Writer;

/// Largest write request accepted.
const MAX_BODY: usize = 8 * 1024 * 1024;

/// Task tags the callback may add to the requests of the task going on.
const TASK_TAGS: [&str; 2] = ["az", "metric"];

/// The run a batch of points belongs to.
#[derive(Debug, Clone, Default)]
pub struct RunTags<'a> {
    /// Job id (`TASK_EXECUTOR_JOB_ID`).
    pub job_id: &'a str,
    /// Scenario, when known.
    pub scenario: Option<&'a str>,
    /// Tags of the task the points came from (`az`, `metric`).
    pub task: Vec<(&'a str, &'a str)>,
}

impl<'a> RunTags<'a> {
    /// The database name a run's openstacksdk writes to: `<scenario>:<job id>`.
    pub fn database(scenario: &str, job_id: &str) -> String {
        format!("{scenario}:{job_id}")
    }

    /// Back from [`RunTags::database`], which the callback extends with
    /// the tags of the task going on (`;az=…;metric=…`); a bare name is
    /// taken as a job id.
    pub fn from_database(database: &'a str) -> Option<Self> {
        let mut parts = database.split(';');
        let run = parts.next().unwrap_or_default();
        let task = parts
            .filter_map(|pair| pair.split_once('='))
            .filter(|(key, value)| TASK_TAGS.contains(key) && !value.is_empty())
            .collect();
        match run.rsplit_once(':') {
            _ if run.is_empty() => None,
            Some((scenario, job_id)) if !scenario.is_empty() && !job_id.is_empty() => {
                Some(Self { job_id, scenario: Some(scenario), task })
            }
            _ => Some(Self { job_id: run, scenario: None, task }),
        }
    }
}

/// What came of one batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Accepted {
    /// Lines queued.
    pub lines: usize,
    /// The first refused line (1-based) and why, when any was refused.
    pub first_error: Option<(usize, String)>,
}

/// Shared between the executor's loop, its runs and the listener.
#[derive(Debug)]
pub struct Ingest {
    environment: RwLock<String>,
    writer: RwLock<Writer>,
    /// The executor's health counters.
    pub health: Arc<Health>,
}

impl Ingest {
    /// A new ingest path writing through `writer`.
    pub fn new(environment: String, writer: Writer, health: Arc<Health>) -> Arc<Self> {
        Arc::new(Self {
            environment: RwLock::new(environment),
            writer: RwLock::new(writer),
            health,
        })
    }

    /// The writer points go through now.
    pub fn writer(&self) -> Option<Writer> {
        self.writer.read().ok().map(|w| w.clone())
    }

    /// After a reload.
    pub fn reconfigure(&self, environment: &str, writer: Writer) {
        if let Ok(mut current) = self.environment.write() {
            environment.clone_into(&mut current);
        }
        if let Ok(mut current) = self.writer.write() {
            *current = writer;
        }
    }

    /// Checks each line of `body`, adds the run's tags and queues it.
    pub fn accept(
        &self,
        body: &str,
        run: Option<&RunTags<'_>>,
        precision: Precision,
        now_ns: i64,
    ) -> Accepted {
        let environment = self.environment.read().map(|e| e.clone()).unwrap_or_default();
        let Some(writer) = self.writer() else { return Accepted::default() };
        let mut accepted = Accepted::default();
        for (number, line) in body.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let parsed = match lineproto::parse(line) {
                Ok(parsed) => parsed,
                Err(error) => {
                    accepted.first_error.get_or_insert((number + 1, error.to_string()));
                    continue;
                }
            };
            let mut tags = vec![("environment", environment.as_str())];
            if let Some(run) = run {
                tags.push(("job_id", run.job_id));
                if let Some(scenario) = run.scenario {
                    tags.push(("scenario", scenario));
                }
                tags.extend(run.task.iter().copied());
            }
            // openstacksdk names the service only in the measurement.
            if let Some(service) = parsed.measurement.strip_prefix("openstack_api.") {
                tags.push(("service_type", service));
            }
            // Lines without a timestamp get distinct ones: InfluxDB keeps one
            // point per series and timestamp, so equal ones would collapse.
            let arrived = now_ns.saturating_add(accepted.lines as i64);
            writer.write_line(parsed.render(&tags, precision, arrived));
            accepted.lines += 1;
        }
        let health = &self.health;
        health.ingested.fetch_add(accepted.lines as u64, std::sync::atomic::Ordering::Relaxed);
        if accepted.first_error.is_some() {
            health.rejected.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        accepted
    }
}

/// Nanoseconds since the epoch, now.
pub fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
}

#[derive(serde::Deserialize)]
struct WriteParams {
    db: Option<String>,
    precision: Option<String>,
}

/// `POST /write`, as InfluxDB 1.x answers it: 204, or 400 naming the
/// first bad line (the good ones are kept, like InfluxDB's partial write).
async fn write(
    State(ingest): State<Arc<Ingest>>,
    Query(params): Query<WriteParams>,
    body: String,
) -> impl IntoResponse {
    let Some(precision) = Precision::parse(params.precision.as_deref()) else {
        let error = format!("unknown precision `{}`", params.precision.unwrap_or_default());
        return (StatusCode::BAD_REQUEST, axum::Json(serde_json::json!({ "error": error })))
            .into_response();
    };
    let run = params.db.as_deref().and_then(RunTags::from_database);
    let accepted = ingest.accept(&body, run.as_ref(), precision, now_ns());
    match accepted.first_error {
        None => StatusCode::NO_CONTENT.into_response(),
        Some((line, error)) => {
            tracing::warn!(line, %error, "A run sent a malformed point; it was dropped.");
            let error = format!("partial write: line {line}: {error}");
            (StatusCode::BAD_REQUEST, axum::Json(serde_json::json!({ "error": error })))
                .into_response()
        }
    }
}

async fn metrics(State(ingest): State<Arc<Ingest>>) -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        ingest.health.render(now_ns()),
    )
}

/// Serves `/write`, `/ping` and `/metrics` on `listen` until `shutdown`.
///
/// # Errors
/// The address cannot be bound.
pub async fn serve(
    listen: SocketAddr,
    ingest: Arc<Ingest>,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let app = axum::Router::new()
        .route("/write", post(write))
        .route("/ping", get(|| async { StatusCode::NO_CONTENT }))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(ingest);
    crate::serve::serve(&listen.to_string(), app, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::config::ResultsTarget;

    fn ingest() -> (Arc<Ingest>, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("temp dir");
        let target = ResultsTarget {
            // Nothing listens there: points stay in the buffer.
            url: "http://127.0.0.1:9/write".into(),
            database: "apimon".into(),
            credentials: None,
            buffer_dir: dir.path().to_owned(),
            buffer_max_points: 100,
        };
        let health = Arc::new(Health::default());
        let writer = crate::executor::results::spawn(
            target,
            std::time::Duration::from_secs(60),
            Arc::clone(&health.results),
        );
        (Ingest::new("outside".into(), writer, health), dir)
    }

    #[test]
    fn the_database_name_carries_the_run() {
        let name = RunTags::database("token", "ab12");
        let run = RunTags::from_database(&name).expect("run");
        assert_eq!((run.scenario, run.job_id), (Some("token"), "ab12"));
        let bare = RunTags::from_database("ab12").expect("run");
        assert_eq!((bare.scenario, bare.job_id), (None, "ab12"));
        let task =
            RunTags::from_database("token:ab12;az=eu-de-01;metric=issue;evil=1").expect("run");
        assert_eq!(task.job_id, "ab12");
        assert_eq!(task.task, vec![("az", "eu-de-01"), ("metric", "issue")]);
        assert!(RunTags::from_database("").is_none());
    }

    #[tokio::test]
    async fn good_lines_are_queued_with_the_runs_tags_and_a_bad_one_is_named() {
        let (ingest, dir) = ingest();
        let run = RunTags { job_id: "j1", scenario: Some("token"), task: Vec::new() };
        let accepted = ingest.accept(
            "openstack_api.identity,method=POST,name=tokens,status_code=400 duration=7i\n\nbroken\napimon_task,state=ok duration_ms=1i 5\nopenstack_api.identity,method=POST,name=tokens,status_code=400 duration=8i\n",
            Some(&run),
            Precision::Nanoseconds,
            99,
        );
        assert_eq!(accepted.lines, 3);
        assert_eq!(accepted.first_error, Some((3, "missing fields".to_owned())));
        let writer = ingest.writer().expect("writer");
        writer.stop().await;
        let buffered = std::fs::read_to_string(dir.path().join("pending.lp")).expect("buffer");
        assert_eq!(
            buffered,
            "openstack_api.identity,environment=outside,job_id=j1,method=POST,name=tokens,scenario=token,service_type=identity,status_code=400 duration=7i 99\napimon_task,environment=outside,job_id=j1,scenario=token,state=ok duration_ms=1i 5\nopenstack_api.identity,environment=outside,job_id=j1,method=POST,name=tokens,scenario=token,service_type=identity,status_code=400 duration=8i 101\n",
            "two points of one series without a timestamp stay two points"
        );
    }
}
