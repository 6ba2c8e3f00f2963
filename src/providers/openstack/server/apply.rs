//! Creating, changing, replacing and deleting a server, with the waits
//! that takes: until ACTIVE (ERROR ends the wait with Nova's fault
//! message), until a resize waits for its confirmation, until a deleted
//! server is gone. A replaced server keeps its data volumes and its
//! floating IP: they move to the new one before the change counts as done.

use std::collections::BTreeMap;

use base64::Engine as _;
use openstack_sdk::api::compute::v2::server::metadata::{
    create as metadata_merge, delete as metadata_delete,
};
use openstack_sdk::api::compute::v2::server::{
    add_security_group, confirm_resize, create_21 as server_create, delete as server_delete,
    get_20 as server_get, remove_security_group, resize as server_resize,
};

use super::lookup::{find_owned_server, flavor_id, id_of, image_id};
use super::{effective_groups, version_header, ServerJson, ServerSpec};
use crate::providers::openstack::client::{built, OpenstackError};
use crate::providers::openstack::common::{gone_is_fine, Created};
use crate::providers::openstack::marks::ownership_metadata;
use crate::providers::openstack::network::network_id;
use crate::providers::openstack::wait::{poll, Look};
use crate::providers::openstack::{
    floating_ip, volume, OpenstackProvider, IMAGE_KEY, METADATA_KEYS_KEY, ROLE_KEY,
    ROOT_VOLUME_KEY, USER_DATA_KEY,
};

/// Server metadata as apimon writes it: the operator's, plus ownership and the user data hash.
fn server_metadata(env: &str, spec: &ServerSpec) -> BTreeMap<String, String> {
    let mut metadata = spec.metadata.clone();
    metadata.extend(ownership_metadata(env));
    metadata.insert(USER_DATA_KEY.to_owned(), spec.user_data_sha256.clone());
    metadata.insert(IMAGE_KEY.to_owned(), spec.image.clone());
    if let Some(role) = spec.role {
        metadata.insert(ROLE_KEY.to_owned(), role.as_str().to_owned());
    }
    if let Some(gb) = spec.root_volume_gb {
        metadata.insert(ROOT_VOLUME_KEY.to_owned(), gb.to_string());
    }
    let keys: Vec<&str> = spec.metadata.keys().map(String::as_str).collect();
    metadata.insert(METADATA_KEYS_KEY.to_owned(), keys.join(","));
    metadata
}

/// Creates a server and waits for ACTIVE; returns its id.
pub(in crate::providers::openstack) async fn create(
    p: &OpenstackProvider,
    r: &str,
    name: &str,
    spec: &ServerSpec,
) -> Result<String, OpenstackError> {
    // A retry after a lost answer must not boot a second server: one that
    // apimon already created under this name is waited for instead.
    if let Some(existing) = find_owned_server(p, r, name).await? {
        p.with_index(|i| i.servers.insert(name.to_owned(), existing.clone()));
        wait_server_active(p, r, &existing).await?;
        return Ok(existing);
    }
    let flavor = flavor_id(p, r, &spec.flavor).await?;
    let image = image_id(p, r, &spec.image).await?;
    let mut networks = Vec::new();
    for (position, network) in spec.networks.iter().enumerate() {
        let mut nic = server_create::NetworksBuilder::default();
        nic.uuid(network_id(p, r, network).await?);
        if let (0, Some(address)) = (position, &spec.address) {
            nic.fixed_ip(address.clone());
        }
        networks.push(nic.build().map_err(|e| built(r, e))?);
    }
    let groups = spec
        .security_groups
        .iter()
        .map(|g| server_create::SecurityGroupsBuilder::default().name(g.as_str()).build())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| built(r, e))?;
    let metadata = server_metadata(&p.env, spec);
    let user_data = base64::engine::general_purpose::STANDARD.encode(spec.user_data.as_bytes());
    let mut body = server_create::ServerBuilder::default();
    body.name(name).flavor_ref(flavor);
    match spec.root_volume_gb {
        // The root disk is a volume made from the image, gone with the server.
        Some(gb) => {
            let root = server_create::BlockDeviceMappingV2Builder::default()
                .boot_index(Some("0".into()))
                .uuid(image)
                .source_type(server_create::SourceType::Image)
                .destination_type(server_create::DestinationType::Volume)
                .volume_size(i32::try_from(gb).unwrap_or(i32::MAX))
                .delete_on_termination(true)
                .build()
                .map_err(|e| built(r, e))?;
            body.block_device_mapping_v2(vec![root]);
        }
        None => {
            body.image_ref(image);
        }
    }
    body.key_name(spec.keypair.as_str())
        .networks(networks)
        .security_groups(groups)
        .metadata(metadata.into_iter())
        .user_data(user_data);
    if let Some(zone) = &spec.availability_zone {
        body.availability_zone(zone.as_str());
    }
    let body = body.build().map_err(|e| built(r, e))?;
    let request =
        server_create::Request::builder().server(body).build().map_err(|e| built(r, e))?;
    let created: Created = p.cloud.query(r, "create", request).await?;
    p.with_index(|i| i.servers.insert(name.to_owned(), created.id.clone()));
    wait_server_active(p, r, &created.id).await?;
    Ok(created.id)
}

