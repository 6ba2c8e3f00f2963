//! Dependency ordering: a stable topological sort of planned changes.
//!
//! Creations and updates run after what they depend on; deletions run
//! before what they depended on (a server goes before its security group).
//! Among changes that are ready at the same time the order is by resource
//! id, so the same input always prints the same plan.

use std::collections::{BTreeMap, BTreeSet};

use super::{Op, Planned, ResourceId};

/// Ordering failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    /// The dependencies form a cycle through these resources.
    #[error("dependency cycle between: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))]
    Cycle(Vec<ResourceId>),
}

/// Whether `dependent` must wait for `dependency`, or the reverse.
enum Edge {
    DependencyFirst,
    DependentFirst,
    None,
}

fn edge(dependent: &Op, dependency: &Op) -> Edge {
    match (dependent, dependency) {
        // Removing a user of something goes before removing or replacing that thing.
        (Op::Delete, Op::Delete | Op::Replace { .. }) => Edge::DependentFirst,
        (Op::Delete, _) => Edge::None,
        (_, Op::Delete | Op::NoOp) => Edge::None,
        _ => Edge::DependencyFirst,
    }
}

/// What the dependency graph needs of a change: a planned change, or a
/// reference to one.
pub trait Node {
    /// The resource.
    fn id(&self) -> &ResourceId;
    /// What happens to it.
    fn op(&self) -> &Op;
    /// What it needs.
    fn depends_on(&self) -> &[ResourceId];
}

impl<C> Node for Planned<C> {
    fn id(&self) -> &ResourceId {
        &self.id
    }
    fn op(&self) -> &Op {
        &self.op
    }
    fn depends_on(&self) -> &[ResourceId] {
        &self.depends_on
    }
}

impl<N: Node> Node for &N {
    fn id(&self) -> &ResourceId {
        (*self).id()
    }
    fn op(&self) -> &Op {
        (*self).op()
    }
    fn depends_on(&self) -> &[ResourceId] {
        (*self).depends_on()
    }
}

/// The dependency graph of `changes`: for each change, the indexes that
/// must wait for it, and how many changes each one waits for.
/// Dependencies on resources outside `changes` are ignored.
pub fn dependency_graph<N: Node>(changes: &[N]) -> (Vec<Vec<usize>>, Vec<usize>) {
    // A dependency that stays as it is orders nothing (see `edge`): only
    // the changing ones are indexed, so a converged plan of thousands of
    // resources builds an empty index.
    let index: BTreeMap<&ResourceId, usize> = changes
        .iter()
        .enumerate()
        .filter(|(_, c)| *c.op() != Op::NoOp)
        .map(|(i, c)| (c.id(), i))
        .collect();
    let mut successors: Vec<Vec<usize>> = vec![Vec::new(); changes.len()];
    let mut waiting_on = vec![0usize; changes.len()];
    for (i, change) in changes.iter().enumerate() {
        for dependency in change.depends_on() {
            let Some(&j) = index.get(dependency) else { continue };
            let (before, after) = match edge(change.op(), changes[j].op()) {
                Edge::DependencyFirst => (j, i),
                Edge::DependentFirst => (i, j),
                Edge::None => continue,
            };
            successors[before].push(after);
            waiting_on[after] += 1;
        }
    }
    (successors, waiting_on)
}

/// Every change that waits, directly or through others, for change
/// `start` in the graph `successors` (from [`dependency_graph`]), each once,
/// in the order they are reached; `start` itself is not included.
pub fn dependents(successors: &[Vec<usize>], start: usize) -> Vec<usize> {
    let mut seen = vec![false; successors.len()];
    let mut found = Vec::new();
    let mut stack: Vec<usize> = successors[start].iter().rev().copied().collect();
    while let Some(next) = stack.pop() {
        if next != start && !seen[next] {
            seen[next] = true;
            found.push(next);
            stack.extend(successors[next].iter().rev().copied());
        }
    }
    found
}

