//! Results: one InfluxDB line-protocol point per run, written through a
//! bounded buffer on disk so that no point is lost while telegraf or
//! InfluxDB is down. Every point is appended to the buffer file first and
//! removed only after the target accepted it; a restart of the executor
//! resumes from the file.

use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};

use super::config::ResultsTarget;

/// Measurement name (see docs/metrics.md).
pub const MEASUREMENT: &str = "apimon_scenario";

/// Lines sent in one request at most.
const BATCH: usize = 5_000;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunResult {
    /// Exit code 0 / expected status.
    Passed,
    /// Anything else.
    Failed,
    /// Killed at its timeout.
    Timeout,
    /// Killed by apimon itself (shutdown past its grace period, or a
    /// second stop request): says nothing about the monitored cloud.
    Aborted,
    /// Not started: the previous run of the scenario was still going, or
    /// the host was overloaded (`reason`).
    Skipped,
    /// apimon's own fault, or a playbook Ansible could not load: the
    /// runner could not start, the run directory could not be made, or
    /// Ansible stopped before any task (exit 4, a parser error: unknown
    /// module or collection, bad syntax; exit 5, bad options). Says
    /// nothing about the monitored cloud (`reason` says which).
    Error,
}

impl RunResult {
    /// Tag value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Passed => "passed",
            Self::Failed => "failed",
            Self::Timeout => "timeout",
            Self::Aborted => "aborted",
            Self::Skipped => "skipped",
            Self::Error => "error",
        }
    }
}

/// One point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Point {
    /// Scenario.
    pub scenario: String,
    /// Environment.
    pub environment: String,
    /// `ansible` or `http`.
    pub runner: &'static str,
    /// Result.
    pub result: RunResult,
    /// Duration in ms.
    pub duration_ms: u64,
    /// Exit code, HTTP status, or -1 when killed.
    pub return_code: i64,
    /// When the run was scheduled (the point's timestamp).
    pub time: DateTime<Utc>,
    /// The run's job id (playbook runs).
    pub job_id: Option<String>,
    /// The end of a run's output when it did not pass.
    pub output: Option<String>,
    /// How the cleanup playbook ended, when one ran.
    pub cleanup: Option<RunResult>,
    /// Why a run did not start or was not the cloud's doing (`busy`,
    /// `overloaded`).
    pub reason: Option<&'static str>,
    /// Where the run's log is kept (object storage), when it is.
    pub log_url: Option<String>,
}

/// Escapes a tag value (commas, spaces, equals signs, backslashes).
fn tag(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, ',' | ' ' | '=' | '\\') {
            out.push('\\');
        }
        if c == '\n' {
            out.push(' ');
        } else {
            out.push(c);
        }
    }
    out
}

/// Quotes a string field value (double quotes and backslashes escaped,
/// line breaks written as the two characters `\n`).
fn string_field(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            // Line protocol has no newline in a value: stored as `\n`.
            '\n' => out.push_str("\\\\n"),
            '\r' => {}
            _ => out.push(c),
        }
    }
    out.push('"');
    out
}

impl Point {
    /// InfluxDB line protocol, tags sorted by key, nanosecond timestamp.
    pub fn line(&self) -> String {
        let mut fields = String::new();
        if let Some(cleanup) = self.cleanup {
            fields.push_str(&format!("cleanup=\"{}\",", cleanup.as_str()));
        }
        fields.push_str(&format!("duration_ms={}i", self.duration_ms));
        if let Some(job_id) = &self.job_id {
            fields.push_str(&format!(",job_id={}", string_field(job_id)));
        }
        if let Some(url) = &self.log_url {
            fields.push_str(&format!(",log_url={}", string_field(url)));
        }
        if let Some(output) = &self.output {
            fields.push_str(&format!(",output={}", string_field(output)));
        }
        if let Some(reason) = self.reason {
            fields.push_str(&format!(",reason={}", string_field(reason)));
        }
        fields.push_str(&format!(",return_code={}i", self.return_code));
        format!(
            "{MEASUREMENT},environment={},result={},runner={},scenario={} {fields} {}",
            tag(&self.environment),
            self.result.as_str(),
            self.runner,
            tag(&self.scenario),
            self.time.timestamp_nanos_opt().unwrap_or_default()
        )
    }
}

