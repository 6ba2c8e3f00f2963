//! Carrying out one change.
//!
//! Names are turned into ids through the index the last observation built
//! (and creations extend), falling back to a lookup. Servers are waited for
//! until ACTIVE (ERROR is reported with Nova's fault message), volumes until
//! `available`/`in-use`. Replacing a server keeps its data volumes and its
//! floating IP: they are attached to the new server before the change
//! counts as done. Everything apimon creates is labelled as its own.

use std::collections::BTreeMap;
use std::time::Instant;

use base64::Engine as _;
use http::{HeaderName, HeaderValue};
use openstack_sdk::api::block_storage::v3::volume::{
    create_30 as volume_create, delete as volume_delete, get as volume_get,
    list_detailed as volume_list, os_extend as volume_extend,
};
use openstack_sdk::api::compute::v2::flavor::list_detailed_20 as flavor_list;
use openstack_sdk::api::compute::v2::keypair::{
    create_21 as keypair_create, delete_20 as keypair_delete, get_20 as keypair_get,
};
use openstack_sdk::api::compute::v2::server::metadata::{
    create as metadata_merge, delete as metadata_delete,
};
use openstack_sdk::api::compute::v2::server::volume_attachment::{
    create_20 as attach, delete as detach,
};
use openstack_sdk::api::compute::v2::server::{
    add_security_group, confirm_resize, create_21 as server_create, delete as server_delete,
    get_20 as server_get, list_detailed_21 as server_list, remove_security_group,
    resize as server_resize,
};
use openstack_sdk::api::image::v2::image::list as image_list;
use openstack_sdk::api::network::v2::floatingip::{
    create as fip_create, delete as fip_delete, set as fip_set, tag::replace as fip_tags,
};
use openstack_sdk::api::network::v2::network::{
    create as network_create, delete as network_delete, list as network_list,
    tag::replace as network_tags,
};
use openstack_sdk::api::network::v2::port::list as port_list;
use openstack_sdk::api::network::v2::router::{
    add_router_interface, create as router_create, delete as router_delete,
    remove_router_interface, tag::replace as router_tags,
};
use openstack_sdk::api::network::v2::security_group::{
    create as group_create, delete as group_delete, list as group_list, set as group_set,
    tag::replace as group_tags,
};
use openstack_sdk::api::network::v2::security_group_rule::{
    create as rule_create, delete as rule_delete,
};
use openstack_sdk::api::network::v2::subnet::{
    create as subnet_create, delete as subnet_delete, set as subnet_set,
    tag::replace as subnet_tags,
};
use serde::Deserialize;

use super::client::{built, OpenstackError};
use super::observe::{version_header, ServerJson, VolumeJson};
use super::{
    ownership_metadata, ownership_tags, rule_name, OpenstackProvider, OpenstackSpec, ServerSpec,
    USER_DATA_KEY,
};
use crate::model::{Direction, Protocol, Remote, Rule};
use crate::plan::{ItemChange, Op, Planned};

#[derive(Debug, Deserialize)]
struct Created {
    id: String,
}

#[derive(Debug, Deserialize)]
struct Named {
    id: String,
    #[serde(default)]
    name: String,
}

#[derive(Debug, Deserialize)]
struct PortJson {
    id: String,
    network_id: String,
}

/// Tags a new Neutron resource as apimon's (Neutron takes tags only after creation).
macro_rules! tag {
    ($p:expr, $r:expr, $module:ident, $id_setter:ident, $id:expr) => {{
        let request = $module::Request::builder()
            .$id_setter($id)
            .tags(ownership_tags(&$p.env).into_iter().map(Into::into).collect::<Vec<_>>())
            .build()
            .map_err(|e| built($r, e))?;
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
                let _undone: Result<(), OpenstackError> =
                    async { delete_by_id!($p, $r, $delete, $id) }.await;
                Err(error)
            }
        }
    }};
}

/// Deletes by id; what is gone already counts as deleted (retries are safe).
macro_rules! delete_by_id {
    ($p:expr, $r:expr, $module:ident, $id:expr) => {{
        let request = $module::Request::builder().id($id).build().map_err(|e| built($r, e))?;
        gone_is_fine($p.cloud.execute($r, "delete", request).await)
    }};
}

/// The name errors use for a resource.
fn label(spec: &OpenstackSpec, name: &str) -> String {
    let kind = match spec {
        OpenstackSpec::Keypair { .. } => "keypair",
        OpenstackSpec::SecurityGroup { .. } => "security group",
        OpenstackSpec::SecurityGroupRule { .. } => "security group rule",
        OpenstackSpec::Network => "network",
        OpenstackSpec::Subnet { .. } => "subnet",
        OpenstackSpec::Server(_) => "host",
        OpenstackSpec::Volume { .. } => "volume",
        OpenstackSpec::VolumeAttachment { .. } => "volume attachment",
        OpenstackSpec::Router { .. } => "router",
        OpenstackSpec::FloatingIp { .. } => "floating IP of host",
    };
    format!("{kind} {name}")
}

