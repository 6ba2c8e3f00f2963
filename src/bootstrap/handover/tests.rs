//! Table tests of the hand-over against a fake bastion: every failure
//! point and restore branch, and a kill right before or after each call.

use std::sync::Mutex;

use super::*;
use crate::plan::Summary;
use crate::state::State;

/// The bastion, in memory: its store, its mark, whether the daemon runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Remote {
    store: Option<String>,
    taken: Option<String>,
    active: bool,
    credentials: bool,
}

/// Which call fails, and whether it did its work first (a kill right
/// after it) or not (a refusal, or a kill right before it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Before(&'static str),
    After(&'static str),
}

struct FakeBastion {
    remote: Mutex<Remote>,
    fault: Mutex<Option<Fault>>,
    /// Every call fails for this name, not only the first.
    always: bool,
}

impl FakeBastion {
    fn new(remote: Remote, fault: Option<Fault>) -> Self {
        Self { remote: Mutex::new(remote), fault: Mutex::new(fault), always: false }
    }

    fn remote(&self) -> Remote {
        self.remote.lock().expect("lock").clone()
    }

    /// Runs `work` as the call `name`, failing as the fault says.
    fn call<T>(
        &self,
        name: &str,
        work: impl FnOnce(&mut Remote) -> Result<T, HostError>,
    ) -> Result<T, HostError> {
        let fail = || HostError::Command {
            host: "bastion".into(),
            what: name.into(),
            status: 1,
            stderr: "injected".into(),
        };
        let mut fault = self.fault.lock().expect("lock");
        let mut remote = self.remote.lock().expect("lock");
        match *fault {
            Some(Fault::Before(n)) if n == name => {
                if !self.always {
                    *fault = None;
                }
                Err(fail())
            }
            Some(Fault::After(n)) if n == name => {
                *fault = None;
                work(&mut remote)?;
                Err(fail())
            }
            _ => work(&mut remote),
        }
    }
}

#[async_trait]
impl DaemonHost for FakeBastion {
    async fn installed(&self) -> Result<Installed, HostError> {
        self.call("read", |r| {
            Ok(Installed {
                state: r.store.clone(),
                taken: r.taken.clone(),
                active: r.active,
                ..Installed::default()
            })
        })
    }

    async fn take(&self, mark: &str) -> Result<(), HostError> {
        self.call("take", |r| match r.taken {
            Some(_) => Err(HostError::Command {
                host: "bastion".into(),
                what: "take".into(),
                status: 1,
                stderr: "exists".into(),
            }),
            None => {
                r.taken = Some(mark.to_owned());
                Ok(())
            }
        })
    }

    async fn unmark(&self, mark: &str) -> Result<(), HostError> {
        self.call("unmark", |r| {
            if r.taken.as_deref() == Some(mark) {
                r.taken = None;
            }
            Ok(())
        })
    }

    async fn hand_over(&self, store: &[u8], mark: &str) -> Result<(), HostError> {
        self.call("hand_over", |r| {
            r.store = Some(String::from_utf8_lossy(store).into_owned());
            if r.taken.as_deref() == Some(mark) {
                r.taken = None;
            }
            Ok(())
        })
    }

    async fn unit(&self, start: bool) -> Result<(), HostError> {
        self.call(if start { "start" } else { "stop" }, |r| {
            r.active = start;
            Ok(())
        })
    }

    async fn install_credentials(&self) -> Result<Vec<String>, HostError> {
        self.call("credentials", |r| {
            r.credentials = true;
            Ok(vec!["/etc/apimon/secrets.yaml".to_owned()])
        })
    }
}

/// Applies by recording commit `applied` in the local store.
struct FakeOperator<'a> {
    store: &'a LockedStore,
    apply_fails: bool,
    rebuilds: bool,
    accept_changed: bool,
    notes: Mutex<Vec<String>>,
}

impl<'a> FakeOperator<'a> {
    fn new(store: &'a LockedStore) -> Self {
        Self {
            store,
            apply_fails: false,
            rebuilds: false,
            accept_changed: true,
            notes: Mutex::default(),
        }
    }
}

