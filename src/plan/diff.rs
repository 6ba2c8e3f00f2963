//! The generic diff: desired and observed sets of one provider → changes.
//!
//! Providers describe each resource as a [`Spec`] and say how two specs
//! compare; everything else (create, delete only what is owned, ordering
//! by id) is decided here once for all of them.

use std::collections::BTreeMap;
use std::fmt::Debug;

use super::{Op, Planned, ResourceId};

/// How a desired spec compares with the observed one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Comparison {
    /// Nothing to do.
    Same,
    /// Changeable in place; each entry names one difference.
    Update(Vec<String>),
    /// Must be destroyed and created again, for this reason.
    Replace(String),
}

/// A provider's description of one resource.
pub trait Spec: Clone + Debug {
    /// Compares `self` (desired) with `observed`.
    ///
    /// # Guarantees
    /// Must return [`Comparison::Same`] when `observed` came from applying
    /// `self`: otherwise every plan shows a spurious diff.
    fn compare(&self, observed: &Self) -> Comparison;
}

/// A declared resource.
#[derive(Debug, Clone)]
pub struct DesiredItem<S> {
    /// Its spec.
    pub spec: S,
    /// Resources it needs.
    pub depends_on: Vec<ResourceId>,
    /// The resource it exists inside (a file on a server): when that one is
    /// created or replaced, this one is created anew, whatever was observed.
    pub lives_on: Option<ResourceId>,
    /// Resources whose change must apply this one again even when it is
    /// unchanged itself (a unit restarted when its configuration changes).
    pub triggered_by: Vec<ResourceId>,
}

impl<S> DesiredItem<S> {
    /// `spec`, needing `depends_on`.
    pub fn new(spec: S, depends_on: Vec<ResourceId>) -> Self {
        Self { spec, depends_on, lives_on: None, triggered_by: Vec::new() }
    }

    /// Exists inside `host` (see [`DesiredItem::lives_on`]).
    pub fn on(mut self, host: ResourceId) -> Self {
        self.lives_on = Some(host);
        self
    }

    /// Applied again whenever one of `triggers` changes.
    pub fn triggered_by(mut self, triggers: Vec<ResourceId>) -> Self {
        self.triggered_by = triggers;
        self
    }
}

/// An existing resource.
#[derive(Debug, Clone)]
pub struct ObservedItem<S> {
    /// Its spec as read back.
    pub spec: S,
    /// Whether apimon created it (tag, metadata or state store).
    pub owned: bool,
    /// Resources it uses, so deletions run in reverse order.
    pub depends_on: Vec<ResourceId>,
}

/// Declared resources by id.
pub type DesiredSet<S> = BTreeMap<ResourceId, DesiredItem<S>>;
/// Existing resources by id.
pub type ObservedSet<S> = BTreeMap<ResourceId, ObservedItem<S>>;

/// What apply needs to carry out one change.
#[derive(Debug, Clone)]
pub struct ItemChange<S> {
    /// Target spec (absent for deletions).
    pub desired: Option<S>,
    /// Current spec (absent for creations).
    pub observed: Option<S>,
}

