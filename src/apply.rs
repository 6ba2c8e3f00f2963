//! Carrying out a plan: dependency order, bounded parallelism, retries.
//!
//! Independent changes run side by side (up to `parallelism`); a change
//! starts once everything it depends on succeeded. A transient failure
//! (unreachable, 5xx, timeout) is retried with exponential backoff and
//! jitter; a change that still fails skips its dependents, transitively,
//! while unrelated changes carry on. Partial failure is a value
//! ([`Outcome`]), never a panic or an early exit.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use backon::Retryable;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::error::{chain, FailureKind};
use crate::plan::{dependency_graph, dependents, Op, Planned, ResourceId};
use crate::retry::Delays;

/// How to apply.
#[derive(Debug, Clone, Copy)]
pub struct ApplyOptions {
    /// Changes running at once.
    pub parallelism: usize,
    /// Tries per change, the first included.
    pub max_attempts: u32,
    /// Wait before the first retry; doubles each time.
    pub initial_backoff: Duration,
    /// Longest wait between tries.
    pub max_backoff: Duration,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        Self {
            parallelism: 4,
            max_attempts: 4,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(10),
        }
    }
}

impl ApplyOptions {
    /// Delays between the tries of one change: exponential, capped, with
    /// up to 25 % jitter so retries of many changes spread out.
    pub fn delays(&self) -> Delays {
        Delays::new(self.initial_backoff, self.max_backoff, 0.25)
            .times(self.max_attempts.saturating_sub(1) as usize)
    }
}

/// One change failed. It keeps the provider's typed error, and how it is
/// to be handled.
#[derive(Debug, Clone)]
pub struct ChangeError {
    /// Whether retrying may help.
    pub kind: FailureKind,
    /// The error with its causes, on one line; never holds a secret.
    message: String,
    /// The provider's error.
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl ChangeError {
    /// A failure described by `message` alone.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into(), source: None }
    }

    /// A failure caused by `error`.
    pub fn from_error(
        kind: FailureKind,
        error: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self { kind, message: chain(&error), source: Some(Arc::new(error)) }
    }

    /// A failure caused by `error`, `context` first (what became of the change).
    pub fn with_context(
        kind: FailureKind,
        context: &str,
        error: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self {
            kind,
            message: format!("{context}: {}", chain(&error)),
            source: Some(Arc::new(error)),
        }
    }

    /// Worth retrying.
    pub fn is_transient(&self) -> bool {
        self.kind == FailureKind::Transient
    }

    /// The provider's error, for code that decides by its type.
    pub fn cause(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        self.source.as_deref()
    }
}

impl std::fmt::Display for ChangeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ChangeError {}

impl Serialize for ChangeError {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.message)
    }
}

/// Progress, reported as it happens.
#[derive(Debug, Clone)]
pub enum Event<'a> {
    /// The change is about to start (its first try).
    Started(&'a ResourceId, &'a Op),
    /// The change succeeded.
    Applied(&'a ResourceId, &'a Op),
    /// The change failed for good.
    Failed(&'a ResourceId, &'a ChangeError),
    /// The change was not tried because a dependency failed.
    Skipped(&'a ResourceId, &'a ResourceId),
}

/// What happened.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Outcome {
    /// Changes carried out, in completion order.
    pub applied: Vec<ResourceId>,
    /// Changes that failed, with the error.
    pub failed: BTreeMap<ResourceId, ChangeError>,
    /// Changes not tried, with the failed change they depend on.
    pub skipped: BTreeMap<ResourceId, ResourceId>,
    /// Changes not started because a stop was requested (shutdown).
    pub not_started: Vec<ResourceId>,
}

impl Outcome {
    /// Nothing failed or was skipped.
    pub fn is_success(&self) -> bool {
        self.failed.is_empty() && self.skipped.is_empty() && self.not_started.is_empty()
    }

    /// Whether every failure is permanent (retrying the same plan cannot
    /// help): true when nothing failed.
    pub fn only_permanent_failures(&self) -> bool {
        self.failed.values().all(|e| e.kind == FailureKind::Permanent)
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Apply: {} applied, {} failed, {} skipped.",
            self.applied.len(),
            self.failed.len(),
            self.skipped.len()
        )
    }
}