/// Counters, shared with whoever wants to watch.
#[derive(Debug, Default)]
pub struct Counters {
    /// Points the target accepted.
    pub written: AtomicU64,
    /// Points dropped because the buffer was full or the target rejected them.
    pub dropped: AtomicU64,
    /// Points waiting in the buffer.
    pub buffered: AtomicU64,
    /// Timestamp (ns) of the oldest buffered point; 0 when none.
    pub oldest_ns: AtomicI64,
}

enum Command {
    Point(String),
    Stop(oneshot::Sender<()>),
}

/// Sends points to the writer task.
#[derive(Debug, Clone)]
pub struct Writer {
    commands: mpsc::UnboundedSender<Command>,
    /// The executor's zone, a tag of every point.
    zone: Option<Arc<str>>,
    /// Counters.
    pub counters: Arc<Counters>,
}

impl Writer {
    /// Queues a point; never blocks.
    pub fn write(&self, point: &Point) {
        self.write_line(point.line());
    }

    /// Queues a line of line protocol, already checked, with its timestamp.
    pub fn write_line(&self, line: String) {
        let line = match &self.zone {
            Some(zone) => super::zone::tagged(line, zone),
            None => line,
        };
        let _ = self.commands.send(Command::Point(line));
    }

    /// Tries one last flush, then stops the task.
    pub async fn stop(&self) {
        let (done, wait) = oneshot::channel();
        if self.commands.send(Command::Stop(done)).is_ok() {
            let _ = wait.await;
        }
    }
}

/// Starts the writer task for `target`; `retry_every` is how often a
/// non-empty buffer is retried. `counters` outlive a writer replaced on reload.
pub fn spawn(target: ResultsTarget, retry_every: Duration, counters: Arc<Counters>) -> Writer {
    let (commands, mut receiver) = mpsc::unbounded_channel();
    let zone: Option<Arc<str>> = target.zone.as_deref().map(Arc::from);
    let mut buffer = Buffer::open(&target);
    buffer.gauges(&counters);
    let task_counters = Arc::clone(&counters);
    tokio::spawn(async move {
        let http =
            reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap_or_default();
        let mut down = false;
        loop {
            let command = if buffer.lines.is_empty() {
                receiver.recv().await
            } else {
                match tokio::time::timeout(retry_every, receiver.recv()).await {
                    Ok(command) => command,
                    Err(_) => {
                        buffer.flush(&http, &target, &task_counters, &mut down).await;
                        continue;
                    }
                }
            };
            match command {
                Some(Command::Point(line)) => {
                    // Whatever else is queued already goes to disk in one
                    // write and to the target in the same request.
                    let mut lines = vec![line];
                    let mut stop = None;
                    while let Ok(command) = receiver.try_recv() {
                        match command {
                            Command::Point(line) => lines.push(line),
                            Command::Stop(done) => {
                                stop = Some(done);
                                break;
                            }
                        }
                    }
                    buffer.push(lines, &task_counters);
                    buffer.flush(&http, &target, &task_counters, &mut down).await;
                    if let Some(done) = stop {
                        let _ = done.send(());
                        return;
                    }
                }
                Some(Command::Stop(done)) => {
                    buffer.flush(&http, &target, &task_counters, &mut down).await;
                    let _ = done.send(());
                    return;
                }
                None => return,
            }
        }
    });
    Writer { commands, counters, zone }
}

/// The on-disk buffer and its in-memory mirror.
struct Buffer {
    path: PathBuf,
    lines: VecDeque<String>,
    max: usize,
}

impl Buffer {
    fn open(target: &ResultsTarget) -> Self {
        let path = target.buffer_dir.join("pending.lp");
        if let Err(error) = std::fs::create_dir_all(&target.buffer_dir) {
            tracing::error!(dir = %target.buffer_dir.display(), %error, "Cannot create the results buffer directory; points are kept in memory only.");
        }
        let lines = std::fs::read_to_string(&path)
            .map(|text| text.lines().filter(|l| !l.is_empty()).map(str::to_owned).collect())
            .unwrap_or_default();
        let buffer = Self { path, lines, max: target.buffer_max_points };
        if !buffer.lines.is_empty() {
            tracing::info!(
                points = buffer.lines.len(),
                "Resuming results buffered before a restart."
            );
        }
        buffer
    }

