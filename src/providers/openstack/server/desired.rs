//! The server an environment asks for each host: flavor, image, keypair,
//! networks and groups, and the rendered user data it boots with.

use crate::model::{Environment, Host};
use crate::providers::openstack::kind::Wanted;
use crate::providers::openstack::{id, server_id, ServerSpec};
use crate::render::Rendered;

/// The server of `host`, after its keypair (when apimon registers it),
/// security groups, networks and their subnets.
pub(super) fn server(env: &Environment, host: &Host, rendered: &Rendered) -> Wanted<ServerSpec> {
    let name = env.name.as_str();
    let (user_data, user_data_sha256) = rendered
        .hosts
        .get(&host.name)
        .map(|r| (r.user_data.clone(), r.user_data_sha256.clone()))
        .unwrap_or_default();
    let managed_keypair =
        env.keypairs.iter().any(|k| k.name == host.keypair && k.public_key.is_some());
    let mut depends_on: Vec<_> =
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
    (server_id(name, &host.name), spec, depends_on)
}
