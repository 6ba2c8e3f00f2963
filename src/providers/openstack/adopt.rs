//! Adoption (`apimon adopt`): apimon's marks added to an existing resource
//! of a declared name — Neutron tags one by one (the resource's other tags
//! stay), Nova and Cinder metadata merged (other keys stay). Each kind's
//! `Kind::adopt` does its own; rules, attachments and router interfaces
//! follow their parents, and keypairs carry no marks (the state store's
//! record is theirs).

use super::client::OpenstackError;
use super::{OpenstackProvider, OpenstackSpec};
use crate::plan::{ItemChange, Planned};

/// How an adopted resource reads back (see `Kind::adopted`).
pub(super) fn adopted(observed: &OpenstackSpec, desired: &OpenstackSpec) -> OpenstackSpec {
    observed.adopted(desired)
}

pub(super) async fn adopt(
    p: &OpenstackProvider,
    change: &Planned<ItemChange<OpenstackSpec>>,
) -> Result<(), OpenstackError> {
    let resource = change.id.to_string();
    let Some(have) = &change.change.observed else { return Ok(()) };
    have.adopt(p, &resource, &change.id.name).await
}
