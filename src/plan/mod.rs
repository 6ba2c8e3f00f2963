//! The planning core: pure functions from desired and observed state to an
//! ordered list of changes. No I/O and no knowledge of any provider, so it
//! is tested exhaustively with plain data.

#![deny(missing_docs)]

pub mod diff;
pub mod guard;
pub mod hold;
pub mod order;

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub mod follow;

pub use diff::{
    diff, Comparison, DesiredItem, DesiredSet, ItemChange, ObservedItem, ObservedSet, Spec,
};
pub use follow::{follow, Follow};
pub use guard::{check_guards, GuardError};
pub use hold::{hold_back, Held};
pub use order::{dependency_graph, dependents, order, Node, OrderError};

/// The system a resource lives in: a provider's name (`openstack`, `host`,
/// ...). The planning core treats it as an opaque name; each provider
/// declares its own (`Provider::KIND`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ProviderKind(Cow<'static, str>);

impl ProviderKind {
    /// The kind called `name`.
    pub const fn named(name: &'static str) -> Self {
        Self(Cow::Borrowed(name))
    }

    /// Lowercase name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Names one resource: environment, provider, kind and name.
///
/// Ordering is by environment, provider, kind, name: plans print stably.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ResourceId {
    /// Environment (shared: plans clone ids by the thousand).
    pub env: Arc<str>,
    /// Provider.
    pub provider: ProviderKind,
    /// Kind within the provider (`server`, `user`, `dashboard`, ...).
    pub kind: Cow<'static, str>,
    /// Name, unique per kind and environment (shared, as `env`).
    pub name: Arc<str>,
}

impl ResourceId {
    /// Builds an id.
    pub fn new(
        env: &str,
        provider: ProviderKind,
        kind: &'static str,
        name: impl Into<String>,
    ) -> Self {
        let name: String = name.into();
        Self { env: Arc::from(env), provider, kind: Cow::Borrowed(kind), name: Arc::from(name) }
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}.{}/{}", self.env, self.provider, self.kind, self.name)
    }
}

/// What a change does to its resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Declared but absent.
    Create,
    /// Present but different; changed in place.
    Update {
        /// What differs, e.g. "metadata changed (team)".
        reason: String,
    },
    /// Present but different in a way that cannot change in place.
    Replace {
        /// Why, e.g. "user data changed (template cloud-init)".
        reason: String,
    },
    /// Owned by apimon and no longer declared.
    Delete,
    /// Already as declared.
    NoOp,
}

impl Op {
    /// The reason shown in the plan.
    pub fn reason(&self) -> &str {
        match self {
            Self::Create => "declared, does not exist",
            Self::Update { reason } | Self::Replace { reason } => reason,
            Self::Delete => "owned by apimon, no longer declared",
            Self::NoOp => "up to date",
        }
    }

    /// terraform-style symbol.
    pub fn symbol(&self) -> &'static str {
        match self {
            Self::Create => "+",
            Self::Update { .. } => "~",
            Self::Replace { .. } => "-/+",
            Self::Delete => "-",
            Self::NoOp => " ",
        }
    }

    /// Lowercase name, as in plan JSON and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Update { .. } => "update",
            Self::Replace { .. } => "replace",
            Self::Delete => "delete",
            Self::NoOp => "noop",
        }
    }

    /// Whether it removes something that exists (delete or replace).
    pub fn is_destructive(&self) -> bool {
        matches!(self, Self::Delete | Self::Replace { .. })
    }
}

/// One planned change.
#[derive(Debug, Clone, Serialize)]
pub struct Planned<C> {
    /// The resource.
    pub id: ResourceId,
    /// What happens to it.
    #[serde(flatten)]
    pub op: Op,
    /// Resources this one needs: created before it, deleted after it.
    pub depends_on: Vec<ResourceId>,
    /// Whether apimon owns the existing resource (false for new ones and
    /// for resources it did not create).
    pub owned: bool,
    /// The resource it exists inside (see [`DesiredItem::lives_on`]).
    #[serde(skip)]
    pub lives_on: Option<ResourceId>,
    /// Resources whose change applies it again (see [`DesiredItem::triggered_by`]).
    #[serde(skip)]
    pub triggered_by: Vec<ResourceId>,
    /// Why, when the op's own reason does not say it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Provider-specific detail that apply needs.
    #[serde(skip)]
    pub change: C,
}

