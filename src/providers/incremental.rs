//! Incremental observation: which providers a new commit's desired state
//! touches (what changed, and what depends on it), and how a cached
//! observation follows the changes applied since it was made. The
//! registry fans these out over the providers; the daemon decides when a
//! cache may stand in for observing (a commit's pass, never a drift pass).

use std::collections::{BTreeMap, BTreeSet};

use crate::plan::{DesiredItem, DesiredSet, ObservedItem, ObservedSet, Op, ResourceId};

/// Whether two declarations of a resource are the same.
fn same<S: PartialEq>(a: &DesiredItem<S>, b: &DesiredItem<S>) -> bool {
    a.spec == b.spec
        && a.depends_on == b.depends_on
        && a.lives_on == b.lives_on
        && a.triggered_by == b.triggered_by
}

/// The ids declared differently in `now` than in `before`: added,
/// removed or changed.
pub(super) fn changed_ids<S: PartialEq>(
    now: &DesiredSet<S>,
    before: &DesiredSet<S>,
) -> BTreeSet<ResourceId> {
    let changed = now.iter().filter(|(id, item)| before.get(*id).is_none_or(|b| !same(item, b)));
    let removed = before.keys().filter(|id| !now.contains_key(*id));
    changed.map(|(id, _)| id.clone()).chain(removed.cloned()).collect()
}

/// Whether a resource of `set` needs (depends on, or lives on) one of `ids`.
pub(super) fn needs_any<S>(set: &DesiredSet<S>, ids: &BTreeSet<ResourceId>) -> bool {
    set.values().any(|item| {
        item.depends_on
            .iter()
            .chain(item.lives_on.iter())
            .chain(item.triggered_by.iter())
            .any(|d| ids.contains(d))
    })
}

/// `observed` as it is after `applied` (id → operation) carried out the
/// declarations of `desired`: created, updated and replaced resources as
/// declared and owned, deleted ones gone.
pub(super) fn record_applied<S: Clone>(
    observed: &mut ObservedSet<S>,
    desired: &DesiredSet<S>,
    applied: &BTreeMap<ResourceId, Op>,
) {
    for (id, op) in applied {
        match op {
            Op::Delete => {
                observed.remove(id);
            }
            Op::NoOp => {}
            Op::Create | Op::Update { .. } | Op::Replace { .. } => {
                if let Some(item) = desired.get(id) {
                    let item = ObservedItem {
                        spec: item.spec.clone(),
                        owned: true,
                        depends_on: item.depends_on.clone(),
                    };
                    observed.insert(id.clone(), item);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::ProviderKind;

    fn id(name: &str) -> ResourceId {
        ResourceId::new("e", ProviderKind::named("p"), "k", name)
    }

    fn set(items: &[(&str, u32, &[&str])]) -> DesiredSet<u32> {
        items
            .iter()
            .map(|(name, spec, needs)| {
                (id(name), DesiredItem::new(*spec, needs.iter().map(|n| id(n)).collect()))
            })
            .collect()
    }

    #[test]
    fn added_removed_and_changed_declarations_are_changed_and_nothing_else() {
        let before = set(&[("a", 1, &[]), ("b", 2, &[]), ("c", 3, &["a"])]);
        let now = set(&[("a", 1, &[]), ("b", 5, &[]), ("c", 3, &["b"]), ("d", 4, &[])]);
        let changed = changed_ids(&now, &before);
        assert_eq!(changed, [id("b"), id("c"), id("d")].into_iter().collect());
        assert!(changed_ids(&before, &before).is_empty());
    }

    #[test]
    fn what_needs_a_changed_resource_is_found_through_any_kind_of_edge() {
        let now = set(&[("a", 1, &[]), ("c", 3, &["a"])]);
        assert!(needs_any(&now, &[id("a")].into_iter().collect()));
        assert!(!needs_any(&now, &[id("x")].into_iter().collect()));
    }

    #[test]
    fn an_observation_follows_what_was_applied() {
        let desired = set(&[("a", 1, &[]), ("b", 7, &[])]);
        let mut observed: ObservedSet<u32> = [
            (id("b"), ObservedItem { spec: 2, owned: true, depends_on: vec![] }),
            (id("z"), ObservedItem { spec: 9, owned: true, depends_on: vec![] }),
        ]
        .into_iter()
        .collect();
        let applied = BTreeMap::from([
            (id("a"), Op::Create),
            (id("b"), Op::Update { reason: String::new() }),
            (id("z"), Op::Delete),
        ]);
        record_applied(&mut observed, &desired, &applied);
        let specs: Vec<(String, u32)> =
            observed.iter().map(|(id, item)| (id.name.to_string(), item.spec)).collect();
        assert_eq!(specs, vec![("a".to_owned(), 1), ("b".to_owned(), 7)]);
    }
}
