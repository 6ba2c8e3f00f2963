//! One reconcile run, in steps the CLI and the daemon share:
//! [`prepare`] (load, validate, render, desired sets, and for live runs the
//! providers), [`plan`] (observe the live systems or nothing, diff, guard,
//! order) and [`apply`] (carry out, then record ownership and history in
//! the state store).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::apply::{execute, ApplyOptions, Event, Outcome};
use crate::machine::Machine;
use crate::model::{self, DesiredState, Diagnostics, LoadError, Policy, Secrets};
use crate::plan::{self as core, PlanError};
use crate::providers::registry::{AnyChange, Desired, Live, ObserveError, Observed};
use crate::providers::{host, Context, Model};
use crate::render::{self, RenderError, Rendered, Templates};
use crate::state::{FailedChange, LockedStore, Run, RunResult, State, StateError};

/// An ordered, guarded plan over every provider.
pub type Plan = core::Plan<AnyChange>;

/// A run failed before changing anything, or could not record its result.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The repository is invalid.
    #[error("the repository is invalid; nothing was changed:\n{0}")]
    Invalid(Diagnostics),
    /// The repository cannot be read.
    #[error("cannot load the repository")]
    Load(#[source] LoadError),
    /// A template failed.
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

/// What a prepared run is compared with.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// Nothing: every declared resource is to be created. Needs no
    /// credentials.
    Offline,
    /// The live systems, reached with this machine's keys and clouds.yaml.
    Live(&'a Machine),
}

/// A repository ready to plan.
#[derive(Debug)]
pub struct Prepared {
    /// The validated repository.
    pub state: DesiredState,
    /// Every selected host's rendered files.
    pub rendered: Rendered,
    /// Selected environment names.
    pub environments: Vec<String>,
    /// Their policies.
    pub policies: BTreeMap<String, Policy>,
    /// Desired sets (live: restricted to what live providers cover).
    pub desired: Desired,
    /// Providers; `None` offline.
    pub live: Option<Live>,
    /// What a live plan leaves out, and why.
    pub not_observed: Vec<String>,
    /// The repository's commit, if it is a checkout.
    pub commit: Option<String>,
}

/// Loads, validates and renders the repository for the environments in
/// `names` (all when empty), builds the desired sets and, for a live
/// target, the providers.
///
/// # Errors
/// Invalid repository, missing secret, template failure, unknown
/// environment, or a provider that cannot be set up.
pub fn prepare(
    repo: &Path,
    names: &[String],
    secrets: &Secrets,
    target: Target<'_>,
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
    let executor_binary = match target {
        Target::Live(machine) => host::binary(machine.executor_binary.as_deref()),
        Target::Offline => host::binary(None),
    };
    let model = Model {
        state: &state,
        rendered: &rendered,
        secrets,
        executor_binary: executor_binary.as_ref(),
    };
    let mut desired = Desired::build(&model, &environments);
    let (live, not_observed) = match target {
        Target::Offline => (None, Vec::new()),
        Target::Live(machine) => {
            let context = Context { state: &state, secrets, machine };
            let live = Live::connect(&context, &environments, &desired)?;
            let not_observed = live.restrict(&mut desired);
            (Some(live), not_observed)
        }
    };
    let names = environments.iter().map(|e| e.name.clone()).collect();
    let policies = environments.iter().map(|e| (e.name.clone(), e.policy)).collect();
    Ok(Prepared {
        environments: names,
        policies,
        desired,
        live,
        not_observed,
        commit: crate::source::head_commit(repo),
        state,
        rendered,
    })
}

/// Observes the live systems (offline: nothing) and plans against them.
/// Read-only.
///
/// # Errors
/// A system could not be read, or the plan was refused.
pub async fn plan(
    prepared: &Prepared,
    state: &State,
    allow_deletes: bool,
) -> Result<Plan, ReconcileError> {
    let observed = match &prepared.live {
        Some(live) => live.observe(state).await?,
        None => Observed::default(),
    };
    Ok(core::assemble(prepared.desired.diff(&observed), &prepared.policies, allow_deletes)?)
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
    stop: &CancellationToken,
) -> Result<Outcome, ReconcileError> {
    let started_at = Utc::now();
    let live = prepared.live.clone().unwrap_or_default();
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
    let applied: BTreeSet<_> = outcome.applied.iter().collect();
    for change in plan.changes.iter().filter(|c| applied.contains(&c.id)) {
        state.record_applied(&change.id, &change.op, change.change.fingerprint());
    }
    let troubled: BTreeSet<&str> = outcome
        .failed
        .keys()
        .chain(outcome.skipped.keys())
        .chain(&outcome.not_started)
        .map(|id| id.env.as_str())
        .collect();
    let finished_at = Utc::now();
    for env in prepared.environments.iter().filter(|env| !troubled.contains(env.as_str())) {
        state.record_converged(env, prepared.commit.as_deref(), finished_at);
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
            .map(|(id, error)| FailedChange { id: id.clone(), error: error.to_string() })
            .collect(),
        skipped: outcome.skipped.len(),
        result,
    });
    store.save(&state)?;
    Ok(outcome)
}
