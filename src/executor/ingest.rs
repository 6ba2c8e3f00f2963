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
//!
//! Each run gets a credential of its own ([`Ingest::admit`]), written into
//! its metrics configuration (readable by the executor's account only):
//! a write without a live run's credential — another local user forging
//! points — is refused and counted, and a run's points carry the run the
//! credential names, whatever database name they claim.

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
    /// Live runs' credentials: token → (scenario, job id).
    runs: std::sync::Mutex<std::collections::HashMap<String, (String, String)>>,
    /// The executor's health counters.
    pub health: Arc<Health>,
}

/// A run's credential for the ingest listener; forgotten when dropped (the
/// run ended: its late points are refused).
pub struct Admission {
    ingest: Arc<Ingest>,
    /// The token (`password` of the run's metrics configuration).
    pub token: String,
}

impl Drop for Admission {
    fn drop(&mut self) {
        if let Ok(mut runs) = self.ingest.runs.lock() {
            runs.remove(&self.token);
        }
    }
}

impl Ingest {
    /// A new ingest path writing through `writer`.
    pub fn new(environment: String, writer: Writer, health: Arc<Health>) -> Arc<Self> {
        Arc::new(Self {
            environment: RwLock::new(environment),
            writer: RwLock::new(writer),
            runs: std::sync::Mutex::default(),
            health,
        })
    }

    /// A credential for the run `job_id` of `scenario`, valid until dropped.
    pub fn admit(self: &Arc<Self>, scenario: &str, job_id: &str) -> Admission {
        let token = format!("{:032x}", rand::random::<u128>());
        if let Ok(mut runs) = self.runs.lock() {
            runs.insert(token.clone(), (scenario.to_owned(), job_id.to_owned()));
        }
        Admission { ingest: Arc::clone(self), token }
    }

    /// The job ids of the runs going on.
    pub fn running_jobs(&self) -> std::collections::BTreeSet<String> {
        self.runs
            .lock()
            .map(|runs| runs.values().map(|(_, job)| job.clone()).collect())
            .unwrap_or_default()
    }

    /// The run whose credential `token` is, while it runs.
    fn admitted(&self, token: &str) -> Option<(String, String)> {
        self.runs.lock().ok()?.get(token).cloned()
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
    /// InfluxDB 1.x's query-string password (`u`, the user, is not looked at).
    p: Option<String>,
}

/// The password a write carries: HTTP Basic (what openstacksdk's client
/// sends), else InfluxDB's `p` parameter.
fn password(headers: &axum::http::HeaderMap, params: &WriteParams) -> Option<String> {
    use base64::Engine as _;
    let basic = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b.trim()).ok())
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|pair| pair.split_once(':').map(|(_, password)| password.to_owned()));
    basic.or_else(|| params.p.clone())
}

/// `POST /write`, as InfluxDB 1.x answers it: 204, or 400 naming the
/// first bad line (the good ones are kept, like InfluxDB's partial write);
/// 401 without a live run's credential.
async fn write(
    State(ingest): State<Arc<Ingest>>,
    headers: axum::http::HeaderMap,
    Query(params): Query<WriteParams>,
    body: String,
) -> impl IntoResponse {
    let Some((scenario, job_id)) =
        password(&headers, &params).and_then(|token| ingest.admitted(&token))
    else {
        let refused =
            ingest.health.unauthenticated.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if refused == 0 || refused.is_power_of_two() {
            tracing::warn!(
                refused = refused + 1,
                "A write without a run's credential was refused (forged or late points)."
            );
        }
        let error = "authorization failed: not a running scenario's credential";
        return (StatusCode::UNAUTHORIZED, axum::Json(serde_json::json!({ "error": error })))
            .into_response();
    };
    let Some(precision) = Precision::parse(params.precision.as_deref()) else {
        let error = format!("unknown precision `{}`", params.precision.unwrap_or_default());
        return (StatusCode::BAD_REQUEST, axum::Json(serde_json::json!({ "error": error })))
            .into_response();
    };
    // The credential names the run; the database name adds only the task
    // tags, and only when it names that same run.
    let claimed = params.db.as_deref().and_then(RunTags::from_database);
    let task = claimed
        .filter(|c| c.job_id == job_id && c.scenario.is_none_or(|s| s == scenario))
        .map(|c| c.task)
        .unwrap_or_default();
    let run = RunTags { job_id: &job_id, scenario: Some(&scenario), task };
    let accepted = ingest.accept(&body, Some(&run), precision, now_ns());
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
    crate::serve::serve(&listen.to_string(), &[], app, shutdown).await
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
            zone: None,
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

    #[tokio::test]
    async fn only_a_running_scenarios_credential_writes_and_it_names_the_run() {
        use base64::Engine as _;
        let (ingest, dir) = ingest();
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            probe.local_addr().expect("address").port()
        };
        let stop = tokio_util::sync::CancellationToken::new();
        let address: SocketAddr = ([127, 0, 0, 1], port).into();
        serve(address, Arc::clone(&ingest), stop.clone()).await.expect("serve");
        let client = reqwest::Client::new();
        let url = format!("http://{address}/write?db=token:forged;az=zone-9");
        let post = |password: Option<String>| {
            let mut request = client.post(&url).body("apimon_task,state=ok duration_ms=1i 5\n");
            if let Some(password) = password {
                let basic = base64::engine::general_purpose::STANDARD
                    .encode(format!("apimon-run:{password}"));
                request = request.header("Authorization", format!("Basic {basic}"));
            }
            request.send()
        };
        // No credential, or a made-up one: refused and counted.
        assert_eq!(post(None).await.expect("post").status().as_u16(), 401);
        assert_eq!(post(Some("0".repeat(32))).await.expect("post").status().as_u16(), 401);
        assert_eq!(ingest.health.unauthenticated.load(std::sync::atomic::Ordering::Relaxed), 2);
        assert!(ingest.health.render(0).contains("apimon_executor_writes_unauthenticated_total 2"));
        // A running scenario's: taken, as that run, whatever database it names.
        let admission = ingest.admit("token", "j7");
        assert_eq!(post(Some(admission.token.clone())).await.expect("post").status().as_u16(), 204);
        // The run ended: its credential is gone.
        let token = admission.token.clone();
        drop(admission);
        assert_eq!(post(Some(token)).await.expect("post").status().as_u16(), 401);
        stop.cancel();
        let writer = ingest.writer().expect("writer");
        writer.stop().await;
        let buffered = std::fs::read_to_string(dir.path().join("pending.lp")).expect("buffer");
        assert_eq!(
            buffered,
            "apimon_task,environment=outside,job_id=j7,scenario=token,state=ok duration_ms=1i 5\n"
        );
    }
}