/// Confirms a pending resize or resizes, merges metadata (removing only
/// keys apimon set before) and adds and removes security groups.
pub(in crate::providers::openstack) async fn update(
    p: &OpenstackProvider,
    r: &str,
    name: &str,
    want: &ServerSpec,
    have: &ServerSpec,
) -> Result<(), OpenstackError> {
    let id = id_of(p, r, name).await?;
    if have.building {
        wait_server_active(p, r, &id).await?;
    }
    if have.resize_pending {
        confirm_server_resize(p, r, &id).await?;
    } else if want.resize && want.flavor != have.flavor {
        resize_server(p, r, &id, &want.flavor).await?;
    }
    if want.metadata != have.metadata {
        update_metadata(p, r, &id, want, have).await?;
    }
    let (want_groups, have_groups) = (effective_groups(want), effective_groups(have));
    for group in want_groups.difference(&have_groups) {
        let body = add_security_group::AddSecurityGroupBuilder::default()
            .name(group.as_str())
            .build()
            .map_err(|e| built(r, e))?;
        let request = add_security_group::Request::builder()
            .id(id.as_str())
            .add_security_group(body)
            .build()
            .map_err(|e| built(r, e))?;
        p.cloud.execute(r, &format!("add security group {group}"), request).await?;
    }
    for group in have_groups.difference(&want_groups) {
        let body = remove_security_group::RemoveSecurityGroupBuilder::default()
            .name(group.as_str())
            .build()
            .map_err(|e| built(r, e))?;
        let request = remove_security_group::Request::builder()
            .id(id.as_str())
            .remove_security_group(body)
            .build()
            .map_err(|e| built(r, e))?;
        p.cloud.execute(r, &format!("remove security group {group}"), request).await?;
    }
    Ok(())
}

/// Merges, then removes only keys apimon set before: keys the platform or
/// someone else put on the server stay.
async fn update_metadata(
    p: &OpenstackProvider,
    r: &str,
    id: &str,
    want: &ServerSpec,
    have: &ServerSpec,
) -> Result<(), OpenstackError> {
    let metadata = server_metadata(&p.env, want);
    let request = metadata_merge::Request::builder()
        .server_id(id)
        .metadata(metadata.into_iter())
        .build()
        .map_err(|e| built(r, e))?;
    p.cloud.execute(r, "update metadata", request).await?;
    for key in have.metadata.keys().filter(|k| !want.metadata.contains_key(*k)) {
        let request = metadata_delete::Request::builder()
            .server_id(id)
            .id(key.as_str())
            .build()
            .map_err(|e| built(r, e))?;
        gone_is_fine(p.cloud.execute(r, &format!("remove metadata {key}"), request).await)?;
    }
    Ok(())
}

/// Deletes the old server and boots the new one; its data volumes and
/// floating IP come along.
pub(in crate::providers::openstack) async fn replace(
    p: &OpenstackProvider,
    r: &str,
    name: &str,
    spec: &ServerSpec,
) -> Result<(), OpenstackError> {
    let volumes = p.with_index(|i| i.attached.get(name).cloned().unwrap_or_default());
    let floating_ip = p.with_index(|i| i.floating_ips.get(name).cloned());
    delete(p, r, name).await?;
    let new_id = create(p, r, name, spec).await?;
    for volume in &volumes {
        volume::reattach(p, name, volume).await?;
    }
    if let Some(fip) = floating_ip {
        floating_ip::move_to(p, r, &fip, &new_id).await?;
    }
    Ok(())
}