fn empty_plan() -> Plan {
    Plan { changes: Vec::new(), summary: Summary::default(), forget: Vec::new() }
}

#[async_trait]
impl Operator for FakeOperator<'_> {
    async fn plan(&self) -> Result<Plan, HandoverError> {
        let mut plan = empty_plan();
        plan.summary.create = 1;
        Ok(plan)
    }

    async fn apply(&self, _plan: &Plan) -> Result<(), HandoverError> {
        let mut state = self.store.load()?;
        state.environments.entry("outside".into()).or_default().last_applied_commit =
            Some("applied".into());
        self.store.save(&state)?;
        if self.apply_fails {
            return Err(HandoverError::Incomplete);
        }
        Ok(())
    }

    fn rebuilds_bastion(&self, _plan: &Plan) -> bool {
        self.rebuilds
    }

    fn confirm_changed(&self, _plan: &Plan) -> Result<bool, HandoverError> {
        Ok(self.accept_changed)
    }

    fn note(&self, what: Note<'_>) {
        self.notes.lock().expect("lock").push(format!("{what:?}"));
    }
}

/// A store with `commit` as the last applied, as JSON.
fn store_text(commit: &str) -> String {
    let mut state = State::default();
    state.environments.entry("outside".into()).or_default().last_applied_commit =
        Some(commit.into());
    serde_json::to_string(&state).expect("json")
}

fn commit_of(text: &str) -> Option<String> {
    let state = state::parse(Path::new("t"), text).expect("state");
    state.environments.get("outside")?.last_applied_commit.clone()
}

/// A daemon running on an existing bastion with a store at `daemon`.
fn running() -> Remote {
    Remote { store: Some(store_text("daemon")), taken: None, active: true, credentials: true }
}

/// One bootstrap from `begin` to the end; how it ended.
async fn bootstrap(
    bastion: &FakeBastion,
    operator: &FakeOperator<'_>,
    dir: &Path,
    exists: bool,
) -> Result<(), Failure> {
    let installed = if exists {
        bastion.installed().await.map_err(|e| Failure {
            error: HandoverError::Bastion { host: "b".into(), step: Step::Read, source: e },
            restored: Restored::NotNeeded,
        })?
    } else {
        Installed::default()
    };
    let mut handover = Handover::new(bastion, operator, operator.store, dir, "bastion");
    if exists {
        handover
            .begin(&installed)
            .await
            .map_err(|error| Failure { error, restored: Restored::NotNeeded })?;
    }
    handover.run(empty_plan(), exists, installed.active).await
}

fn converged(remote: &Remote, dir: &Path) {
    assert_eq!(remote.taken, None, "no mark left");
    assert!(remote.active, "the daemon runs");
    assert!(remote.credentials, "credentials written");
    assert_eq!(remote.store.as_deref().and_then(commit_of).as_deref(), Some("applied"));
    assert_eq!(holding(dir), None, "nothing held here");
}

#[tokio::test]
async fn a_new_bastion_gets_the_store_and_a_started_daemon() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = LockedStore::open(dir.path()).expect("store");
    let operator = FakeOperator::new(&store);
    let bastion = FakeBastion::new(Remote::default(), None);
    bootstrap(&bastion, &operator, dir.path(), false).await.expect("bootstrap");
    converged(&bastion.remote(), dir.path());
}

#[tokio::test]
async fn a_running_daemon_is_stopped_its_store_taken_and_handed_back_with_the_apply() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = LockedStore::open(dir.path()).expect("store");
    let operator = FakeOperator::new(&store);
    let bastion = FakeBastion::new(running(), None);
    bootstrap(&bastion, &operator, dir.path(), true).await.expect("bootstrap");
    converged(&bastion.remote(), dir.path());
    let notes = operator.notes.lock().expect("lock").join(",");
    assert_eq!(notes, "UsingBastionStore,Stopped,Wrote(\"/etc/apimon/secrets.yaml\"),Started");
}