impl<C> Planned<C> {
    /// Replaces the provider-specific part (e.g. wrap it in a closed enum).
    pub fn map<D>(self, f: impl FnOnce(C) -> D) -> Planned<D> {
        Planned {
            id: self.id,
            op: self.op,
            depends_on: self.depends_on,
            owned: self.owned,
            lives_on: self.lives_on,
            triggered_by: self.triggered_by,
            note: self.note,
            change: f(self.change),
        }
    }

    /// A change of `id` with no provider payload, for tests and tools.
    pub fn bare(id: ResourceId, op: Op, depends_on: Vec<ResourceId>, change: C) -> Self {
        Self {
            id,
            op,
            depends_on,
            owned: true,
            lives_on: None,
            triggered_by: Vec::new(),
            note: None,
            change,
        }
    }

    /// The reason shown in the plan.
    pub fn reason(&self) -> &str {
        self.note.as_deref().unwrap_or(self.op.reason())
    }
}

/// Counts by operation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Creations.
    pub create: usize,
    /// In-place updates.
    pub update: usize,
    /// Replacements.
    pub replace: usize,
    /// Deletions.
    pub delete: usize,
    /// Unchanged resources.
    pub unchanged: usize,
}

impl Summary {
    /// Counts the ops of `changes`.
    pub fn of<C>(changes: &[Planned<C>]) -> Self {
        let mut summary = Self::default();
        for change in changes {
            match change.op {
                Op::Create => summary.create += 1,
                Op::Update { .. } => summary.update += 1,
                Op::Replace { .. } => summary.replace += 1,
                Op::Delete => summary.delete += 1,
                Op::NoOp => summary.unchanged += 1,
            }
        }
        summary
    }

    /// Whether anything would change.
    pub fn has_changes(&self) -> bool {
        self.create + self.update + self.replace + self.delete > 0
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Plan: {} to create, {} to update, {} to replace, {} to delete, {} unchanged.",
            self.create, self.update, self.replace, self.delete, self.unchanged
        )
    }
}

/// An ordered, guarded plan.
#[derive(Debug, Clone, Serialize)]
pub struct Plan<C> {
    /// Changes in the order they apply, no-ops included.
    pub changes: Vec<Planned<C>>,
    /// Counts.
    pub summary: Summary,
    /// Resources the state store says apimon created that no longer exist
    /// (deleted by hand, or with the host they lived on): the store forgets them.
    #[serde(skip)]
    pub forget: Vec<ResourceId>,
}

impl<C> Plan<C> {
    /// The changes that do something.
    pub fn actions(&self) -> impl Iterator<Item = &Planned<C>> {
        self.changes.iter().filter(|c| c.op != Op::NoOp)
    }
}

/// Planning failed.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The dependencies form a cycle.
    #[error("cannot order the plan")]
    Order(#[from] OrderError),
    /// A safety guard refused the plan.
    #[error("the plan was refused:\n{}", .0.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n"))]
    Refused(Vec<GuardError>),
}

/// Turns the diffed changes of every provider into a plan: drops deletions
/// where the environment's policy says not to prune, checks the guards and
/// orders the rest. Pure: the same input gives the same plan.
///
/// # Errors
/// A dependency cycle, or a guard (max deletes, unowned replace) refused it.
pub fn assemble<C: Follow>(
    mut changes: Vec<Planned<C>>,
    forget: Vec<ResourceId>,
    policies: &std::collections::BTreeMap<String, crate::model::Policy>,
    allow_deletes: bool,
) -> Result<Plan<C>, PlanError> {
    changes.retain(|c| c.op != Op::Delete || policies.get(&*c.id.env).is_none_or(|p| p.prune));
    follow(&mut changes);
    let max_deletes = policies.iter().map(|(env, p)| (env.clone(), p.max_deletes)).collect();
    check_guards(&changes, &max_deletes, allow_deletes).map_err(PlanError::Refused)?;
    let changes = order(changes)?;
    let summary = Summary::of(&changes);
    Ok(Plan { changes, summary, forget })
}
