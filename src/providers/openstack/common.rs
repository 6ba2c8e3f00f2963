//! What every resource kind's requests share: the shapes of Neutron's
//! and Nova's answers apimon reads, idempotent deletes, tagging what is
//! created, and names → ids from the index.

use serde::Deserialize;

use super::client::OpenstackError;
use super::{Index, OpenstackProvider};

#[derive(Debug, Deserialize)]
pub(super) struct Created {
    pub id: String,
}

#[derive(Debug, Deserialize)]
pub(super) struct Named {
    pub id: String,
    #[serde(default)]
    pub name: String,
}

/// Tags a new Neutron resource as apimon's (Neutron takes tags only after creation).
macro_rules! tag {
    ($p:expr, $r:expr, $module:ident, $id_setter:ident, $id:expr) => {{
        let request = $module::Request::builder()
            .$id_setter($id)
            .tags(
                $crate::providers::openstack::marks::ownership_tags(&$p.env)
                    .into_iter()
                    .map(Into::into)
                    .collect::<Vec<_>>(),
            )
            .build()
            .map_err(|e| $crate::providers::openstack::client::built($r, e))?;
        $p.cloud.execute($r, "tag", request).await
    }};
}

/// Tags a new Neutron resource as apimon's; if that fails, deletes it again,
/// since an untagged resource would never be pruned.
macro_rules! tag_or_undo {
    ($p:expr, $r:expr, $tags:ident, $id_setter:ident, $delete:ident, $id:expr) => {{
        match tag!($p, $r, $tags, $id_setter, $id) {
            Ok(()) => Ok(()),
            Err(error) => {
                let _undone: Result<(), $crate::providers::openstack::client::OpenstackError> =
                    async { delete_by_id!($p, $r, $delete, $id) }.await;
                Err(error)
            }
        }
    }};
}

/// Lists what `$module` lists in `$project` (Neutron's `tenant_id` filter),
/// as `$json`; `$what` names the list in errors.
macro_rules! list_in_project {
    ($cloud:expr, $project:expr, $module:ident, $json:ty, $what:expr) => {{
        let request = $module::Request::builder()
            .tenant_id($project)
            .build()
            .map_err(|e| $crate::providers::openstack::client::built($what, e))?;
        $cloud.list::<$json, _>($what, request).await
    }};
}

/// Deletes by id; what is gone already counts as deleted (retries are safe).
macro_rules! delete_by_id {
    ($p:expr, $r:expr, $module:ident, $id:expr) => {{
        let request = $module::Request::builder()
            .id($id)
            .build()
            .map_err(|e| $crate::providers::openstack::client::built($r, e))?;
        $crate::providers::openstack::common::gone_is_fine(
            $p.cloud.execute($r, "delete", request).await,
        )
    }};
}

/// Treats "already gone" as done, for idempotent deletes.
pub(super) fn gone_is_fine(result: Result<(), OpenstackError>) -> Result<(), OpenstackError> {
    match result {
        Err(error) if error.is_not_found() => Ok(()),
        other => other,
    }
}

/// An id the index must know (it was observed or created in this run).
pub(super) fn known(
    p: &OpenstackProvider,
    r: &str,
    find: impl FnOnce(&Index) -> Option<String>,
) -> Result<String, OpenstackError> {
    p.with_index(|i| find(i)).ok_or_else(|| OpenstackError::Failed {
        resource: r.to_owned(),
        message: "not found in the cloud any more (changed since it was observed?)".to_owned(),
    })
}

/// Adds Neutron tag `$tag`s to the resource `$id` (one request per tag).
macro_rules! add_tags {
    ($p:expr, $r:expr, $module:ident, $parent:ident, $id:expr) => {{
        for tag in $crate::providers::openstack::marks::ownership_tags(&$p.env) {
            let request = $module::Request::builder()
                .$parent($id.as_str())
                .id(tag.as_str())
                .build()
                .map_err(|e| $crate::providers::openstack::client::built($r, e))?;
            $p.cloud.execute($r, "tag", request).await?;
        }
        Ok(())
    }};
}