/// Orders `changes`; [`Op::NoOp`] entries keep their place by id.
///
/// # Errors
/// [`OrderError::Cycle`] naming the resources on a cycle.
pub fn order<C>(mut changes: Vec<Planned<C>>) -> Result<Vec<Planned<C>>, OrderError> {
    changes.sort_by(|a, b| a.id.cmp(&b.id));
    let (successors, mut waiting_on) = dependency_graph(&changes);
    let mut ready: BTreeSet<usize> = (0..changes.len()).filter(|i| waiting_on[*i] == 0).collect();
    let mut sequence = Vec::with_capacity(changes.len());
    while let Some(next) = ready.pop_first() {
        sequence.push(next);
        for &after in &successors[next] {
            waiting_on[after] -= 1;
            if waiting_on[after] == 0 {
                ready.insert(after);
            }
        }
    }
    if sequence.len() < changes.len() {
        let stuck = (0..changes.len())
            .filter(|i| waiting_on[*i] > 0)
            .map(|i| changes[i].id.clone())
            .collect();
        return Err(OrderError::Cycle(stuck));
    }
    let mut slots: Vec<Option<Planned<C>>> = changes.into_iter().map(Some).collect();
    Ok(sequence.into_iter().filter_map(|i| slots[i].take()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::ProviderKind;

    fn id(kind: &'static str, name: &str) -> ResourceId {
        ResourceId::new("e", ProviderKind::named("fake"), kind, name)
    }

    fn change(kind: &'static str, name: &str, op: Op, deps: &[ResourceId]) -> Planned<()> {
        Planned::bare(id(kind, name), op, deps.to_vec(), ())
    }

    fn names(changes: &[Planned<()>]) -> Vec<String> {
        changes.iter().map(|c| format!("{}/{}", c.id.kind, c.id.name)).collect()
    }

    #[test]
    fn creations_follow_their_dependencies() {
        let sg = id("group", "ssh");
        let key = id("keypair", "k");
        let plan = vec![
            change("a-server", "vm", Op::Create, &[sg.clone(), key.clone()]),
            change("keypair", "k", Op::Create, &[]),
            change("group", "ssh", Op::Create, &[]),
        ];
        assert_eq!(names(&order(plan).expect("order")), ["group/ssh", "keypair/k", "a-server/vm"]);
    }

    #[test]
    fn deletions_precede_what_they_used() {
        let sg = id("group", "ssh");
        let plan = vec![
            change("group", "ssh", Op::Delete, &[]),
            change("server", "vm", Op::Delete, &[sg]),
        ];
        assert_eq!(names(&order(plan).expect("order")), ["server/vm", "group/ssh"]);
    }

    #[test]
    fn deleting_a_user_goes_before_replacing_what_it_used() {
        let sg = id("group", "ssh");
        let plan = vec![
            change("group", "ssh", Op::Replace { reason: "r".into() }, &[]),
            change("server", "old", Op::Delete, &[sg]),
        ];
        assert_eq!(names(&order(plan).expect("order")), ["server/old", "group/ssh"]);
    }

    #[test]
    fn a_cycle_is_reported_with_its_members() {
        let a = id("x", "a");
        let b = id("x", "b");
        let plan = vec![
            change("x", "a", Op::Create, std::slice::from_ref(&b)),
            change("x", "b", Op::Create, std::slice::from_ref(&a)),
        ];
        assert_eq!(order(plan).expect_err("cycle"), OrderError::Cycle(vec![a, b]));
    }

    #[test]
    fn dependencies_outside_the_plan_are_ignored() {
        let plan = vec![change("server", "vm", Op::Create, &[id("network", "external")])];
        assert_eq!(names(&order(plan).expect("order")), ["server/vm"]);
    }

    #[test]
    fn dependents_are_found_transitively_once() {
        // a ← b ← c, a ← c, d alone
        let successors = vec![vec![1, 2], vec![2], vec![], vec![]];
        assert_eq!(dependents(&successors, 0), vec![1, 2]);
        assert_eq!(dependents(&successors, 1), vec![2]);
        assert!(dependents(&successors, 3).is_empty());
    }

    #[test]
    fn ordering_is_stable_for_independent_changes() {
        let plan = vec![
            change("x", "c", Op::Create, &[]),
            change("x", "a", Op::Create, &[]),
            change("x", "b", Op::Create, &[]),
        ];
        assert_eq!(names(&order(plan).expect("order")), ["x/a", "x/b", "x/c"]);
    }
}