/// Deletes the server and waits until Nova no longer knows it.
pub(in crate::providers::openstack) async fn delete(
    p: &OpenstackProvider,
    r: &str,
    name: &str,
) -> Result<(), OpenstackError> {
    let Some(id) = p.with_index(|i| i.servers.get(name).cloned()) else { return Ok(()) };
    delete_by_id!(p, r, server_delete, id.as_str())?;
    wait_server_gone(p, r, &id).await?;
    p.with_index(|i| i.servers.remove(name));
    Ok(())
}

/// Resizes to `flavor`, confirms, and waits for ACTIVE.
async fn resize_server(
    p: &OpenstackProvider,
    r: &str,
    id: &str,
    flavor: &str,
) -> Result<(), OpenstackError> {
    let flavor_id = flavor_id(p, r, flavor).await?;
    let body = server_resize::ResizeBuilder::default()
        .flavor_ref(flavor_id.as_str())
        .build()
        .map_err(|e| built(r, e))?;
    let request =
        server_resize::Request::builder().id(id).resize(body).build().map_err(|e| built(r, e))?;
    p.cloud.execute(r, &format!("resize to {flavor}"), request).await?;
    wait_server_status(p, r, id, "VERIFY_RESIZE").await?;
    confirm_server_resize(p, r, id).await
}

/// Confirms a resize (the server is in VERIFY_RESIZE) and waits for ACTIVE.
async fn confirm_server_resize(
    p: &OpenstackProvider,
    r: &str,
    id: &str,
) -> Result<(), OpenstackError> {
    let request = confirm_resize::Request::builder()
        .id(id)
        .confirm_resize(serde_json::Value::Null)
        .build()
        .map_err(|e| built(r, e))?;
    p.cloud.execute(r, "confirm the resize", request).await?;
    wait_server_active(p, r, id).await
}

pub(in crate::providers::openstack) async fn get(
    p: &OpenstackProvider,
    r: &str,
    id: &str,
) -> Result<ServerJson, OpenstackError> {
    let (header, value) = version_header();
    let request = server_get::Request::builder()
        .id(id)
        .header(header, value)
        .build()
        .map_err(|e| built(r, e))?;
    p.cloud.query(r, "read", request).await
}

async fn wait_server_active(
    p: &OpenstackProvider,
    r: &str,
    id: &str,
) -> Result<(), OpenstackError> {
    wait_server_status(p, r, id, "ACTIVE").await
}

/// Waits for `status`; ERROR ends the wait with Nova's fault message.
async fn wait_server_status(
    p: &OpenstackProvider,
    r: &str,
    id: &str,
    status: &str,
) -> Result<(), OpenstackError> {
    poll(p, r, status, p.wait.server_timeout, || async {
        let server = get(p, r, id).await?;
        match server.status.as_str() {
            current if current == status => Ok(Look::Done),
            "ERROR" => {
                let fault = server.fault.map(|f| f.message).filter(|m| !m.is_empty());
                Err(OpenstackError::Failed {
                    resource: r.to_owned(),
                    message: format!(
                        "Nova put the server in ERROR: {}",
                        fault.as_deref().unwrap_or("no fault message")
                    ),
                })
            }
            _ => Ok(Look::Waiting(server.status)),
        }
    })
    .await
}

async fn wait_server_gone(p: &OpenstackProvider, r: &str, id: &str) -> Result<(), OpenstackError> {
    poll(p, r, "deleted", p.wait.server_timeout, || async {
        match get(p, r, id).await {
            Err(error) if error.is_not_found() => Ok(Look::Done),
            Err(error) => Err(error),
            // Status DELETED comes a moment before the record is gone: wait
            // for the 404, so a replacement never meets its predecessor.
            Ok(server) => Ok(Look::Waiting(server.status)),
        }
    })
    .await
}