#[tokio::test]
async fn another_bootstraps_mark_is_refused_before_anything_changes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = LockedStore::open(dir.path()).expect("store");
    let operator = FakeOperator::new(&store);
    let remote =
        Remote { taken: Some("token=x\nby=elsewhere\n".into()), active: false, ..running() };
    let bastion = FakeBastion::new(remote.clone(), None);
    let failure = bootstrap(&bastion, &operator, dir.path(), true).await.expect_err("refused");
    assert!(
        matches!(failure.error, HandoverError::ForeignMark { ref holder, .. } if holder == "token=x by=elsewhere")
    );
    assert_eq!(bastion.remote(), remote, "nothing changed");
}

/// A failure at one point: how the daemon was left, and the bastion
/// and this machine after it.
struct FailureCase {
    fault: Fault,
    apply_fails: bool,
    rebuilds: bool,
    accept_changed: bool,
    /// The bastion's store changes between the first read and the take.
    store_moves: bool,
    restored: Restored,
    /// The bastion's mark is left, and this machine holds the store.
    still_held: bool,
    active: bool,
    /// The last applied commit in the bastion's store afterwards.
    bastion_commit: &'static str,
}

async fn failing(case: FailureCase) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = LockedStore::open(dir.path()).expect("store");
    let mut operator = FakeOperator::new(&store);
    operator.apply_fails = case.apply_fails;
    operator.rebuilds = case.rebuilds;
    operator.accept_changed = case.accept_changed;
    let bastion = FakeBastion::new(running(), None);
    let installed = bastion.installed().await.expect("read");
    let mut handover = Handover::new(&bastion, &operator, &store, dir.path(), "bastion");
    handover.begin(&installed).await.expect("begin");
    *bastion.fault.lock().expect("lock") = Some(case.fault);
    if case.store_moves {
        bastion.remote.lock().expect("lock").store = Some(store_text("moved"));
    }
    let failure = handover.run(empty_plan(), true, true).await.expect_err("fails");
    assert_eq!(failure.restored, case.restored, "{}", failure.error);
    let remote = bastion.remote();
    assert_eq!(remote.taken.is_some(), case.still_held, "mark: {remote:?}");
    assert_eq!(holding(dir.path()).is_some(), case.still_held, "holding record");
    assert_eq!(remote.active, case.active);
    assert_eq!(remote.store.as_deref().and_then(commit_of).as_deref(), Some(case.bastion_commit));
}

macro_rules! failures {
    ($($test:ident: $case:expr;)*) => {$(
        #[tokio::test]
        async fn $test() {
            failing($case).await;
        }
    )*};
}

const CASE: FailureCase = FailureCase {
    fault: Fault::Before("stop"),
    apply_fails: false,
    rebuilds: false,
    accept_changed: true,
    store_moves: false,
    restored: Restored::Running,
    still_held: false,
    active: true,
    bastion_commit: "daemon",
};

failures! {
    a_failed_stop_starts_the_daemon_again: CASE;
    a_refused_take_starts_the_daemon_again_with_its_own_store: FailureCase { fault: Fault::Before("take"), ..CASE };
    a_take_whose_answer_was_lost_is_unmarked_and_started_again: FailureCase { fault: Fault::After("take"), ..CASE };
    a_failed_read_after_the_take_unmarks_and_starts_again: FailureCase { fault: Fault::Before("read"), ..CASE };
    a_changed_store_declined_hands_back_what_was_taken: FailureCase { store_moves: true, accept_changed: false, fault: Fault::Before("none"), bastion_commit: "moved", ..CASE };
    a_failed_apply_hands_back_what_it_did: FailureCase { fault: Fault::Before("none"), apply_fails: true, bastion_commit: "applied", ..CASE };
    a_failed_apply_that_rebuilt_the_bastion_leaves_it_stopped_and_the_store_here: FailureCase { fault: Fault::Before("none"), apply_fails: true, rebuilds: true, restored: Restored::StaysStopped, still_held: true, active: false, ..CASE };
    failed_credentials_hand_back_the_applied_store: FailureCase { fault: Fault::Before("credentials"), bastion_commit: "applied", ..CASE };
    a_failed_hand_over_is_tried_again_by_the_restore: FailureCase { fault: Fault::Before("hand_over"), bastion_commit: "applied", ..CASE };
    a_failed_start_after_the_hand_over_is_reported_with_the_store_back: FailureCase { fault: Fault::Before("start"), restored: Restored::NotNeeded, active: false, bastion_commit: "applied", ..CASE };
}

