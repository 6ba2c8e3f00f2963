//! Carrying out one change: dispatched by kind (`kinds!`) to the kind's
//! file, which implements `Kind`.
//!
//! Names are turned into ids through the index the last observation built
//! (and creations extend), falling back to a lookup. Everything apimon
//! creates is labelled as its own.

use super::client::OpenstackError;
use super::{OpenstackProvider, OpenstackSpec};
use crate::plan::{ItemChange, Op, Planned};

/// Applies one change.
pub(super) async fn apply(
    provider: &OpenstackProvider,
    change: &Planned<ItemChange<OpenstackSpec>>,
) -> Result<(), OpenstackError> {
    let name = &*change.id.name;
    match (&change.op, &change.change.desired, &change.change.observed) {
        (Op::NoOp, _, _) => Ok(()),
        (Op::Create, Some(want), _) => want.create(provider, name).await,
        (Op::Update { .. }, Some(want), Some(have)) => want.update(have, provider, name).await,
        (Op::Replace { .. }, Some(want), Some(have)) => want.replace(have, provider, name).await,
        (Op::Delete, _, Some(have)) => have.delete(provider, name).await,
        _ => Err(OpenstackError::Failed {
            resource: change.id.to_string(),
            message: "the change lacks its desired or observed state".to_owned(),
        }),
    }
}
