//! One reconcile run, in steps the CLI and the daemon share:
//! [`prepare`] (load, validate, render, desired sets, and for live runs the
//! providers), [`plan`] (observe the live systems or nothing, diff, guard,
//! order) and [`apply`] (carry out, then record ownership and history in
//! the state store).

mod adopt;

pub use adopt::{adopt, plan_adoption, Adoption};

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use std::sync::Arc;

use crate::apply::{execute, ApplyOptions, ChangeError, Event, Outcome};
use crate::machine::Machine;
use crate::model::{self, DesiredState, Diagnostics, LoadError, Policy, Secrets};
use crate::plan::{self as core, PlanError};
use crate::providers::registry::{AnyChange, Desired, Live, ObserveError, Observed};
use crate::providers::{host, Context, FailureKind, Model};
use crate::render::{self, RenderError, Rendered, Templates};
use crate::state::{FailedChange, Journal, LockedStore, Run, RunResult, State, StateError};

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
    fetcher: &dyn model::load::FetchScenarios,
) -> Result<Prepared, ReconcileError> {
    let state = model::load_repository_with(repo, fetcher).map_err(|error| match error {
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
            let locators = crate::providers::locate::Locators::new();
            let context = Context { state: &state, secrets, machine, locators: &locators };
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

/// What the plan destroys, grouped: `Replaces 4 servers: a (bastion), …`,
/// one line per operation and kind of resource worth a line.
pub fn destroys(plan: &Plan) -> Vec<String> {
    let mut groups: BTreeMap<(&str, &str), Vec<String>> = BTreeMap::new();
    for change in plan.actions().filter(|c| c.op.is_destructive()) {
        if let Some((noun, label)) = change.change.describe(&change.id.name) {
            let verb = if change.op == crate::plan::Op::Delete { "Deletes" } else { "Replaces" };
            groups.entry((verb, noun)).or_default().push(format!("{}/{label}", change.id.env));
        }
    }
    groups
        .into_iter()
        .map(|((verb, noun), labels)| {
            let plural = if labels.len() == 1 { "" } else { "s" };
            format!("{verb} {} {noun}{plural}: {}.", labels.len(), labels.join(", "))
        })
        .collect()
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
    plan_probing(prepared, state, allow_deletes, crate::providers::Probe::default()).await
}

/// As [`plan`], also checking the `probe` slice of the write-only secrets
/// whose fingerprints match (a drift pass).
///
/// # Errors
/// As [`plan`].
pub async fn plan_probing(
    prepared: &Prepared,
    state: &State,
    allow_deletes: bool,
    probe: crate::providers::Probe,
) -> Result<Plan, ReconcileError> {
    let observed = observe(prepared, state, probe, None).await?;
    plan_observed(prepared, &observed, allow_deletes)
}

/// Reads the live systems (offline: nothing): every provider, or, with
/// `partial`, only those named there and the others as the cached
/// observation beside them has them (a commit's pass in the daemon).
///
/// # Errors
/// A system could not be read.
pub async fn observe(
    prepared: &Prepared,
    state: &State,
    probe: crate::providers::Probe,
    partial: Option<(&BTreeSet<crate::plan::ProviderKind>, &Observed)>,
) -> Result<Observed, ReconcileError> {
    Ok(match (&prepared.live, partial) {
        (Some(live), None) => live.observe(state, probe).await?,
        (Some(live), Some((only, cached))) => live.observe_some(state, probe, only, cached).await?,
        (None, _) => Observed::default(),
    })
}

/// The plan from `observed` to the commit's desired state.
///
/// # Errors
/// The plan was refused (a policy).
pub fn plan_observed(
    prepared: &Prepared,
    observed: &Observed,
    allow_deletes: bool,
) -> Result<Plan, ReconcileError> {
    let changes = prepared.desired.diff(observed);
    Ok(core::assemble(changes, observed.stale.clone(), &prepared.policies, allow_deletes)?)
}

/// The changes `head` makes relative to `base` applied as declared (a
/// pull request's preview: no credentials, nothing observed); relative to
/// nothing when there is no base.
///
/// # Errors
/// The plan violates a policy (`max_deletes`).
pub fn preview(
    head: &Prepared,
    base: Option<&Prepared>,
    allow_deletes: bool,
) -> Result<Plan, ReconcileError> {
    let observed = base.map(|base| Observed::as_applied(&base.desired)).unwrap_or_default();
    let changes = head.desired.diff(&observed);
    Ok(core::assemble(changes, Vec::new(), &head.policies, allow_deletes)?)
}

/// Applies `plan`, recording ownership ahead of each creation (see
/// [`Journal`]) and the run at the end.
///
/// # Errors
/// Only the state store: failed changes are part of the [`Outcome`]. A
/// store that cannot be written while changes apply fails the change at
/// hand and starts no more.
pub async fn apply(
    store: &LockedStore,
    prepared: &Prepared,
    plan: &Plan,
    options: &ApplyOptions,
    on_event: impl FnMut(Event<'_>),
    stop: &CancellationToken,
) -> Result<Outcome, ReconcileError> {
    let started_at = Utc::now();
    let journal = Arc::new(store.journal(&plan.forget)?);
    let live = prepared.live.clone().unwrap_or_default();
    // A store that cannot record stops the apply, not the caller's process.
    let halt = stop.child_token();
    let recorder = Arc::clone(&journal);
    let halt_on_failure = halt.clone();
    let outcome = execute(
        &plan.changes,
        options,
        move |change| {
            let (live, journal, halt) =
                (live.clone(), Arc::clone(&recorder), halt_on_failure.clone());
            async move { apply_recorded(&live, &journal, &halt, change).await }
        },
        on_event,
        &halt,
    )
    .await;
    journal.finish(|state| record_run(state, prepared, plan, &outcome, started_at))?;
    Ok(outcome)
}

/// Applies one change between the journal's intent and its record.
async fn apply_recorded(
    live: &Live,
    journal: &Journal,
    halt: &CancellationToken,
    change: crate::plan::Planned<AnyChange>,
) -> Result<(), ChangeError> {
    let unrecorded = |error: StateError, what: &str| {
        halt.cancel();
        let context = format!("{what}: the state store cannot be written, the apply stops");
        ChangeError::with_context(FailureKind::Permanent, &context, error)
    };
    if change.op == crate::plan::Op::Create {
        journal.intend(&change.id).map_err(|e| unrecorded(e, "not created"))?;
    }
    let (id, op) = (change.id.clone(), change.op.clone());
    let fingerprint = change.change.fingerprint().map(str::to_owned);
    if fingerprint.is_some() && !matches!(op, crate::plan::Op::NoOp | crate::plan::Op::Delete) {
        journal.unverify(&id).map_err(|e| unrecorded(e, "not changed"))?;
    }
    live.apply(change).await?;
    journal
        .applied(&id, &op, fingerprint.as_deref())
        .map_err(|e| unrecorded(e, "applied, but not recorded"))
}

/// The run's end: the environments that converged, and its history entry.
fn record_run(
    state: &mut State,
    prepared: &Prepared,
    plan: &Plan,
    outcome: &Outcome,
    started_at: chrono::DateTime<Utc>,
) {
    let troubled: BTreeSet<&str> = outcome
        .failed
        .keys()
        .chain(outcome.skipped.keys())
        .chain(&outcome.not_started)
        .map(|id| &*id.env)
        .collect();
    // Unchanged means observe verified the declared value (a login, a
    // dashboard read back): keep its fingerprint, so the next plan needs
    // neither the login nor the read.
    for change in plan.changes.iter().filter(|c| c.op == crate::plan::Op::NoOp) {
        let fingerprint = change.change.fingerprint().filter(|f| !f.is_empty());
        if let Some(fingerprint) = fingerprint {
            if state.fingerprint(&change.id) != Some(fingerprint) {
                state.record_applied(&change.id, &change.op, Some(fingerprint));
            }
        }
    }
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
}
