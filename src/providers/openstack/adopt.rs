//! Adoption (`apimon adopt`): apimon's marks added to an existing resource
//! of a declared name — Neutron tags one by one (the resource's other tags
//! stay), Nova and Cinder metadata merged (other keys stay). Rules,
//! attachments and router interfaces follow their parents; keypairs carry
//! no marks (the state store's record is theirs).

use openstack_sdk::api::block_storage::v3::volume::metadata::create as volume_metadata;
use openstack_sdk::api::compute::v2::server::metadata::create as server_metadata;
use openstack_sdk::api::network::v2::floatingip::tag::set as fip_tag;
use openstack_sdk::api::network::v2::network::tag::set as network_tag;
use openstack_sdk::api::network::v2::router::tag::set as router_tag;
use openstack_sdk::api::network::v2::security_group::tag::set as group_tag;
use openstack_sdk::api::network::v2::subnet::tag::set as subnet_tag;

use super::client::{built, OpenstackError};
use super::common::known;
use super::marks::{ownership_metadata, ownership_tags};
use super::{OpenstackProvider, OpenstackSpec, ServerSpec, IMAGE_KEY, ROLE_KEY, USER_DATA_KEY};
use crate::plan::{ItemChange, Planned};

/// How an adopted resource reads back: a server whose user data Nova
/// cannot show is taken as booted with the rendered one (the hash adopt
/// writes), so adopting alone replaces nothing; the next template change
/// does, as for any server.
pub(super) fn adopted(observed: &OpenstackSpec, desired: &OpenstackSpec) -> OpenstackSpec {
    match (observed, desired) {
        (OpenstackSpec::Server(have), OpenstackSpec::Server(want)) => {
            let mut adopted = have.clone();
            if adopted.user_data_sha256.is_empty() {
                adopted.user_data_sha256.clone_from(&want.user_data_sha256);
            }
            adopted.role = want.role;
            OpenstackSpec::Server(adopted)
        }
        _ => observed.clone(),
    }
}

/// Adds Neutron tag `$tag`s to the resource `$id` (one request per tag).
macro_rules! add_tags {
    ($p:expr, $r:expr, $module:ident, $parent:ident, $id:expr) => {{
        for tag in ownership_tags(&$p.env) {
            let request = $module::Request::builder()
                .$parent($id.as_str())
                .id(tag.as_str())
                .build()
                .map_err(|e| built($r, e))?;
            $p.cloud.execute($r, "tag", request).await?;
        }
        Ok(())
    }};
}

pub(super) async fn adopt(
    p: &OpenstackProvider,
    change: &Planned<ItemChange<OpenstackSpec>>,
) -> Result<(), OpenstackError> {
    let name = change.id.name.as_str();
    let resource = change.id.to_string();
    let r = resource.as_str();
    let Some(have) = &change.change.observed else { return Ok(()) };
    match have {
        OpenstackSpec::Server(have) => {
            let id = known(p, r, |i| i.servers.get(name).cloned())?;
            mark_server(p, r, &id, have).await
        }
        OpenstackSpec::Volume { .. } => {
            let id = known(p, r, |i| i.volumes.get(name).cloned())?;
            let request = volume_metadata::Request::builder()
                .volume_id(id.as_str())
                .metadata(ownership_metadata(&p.env).into_iter())
                .build()
                .map_err(|e| built(r, e))?;
            p.cloud.execute(r, "mark", request).await
        }
        OpenstackSpec::Network => {
            let id = known(p, r, |i| i.networks.get(name).cloned())?;
            add_tags!(p, r, network_tag, network_id, id)
        }
        OpenstackSpec::Subnet { .. } => {
            let id = known(p, r, |i| i.subnets.get(name).cloned())?;
            add_tags!(p, r, subnet_tag, subnet_id, id)
        }
        OpenstackSpec::Router { .. } => {
            let id = known(p, r, |i| i.routers.get(name).cloned())?;
            add_tags!(p, r, router_tag, router_id, id)
        }
        OpenstackSpec::SecurityGroup { .. } => {
            let id = known(p, r, |i| i.security_groups.get(name).cloned())?;
            add_tags!(p, r, group_tag, security_group_id, id)
        }
        OpenstackSpec::FloatingIp { .. } => {
            let id = known(p, r, |i| i.floating_ips.get(name).cloned())?;
            add_tags!(p, r, fip_tag, floatingip_id, id)
        }
        OpenstackSpec::Keypair { .. }
        | OpenstackSpec::SecurityGroupRule { .. }
        | OpenstackSpec::VolumeAttachment { .. } => Ok(()),
    }
}

/// Ownership, the user-data hash and the image and role as adopted.
async fn mark_server(
    p: &OpenstackProvider,
    r: &str,
    id: &str,
    have: &ServerSpec,
) -> Result<(), OpenstackError> {
    let mut metadata: Vec<(String, String)> = ownership_metadata(&p.env).into();
    metadata.push((USER_DATA_KEY.to_owned(), have.user_data_sha256.clone()));
    // A placeholder such as "(booted from volume)" is no image name.
    if !have.image.starts_with('(') {
        metadata.push((IMAGE_KEY.to_owned(), have.image.clone()));
    }
    if let Some(role) = have.role {
        metadata.push((ROLE_KEY.to_owned(), role.as_str().to_owned()));
    }
    let request = server_metadata::Request::builder()
        .server_id(id)
        .metadata(metadata.into_iter())
        .build()
        .map_err(|e| built(r, e))?;
    p.cloud.execute(r, "mark", request).await
}