/// Applies the actions of `changes` (no-ops are skipped silently) with
/// `apply_one`, calling `on_event` as each one starts and ends. Once `stop`
/// is cancelled, no further change starts; running ones finish, the rest
/// are `not_started`.
pub async fn execute<C, F, Fut>(
    changes: &[Planned<C>],
    options: &ApplyOptions,
    apply_one: F,
    mut on_event: impl FnMut(Event<'_>),
    stop: &CancellationToken,
) -> Outcome
where
    C: Clone + Send + Sync + 'static,
    F: Fn(Planned<C>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), ChangeError>> + Send + 'static,
{
    let actions: Vec<Planned<C>> = changes.iter().filter(|c| c.op != Op::NoOp).cloned().collect();
    let (successors, mut waiting_on) = dependency_graph(&actions);
    let mut ready: BTreeSet<usize> = (0..actions.len()).filter(|i| waiting_on[*i] == 0).collect();
    let mut skipped = vec![false; actions.len()];
    let mut outcome = Outcome::default();
    let mut running = tokio::task::JoinSet::new();
    let parallelism = options.parallelism.max(1);
    loop {
        while running.len() < parallelism && !stop.is_cancelled() {
            let Some(next) = ready.pop_first() else { break };
            on_event(Event::Started(&actions[next].id, &actions[next].op));
            let change = actions[next].clone();
            let apply_one = apply_one.clone();
            let options = *options;
            running.spawn(async move { (next, with_retries(change, &options, apply_one).await) });
        }
        let Some(joined) = running.join_next().await else {
            if stop.is_cancelled() {
                let done: BTreeSet<&ResourceId> = outcome
                    .applied
                    .iter()
                    .chain(outcome.failed.keys())
                    .chain(outcome.skipped.keys())
                    .collect();
                outcome.not_started = actions
                    .iter()
                    .map(|c| &c.id)
                    .filter(|id| !done.contains(id))
                    .cloned()
                    .collect();
            }
            break;
        };
        let (index, result) = match joined {
            Ok(done) => done,
            // A panicking change cannot be attributed; abort the rest safely.
            Err(error) => {
                tracing::error!(%error, "A change panicked; stopping the apply.");
                break;
            }
        };
        let id = &actions[index].id;
        match result {
            Ok(()) => {
                on_event(Event::Applied(id, &actions[index].op));
                outcome.applied.push(id.clone());
                for &after in &successors[index] {
                    waiting_on[after] -= 1;
                    if waiting_on[after] == 0 && !skipped[after] {
                        ready.insert(after);
                    }
                }
            }
            Err(error) => {
                on_event(Event::Failed(id, &error));
                outcome.failed.insert(id.clone(), error);
                for dependent in dependents(&successors, index) {
                    if !skipped[dependent] {
                        skipped[dependent] = true;
                        ready.remove(&dependent);
                        on_event(Event::Skipped(&actions[dependent].id, id));
                        outcome.skipped.insert(actions[dependent].id.clone(), id.clone());
                    }
                }
            }
        }
    }
    outcome
}

async fn with_retries<C, F, Fut>(
    change: Planned<C>,
    options: &ApplyOptions,
    apply_one: F,
) -> Result<(), ChangeError>
where
    F: Fn(Planned<C>) -> Fut,
    C: Clone,
    Fut: Future<Output = Result<(), ChangeError>>,
{
    let mut attempts = 0u32;
    let result = (|| {
        attempts += 1;
        apply_one(change.clone())
    })
    .retry(options.delays())
    .sleep(tokio::time::sleep)
    .when(ChangeError::is_transient)
    .notify(|error: &ChangeError, delay: Duration| {
        tracing::warn!(resource = %change.id, delay_ms = delay.as_millis() as u64, error = %error, "Change failed; retrying.");
    })
    .await;
    result.map_err(|mut error| {
        if attempts > 1 {
            error.message = format!("{} (after {attempts} attempts)", error.message);
        }
        error
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Mutex;

    use backon::BackoffBuilder;

    use super::*;
    use crate::plan::ProviderKind;

    fn id(name: &str) -> ResourceId {
        ResourceId::new("e", ProviderKind::named("fake"), "x", name)
    }

    fn change(name: &str, deps: &[&str]) -> Planned<()> {
        Planned::bare(id(name), Op::Create, deps.iter().map(|d| id(d)).collect(), ())
    }

    fn fast() -> ApplyOptions {
        ApplyOptions {
            parallelism: 2,
            max_attempts: 3,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(40),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_skips_dependents_but_not_unrelated_changes() {
        let plan =
            vec![change("a", &[]), change("b", &["a"]), change("c", &["b"]), change("d", &[])];
        let outcome = execute(
            &plan,
            &fast(),
            |c: Planned<()>| async move {
                if &*c.id.name == "a" {
                    Err(ChangeError::new(FailureKind::Permanent, "boom"))
                } else {
                    Ok(())
                }
            },
            |_| {},
            &CancellationToken::new(),
        )
        .await;
        assert_eq!(outcome.applied, vec![id("d")]);
        assert_eq!(outcome.failed.keys().collect::<Vec<_>>(), vec![&id("a")]);
        assert_eq!(outcome.skipped, BTreeMap::from([(id("b"), id("a")), (id("c"), id("a"))]));
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_with_backoff() {
        let tries = Arc::new(AtomicU32::new(0));
        let counter = Arc::clone(&tries);
        let outcome = execute(
            &[change("a", &[])],
            &fast(),
            move |_| {
                let counter = Arc::clone(&counter);
                async move {
                    if counter.fetch_add(1, Ordering::SeqCst) < 2 {
                        Err(ChangeError::new(FailureKind::Transient, "refused"))
                    } else {
                        Ok(())
                    }
                }
            },
            |_| {},
            &CancellationToken::new(),
        )
        .await;
        assert!(outcome.is_success());
        assert_eq!(tries.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stop_at_max_attempts_and_say_so() {
        let outcome = execute(
            &[change("a", &[])],
            &fast(),
            |_| async { Err(ChangeError::new(FailureKind::Transient, "refused")) },
            |_| {},
            &CancellationToken::new(),
        )
        .await;
        assert_eq!(
            outcome.failed.get(&id("a")).map(ToString::to_string).as_deref(),
            Some("refused (after 3 attempts)")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn dependencies_complete_before_dependents_start() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&log);
        let plan = vec![
            change("db", &[]),
            change("rp", &["db"]),
            change("user", &[]),
            change("grant", &["user", "db"]),
        ];
        execute(
            &plan,
            &fast(),
            move |c: Planned<()>| {
                let record = Arc::clone(&record);
                async move {
                    record
                        .lock()
                        .map_err(|_| ChangeError::new(FailureKind::Permanent, "lock"))?
                        .push(c.id.name.clone());
                    Ok(())
                }
            },
            |_| {},
            &CancellationToken::new(),
        )
        .await;
        let order = log.lock().expect("lock").clone();
        let at = |n: &str| order.iter().position(|x| &**x == n).expect("ran");
        assert!(
            at("db") < at("rp") && at("db") < at("grant") && at("user") < at("grant"),
            "{order:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_lets_running_changes_finish_and_starts_no_more() {
        let stop = CancellationToken::new();
        let flag = stop.clone();
        let plan = vec![change("a", &[]), change("b", &["a"]), change("c", &["b"])];
        let outcome = execute(
            &plan,
            &ApplyOptions { parallelism: 1, ..fast() },
            move |_c: Planned<()>| {
                let flag = flag.clone();
                async move {
                    // The stop arrives while the first change runs.
                    flag.cancel();
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    Ok(())
                }
            },
            |_| {},
            &stop,
        )
        .await;
        assert_eq!(outcome.applied, vec![id("a")]);
        assert_eq!(outcome.not_started, vec![id("b"), id("c")]);
        assert!(!outcome.is_success());
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let options = ApplyOptions {
            parallelism: 1,
            max_attempts: 9,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(350),
        };
        let delays: Vec<Duration> = options.delays().build().collect();
        assert_eq!(delays.len(), 8, "one delay between each of 9 tries");
        let first = delays[0];
        assert!(first >= Duration::from_millis(100) && first < Duration::from_millis(125));
        let second = delays[1];
        assert!(second >= Duration::from_millis(200) && second < Duration::from_millis(250));
        let capped = delays[7];
        assert!(capped >= Duration::from_millis(350) && capped < Duration::from_millis(438));
    }
}
