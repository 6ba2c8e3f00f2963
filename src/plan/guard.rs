//! Safety guards a plan must pass before anything is applied.
//!
//! An accidentally emptied inventory file must never wipe an environment,
//! and one changed line of a template must never rebuild it: a plan that
//! destroys more than the environment's `max_deletes` resources — deletes
//! and replaces alike, since a replace destroys first — is refused unless
//! the operator explicitly allows it. And apimon never destroys a resource
//! it does not own, not even to replace it.

use std::collections::BTreeMap;

use super::{Op, Planned, ResourceId};

/// A guard refused the plan.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    /// Too many deletions or replacements in one environment.
    #[error("refusing to destroy {count} resources in environment `{env}` ({deletes} to delete, {replaces} to replace: {examples}): the limit is {max} (policy max_deletes); check the plan, then raise the limit or pass --allow-deletes")]
    TooManyDeletes {
        /// Environment.
        env: String,
        /// Deletions and replacements planned there.
        count: usize,
        /// Of which deletions.
        deletes: usize,
        /// Of which replacements.
        replaces: usize,
        /// Some of them, by id.
        examples: String,
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
    // Per environment: (deletes, replaces, the ids).
    let mut destroys: BTreeMap<&str, (usize, usize, Vec<&ResourceId>)> = BTreeMap::new();
    for change in changes {
        match &change.op {
            Op::Delete => {
                let counts = destroys.entry(&*change.id.env).or_default();
                counts.0 += 1;
                counts.2.push(&change.id);
            }
            Op::Replace { reason } => {
                if !change.owned {
                    errors.push(GuardError::UnownedReplace {
                        id: change.id.clone(),
                        reason: reason.clone(),
                    });
                }
                let counts = destroys.entry(&*change.id.env).or_default();
                counts.1 += 1;
                counts.2.push(&change.id);
            }
            _ => {}
        }
    }
    if !allow_deletes {
        for (env, (deletes, replaces, ids)) in destroys {
            let max = max_deletes.get(env).copied().unwrap_or(crate::model::DEFAULT_MAX_DELETES);
            let count = deletes + replaces;
            if count > max as usize {
                let mut examples: Vec<String> =
                    ids.iter().take(5).map(ToString::to_string).collect();
                if ids.len() > 5 {
                    examples.push(format!("and {} more", ids.len() - 5));
                }
                errors.push(GuardError::TooManyDeletes {
                    env: env.to_owned(),
                    count,
                    deletes,
                    replaces,
                    examples: examples.join(", "),
                    max,
                });
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
            owned,
            ..Planned::bare(
                ResourceId::new(env, ProviderKind::named("fake"), "thing", name),
                op,
                vec![],
                (),
            )
        }
    }

    fn deletes(env: &str, n: usize) -> Vec<Planned<()>> {
        (0..n).map(|i| planned(env, &format!("r{i}"), Op::Delete, true)).collect()
    }

    #[test]
    fn deleting_more_than_max_deletes_is_refused() {
        let limits = BTreeMap::from([("outside".to_owned(), 3)]);
        let errors = check_guards(&deletes("outside", 4), &limits, false).expect_err("refused");
        assert!(
            matches!(&errors[..], [GuardError::TooManyDeletes { env, count: 4, deletes: 4, replaces: 0, max: 3, .. }] if env == "outside"),
            "{errors:?}"
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
    fn replaces_count_as_destroys() {
        let limits = BTreeMap::from([("outside".to_owned(), 0)]);
        let plan = vec![planned("outside", "vm", Op::Replace { reason: "user data".into() }, true)];
        let errors = check_guards(&plan, &limits, false).expect_err("refused");
        let text = errors[0].to_string();
        assert!(text.starts_with("refusing to destroy 1 resources in environment `outside` (0 to delete, 1 to replace: outside/fake.thing/vm)"), "{text}");
        assert!(check_guards(&plan, &limits, true).is_ok());
    }

    #[test]
    fn replacing_an_unowned_resource_is_refused_even_when_deletes_are_allowed() {
        let plan = vec![planned("e", "vm", Op::Replace { reason: "image changed".into() }, false)];
        let errors = check_guards(&plan, &BTreeMap::new(), true).expect_err("refused");
        assert!(matches!(&errors[0], GuardError::UnownedReplace { id, .. } if &*id.name == "vm"));
    }
}
