//! Holding changes back: a change that may not run now (a destructive one
//! outside a maintenance window, drift an operator must decide on) waits,
//! and so does everything that depends on it. Pure, like the rest of the
//! planning core; the daemon decides *why* a change waits, this module
//! what else must wait with it.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::{dependency_graph, dependents, Op, Plan, Planned, ResourceId, Summary};

/// A change held back, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Held {
    /// The resource.
    pub id: ResourceId,
    /// Operation symbol and reason, as the plan shows it.
    pub change: String,
    /// Why it waits; for a dependent, the reason of what it depends on.
    pub waiting_for: String,
}

/// A change as a held change shows it: operation symbol and reason.
pub fn shown<C>(change: &Planned<C>) -> String {
    format!("{} {}", change.op.symbol(), change.op.reason())
}

/// Removes from `plan` the changes `hold` names a reason for, and every
/// change that depends on them; returns what is left and what waits (in
/// plan order).
pub fn hold_back<C>(
    plan: Plan<C>,
    hold: impl Fn(&Planned<C>) -> Option<String>,
) -> (Plan<C>, Vec<Held>) {
    let actions: Vec<&Planned<C>> = plan.changes.iter().filter(|c| c.op != Op::NoOp).collect();
    let (successors, _) = dependency_graph(&actions);
    let mut held: BTreeMap<usize, String> = BTreeMap::new();
    for (i, change) in actions.iter().enumerate() {
        let Some(reason) = hold(change) else { continue };
        held.entry(i).or_insert_with(|| reason.clone());
        for j in dependents(&successors, i) {
            held.entry(j).or_insert_with(|| format!("{reason} (depends on {})", change.id));
        }
    }
    let waiting: Vec<Held> = held
        .iter()
        .map(|(i, why)| Held {
            id: actions[*i].id.clone(),
            change: shown(actions[*i]),
            waiting_for: why.clone(),
        })
        .collect();
    let held_ids: BTreeSet<&ResourceId> = waiting.iter().map(|h| &h.id).collect();
    let Plan { changes, forget, .. } = plan;
    let changes: Vec<Planned<C>> =
        changes.into_iter().filter(|c| !held_ids.contains(&c.id)).collect();
    let summary = Summary::of(&changes);
    (Plan { changes, summary, forget }, waiting)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::ProviderKind;

    fn id(name: &str) -> ResourceId {
        ResourceId::new("e", ProviderKind::named("fake"), "x", name)
    }

    fn change(name: &str, op: Op, deps: &[&str]) -> Planned<()> {
        Planned::bare(id(name), op, deps.iter().map(|d| id(d)).collect(), ())
    }

    #[test]
    fn destructive_changes_and_their_dependents_wait_and_the_rest_runs() {
        let changes = vec![
            change("old", Op::Replace { reason: "image changed".into() }, &[]),
            change("uses-old", Op::Create, &["old"]),
            change("independent", Op::Create, &[]),
            change("same", Op::NoOp, &[]),
        ];
        let plan = Plan { summary: Summary::of(&changes), changes, forget: vec![] };
        let (left, pending) =
            hold_back(plan, |c| c.op.is_destructive().then(|| "maintenance window".to_owned()));
        let left: Vec<&str> = left.changes.iter().map(|c| &*c.id.name).collect();
        assert_eq!(left, ["independent", "same"]);
        let waiting: Vec<(String, &str)> =
            pending.iter().map(|p| (p.id.to_string(), p.waiting_for.as_str())).collect();
        assert_eq!(
            waiting,
            [
                ("e/fake.x/old".to_owned(), "maintenance window"),
                ("e/fake.x/uses-old".to_owned(), "maintenance window (depends on e/fake.x/old)")
            ]
        );
    }
}
