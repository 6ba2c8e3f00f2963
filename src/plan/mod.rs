//! The planning core: pure functions from desired and observed state to an
//! ordered list of changes. No I/O and no knowledge of any provider, so it
//! is tested exhaustively with plain data.

#![deny(missing_docs)]

pub mod diff;
pub mod guard;
pub mod order;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use diff::{
    diff, Comparison, DesiredItem, DesiredSet, ItemChange, ObservedItem, ObservedSet, Spec,
};
pub use guard::{check_guards, GuardError};
pub use order::{dependency_graph, order, OrderError};

/// The system a resource lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// OpenStack (Nova, Neutron, Cinder).
    Openstack,
    /// InfluxDB 1.x.
    Influxdb,
    /// Grafana.
    Grafana,
    /// Files and units on a host over SSH.
    Host,
    /// In-memory provider for engine tests.
    Fake,
}

impl ProviderKind {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Openstack => "openstack",
            Self::Influxdb => "influxdb",
            Self::Grafana => "grafana",
            Self::Host => "host",
            Self::Fake => "fake",
        }
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
    /// Environment.
    pub env: String,
    /// Provider.
    pub provider: ProviderKind,
    /// Kind within the provider (`server`, `user`, `dashboard`, ...).
    pub kind: String,
    /// Name, unique per kind and environment.
    pub name: String,
}

impl ResourceId {
    /// Builds an id.
    pub fn new(env: &str, provider: ProviderKind, kind: &str, name: impl Into<String>) -> Self {
        Self { env: env.to_owned(), provider, kind: kind.to_owned(), name: name.into() }
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
            change: f(self.change),
        }
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
