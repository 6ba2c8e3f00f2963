//! Carrying out one change: dispatched by kind to the kind's module.
//!
//! Names are turned into ids through the index the last observation built
//! (and creations extend), falling back to a lookup. Everything apimon
//! creates is labelled as its own.

use super::client::OpenstackError;
use super::{
    floating_ip, keypair, network, security_group, server, volume, OpenstackProvider, OpenstackSpec,
};
use crate::plan::{ItemChange, Op, Planned};

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
        OpenstackSpec::Keypair { public_key } => keypair::create(p, r, name, public_key).await,
        OpenstackSpec::SecurityGroup { description } => {
            security_group::create(p, r, name, description).await
        }
        OpenstackSpec::SecurityGroupRule { group, rule } => {
            security_group::create_rule(p, r, group, rule).await
        }
        OpenstackSpec::Network => network::create(p, r, name).await,
        OpenstackSpec::Subnet { .. } => network::create_subnet(p, r, name, want).await,
        OpenstackSpec::Server(spec) => server::create(p, r, name, spec).await.map(drop),
        OpenstackSpec::Volume { size_gb, volume_type, .. } => {
            volume::create(p, r, name, *size_gb, volume_type.as_deref()).await.map(drop)
        }
        OpenstackSpec::VolumeAttachment { server, volume, device } => {
            volume::attach(p, r, server, volume, device.as_deref()).await
        }
        OpenstackSpec::Router { external_network, subnets } => {
            network::create_router(p, r, name, external_network, subnets).await
        }
        OpenstackSpec::FloatingIp { network, server } => {
            floating_ip::create(p, r, name, network, server).await
        }
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
            security_group::update(p, r, name, description).await
        }
        (OpenstackSpec::Subnet { gateway_ip, dns_nameservers, enable_dhcp, .. }, _) => {
            let change = network::SubnetChange {
                gateway_ip: gateway_ip.as_deref(),
                dns_nameservers,
                enable_dhcp: *enable_dhcp,
            };
            network::update_subnet(p, r, name, &change).await
        }
        (OpenstackSpec::Server(want), OpenstackSpec::Server(have)) => {
            server::update(p, r, name, want, have).await
        }
        (
            OpenstackSpec::Router { subnets: want, .. },
            OpenstackSpec::Router { subnets: have, .. },
        ) => network::update_router(p, r, name, want, have).await,
        (OpenstackSpec::Volume { size_gb, .. }, _) => volume::extend(p, r, name, *size_gb).await,
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
    match (want, have) {
        (OpenstackSpec::Server(spec), _) => server::replace(p, r, name, spec).await,
        (
            OpenstackSpec::Volume { size_gb, volume_type, .. },
            OpenstackSpec::Volume { error, .. },
        ) => volume::replace(p, r, name, *size_gb, volume_type.as_deref(), error.as_deref()).await,
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
        OpenstackSpec::Keypair { .. } => keypair::delete(p, r, name).await,
        OpenstackSpec::SecurityGroup { .. } => security_group::delete(p, r, name).await,
        OpenstackSpec::SecurityGroupRule { .. } => security_group::delete_rule(p, r, name).await,
        OpenstackSpec::Network => network::delete(p, r, name).await,
        OpenstackSpec::Subnet { .. } => network::delete_subnet(p, r, name).await,
        OpenstackSpec::Server(_) => server::delete(p, r, name).await,
        OpenstackSpec::Volume { error, .. } => volume::delete(p, r, name, error.as_deref()).await,
        OpenstackSpec::VolumeAttachment { server, volume, .. } => {
            volume::detach(p, r, server, volume).await
        }
        OpenstackSpec::Router { subnets, .. } => network::delete_router(p, r, name, subnets).await,
        OpenstackSpec::FloatingIp { .. } => floating_ip::delete(p, r, name).await,
    }
}
