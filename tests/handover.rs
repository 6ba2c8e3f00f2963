//! The hand-over's contract against a real bastion: the same phase script
//! as `bootstrap::handover`'s table tests, with the real SSH commands
//! (`bootstrap::bastion`) against the suite's sshd. Killed right before
//! and right after each call to the bastion (the run is dropped where it
//! stands: no restore runs, as after a SIGKILL), then run again from the
//! start: it resumes or starts over, and ends with the store handed back,
//! no mark left and the daemon running.

use std::path::Path;
use std::sync::Arc;

use apimon::bootstrap::bastion::{Bastion, DaemonBastion, Installed};
use apimon::bootstrap::handover::{DaemonHost, Handover, HandoverError, Note, Operator};
use apimon::bootstrap::{holding, Credential};
use apimon::plan::{DesiredSet, Summary};
use apimon::providers::host::{HostError, HostProvider};
use apimon::providers::Availability;
use apimon::reconcile::Plan;
use apimon::state::{LockedStore, State};
use async_trait::async_trait;
use tokio::sync::Notify;

use crate::support::host::Setup;

/// A service manager on the bastion that only remembers whether a unit runs.
const SYSTEMCTL: &str = r#"#!/bin/sh
d="$(dirname "$0")/contract-units"; mkdir -p "$d"
case "$1" in
  start) touch "$d/$2.active" ;;
  stop) rm -f "$d/$2.active" ;;
  is-active) if [ -e "$d/$2.active" ]; then echo active; else echo inactive; exit 3; fi ;;
esac
"#;

/// Where the run is killed: right before a call, or right after it did its work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kill {
    Before(&'static str),
    After(&'static str),
}

/// The real bastion, killed at one point: the call then never returns.
struct Killing<'a> {
    inner: &'a DaemonBastion<'a>,
    at: std::sync::Mutex<Option<Kill>>,
    killed: Arc<Notify>,
}

impl Killing<'_> {
    async fn call<T>(
        &self,
        name: &'static str,
        work: impl std::future::Future<Output = Result<T, HostError>>,
    ) -> Result<T, HostError> {
        let at = *self.at.lock().expect("lock");
        if at == Some(Kill::Before(name)) {
            self.killed.notify_one();
            return std::future::pending().await;
        }
        let result = work.await;
        if at == Some(Kill::After(name)) {
            self.killed.notify_one();
            return std::future::pending().await;
        }
        result
    }
}

#[async_trait]
impl DaemonHost for Killing<'_> {
    async fn installed(&self) -> Result<Installed, HostError> {
        self.call("read", self.inner.installed()).await
    }
    async fn take(&self, mark: &str) -> Result<(), HostError> {
        self.call("take", self.inner.take(mark)).await
    }
    async fn unmark(&self, mark: &str) -> Result<(), HostError> {
        self.call("unmark", self.inner.unmark(mark)).await
    }
    async fn hand_over(&self, store: &[u8], mark: &str) -> Result<(), HostError> {
        self.call("hand_over", self.inner.hand_over(store, mark)).await
    }
    async fn unit(&self, start: bool) -> Result<(), HostError> {
        self.call(if start { "start" } else { "stop" }, self.inner.unit(start)).await
    }
    async fn install_credentials(&self) -> Result<Vec<String>, HostError> {
        self.call("credentials", self.inner.install_credentials()).await
    }
}

/// Applies by recording commit `applied` in the local store.
struct Applier<'a> {
    store: &'a LockedStore,
}

fn empty_plan() -> Plan {
    Plan { changes: Vec::new(), summary: Summary::default(), forget: Vec::new() }
}

#[async_trait]
impl Operator for Applier<'_> {
    async fn plan(&self) -> Result<Plan, HandoverError> {
        Ok(empty_plan())
    }
    async fn apply(&self, _plan: &Plan) -> Result<(), HandoverError> {
        let mut state = self.store.load()?;
        state.environments.entry("outside".into()).or_default().last_applied_commit =
            Some("applied".into());
        Ok(self.store.save(&state)?)
    }
    fn rebuilds_bastion(&self, _plan: &Plan) -> bool {
        false
    }
    fn confirm_changed(&self, _plan: &Plan) -> Result<bool, HandoverError> {
        Ok(true)
    }
    fn note(&self, _what: Note<'_>) {}
}

