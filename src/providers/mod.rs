//! Providers: one module per target system, each with the same verbs.
//!
//! A provider turns its slice of the desired state into a
//! [`DesiredSet`](crate::plan::DesiredSet) of its own [`Spec`] type (pure),
//! reads what exists (`observe`, batched, read-only) and carries out one
//! change at a time (`apply`). The diff between the two is the planning
//! core's generic [`diff`](crate::plan::diff), driven by each spec's
//! `compare`. Providers know nothing of git, the daemon or each other.

#![deny(missing_docs)]

pub mod grafana;
pub mod host;
pub mod influxdb;
pub mod openstack;

use std::future::Future;

use serde::Serialize;

use crate::plan::{diff, DesiredSet, ItemChange, ObservedSet, Planned, ProviderKind, Spec};

/// What one observe or apply call is about.
#[derive(Debug, Clone)]
pub struct Scope {
    /// Environment name.
    pub env: String,
    /// Fingerprints of write-only secrets as last applied, by resource id
    /// (from the state store): how a provider tells whether a secret it
    /// cannot read back is still the declared one.
    pub fingerprints: std::collections::BTreeMap<String, String>,
    /// Resources the state store says apimon created in this environment:
    /// a provider that only reads what is declared must also read these,
    /// or it could never prune them.
    pub owned: Vec<crate::plan::ResourceId>,
}

/// A target system.
///
/// # Guarantees
/// `observe` never changes anything. `apply` carries out exactly one
/// change and is idempotent, so a retry after a lost reply is safe.
pub trait Provider {
    /// Which provider this is.
    const KIND: ProviderKind;
    /// The provider's resource description.
    type Spec: Spec + Serialize;
    /// The provider's error type; each error names its resource.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Reads what exists, in as few calls as possible.
    ///
    /// # Errors
    /// The system could not be read; nothing was changed.
    fn observe(
        &self,
        scope: &Scope,
    ) -> impl Future<Output = Result<ObservedSet<Self::Spec>, Self::Error>> + Send;

    /// Pure: the changes that take `observed` to `desired`, sorted by id.
    fn plan(
        desired: &DesiredSet<Self::Spec>,
        observed: &ObservedSet<Self::Spec>,
        prune: bool,
    ) -> Vec<Planned<ItemChange<Self::Spec>>> {
        diff(desired, observed, prune)
    }

    /// Applies one change.
    ///
    /// # Errors
    /// The change failed; the error names the resource.
    fn apply(
        &self,
        change: &Planned<ItemChange<Self::Spec>>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Whether `error` is worth retrying (unreachable, 5xx, timeout).
    fn is_transient(error: &Self::Error) -> bool;
}

/// `a → b` for a change reason.
pub(crate) fn changed<T: std::fmt::Display + PartialEq>(
    what: &str,
    from: &T,
    to: &T,
    out: &mut Vec<String>,
) {
    if from != to {
        out.push(format!("{what} {from} → {to}"));
    }
}