/// Treats "already gone" as done, for idempotent deletes.
fn gone_is_fine(result: Result<(), OpenstackError>) -> Result<(), OpenstackError> {
    match result {
        Err(error) if error.is_not_found() => Ok(()),
        other => other,
    }
}

/// Applies one change.
pub(super) async fn apply(
    provider: &OpenstackProvider,
    change: &Planned<ItemChange<OpenstackSpec>>,
) -> Result<(), OpenstackError> {
    let name = change.id.name.as_str();
    match (&change.op, &change.change.desired, &change.change.observed) {
        (Op::NoOp, _, _) => Ok(()),
        (Op::Create, Some(want), _) => create(provider, name, want).await,
        (Op::Update { .. }, Some(want), Some(have)) => update(provider, name, want, have).await,
        (Op::Replace { .. }, Some(want), Some(have)) => replace(provider, name, want, have).await,
        (Op::Delete, _, Some(have)) => delete(provider, name, have).await,
        _ => Err(OpenstackError::Failed {
            resource: change.id.to_string(),
            message: "the change lacks its desired or observed state".to_owned(),
        }),
    }
}

async fn create(
    p: &OpenstackProvider,
    name: &str,
    want: &OpenstackSpec,
) -> Result<(), OpenstackError> {
    let resource = label(want, name);
    let r = resource.as_str();
    // Observation found none of this name, so an id the index knows comes
    // from an earlier attempt of this change whose answer was lost after the
    // resource was made and tagged: it exists, done.
    let made_already = p.with_index(|i| match want {
        OpenstackSpec::SecurityGroup { .. } => i.security_groups.contains_key(name),
        OpenstackSpec::Network => i.networks.contains_key(name),
        OpenstackSpec::Subnet { .. } => i.subnets.contains_key(name),
        OpenstackSpec::FloatingIp { .. } => i.floating_ips.contains_key(name),
        _ => false,
    });
    if made_already {
        return Ok(());
    }
    match want {
        OpenstackSpec::Keypair { public_key } => create_keypair(p, r, name, public_key).await,
        OpenstackSpec::SecurityGroup { description } => {
            let body = group_create::SecurityGroupBuilder::default()
                .name(name)
                .description(description.as_str())
                .build()
                .map_err(|e| built(r, e))?;
            let request = group_create::Request::builder()
                .security_group(body)
                .build()
                .map_err(|e| built(r, e))?;
            let created: Created = p.cloud.query(r, "create", request).await?;
            tag_or_undo!(p, r, group_tags, security_group_id, group_delete, created.id.as_str())?;
            p.with_index(|i| i.security_groups.insert(name.to_owned(), created.id));
            Ok(())
        }
        OpenstackSpec::SecurityGroupRule { group, rule } => create_rule(p, r, group, rule).await,
        OpenstackSpec::Network => {
            let body = network_create::NetworkBuilder::default()
                .name(name)
                .build()
                .map_err(|e| built(r, e))?;
            let request = network_create::Request::builder()
                .network(body)
                .build()
                .map_err(|e| built(r, e))?;
            let created: Created = p.cloud.query(r, "create", request).await?;
            tag_or_undo!(p, r, network_tags, network_id, network_delete, created.id.as_str())?;
            p.with_index(|i| i.networks.insert(name.to_owned(), created.id));
            Ok(())
        }
        OpenstackSpec::Subnet { network, cidr, gateway_ip, dns_nameservers } => {
            let network_id = network_id(p, r, network).await?;
            let mut body = subnet_create::SubnetBuilder::default();
            body.name(name)
                .network_id(network_id.as_str())
                .cidr(Some(cidr.as_str().into()))
                .ip_version(if cidr.contains(':') { 6 } else { 4 })
                .dns_nameservers(
                    dns_nameservers.iter().map(|d| d.as_str().into()).collect::<Vec<_>>(),
                );
            if let Some(gateway) = gateway_ip {
                body.gateway_ip(Some(gateway.as_str().into()));
            }
            let body = body.build().map_err(|e| built(r, e))?;
            let request =
                subnet_create::Request::builder().subnet(body).build().map_err(|e| built(r, e))?;
            let created: Created = p.cloud.query(r, "create", request).await?;
            tag_or_undo!(p, r, subnet_tags, subnet_id, subnet_delete, created.id.as_str())?;
            p.with_index(|i| i.subnets.insert(name.to_owned(), created.id));
            Ok(())
        }
        OpenstackSpec::Server(spec) => create_server(p, r, name, spec).await.map(|_| ()),
        OpenstackSpec::Volume { size_gb, volume_type, .. } => {
            create_volume(p, r, name, *size_gb, volume_type.as_deref()).await.map(|_| ())
        }
        OpenstackSpec::VolumeAttachment { server, volume, device } => {
            attach_volume(p, r, server, volume, device.as_deref()).await
        }
        OpenstackSpec::Router { external_network, subnets } => {
            // An earlier attempt of this change may have made the router and
            // some interfaces already: finish its work instead of repeating it.
            if let Some(id) = p.with_index(|i| i.routers.get(name).cloned()) {
                for subnet in subnets {
                    router_interface(p, r, &id, subnet, true).await?;
                }
                return Ok(());
            }
            let network_id = network_id(p, r, external_network).await?;
            let gateway = router_create::ExternalGatewayInfoBuilder::default()
                .network_id(network_id.as_str())
                .build()
                .map_err(|e| built(r, e))?;
            let body = router_create::RouterBuilder::default()
                .name(name)
                .external_gateway_info(Some(gateway))
                .build()
                .map_err(|e| built(r, e))?;
            let request =
                router_create::Request::builder().router(body).build().map_err(|e| built(r, e))?;
            let created: Created = p.cloud.query(r, "create", request).await?;
            tag_or_undo!(p, r, router_tags, router_id, router_delete, created.id.as_str())?;
            p.with_index(|i| i.routers.insert(name.to_owned(), created.id.clone()));
            for subnet in subnets {
                router_interface(p, r, &created.id, subnet, true).await?;
            }
            Ok(())
        }
        OpenstackSpec::FloatingIp { network, server } => {
            create_floating_ip(p, r, name, network, server).await
        }
    }
}