fn commit_in(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let state = apimon::state::parse(path, &text).ok()?;
    state.environments.get("outside")?.last_applied_commit.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_before_or_after_any_call_to_a_real_bastion_a_rerun_converges() {
    let Some(setup) = Setup::new().await else { return };
    let systemctl = setup.root.path().join("contract-systemctl");
    std::fs::write(&systemctl, SYSTEMCTL).expect("systemctl");
    std::fs::set_permissions(&systemctl, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    setup.repo.edit(
        "apimon.yaml",
        &format!("service_manager: {}/.tools/systemctl", setup.root.path().display()),
        &format!("service_manager: {}", systemctl.display()),
    );
    // The daemon's credentials are written as its account's.
    if !std::process::Command::new("id").arg("apimon").status().is_ok_and(|s| s.success()) {
        let made = std::process::Command::new("useradd")
            .args(["--system", "--no-create-home", "--gid", "apimon", "apimon"])
            .status();
        assert!(made.is_ok_and(|s| s.success()), "cannot create the apimon account");
    }
    let prepared = setup.prepare().expect("prepare");
    let env = &prepared.state.environments["outside"];
    let machine = setup.machine();
    let Availability::Available(provider) =
        HostProvider::for_environment(env, &DesiredSet::new(), &machine, None)
    else {
        panic!("the hosts are not reachable");
    };
    let bastion_host = env.daemon_host().map_or("outside-bastion", |h| h.name.as_str());
    let bastion = Bastion::new(&provider, bastion_host);
    let credentials = [Credential::private("/etc/apimon/secrets.yaml", b"token: x\n".to_vec())];
    let real = DaemonBastion { bastion: &bastion, credentials: &credentials };
    let remote_store = setup.file("/var/lib/apimon/state.json");
    let mark_file = setup.file("/var/lib/apimon/state.taken");
    let running = setup.root.path().join("contract-units/apimon.active");

    let calls = ["stop", "take", "read", "credentials", "hand_over", "start"];
    for kill in calls.iter().flat_map(|c| [Kill::Before(c), Kill::After(c)]) {
        // A daemon runs with its store; this machine holds nothing.
        let local = tempfile::tempdir().expect("state dir");
        let store = LockedStore::open(local.path()).expect("store");
        let mut state = State::default();
        state.environments.entry("outside".into()).or_default().last_applied_commit =
            Some("daemon".into());
        std::fs::create_dir_all(remote_store.parent().expect("dir")).expect("mkdir");
        std::fs::write(&remote_store, serde_json::to_string(&state).expect("json")).expect("store");
        let _ = std::fs::remove_file(&mark_file);
        real.unit(true).await.expect("start the daemon");
        let operator = Applier { store: &store };

        let killing =
            Killing { inner: &real, at: std::sync::Mutex::new(Some(kill)), killed: Arc::default() };
        let installed = real.installed().await.expect("read");
        let mut handover = Handover::new(&killing, &operator, &store, local.path(), bastion_host);
        handover.begin(&installed).await.expect("begin");
        tokio::select! {
            result = handover.run(empty_plan(), true, installed.active) => {
                panic!("{kill:?}: the run ended before the kill: {:?}", result.err().map(|f| f.error.to_string()))
            }
            () = killing.killed.notified() => {}
        }
        drop(handover);

        // Run again from the start.
        let installed = real.installed().await.expect("read");
        let mut handover = Handover::new(&real, &operator, &store, local.path(), bastion_host);
        handover.begin(&installed).await.unwrap_or_else(|e| panic!("{kill:?}: begin: {e}"));
        handover
            .run(empty_plan(), true, installed.active)
            .await
            .unwrap_or_else(|f| panic!("{kill:?}: the rerun failed: {}", f.error));
        assert_eq!(commit_in(&remote_store).as_deref(), Some("applied"), "{kill:?}");
        assert!(!mark_file.exists(), "{kill:?}: the mark is left");
        assert!(running.exists(), "{kill:?}: the daemon does not run");
        assert_eq!(holding(local.path()), None, "{kill:?}: this machine still holds the store");
    }
}
