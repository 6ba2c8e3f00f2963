//! Taking over what exists (`apimon adopt`): declared resources apimon did
//! not create — a platform built by hand or by the old playbooks — become
//! apimon's on an explicit step, never implicitly. [`plan_adoption`] lists
//! them and plans as if they were adopted; [`adopt`] writes each
//! provider's marks and records them in the state store. Resources marked
//! for another environment are refused by observation itself.

use super::{Plan, Prepared, ReconcileError};
use crate::plan::{self as core, Op, ResourceId};
use crate::providers::Probe;
use crate::state::{LockedStore, State};

/// What an adoption would take over, and the plan once it has.
#[derive(Debug)]
pub struct Adoption {
    /// Existing, declared resources apimon does not own.
    pub adopt: Vec<ResourceId>,
    /// The changes that remain once they are apimon's (no-ops included).
    pub plan: Plan,
}

/// Observes (read-only) and finds what to adopt; the plan after adoption
/// is not guarded by `max_deletes` (adopting destroys nothing; applying
/// later is guarded as always).
///
/// # Errors
/// A system could not be read (a name taken by another environment is
/// such an error), or the plan cannot be ordered.
pub async fn plan_adoption(prepared: &Prepared, state: &State) -> Result<Adoption, ReconcileError> {
    let Some(live) = &prepared.live else {
        let plan = core::assemble(Vec::new(), Vec::new(), &prepared.policies, true)?;
        return Ok(Adoption { adopt: Vec::new(), plan });
    };
    let mut observed = live.observe(state, Probe::default()).await?;
    let mut adopt = observed.adopt_declared(&prepared.desired);
    adopt.sort();
    let changes = prepared.desired.diff(&observed);
    let plan = core::assemble(changes, observed.stale, &prepared.policies, true)?;
    Ok(Adoption { adopt, plan })
}

/// Adopts: each resource's marks, then one record in the state store of
/// everything adopted (and the fingerprints of write-only values that
/// observation verified). Returns what failed, with the reason; the rest
/// is adopted. Running it again adopts what is left.
///
/// # Errors
/// Only the state store.
pub async fn adopt(
    store: &LockedStore,
    prepared: &Prepared,
    adoption: &Adoption,
) -> Result<Vec<(ResourceId, String)>, ReconcileError> {
    let live = prepared.live.clone().unwrap_or_default();
    let mut failed = Vec::new();
    let mut state = store.load()?;
    for change in adoption.plan.changes.iter().filter(|c| adoption.adopt.contains(&c.id)) {
        let fingerprint = (change.op == Op::NoOp)
            .then(|| change.change.fingerprint().filter(|f| !f.is_empty()).map(str::to_owned))
            .flatten();
        match live.adopt(change.clone()).await {
            Ok(()) => {
                // Recorded like a creation, each at once: an interrupted
                // adoption keeps what it did, and a re-run does the rest.
                state.record_applied(&change.id, &Op::Create, fingerprint.as_deref());
                store.save(&state)?;
            }
            Err(error) => failed.push((change.id.clone(), error.to_string())),
        }
    }
    Ok(failed)
}