/// Diffs one provider's sets.
///
/// Unowned resources that are not declared are left alone: apimon only
/// deletes what it owns, and only when `prune` is on.
pub fn diff<S: Spec>(
    desired: &DesiredSet<S>,
    observed: &ObservedSet<S>,
    prune: bool,
) -> Vec<Planned<ItemChange<S>>> {
    // Both sets are sorted by id: one merging walk (no lookup per
    // resource), and the changes come out sorted.
    let mut changes = Vec::with_capacity(desired.len());
    let mut existing = observed.iter().peekable();
    let delete = |id: &ResourceId, have: &ObservedItem<S>| Planned {
        id: id.clone(),
        op: Op::Delete,
        depends_on: have.depends_on.clone(),
        owned: true,
        lives_on: None,
        triggered_by: Vec::new(),
        note: None,
        change: ItemChange { desired: None, observed: Some(have.spec.clone()) },
    };
    for (id, want) in desired {
        while let Some((undeclared, have)) = existing.next_if(|(other, _)| *other < id) {
            if prune && have.owned {
                changes.push(delete(undeclared, have));
            }
        }
        let (op, owned, current) = match existing.next_if(|(other, _)| *other == id) {
            None => (Op::Create, false, None),
            Some((_, have)) => {
                let op = match want.spec.compare(&have.spec) {
                    Comparison::Same => Op::NoOp,
                    Comparison::Update(reasons) => Op::Update { reason: reasons.join("; ") },
                    Comparison::Replace(reason) => Op::Replace { reason },
                };
                (op, have.owned, Some(have.spec.clone()))
            }
        };
        changes.push(Planned {
            id: id.clone(),
            op,
            depends_on: want.depends_on.clone(),
            owned,
            lives_on: want.lives_on.clone(),
            triggered_by: want.triggered_by.clone(),
            note: None,
            change: ItemChange { desired: Some(want.spec.clone()), observed: current },
        });
    }
    for (undeclared, have) in existing {
        if prune && have.owned {
            changes.push(delete(undeclared, have));
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::ProviderKind;

    #[derive(Debug, Clone, PartialEq)]
    struct Thing {
        size: u32,
        image: &'static str,
    }

    impl Spec for Thing {
        fn compare(&self, observed: &Self) -> Comparison {
            if self.image != observed.image {
                Comparison::Replace(format!("image changed ({} → {})", observed.image, self.image))
            } else if self.size != observed.size {
                Comparison::Update(vec![format!("size {} → {}", observed.size, self.size)])
            } else {
                Comparison::Same
            }
        }
    }

    fn id(name: &str) -> ResourceId {
        ResourceId::new("test", ProviderKind::named("fake"), "thing", name)
    }

    fn want(items: &[(&str, u32, &'static str)]) -> DesiredSet<Thing> {
        items
            .iter()
            .map(|(n, size, image)| (id(n), DesiredItem::new(Thing { size: *size, image }, vec![])))
            .collect()
    }

    fn have(items: &[(&str, u32, &'static str, bool)]) -> ObservedSet<Thing> {
        items
            .iter()
            .map(|(n, size, image, owned)| {
                (
                    id(n),
                    ObservedItem {
                        spec: Thing { size: *size, image },
                        owned: *owned,
                        depends_on: vec![],
                    },
                )
            })
            .collect()
    }

    fn ops(changes: &[Planned<ItemChange<Thing>>]) -> Vec<(String, Op)> {
        changes.iter().map(|c| (c.id.name.to_string(), c.op.clone())).collect()
    }

    #[test]
    fn table_of_desired_and_observed_gives_expected_ops() {
        struct Case {
            name: &'static str,
            desired: DesiredSet<Thing>,
            observed: ObservedSet<Thing>,
            prune: bool,
            expected: Vec<(String, Op)>,
        }
        let cases = [
            Case {
                name: "nothing exists",
                desired: want(&[("a", 1, "x")]),
                observed: have(&[]),
                prune: true,
                expected: vec![("a".into(), Op::Create)],
            },
            Case {
                name: "identical",
                desired: want(&[("a", 1, "x")]),
                observed: have(&[("a", 1, "x", true)]),
                prune: true,
                expected: vec![("a".into(), Op::NoOp)],
            },
            Case {
                name: "in-place change",
                desired: want(&[("a", 2, "x")]),
                observed: have(&[("a", 1, "x", true)]),
                prune: true,
                expected: vec![("a".into(), Op::Update { reason: "size 1 → 2".into() })],
            },
            Case {
                name: "replace",
                desired: want(&[("a", 1, "y")]),
                observed: have(&[("a", 1, "x", true)]),
                prune: true,
                expected: vec![(
                    "a".into(),
                    Op::Replace { reason: "image changed (x → y)".into() },
                )],
            },
            Case {
                name: "owned and undeclared is deleted",
                desired: want(&[]),
                observed: have(&[("a", 1, "x", true)]),
                prune: true,
                expected: vec![("a".into(), Op::Delete)],
            },
            Case {
                name: "unowned and undeclared is left alone",
                desired: want(&[]),
                observed: have(&[("a", 1, "x", false)]),
                prune: true,
                expected: vec![],
            },
            Case {
                name: "prune off keeps owned",
                desired: want(&[]),
                observed: have(&[("a", 1, "x", true)]),
                prune: false,
                expected: vec![],
            },
            Case {
                name: "output is sorted by id",
                desired: want(&[("c", 1, "x"), ("a", 1, "x")]),
                observed: have(&[("b", 1, "x", true)]),
                prune: true,
                expected: vec![
                    ("a".into(), Op::Create),
                    ("b".into(), Op::Delete),
                    ("c".into(), Op::Create),
                ],
            },
        ];
        for case in cases {
            assert_eq!(
                ops(&diff(&case.desired, &case.observed, case.prune)),
                case.expected,
                "{}",
                case.name
            );
        }
    }

    #[test]
    fn adopted_resource_keeps_its_unowned_mark() {
        let changes = diff(&want(&[("a", 2, "x")]), &have(&[("a", 1, "x", false)]), true);
        assert!(!changes[0].owned);
        assert!(matches!(changes[0].op, Op::Update { .. }));
    }
}