    /// Publishes the buffer's size and the age of its oldest point.
    fn gauges(&self, counters: &Counters) {
        counters.buffered.store(self.lines.len() as u64, Ordering::Relaxed);
        // Every buffered line ends with its nanosecond timestamp.
        let oldest = self
            .lines
            .front()
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|time| time.parse::<i64>().ok())
            .unwrap_or(0);
        counters.oldest_ns.store(oldest, Ordering::Relaxed);
    }

    fn push(&mut self, lines: Vec<String>, counters: &Counters) {
        let mut text = String::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
        for line in &lines {
            text.push_str(line);
            text.push('\n');
        }
        self.lines.extend(lines);
        if self.lines.len() > self.max {
            // A tenth at once, so a long outage does not rewrite the file per point.
            let excess = (self.lines.len() - self.max + self.max / 10).min(self.lines.len());
            self.lines.drain(..excess);
            counters.dropped.fetch_add(excess as u64, Ordering::Relaxed);
            tracing::warn!(
                dropped = excess,
                max = self.max,
                "Results buffer full; dropped the oldest points."
            );
            self.rewrite();
            return;
        }
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut file| file.write_all(text.as_bytes()));
        if let Err(error) = appended {
            tracing::warn!(file = %self.path.display(), %error, "Cannot append to the results buffer; the points are kept in memory.");
        }
    }

    /// Replaces the file with the in-memory lines, atomically.
    fn rewrite(&self) {
        let temporary = self.path.with_extension("lp.tmp");
        let mut text = String::new();
        for line in &self.lines {
            text.push_str(line);
            text.push('\n');
        }
        let result =
            std::fs::write(&temporary, text).and_then(|()| std::fs::rename(&temporary, &self.path));
        if let Err(error) = result {
            tracing::warn!(file = %self.path.display(), %error, "Cannot rewrite the results buffer.");
        }
    }

    async fn flush(
        &mut self,
        http: &reqwest::Client,
        target: &ResultsTarget,
        counters: &Counters,
        down: &mut bool,
    ) {
        // The file is rewritten once, after the loop: a crash in between
        // sends a batch again, which InfluxDB stores once (same series,
        // same timestamps).
        let mut sent = false;
        while !self.lines.is_empty() {
            let count = self.lines.len().min(BATCH);
            let body: String = self.lines.iter().take(count).map(|l| format!("{l}\n")).collect();
            let mut request = http
                .post(&target.url)
                .query(&[("db", target.database.as_str()), ("precision", "ns")])
                .body(body);
            if let Some((user, password)) = &target.credentials {
                request = request.basic_auth(user, Some(password.expose()));
            }
            match request.send().await {
                Ok(response) if response.status().is_success() => {
                    self.lines.drain(..count);
                    counters.written.fetch_add(count as u64, Ordering::Relaxed);
                    if *down {
                        tracing::info!(url = %target.url, "Results target is back; buffered points sent.");
                        *down = false;
                    }
                    sent = true;
                }
                Ok(response) if response.status().as_u16() == 400 => {
                    // A malformed batch would block every later point forever.
                    let text = response.text().await.unwrap_or_default();
                    tracing::error!(url = %target.url, points = count, error = %text, "Results target rejected points as malformed; dropped them.");
                    self.lines.drain(..count);
                    counters.dropped.fetch_add(count as u64, Ordering::Relaxed);
                    sent = true;
                }
                Ok(response) => {
                    if !*down {
                        tracing::warn!(url = %target.url, status = response.status().as_u16(), buffered = self.lines.len(), "Results target refused points; keeping them and retrying.");
                        *down = true;
                    }
                    break;
                }
                Err(error) => {
                    if !*down {
                        tracing::warn!(url = %target.url, %error, buffered = self.lines.len(), "Results target unreachable; keeping points on disk and retrying.");
                        *down = true;
                    }
                    break;
                }
            }
        }
        if sent {
            self.rewrite();
        }
        self.gauges(counters);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_protocol_escapes_tags_and_types_fields() {
        let point = Point {
            scenario: "list servers,eu".into(),
            environment: "outside".into(),
            runner: "ansible",
            result: RunResult::Failed,
            duration_ms: 1234,
            return_code: 2,
            time: DateTime::from_timestamp(1_700_000_000, 5).expect("time"),
            job_id: Some("0123456789abcdef0123456789abcdef".into()),
            output: Some("fatal: \"x\" at C:\\\nend".into()),
            cleanup: None,
            reason: None,
            log_url: None,
        };
        assert_eq!(
            point.line(),
            "apimon_scenario,environment=outside,result=failed,runner=ansible,scenario=list\\ servers\\,eu duration_ms=1234i,job_id=\"0123456789abcdef0123456789abcdef\",output=\"fatal: \\\"x\\\" at C:\\\\\\\\nend\",return_code=2i 1700000000000000005"
        );
    }
}
