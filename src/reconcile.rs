//! One reconcile run, in steps the CLI and the daemon share:
//! [`prepare`] (load, validate, render with real secrets, desired sets),
//! [`plan`] (observe live systems, diff, guard, order) and [`apply`]
//! (carry out, then record ownership and history in the state store).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use chrono::Utc;

use crate::apply::{execute, ApplyOptions, Event, Outcome};
use crate::engine::{self, Desired, Plan, PlanError};
use crate::live::{Live, ObserveError};
use crate::model::{self, Diagnostics, LoadError, Policy, Secrets};
use crate::plan::Op;
use crate::render::{self, RenderError, Templates};
use crate::state::{FailedChange, LockedStore, Run, RunResult, State, StateError};

/// A run failed before changing anything, or could not record its result.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The repository is invalid.
    #[error("the repository is invalid; nothing was changed:\n{0}")]
    Invalid(Diagnostics),
    /// The repository cannot be read.
    #[error("cannot load the repository")]
    Load(#[source] LoadError),
    /// A template or secret failed.
    #[error("rendering failed; nothing was changed: {0}")]
    Render(#[source] RenderError),
    /// `--env` names no environment.
    #[error("{0}")]
    UnknownEnvironment(String),
    /// A provider could not be set up or read.
    #[error(transparent)]
    Observe(#[from] ObserveError),
    /// The plan was refused or could not be ordered.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The state store failed.
    #[error(transparent)]
    State(#[from] StateError),
}

/// A repository ready to plan.
#[derive(Debug)]
pub struct Prepared {
    /// Selected environment names.
    pub environments: Vec<String>,
    /// Their policies.
    pub policies: BTreeMap<String, Policy>,
    /// Desired sets, restricted to what live providers cover.
    pub desired: Desired,
    /// Providers.
    pub live: Live,
    /// What live plans leave out, and why.
    pub not_observed: Vec<String>,
    /// The repository's commit, if it is a checkout.
    pub commit: Option<String>,
}

/// Loads, validates and renders the repository with real secrets.
///
/// # Errors
/// Invalid repository, missing secret, template failure, unknown `--env`,
/// or a provider that cannot be set up.
pub fn prepare(
    repo: &Path,
    only: Option<&str>,
    secrets: &Secrets,
) -> Result<Prepared, ReconcileError> {
    let names: Vec<String> = only.map(str::to_owned).into_iter().collect();
    prepare_environments(repo, &names, secrets)
}

/// Like [`prepare`] for the environments in `names` (all when empty).
///
/// # Errors
/// As [`prepare`].
pub fn prepare_environments(
    repo: &Path,
    names: &[String],
    secrets: &Secrets,
) -> Result<Prepared, ReconcileError> {
    prepare_with(repo, names, secrets, &Machine::from_env())
}

/// Where the applying machine keeps what is not in the repository.
#[derive(Debug, Clone)]
pub struct Machine {
    /// SSH private key for the bastion and the hosts.
    pub ssh_key: PathBuf,
    /// known_hosts with the bastion's and the hosts' keys.
    pub known_hosts: PathBuf,
    /// The apimon binary executors get; this one when `None`.
    pub executor_binary: Option<PathBuf>,
    /// clouds.yaml with the environments' clouds; `None`: the standard places.
    pub clouds_file: Option<PathBuf>,
}

impl Machine {
    /// `$APIMON_SSH_KEY` and `$APIMON_SSH_KNOWN_HOSTS`, else `~/.ssh/id_ed25519`
    /// and `~/.ssh/known_hosts`; `$OS_CLIENT_CONFIG_FILE` for clouds.yaml.
    pub fn from_env() -> Self {
        let home = std::env::var_os("HOME")
            .map_or_else(|| PathBuf::from("/var/lib/apimon"), PathBuf::from);
        let var =
            |name: &str, default: PathBuf| std::env::var_os(name).map_or(default, PathBuf::from);
        Self {
            ssh_key: var("APIMON_SSH_KEY", home.join(".ssh/id_ed25519")),
            known_hosts: var("APIMON_SSH_KNOWN_HOSTS", home.join(".ssh/known_hosts")),
            executor_binary: std::env::var_os("APIMON_EXECUTOR_BINARY").map(PathBuf::from),
            clouds_file: std::env::var_os("OS_CLIENT_CONFIG_FILE").map(PathBuf::from),
        }
    }
}

/// Like [`prepare_environments`] with explicit machine settings.
///
/// # Errors
/// As [`prepare`].
pub fn prepare_with(
    repo: &Path,
    names: &[String],
    secrets: &Secrets,
    machine: &Machine,
) -> Result<Prepared, ReconcileError> {
    let state = model::load_repository(repo).map_err(|error| match error {
        LoadError::Invalid(diagnostics) => ReconcileError::Invalid(diagnostics),
        other => ReconcileError::Load(other),
    })?;
    let templates = Templates::new(&state.templates).map_err(ReconcileError::Invalid)?;
    let environments = state.select_many(names).map_err(ReconcileError::UnknownEnvironment)?;
    let rendered = render::render_all(&state, &environments, &templates, secrets).map_err(
        |error| match error {
            RenderError::Secrets(diagnostics) => ReconcileError::Invalid(diagnostics),
            other => ReconcileError::Render(other),
        },
    )?;
    let mut desired = engine::desired(
        &state,
        &environments,
        &rendered,
        secrets,
        machine.executor_binary.as_deref(),
    );
    let live = Live::connect(&state, &environments, secrets, &desired, machine)?;
    let not_observed = live.restrict(&mut desired);
    Ok(Prepared {
        environments: environments.iter().map(|e| e.name.clone()).collect(),
        policies: environments.iter().map(|e| (e.name.clone(), e.policy)).collect(),
        desired,
        live,
        not_observed,
        commit: crate::source::head_commit(repo),
    })
}

/// Observes the live systems and plans against them. Read-only.
///
/// # Errors
/// A system could not be read, or the plan was refused.
pub async fn plan(
    prepared: &Prepared,
    state: &State,
    allow_deletes: bool,
) -> Result<Plan, ReconcileError> {
    let observed = prepared.live.observe(state).await?;
    Ok(engine::plan(&prepared.desired, &observed, &prepared.policies, allow_deletes)?)
}

/// Applies `plan` and records the run in the store.
///
/// # Errors
/// Only the state store: failed changes are part of the [`Outcome`].
pub async fn apply(
    store: &LockedStore,
    prepared: &Prepared,
    plan: &Plan,
    options: &ApplyOptions,
    on_event: impl FnMut(Event<'_>),
    stop: &AtomicBool,
) -> Result<Outcome, ReconcileError> {
    let started_at = Utc::now();
    let live = prepared.live.clone();
    let outcome = execute(
        &plan.changes,
        options,
        move |change| {
            let live = live.clone();
            async move { live.apply(change).await }
        },
        on_event,
        stop,
    )
    .await;

    // Re-read under the lock: the store is the truth, not what plan saw.
    let mut state = store.load()?;
    let ops: BTreeMap<_, _> = plan.changes.iter().map(|c| (&c.id, &c.op)).collect();
    let changes: BTreeMap<_, _> = plan.changes.iter().map(|c| (&c.id, &c.change)).collect();
    for id in &outcome.applied {
        let env_state = state.environments.entry(id.env.clone()).or_default();
        match ops.get(id) {
            Some(Op::Create) => {
                env_state.owned.insert(id.clone());
            }
            Some(Op::Delete) => {
                env_state.owned.remove(id);
                env_state.fingerprints.remove(&id.to_string());
            }
            _ => {}
        }
        if let Some(fingerprint) = changes.get(id).and_then(|c| c.fingerprint()) {
            env_state.fingerprints.insert(id.to_string(), fingerprint.to_owned());
        }
    }
    let troubled: BTreeSet<&str> = outcome
        .failed
        .keys()
        .chain(outcome.skipped.keys())
        .chain(&outcome.not_started)
        .map(|id| id.env.as_str())
        .collect();
    let finished_at = Utc::now();
    for env in &prepared.environments {
        if !troubled.contains(env.as_str()) {
            let env_state = state.environments.entry(env.clone()).or_default();
            env_state.last_applied_commit.clone_from(&prepared.commit);
            env_state.last_applied_at = Some(finished_at);
        }
    }
    let result = if !plan.summary.has_changes() {
        RunResult::NoChanges
    } else if outcome.is_success() {
        RunResult::Success
    } else {
        RunResult::Partial
    };
    state.record(Run {
        started_at,
        finished_at,
        commit: prepared.commit.clone(),
        environments: prepared.environments.clone(),
        planned: plan.summary,
        applied: outcome.applied.len(),
        failed: outcome
            .failed
            .iter()
            .map(|(id, error)| FailedChange { id: id.clone(), error: error.clone() })
            .collect(),
        skipped: outcome.skipped.len(),
        result,
    });
    store.save(&state)?;
    Ok(outcome)
}
