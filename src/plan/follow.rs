//! Changes that follow from other changes: what lives inside a resource
//! that is created or replaced is created anew there (the files of a
//! replaced server), and what a change triggers is applied again even when
//! it is unchanged itself (a unit restarted when its configuration is
//! restored). Pure, like the rest of the planning core.

use std::collections::BTreeSet;

use super::{Op, Planned, ResourceId};

/// What the planning core needs to do with a provider's payload when a
/// change follows from another.
pub trait Follow {
    /// Drops what was observed: the resource is created anew, and apply
    /// must not take the old state into account.
    fn forget_observed(&mut self);
}

impl Follow for () {
    fn forget_observed(&mut self) {}
}

/// Rewrites `changes` so what follows from them is planned too.
pub fn follow<C: Follow>(changes: &mut [Planned<C>]) {
    // Only the (few) changing ids are collected: a converged plan of
    // thousands of resources copies nothing.
    let created: BTreeSet<ResourceId> = changes
        .iter()
        .filter(|c| matches!(c.op, Op::Create | Op::Replace { .. }))
        .map(|c| c.id.clone())
        .collect();
    for change in changes.iter_mut() {
        let Some(host) = &change.lives_on else { continue };
        let anew = created.contains(host);
        if anew && matches!(change.op, Op::NoOp | Op::Update { .. }) {
            change.op = Op::Create;
            change.note = Some(format!("created anew on {host}"));
            change.change.forget_observed();
        }
    }
    let changing: BTreeSet<ResourceId> = changes
        .iter()
        .filter(|c| !matches!(c.op, Op::NoOp | Op::Delete))
        .map(|c| c.id.clone())
        .collect();
    for change in changes.iter_mut().filter(|c| c.op == Op::NoOp) {
        let trigger = change.triggered_by.iter().find(|t| changing.contains(*t));
        if let Some(trigger) = trigger {
            change.op = Op::Update { reason: format!("apply again: {trigger} changes") };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::ProviderKind;

    fn id(name: &str) -> ResourceId {
        ResourceId::new("e", ProviderKind::named("fake"), "x", name)
    }

    fn change(name: &str, op: Op) -> Planned<()> {
        Planned::bare(id(name), op, vec![], ())
    }

    #[test]
    fn what_lives_on_a_replaced_resource_is_created_anew() {
        let mut file = change("file", Op::NoOp);
        file.lives_on = Some(id("server"));
        let mut changes = vec![change("server", Op::Replace { reason: "user data".into() }), file];
        follow(&mut changes);
        assert_eq!(changes[1].op, Op::Create);
        assert_eq!(changes[1].reason(), "created anew on e/fake.x/server");
    }

    #[test]
    fn a_changed_trigger_applies_an_unchanged_change_again() {
        let mut unit = change("unit", Op::NoOp);
        unit.triggered_by = vec![id("file")];
        let mut other = change("other", Op::NoOp);
        other.triggered_by = vec![id("same")];
        let mut changes = vec![
            change("file", Op::Update { reason: "content".into() }),
            change("same", Op::NoOp),
            unit,
            other,
        ];
        follow(&mut changes);
        assert!(matches!(&changes[2].op, Op::Update { reason } if reason.contains("file")));
        assert_eq!(changes[3].op, Op::NoOp);
    }
}