/// Adds (or removes) the router's interface on `subnet`.
async fn router_interface(
    p: &OpenstackProvider,
    r: &str,
    router_id: &str,
    subnet: &str,
    add: bool,
) -> Result<(), OpenstackError> {
    let subnet_id = known(p, r, |i| i.subnets.get(subnet).cloned())?;
    let key = (router_id.to_owned(), subnet.to_owned());
    if add {
        if p.with_index(|i| i.router_interfaces.contains(&key)) {
            return Ok(());
        }
        let request = add_router_interface::Request::builder()
            .id(router_id)
            .subnet_id(subnet_id.as_str())
            .build()
            .map_err(|e| built(r, e))?;
        p.cloud.execute(r, &format!("add interface on subnet {subnet}"), request).await?;
        p.with_index(|i| i.router_interfaces.insert(key));
        Ok(())
    } else {
        p.with_index(|i| i.router_interfaces.remove(&key));
        let request = remove_router_interface::Request::builder()
            .id(router_id)
            .subnet_id(subnet_id.as_str())
            .build()
            .map_err(|e| built(r, e))?;
        gone_is_fine(
            p.cloud.execute(r, &format!("remove interface on subnet {subnet}"), request).await,
        )
    }
}

async fn update(
    p: &OpenstackProvider,
    name: &str,
    want: &OpenstackSpec,
    have: &OpenstackSpec,
) -> Result<(), OpenstackError> {
    let resource = label(want, name);
    let r = resource.as_str();
    match (want, have) {
        (OpenstackSpec::SecurityGroup { description }, _) => {
            let id = group_id(p, r, name).await?;
            let body = group_set::SecurityGroupBuilder::default()
                .description(description.as_str())
                .build()
                .map_err(|e| built(r, e))?;
            let request = group_set::Request::builder()
                .id(id.as_str())
                .security_group(body)
                .build()
                .map_err(|e| built(r, e))?;
            p.cloud.execute(r, "update", request).await
        }
        (OpenstackSpec::Subnet { gateway_ip, dns_nameservers, .. }, _) => {
            let id = known(p, r, |i| i.subnets.get(name).cloned())?;
            let mut body = subnet_set::SubnetBuilder::default();
            body.dns_nameservers(
                dns_nameservers.iter().map(|d| d.as_str().into()).collect::<Vec<_>>(),
            );
            if let Some(gateway) = gateway_ip {
                body.gateway_ip(Some(gateway.as_str().into()));
            }
            let body = body.build().map_err(|e| built(r, e))?;
            let request = subnet_set::Request::builder()
                .id(id.as_str())
                .subnet(body)
                .build()
                .map_err(|e| built(r, e))?;
            p.cloud.execute(r, "update", request).await
        }
        (OpenstackSpec::Server(want), OpenstackSpec::Server(have)) => {
            let id = server_id(p, r, name).await?;
            if have.resize_pending {
                confirm_server_resize(p, r, &id).await?;
            } else if want.resize && want.flavor != have.flavor {
                resize_server(p, r, &id, &want.flavor).await?;
            }
            if want.metadata != have.metadata {
                // Merge, then remove only keys apimon set before: keys the
                // platform or someone else put on the server stay.
                let metadata = server_metadata(&p.env, want);
                let request = metadata_merge::Request::builder()
                    .server_id(id.as_str())
                    .metadata(metadata.into_iter())
                    .build()
                    .map_err(|e| built(r, e))?;
                p.cloud.execute(r, "update metadata", request).await?;
                for key in have.metadata.keys().filter(|k| !want.metadata.contains_key(*k)) {
                    let request = metadata_delete::Request::builder()
                        .server_id(id.as_str())
                        .id(key.as_str())
                        .build()
                        .map_err(|e| built(r, e))?;
                    gone_is_fine(
                        p.cloud.execute(r, &format!("remove metadata {key}"), request).await,
                    )?;
                }
            }
            let (want_groups, have_groups) =
                (super::effective_groups(want), super::effective_groups(have));
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
        (
            OpenstackSpec::Router { subnets: want, .. },
            OpenstackSpec::Router { subnets: have, .. },
        ) => {
            let id = known(p, r, |i| i.routers.get(name).cloned())?;
            for subnet in want.difference(have) {
                router_interface(p, r, &id, subnet, true).await?;
            }
            for subnet in have.difference(want) {
                router_interface(p, r, &id, subnet, false).await?;
            }
            Ok(())
        }
        (OpenstackSpec::Volume { size_gb, .. }, _) => {
            let id = volume_id(p, r, name).await?;
            let body = volume_extend::OsExtendBuilder::default()
                .new_size(i32::try_from(*size_gb).unwrap_or(i32::MAX))
                .build()
                .map_err(|e| built(r, e))?;
            // 3.42 lets an attached (in-use) volume grow.
            let request = volume_extend::Request::builder()
                .id(id.as_str())
                .os_extend(body)
                .header(
                    HeaderName::from_static("openstack-api-version"),
                    HeaderValue::from_static("volume 3.42"),
                )
                .build()
                .map_err(|e| built(r, e))?;
            p.cloud.execute(r, "extend", request).await
        }
        _ => Err(OpenstackError::Failed {
            resource: resource.clone(),
            message: "cannot be changed in place".to_owned(),
        }),
    }
}

async fn replace(
    p: &OpenstackProvider,
    name: &str,
    want: &OpenstackSpec,
    have: &OpenstackSpec,
) -> Result<(), OpenstackError> {
    let resource = label(want, name);
    let r = resource.as_str();
    match want {
        OpenstackSpec::Server(spec) => {
            // What hangs off the old server comes along to the new one.
            let volumes = p.with_index(|i| i.attached.get(name).cloned().unwrap_or_default());
            let floating_ip = p.with_index(|i| i.floating_ips.get(name).cloned());
            delete(p, name, have).await?;
            let new_id = create_server(p, r, name, spec).await?;
            for volume in &volumes {
                wait_volume(
                    p,
                    &format!("volume {volume}"),
                    &volume_id(p, r, volume).await?,
                    "available",
                )
                .await?;
                attach_volume(p, &format!("volume attachment {volume}"), name, volume, None)
                    .await?;
            }
            if let Some(fip) = floating_ip {
                let port = first_port(p, r, &new_id).await?;
                let body = fip_set::FloatingipBuilder::default()
                    .port_id(Some(port.into()))
                    .build()
                    .map_err(|e| built(r, e))?;
                let request = fip_set::Request::builder()
                    .id(fip.as_str())
                    .floatingip(body)
                    .build()
                    .map_err(|e| built(r, e))?;
                p.cloud.execute(r, "move the floating IP to the new server", request).await?;
            }
            Ok(())
        }
        OpenstackSpec::Volume { size_gb, volume_type, .. } => {
            let attached_to = p.with_index(|i| {
                i.attached
                    .iter()
                    .find(|(_, vols)| vols.iter().any(|v| v == name))
                    .map(|(s, _)| s.clone())
            });
            if let Some(server) = &attached_to {
                detach_volume(p, r, server, name).await?;
            }
            delete(p, name, have).await?;
            create_volume(p, r, name, *size_gb, volume_type.as_deref()).await?;
            if let Some(server) = &attached_to {
                attach_volume(p, r, server, name, None).await?;
            }
            Ok(())
        }
        _ => {
            delete(p, name, have).await?;
            create(p, name, want).await
        }
    }
}

async fn delete(
    p: &OpenstackProvider,
    name: &str,
    have: &OpenstackSpec,
) -> Result<(), OpenstackError> {
    let resource = label(have, name);
    let r = resource.as_str();
    match have {
        OpenstackSpec::Keypair { .. } => {
            delete_by_id!(p, r, keypair_delete, name)
        }
        OpenstackSpec::SecurityGroup { .. } => {
            let id = group_id(p, r, name).await?;
            delete_by_id!(p, r, group_delete, id.as_str())?;
            p.with_index(|i| i.security_groups.remove(name));
            Ok(())
        }
        OpenstackSpec::SecurityGroupRule { .. } => {
            let id = known(p, r, |i| i.rules.get(name).cloned())?;
            delete_by_id!(p, r, rule_delete, id.as_str())
        }
        OpenstackSpec::Network => {
            let id = network_id(p, r, name).await?;
            delete_by_id!(p, r, network_delete, id.as_str())?;
            p.with_index(|i| i.networks.remove(name));
            Ok(())
        }
        OpenstackSpec::Subnet { .. } => {
            let id = known(p, r, |i| i.subnets.get(name).cloned())?;
            delete_by_id!(p, r, subnet_delete, id.as_str())?;
            p.with_index(|i| i.subnets.remove(name));
            Ok(())
        }
        OpenstackSpec::Server(_) => {
            let Some(id) = p.with_index(|i| i.servers.get(name).cloned()) else { return Ok(()) };
            delete_by_id!(p, r, server_delete, id.as_str())?;
            wait_server_gone(p, r, &id).await?;
            p.with_index(|i| i.servers.remove(name));
            Ok(())
        }
        OpenstackSpec::Volume { error, .. } => {
            let Some(id) = p.with_index(|i| i.volumes.get(name).cloned()) else { return Ok(()) };
            // A detach planned before this one may still be finishing; a
            // volume in error will never be available, and can go as it is.
            if error.is_none() {
                match wait_volume(p, r, &id, "available").await {
                    Err(error) if error.is_not_found() => return Ok(()),
                    other => other?,
                }
            }
            delete_by_id!(p, r, volume_delete, id.as_str())?;
            p.with_index(|i| i.volumes.remove(name));
            Ok(())
        }
        OpenstackSpec::VolumeAttachment { server, volume, .. } => {
            detach_volume(p, r, server, volume).await
        }
        OpenstackSpec::Router { subnets, .. } => {
            let id = known(p, r, |i| i.routers.get(name).cloned())?;
            for subnet in subnets {
                router_interface(p, r, &id, subnet, false).await?;
            }
            delete_by_id!(p, r, router_delete, id.as_str())?;
            p.with_index(|i| i.routers.remove(name));
            Ok(())
        }
        OpenstackSpec::FloatingIp { .. } => {
            let id = known(p, r, |i| i.floating_ips.get(name).cloned())?;
            delete_by_id!(p, r, fip_delete, id.as_str())?;
            p.with_index(|i| i.floating_ips.remove(name));
            Ok(())
        }
    }
}

async fn create_keypair(
    p: &OpenstackProvider,
    r: &str,
    name: &str,
    public_key: &str,
) -> Result<(), OpenstackError> {
    let body = keypair_create::KeypairBuilder::default()
        .name(name)
        .public_key(public_key)
        .build()
        .map_err(|e| built(r, e))?;
    let request =
        keypair_create::Request::builder().keypair(body).build().map_err(|e| built(r, e))?;
    match p.cloud.execute(r, "create", request).await {
        // A retry after a lost answer: fine if the key is the one we sent.
        Err(error) if error.is_conflict() => {
            #[derive(Deserialize)]
            struct Existing {
                public_key: String,
            }
            let request =
                keypair_get::Request::builder().id(name).build().map_err(|e| built(r, e))?;
            let existing: Existing = p.cloud.query(r, "read", request).await?;
            if existing.public_key.trim() == public_key.trim() {
                Ok(())
            } else {
                Err(error)
            }
        }
        other => other,
    }
}

async fn create_rule(
    p: &OpenstackProvider,
    r: &str,
    group: &str,
    rule: &Rule,
) -> Result<(), OpenstackError> {
    let group_id = group_id(p, r, group).await?;
    let mut body = rule_create::SecurityGroupRuleBuilder::default();
    body.security_group_id(group_id.as_str()).direction(match rule.direction {
        Direction::Ingress => rule_create::Direction::Ingress,
        Direction::Egress => rule_create::Direction::Egress,
    });
    match rule.protocol {
        Protocol::Tcp => {
            body.protocol("tcp");
        }
        Protocol::Udp => {
            body.protocol("udp");
        }
        Protocol::Icmp => {
            body.protocol("icmp");
        }
        Protocol::Any => {}
    }
    if let Some((low, high)) = rule.ports {
        body.port_range_min(Some(i32::from(low))).port_range_max(Some(i32::from(high)));
    }
    let mut ipv6 = false;
    let remote_group;
    let prefix;
    match &rule.remote {
        Remote::Any => {}
        Remote::Cidr(cidr) => {
            ipv6 = matches!(cidr, ipnet::IpNet::V6(_));
            prefix = cidr.to_string();
            body.remote_ip_prefix(prefix.as_str());
        }
        Remote::Group(name) => {
            remote_group = self::group_id(p, r, name).await?;
            body.remote_group_id(remote_group.as_str());
        }
    }
    body.ethertype(if ipv6 { rule_create::Ethertype::Ipv6 } else { rule_create::Ethertype::Ipv4 });
    let body = body.build().map_err(|e| built(r, e))?;
    let request = rule_create::Request::builder()
        .security_group_rule(body)
        .build()
        .map_err(|e| built(r, e))?;
    match p.cloud.query::<Created, _>(r, "create", request).await {
        Ok(created) => {
            p.with_index(|i| i.rules.insert(rule_name(group, rule), created.id));
            Ok(())
        }
        // Neutron refuses a duplicate rule: it is there already (a retry).
        Err(error) if error.is_conflict() => Ok(()),
        Err(error) => Err(error),
    }
}

/// Server metadata as apimon writes it: the operator's, plus ownership and the user data hash.
fn server_metadata(env: &str, spec: &ServerSpec) -> BTreeMap<String, String> {
    let mut metadata = spec.metadata.clone();
    metadata.extend(ownership_metadata(env));
    metadata.insert(USER_DATA_KEY.to_owned(), spec.user_data_sha256.clone());
    metadata.insert(super::IMAGE_KEY.to_owned(), spec.image.clone());
    let keys: Vec<&str> = spec.metadata.keys().map(String::as_str).collect();
    metadata.insert(super::METADATA_KEYS_KEY.to_owned(), keys.join(","));
    metadata
}

/// Creates a server and waits for ACTIVE; returns its id.
async fn create_server(
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
    body.name(name)
        .flavor_ref(flavor)
        .image_ref(image)
        .key_name(spec.keypair.as_str())
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

async fn get_server(
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

/// What one look at a resource found.
enum Look {
    /// The wait is over.
    Done,
    /// Not yet: the current status.
    Waiting(String),
}

/// Looks with `look` every poll interval until it is done, fails, or
/// `timeout` passes (a transient error: the change is retried).
async fn poll<F, Fut>(
    p: &OpenstackProvider,
    r: &str,
    wanted: &str,
    timeout: std::time::Duration,
    mut look: F,
) -> Result<(), OpenstackError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Look, OpenstackError>>,
{
    let started = Instant::now();
    loop {
        crate::progress::tick();
        let status = match look().await? {
            Look::Done => return Ok(()),
            Look::Waiting(status) => status,
        };
        if started.elapsed() > timeout {
            return Err(OpenstackError::Timeout {
                resource: r.to_owned(),
                state: format!("{wanted} (status {status})"),
                seconds: timeout.as_secs(),
            });
        }
        tokio::time::sleep(p.wait.poll_interval).await;
    }
}

/// Waits for `status`; ERROR ends the wait with Nova's fault message.
async fn wait_server_status(
    p: &OpenstackProvider,
    r: &str,
    id: &str,
    status: &str,
) -> Result<(), OpenstackError> {
    poll(p, r, status, p.wait.server_timeout, || async {
        let server = get_server(p, r, id).await?;
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
        match get_server(p, r, id).await {
            Err(error) if error.is_not_found() => Ok(Look::Done),
            Err(error) => Err(error),
            // Status DELETED comes a moment before the record is gone: wait
            // for the 404, so a replacement never meets its predecessor.
            Ok(server) => Ok(Look::Waiting(server.status)),
        }
    })
    .await
}

async fn create_volume(
    p: &OpenstackProvider,
    r: &str,
    name: &str,
    size_gb: u32,
    volume_type: Option<&str>,
) -> Result<String, OpenstackError> {
    // An earlier attempt of this change made it (and timed out waiting):
    // wait for that one rather than make a second.
    if let Some(id) = p.with_index(|i| i.volumes.get(name).cloned()) {
        wait_volume(p, r, &id, "available").await?;
        return Ok(id);
    }
    let mut body = volume_create::VolumeBuilder::default();
    body.name(Some(name.into()))
        .size(i32::try_from(size_gb).unwrap_or(i32::MAX))
        .metadata(ownership_metadata(&p.env).into_iter());
    if let Some(kind) = volume_type {
        body.volume_type(Some(kind.into()));
    }
    let body = body.build().map_err(|e| built(r, e))?;
    let request =
        volume_create::Request::builder().volume(body).build().map_err(|e| built(r, e))?;
    let created: Created = p.cloud.query(r, "create", request).await?;
    p.with_index(|i| i.volumes.insert(name.to_owned(), created.id.clone()));
    wait_volume(p, r, &created.id, "available").await?;
    Ok(created.id)
}

async fn wait_volume(
    p: &OpenstackProvider,
    r: &str,
    id: &str,
    status: &str,
) -> Result<(), OpenstackError> {
    poll(p, r, status, p.wait.volume_timeout, || async {
        let request = volume_get::Request::builder().id(id).build().map_err(|e| built(r, e))?;
        let volume: VolumeJson = p.cloud.query(r, "read", request).await?;
        if volume.status == status {
            Ok(Look::Done)
        } else if volume.status.starts_with("error") {
            Err(OpenstackError::Failed {
                resource: r.to_owned(),
                message: format!("Cinder reports status {}", volume.status),
            })
        } else {
            Ok(Look::Waiting(volume.status))
        }
    })
    .await
}

async fn attach_volume(
    p: &OpenstackProvider,
    r: &str,
    server: &str,
    volume: &str,
    device: Option<&str>,
) -> Result<(), OpenstackError> {
    let server_id = server_id(p, r, server).await?;
    let volume_id = volume_id(p, r, volume).await?;
    let mut body = attach::VolumeAttachmentBuilder::default();
    body.volume_id(volume_id.as_str());
    if let Some(device) = device {
        body.device(Some(device.into()));
    }
    let body = body.build().map_err(|e| built(r, e))?;
    let request = attach::Request::builder()
        .server_id(server_id.as_str())
        .volume_attachment(body)
        .build()
        .map_err(|e| built(r, e))?;
    p.cloud.execute(r, &format!("attach to host {server}"), request).await?;
    wait_volume(p, r, &volume_id, "in-use").await?;
    p.with_index(|i| i.attached.entry(server.to_owned()).or_default().push(volume.to_owned()));
    Ok(())
}

async fn detach_volume(
    p: &OpenstackProvider,
    r: &str,
    server: &str,
    volume: &str,
) -> Result<(), OpenstackError> {
    let Some(server_id) = p.with_index(|i| i.servers.get(server).cloned()) else { return Ok(()) };
    let volume_id = volume_id(p, r, volume).await?;
    let request = detach::Request::builder()
        .server_id(server_id.as_str())
        .id(volume_id.as_str())
        .build()
        .map_err(|e| built(r, e))?;
    gone_is_fine(p.cloud.execute(r, &format!("detach from host {server}"), request).await)?;
    wait_volume(p, r, &volume_id, "available").await?;
    p.with_index(|i| {
        if let Some(volumes) = i.attached.get_mut(server) {
            volumes.retain(|v| v != volume);
        }
    });
    Ok(())
}

async fn create_floating_ip(
    p: &OpenstackProvider,
    r: &str,
    name: &str,
    network: &str,
    server: &str,
) -> Result<(), OpenstackError> {
    let network_id = network_id(p, r, network).await?;
    let server_id = server_id(p, r, server).await?;
    let port = first_port(p, r, &server_id).await?;
    let body = fip_create::FloatingipBuilder::default()
        .floating_network_id(network_id.as_str())
        .port_id(Some(port.into()))
        .build()
        .map_err(|e| built(r, e))?;
    let request =
        fip_create::Request::builder().floatingip(body).build().map_err(|e| built(r, e))?;
    let created: Created = p.cloud.query(r, "create", request).await?;
    tag_or_undo!(p, r, fip_tags, floatingip_id, fip_delete, created.id.as_str())?;
    p.with_index(|i| i.floating_ips.insert(name.to_owned(), created.id));
    Ok(())
}

/// The server's port on its first network (where its floating IP goes).
async fn first_port(
    p: &OpenstackProvider,
    r: &str,
    server_id: &str,
) -> Result<String, OpenstackError> {
    let request =
        port_list::Request::builder().device_id(server_id).build().map_err(|e| built(r, e))?;
    let ports: Vec<PortJson> = p.cloud.list(r, request).await?;
    let server = get_server(p, r, server_id).await?;
    let first_network = server.addresses_order().into_iter().next();
    let first_network_id = match first_network {
        Some(network) => Some(network_id(p, r, &network).await?),
        None => None,
    };
    ports
        .iter()
        .find(|port| Some(&port.network_id) == first_network_id.as_ref())
        .or_else(|| ports.first())
        .map(|port| port.id.clone())
        .ok_or_else(|| OpenstackError::Failed {
            resource: r.to_owned(),
            message: "the server has no port to attach a floating IP to".to_owned(),
        })
}

/// An id the index must know (it was observed or created in this run).
fn known(
    p: &OpenstackProvider,
    r: &str,
    find: impl FnOnce(&super::Index) -> Option<String>,
) -> Result<String, OpenstackError> {
    p.with_index(|i| find(i)).ok_or_else(|| OpenstackError::Failed {
        resource: r.to_owned(),
        message: "not found in the cloud any more (changed since it was observed?)".to_owned(),
    })
}

async fn group_id(p: &OpenstackProvider, r: &str, name: &str) -> Result<String, OpenstackError> {
    if let Some(id) = p.with_index(|i| i.security_groups.get(name).cloned()) {
        return Ok(id);
    }
    let project = p.cloud.project_id().await?;
    let request = group_list::Request::builder()
        .name(name)
        .tenant_id(project.as_str())
        .build()
        .map_err(|e| built(r, e))?;
    let found: Vec<Named> = p.cloud.list(r, request).await?;
    let id = found.into_iter().next().map(|g| g.id).ok_or_else(|| OpenstackError::Missing {
        resource: r.to_owned(),
        what: "security group",
        name: name.to_owned(),
    })?;
    p.with_index(|i| i.security_groups.insert(name.to_owned(), id.clone()));
    Ok(id)
}

async fn network_id(p: &OpenstackProvider, r: &str, name: &str) -> Result<String, OpenstackError> {
    if let Some(id) =
        p.with_index(|i| i.networks.get(name).or_else(|| i.external_networks.get(name)).cloned())
    {
        return Ok(id);
    }
    let request = network_list::Request::builder().name(name).build().map_err(|e| built(r, e))?;
    let found: Vec<Named> = p.cloud.list(r, request).await?;
    found.into_iter().find(|n| n.name == name).map(|n| n.id).ok_or_else(|| {
        OpenstackError::Missing { resource: r.to_owned(), what: "network", name: name.to_owned() }
    })
}

async fn server_id(p: &OpenstackProvider, r: &str, name: &str) -> Result<String, OpenstackError> {
    if let Some(id) = p.with_index(|i| i.servers.get(name).cloned()) {
        return Ok(id);
    }
    let id = find_owned_server(p, r, name).await?.ok_or_else(|| OpenstackError::Missing {
        resource: r.to_owned(),
        what: "server",
        name: name.to_owned(),
    })?;
    p.with_index(|i| i.servers.insert(name.to_owned(), id.clone()));
    Ok(id)
}

/// The id of the server apimon created as `name` in this environment, asking Nova.
async fn find_owned_server(
    p: &OpenstackProvider,
    r: &str,
    name: &str,
) -> Result<Option<String>, OpenstackError> {
    let request = server_list::Request::builder()
        .name(format!("^{}$", regex_escape(name)))
        .build()
        .map_err(|e| built(r, e))?;
    let found: Vec<ServerJson> = p.cloud.list(r, request).await?;
    Ok(found
        .into_iter()
        .find(|s| {
            s.name == name && s.status != "DELETED" && super::is_owned_metadata(&s.metadata, &p.env)
        })
        .map(|s| s.id))
}

async fn volume_id(p: &OpenstackProvider, r: &str, name: &str) -> Result<String, OpenstackError> {
    if let Some(id) = p.with_index(|i| i.volumes.get(name).cloned()) {
        return Ok(id);
    }
    let request = volume_list::Request::builder().build().map_err(|e| built(r, e))?;
    let found: Vec<VolumeJson> = p.cloud.list(r, request).await?;
    let id = found.into_iter().find(|v| v.name.as_deref() == Some(name)).map(|v| v.id).ok_or_else(
        || OpenstackError::Missing {
            resource: r.to_owned(),
            what: "volume",
            name: name.to_owned(),
        },
    )?;
    p.with_index(|i| i.volumes.insert(name.to_owned(), id.clone()));
    Ok(id)
}

async fn flavor_id(p: &OpenstackProvider, r: &str, name: &str) -> Result<String, OpenstackError> {
    if let Some(id) = p.with_index(|i| i.flavors.get(name).cloned()) {
        return Ok(id);
    }
    let request = flavor_list::Request::builder().build().map_err(|e| built(r, e))?;
    let flavors: Vec<Named> = p.cloud.list(r, request).await?;
    p.with_index(|i| i.flavors.extend(flavors.into_iter().map(|f| (f.name, f.id))));
    p.with_index(|i| i.flavors.get(name).cloned()).ok_or_else(|| OpenstackError::Missing {
        resource: r.to_owned(),
        what: "flavor",
        name: name.to_owned(),
    })
}

async fn image_id(p: &OpenstackProvider, r: &str, name: &str) -> Result<String, OpenstackError> {
    if let Some(id) = p.with_index(|i| i.images.get(name).cloned()) {
        return Ok(id);
    }
    // Newest first: clouds re-upload images under the same name.
    let request = image_list::Request::builder()
        .name(name)
        .sort("created_at:desc")
        .build()
        .map_err(|e| built(r, e))?;
    let images: Vec<Named> = p.cloud.list(r, request).await?;
    let id = images.into_iter().find(|i| i.name == name).map(|i| i.id).ok_or_else(|| {
        OpenstackError::Missing { resource: r.to_owned(), what: "image", name: name.to_owned() }
    })?;
    p.with_index(|i| i.images.insert(name.to_owned(), id.clone()));
    Ok(id)
}

/// Nova's name filter is a regular expression.
fn regex_escape(name: &str) -> String {
    name.chars()
        .flat_map(|c| {
            let special = "\\.+*?()|[]{}^$".contains(c);
            special.then_some('\\').into_iter().chain(std::iter::once(c))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_are_matched_literally_by_novas_regex_filter() {
        assert_eq!(regex_escape("outside-bastion"), "outside-bastion");
        assert_eq!(regex_escape("a.b(1)"), "a\\.b\\(1\\)");
    }
}
