//! Safety guards a plan must pass before anything is applied.
//!
//! An accidentally emptied inventory file must never wipe an environment:
//! a plan deleting more than the environment's `max_deletes` is refused
//! unless the operator explicitly allows it. And apimon never destroys a
//! resource it does not own, not even to replace it.

use std::collections::BTreeMap;

use super::{Op, Planned, ResourceId};

/// A guard refused the plan.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    /// Too many deletions in one environment.
    #[error("refusing to delete {count} resources in environment `{env}`: the limit is {max} (policy max_deletes); check the plan, then raise the limit or pass --allow-deletes")]
    TooManyDeletes {
        /// Environment.
        env: String,
        /// Deletions planned there.
        count: usize,
        /// Its limit.
        max: u32,
    },
    /// A replace would destroy a resource apimon did not create.
    #[error("refusing to replace {id}: it exists but apimon does not own it ({reason}); remove or rename it by hand")]
    UnownedReplace {
        /// The resource.
        id: ResourceId,
        /// Why it would be replaced.
        reason: String,
    },
}

/// Checks `changes` against the per-environment `max_deletes`.
///
/// # Errors
/// Every guard that failed, environments in name order.
pub fn check_guards<C>(
    changes: &[Planned<C>],
    max_deletes: &BTreeMap<String, u32>,
    allow_deletes: bool,
) -> Result<(), Vec<GuardError>> {
    let mut errors = Vec::new();
    let mut deletes: BTreeMap<&str, usize> = BTreeMap::new();
    for change in changes {
        match &change.op {
            Op::Delete => *deletes.entry(change.id.env.as_str()).or_default() += 1,
            Op::Replace { reason } if !change.owned => {
                errors.push(GuardError::UnownedReplace {
                    id: change.id.clone(),
                    reason: reason.clone(),
                });
            }
            _ => {}
        }
    }
    if !allow_deletes {
        for (env, count) in deletes {
            let max = max_deletes.get(env).copied().unwrap_or(crate::model::DEFAULT_MAX_DELETES);
            if count > max as usize {
                errors.push(GuardError::TooManyDeletes { env: env.to_owned(), count, max });
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::ProviderKind;

    fn planned(env: &str, name: &str, op: Op, owned: bool) -> Planned<()> {
        Planned {
            id: ResourceId::new(env, ProviderKind::named("fake"), "thing", name),
            op,
            depends_on: vec![],
            owned,
            change: (),
        }
    }

    fn deletes(env: &str, n: usize) -> Vec<Planned<()>> {
        (0..n).map(|i| planned(env, &format!("r{i}"), Op::Delete, true)).collect()
    }

    #[test]
    fn deleting_more_than_max_deletes_is_refused() {
        let limits = BTreeMap::from([("outside".to_owned(), 3)]);
        let errors = check_guards(&deletes("outside", 4), &limits, false).expect_err("refused");
        assert_eq!(
            errors,
            vec![GuardError::TooManyDeletes { env: "outside".into(), count: 4, max: 3 }]
        );
    }

    #[test]
    fn deleting_up_to_max_deletes_is_allowed() {
        let limits = BTreeMap::from([("outside".to_owned(), 3)]);
        assert!(check_guards(&deletes("outside", 3), &limits, false).is_ok());
    }

    #[test]
    fn limits_count_per_environment() {
        let limits = BTreeMap::from([("a".to_owned(), 2), ("b".to_owned(), 2)]);
        let mut plan = deletes("a", 2);
        plan.extend(deletes("b", 2));
        assert!(check_guards(&plan, &limits, false).is_ok());
    }

    #[test]
    fn explicit_permission_lifts_the_delete_limit() {
        let limits = BTreeMap::from([("outside".to_owned(), 0)]);
        assert!(check_guards(&deletes("outside", 10), &limits, true).is_ok());
    }

    #[test]
    fn replacing_an_unowned_resource_is_refused_even_when_deletes_are_allowed() {
        let plan = vec![planned("e", "vm", Op::Replace { reason: "image changed".into() }, false)];
        let errors = check_guards(&plan, &BTreeMap::new(), true).expect_err("refused");
        assert!(matches!(&errors[0], GuardError::UnownedReplace { id, .. } if id.name == "vm"));
    }
}