#[tokio::test]
async fn a_hand_over_that_keeps_failing_leaves_the_store_held_here_for_a_rerun() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = LockedStore::open(dir.path()).expect("store");
    let operator = FakeOperator::new(&store);
    let mut bastion = FakeBastion::new(running(), Some(Fault::Before("hand_over")));
    bastion.always = true;
    let failure = bootstrap(&bastion, &operator, dir.path(), true).await.expect_err("fails");
    assert!(
        matches!(failure.restored, Restored::Failed(ref why) if why.contains("hand the state store back")),
        "{:?}",
        failure.restored
    );
    let remote = bastion.remote();
    assert!(remote.taken.is_some() && !remote.active);
    assert_eq!(holding(dir.path()).map(|h| h.held), Some(Held::Saved));
    // The network is back: a re-run resumes and converges.
    *bastion.fault.lock().expect("lock") = None;
    bootstrap(&bastion, &operator, dir.path(), true).await.expect("rerun");
    converged(&bastion.remote(), dir.path());
}

/// Killed right before or after each call to the bastion (no restore
/// runs), then run again from the start: it resumes or starts over,
/// and ends converged, with nothing lost.
#[tokio::test]
async fn killed_at_any_call_a_rerun_converges() {
    let calls = ["stop", "take", "read", "credentials", "hand_over", "start"];
    let faults = calls.iter().flat_map(|c| [Fault::Before(c), Fault::After(c)]);
    for fault in faults {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = LockedStore::open(dir.path()).expect("store");
        let operator = FakeOperator::new(&store);
        let bastion = FakeBastion::new(running(), None);
        let installed = bastion.installed().await.expect("read");
        {
            let mut handover = Handover::new(&bastion, &operator, &store, dir.path(), "bastion");
            handover.begin(&installed).await.expect("begin");
            *bastion.fault.lock().expect("lock") = Some(fault);
            // A kill: the steps stop where they are, no restore runs.
            let _ = handover.steps(empty_plan(), true, true).await;
        }
        bootstrap(&bastion, &operator, dir.path(), true)
            .await
            .unwrap_or_else(|f| panic!("{fault:?}: the rerun failed: {}", f.error));
        let remote = bastion.remote();
        converged(&remote, dir.path());
    }
}

#[tokio::test]
async fn killed_between_marking_here_and_on_the_bastion_a_stale_record_is_replaced() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = LockedStore::open(dir.path()).expect("store");
    hold(dir.path(), "token=stale\n", Held::Marked).expect("hold");
    let operator = FakeOperator::new(&store);
    let bastion = FakeBastion::new(Remote { active: false, ..running() }, None);
    bootstrap(&bastion, &operator, dir.path(), true).await.expect("bootstrap");
    converged(&bastion.remote(), dir.path());
}

#[test]
fn a_holding_record_round_trips_with_its_phase() {
    let dir = tempfile::tempdir().expect("temp dir");
    assert_eq!(holding(dir.path()), None);
    let mark = mark();
    hold(dir.path(), &mark, Held::Marked).expect("hold");
    assert_eq!(holding(dir.path()), Some(Holding { mark: mark.clone(), held: Held::Marked }));
    hold(dir.path(), &mark, Held::Saved).expect("hold");
    assert_eq!(holding(dir.path()).map(|h| h.held), Some(Held::Saved));
    release(dir.path()).expect("release");
    release(dir.path()).expect("released twice");
    assert_eq!(holding(dir.path()), None);
}
