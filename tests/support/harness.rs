//! One way to prepare, plan and apply environments of a test repository
//! against live services, for the provider tests and the benchmarks: the
//! same calls the daemon makes (`reconcile::prepare`, `plan_probing`,
//! `apply`), with the repository's secrets file and a state directory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use apimon::apply::{ApplyOptions, Event, Outcome};
use apimon::machine::Machine;
use apimon::model::secret::SecretStore;
use apimon::model::Secrets;
use apimon::providers::Probe;
use apimon::reconcile::{self, Plan, Prepared, ReconcileError, Target};
use apimon::source::scenarios::SourceCache;
use apimon::state::{self, LockedStore, State};
use tokio_util::sync::CancellationToken;

/// Where a test's desired state, secrets and state store are.
pub struct Harness {
    /// The repository.
    pub repo: PathBuf,
    /// The environments it prepares.
    pub environments: Vec<String>,
    /// The secrets file.
    pub secrets_file: PathBuf,
    /// The state directory.
    pub state_dir: PathBuf,
    /// The applying machine's files.
    pub machine: Machine,
    /// Where scenario repositories come from (`None`: not fetched).
    pub sources: Option<SourceCache>,
}

/// Apply options for tests: a little parallelism, quick retries.
pub fn fast() -> ApplyOptions {
    ApplyOptions {
        parallelism: 2,
        max_attempts: 3,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(40),
    }
}

impl Harness {
    /// Environment `outside` of `repo`, with this machine's defaults.
    pub fn outside(repo: &Path, secrets_file: &Path, state_dir: &Path) -> Self {
        Self {
            repo: repo.to_owned(),
            environments: vec!["outside".to_owned()],
            secrets_file: secrets_file.to_owned(),
            state_dir: state_dir.to_owned(),
            machine: Machine::from_env(),
            sources: None,
        }
    }

    /// The secrets, read now (a test may change the file between runs).
    pub fn secrets(&self) -> Secrets {
        Secrets::Resolved(
            SecretStore::load(Some(&self.secrets_file), std::iter::empty()).expect("secrets"),
        )
    }

    /// Sets secret `name` to `value` in the secrets file (it must be there).
    pub fn set_secret(&self, name: &str, value: &str) {
        let text = std::fs::read_to_string(&self.secrets_file).expect("read secrets");
        let replaced: String = text
            .lines()
            .map(|line| {
                if line.starts_with(&format!("{name}:")) {
                    format!("{name}: {value}\n")
                } else {
                    format!("{line}\n")
                }
            })
            .collect();
        assert_ne!(text, replaced, "secret {name} not in the file");
        std::fs::write(&self.secrets_file, replaced).expect("write secrets");
    }

    /// The repository prepared for a live plan.
    pub fn try_prepare(&self) -> Result<Prepared, ReconcileError> {
        let target = Target::Live(&self.machine);
        let secrets = self.secrets();
        match &self.sources {
            Some(sources) => {
                reconcile::prepare(&self.repo, &self.environments, &secrets, target, sources)
            }
            None => reconcile::prepare(
                &self.repo,
                &self.environments,
                &secrets,
                target,
                &apimon::model::load::NoFetch,
            ),
        }
    }

    /// [`Self::try_prepare`], which must succeed.
    pub fn prepare(&self) -> Prepared {
        self.try_prepare().expect("prepare")
    }

    /// The state store as it is on disk.
    pub fn state(&self) -> State {
        state::read(&self.state_dir).expect("state")
    }

    /// A plan against the live services (a drift pass when `probe` says).
    pub async fn try_plan(&self, probe: Probe) -> Result<(Plan, Prepared), ReconcileError> {
        let prepared = self.try_prepare()?;
        let plan = reconcile::plan_probing(&prepared, &self.state(), false, probe).await?;
        Ok((plan, prepared))
    }

    /// [`Self::try_plan`], which must succeed.
    pub async fn plan(&self, probe: Probe) -> (Plan, Prepared) {
        self.try_plan(probe).await.expect("plan")
    }

    /// Plans (as `probe` says), runs `between`, then applies that plan with
    /// `options`, calling `on_event` per change.
    pub async fn apply(
        &self,
        options: &ApplyOptions,
        probe: Probe,
        between: impl FnOnce(),
        on_event: impl FnMut(Event<'_>),
    ) -> (Plan, Outcome) {
        let prepared = self.prepare();
        let store = LockedStore::open(&self.state_dir).expect("lock");
        let state = store.load().expect("state");
        let plan = reconcile::plan_probing(&prepared, &state, false, probe).await.expect("plan");
        between();
        let outcome = reconcile::apply(
            &store,
            &prepared,
            &plan,
            options,
            on_event,
            &CancellationToken::new(),
        )
        .await
        .expect("apply");
        (plan, outcome)
    }
}
