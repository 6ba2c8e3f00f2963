//! What an environment asks of OpenStack: its keypairs, security groups
//! and rules, networks and subnets, servers (with their volumes and
//! floating IPs), and the router the floating IPs need.

use std::collections::BTreeSet;

use super::{id, router_name, rule_name, server_id, OpenstackSpec, ServerSpec};
use crate::model::{Environment, Host, Remote};
use crate::plan::{DesiredItem, DesiredSet, ResourceId};
use crate::render::Rendered;

/// What the environment asks of OpenStack.
pub fn desired(env: &Environment, rendered: &Rendered) -> DesiredSet<OpenstackSpec> {
    let mut set = DesiredSet::new();
    let mut put = |id: ResourceId, spec, depends_on| {
        set.insert(id, DesiredItem::new(spec, depends_on));
    };
    keypairs_and_groups(env, &mut put);
    networks(env, &mut put);
    for host in &env.hosts {
        server(env, host, rendered, &mut put);
    }
    // One router to the external network the floating IPs come from.
    if let Some(external) = env.hosts.iter().find_map(|h| h.floating_ip.as_ref()) {
        let subnets: BTreeSet<String> = env
            .networks
            .iter()
            .filter(|n| !n.external)
            .flat_map(|n| n.subnets.iter().map(|s| s.name.clone()))
            .collect();
        let depends_on = subnets.iter().map(|s| id(&env.name, "subnet", s)).collect();
        let spec =
            OpenstackSpec::Router(super::Router { external_network: external.clone(), subnets });
        put(id(&env.name, "router", router_name(&env.name)), spec, depends_on);
    }
    set
}

type Put<'a> = dyn FnMut(ResourceId, OpenstackSpec, Vec<ResourceId>) + 'a;

fn keypairs_and_groups(env: &Environment, put: &mut Put<'_>) {
    let name = env.name.as_str();
    // An existing keypair is only referenced: nothing to create, ever to delete.
    for keypair in &env.keypairs {
        let Some(public_key) = &keypair.public_key else { continue };
        let spec =
            OpenstackSpec::Keypair(super::Keypair { public_key: public_key.line().to_owned() });
        put(id(name, "keypair", &keypair.name), spec, vec![]);
    }
    for group in &env.security_groups {
        let group_id = id(name, "security_group", &group.name);
        let spec = OpenstackSpec::SecurityGroup(super::SecurityGroup {
            description: group.description.clone(),
        });
        put(group_id.clone(), spec, vec![]);
        for rule in &group.rules {
            let mut depends_on = vec![group_id.clone()];
            if let Remote::Group(remote) = &rule.remote {
                depends_on.push(id(name, "security_group", remote));
            }
            let spec = OpenstackSpec::SecurityGroupRule(super::SecurityGroupRule {
                group: group.name.clone(),
                rule: rule.clone(),
            });
            put(id(name, "security_group_rule", rule_name(&group.name, rule)), spec, depends_on);
        }
    }
}

fn networks(env: &Environment, put: &mut Put<'_>) {
    let name = env.name.as_str();
    for network in env.networks.iter().filter(|n| !n.external) {
        let network_id = id(name, "network", &network.name);
        put(network_id.clone(), OpenstackSpec::Network(super::Network {}), vec![]);
        for subnet in &network.subnets {
            let spec = OpenstackSpec::Subnet(super::Subnet {
                network: network.name.clone(),
                cidr: subnet.cidr.to_string(),
                gateway_ip: subnet.gateway_ip.map(|ip| ip.to_string()),
                dns_nameservers: subnet.dns_nameservers.iter().map(ToString::to_string).collect(),
                enable_dhcp: subnet.enable_dhcp,
            });
            put(id(name, "subnet", &subnet.name), spec, vec![network_id.clone()]);
        }
    }
}

/// The server of `host`, its data volumes and attachments, its floating IP.
fn server(env: &Environment, host: &Host, rendered: &Rendered, put: &mut Put<'_>) {
    let name = env.name.as_str();
    let (user_data, user_data_sha256) = rendered
        .hosts
        .get(&host.name)
        .map(|r| (r.user_data.clone(), r.user_data_sha256.clone()))
        .unwrap_or_default();
    let managed_keypair =
        env.keypairs.iter().any(|k| k.name == host.keypair && k.public_key.is_some());
    let mut depends_on: Vec<ResourceId> =
        managed_keypair.then(|| id(name, "keypair", &host.keypair)).into_iter().collect();
    depends_on.extend(host.security_groups.iter().map(|g| id(name, "security_group", g)));
    for network in env.networks.iter().filter(|n| host.networks.contains(&n.name)) {
        depends_on.push(id(name, "network", &network.name));
        depends_on.extend(network.subnets.iter().map(|s| id(name, "subnet", &s.name)));
    }
    let spec = ServerSpec {
        flavor: host.flavor.clone(),
        image: host.image.clone(),
        keypair: host.keypair.clone(),
        availability_zone: host.availability_zone.clone(),
        networks: host.networks.clone(),
        address: host.address.map(|a| a.to_string()),
        security_groups: host.security_groups.iter().cloned().collect(),
        metadata: host.metadata.clone(),
        user_data_sha256,
        user_data,
        error: None,
        resize: env.policy.resize_servers,
        resize_pending: false,
        building: false,
        role: Some(host.role),
        root_volume_gb: host.root_volume_gb,
    };
    let server = server_id(name, &host.name);
    put(server.clone(), OpenstackSpec::Server(spec), depends_on);
    for volume in &host.volumes {
        let volume_name = format!("{}-{}", host.name, volume.name);
        let volume_id = id(name, "volume", &volume_name);
        let spec = OpenstackSpec::Volume(super::Volume {
            size_gb: volume.size_gb,
            volume_type: volume.volume_type.clone(),
            error: None,
        });
        put(volume_id.clone(), spec, vec![]);
        let attachment = OpenstackSpec::VolumeAttachment(super::VolumeAttachment {
            server: host.name.clone(),
            volume: volume_name.clone(),
            device: volume.device.clone(),
        });
        put(
            id(name, "volume_attachment", &volume_name),
            attachment,
            vec![server.clone(), volume_id],
        );
    }
    if let Some(network) = &host.floating_ip {
        let spec = OpenstackSpec::FloatingIp(super::FloatingIp {
            network: network.clone(),
            server: host.name.clone(),
        });
        let depends_on = vec![server.clone(), id(name, "router", router_name(name))];
        put(id(name, "floating_ip", &host.name), spec, depends_on);
    }
}
