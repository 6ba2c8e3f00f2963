//! OpenStack: keypairs, security groups and rules, networks and subnets,
//! servers, volumes and their attachments, floating IPs.
//!
//! This module owns the pure part: what the repository asks for, and how a
//! declared resource compares with an existing one (what changes in place,
//! what forces a replacement and why). Observation and apply talk to the
//! cloud through `openstack_sdk` and are added beside it.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::model::{Environment, Remote, Rule};
use crate::plan::{Comparison, DesiredItem, DesiredSet, ProviderKind, ResourceId, Spec};
use crate::render::Rendered;

use super::changed;

/// Server metadata key marking resources apimon owns.
pub const MANAGED_KEY: &str = "apimon:managed";
/// Server metadata key naming the environment.
pub const ENV_KEY: &str = "apimon:env";
/// Server metadata key holding the sha256 of the user data (Nova cannot
/// return user data, so a change is detected through this hash).
pub const USER_DATA_KEY: &str = "apimon:user_data_sha256";

/// A server as apimon manages it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServerSpec {
    /// Flavor name.
    pub flavor: String,
    /// Image name.
    pub image: String,
    /// Keypair name.
    pub keypair: String,
    /// Availability zone; `None` leaves the choice to Nova.
    pub availability_zone: Option<String>,
    /// Network names in order.
    pub networks: Vec<String>,
    /// Fixed address on the first network.
    pub address: Option<String>,
    /// Security group names.
    pub security_groups: BTreeSet<String>,
    /// Metadata set by the operator (without apimon's own keys).
    pub metadata: BTreeMap<String, String>,
    /// sha256 of the rendered cloud-init user data.
    pub user_data_sha256: String,
    /// The user data itself; only sent on create.
    #[serde(skip)]
    pub user_data: String,
}

/// One OpenStack resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OpenstackSpec {
    /// Nova keypair.
    Keypair {
        /// OpenSSH public key line.
        public_key: String,
    },
    /// Neutron security group.
    SecurityGroup {
        /// Description.
        description: String,
    },
    /// One rule of a group; its id is its content, since Neutron rules are immutable.
    SecurityGroupRule {
        /// Group name.
        group: String,
        /// The rule.
        rule: Rule,
    },
    /// Neutron network.
    Network,
    /// Neutron subnet.
    Subnet {
        /// Network name.
        network: String,
        /// CIDR.
        cidr: String,
        /// Gateway; `None` for Neutron's default.
        gateway_ip: Option<String>,
        /// DNS servers.
        dns_nameservers: Vec<String>,
    },
    /// Nova server.
    Server(ServerSpec),
    /// Cinder volume.
    Volume {
        /// Size in GiB.
        size_gb: u32,
        /// Volume type.
        volume_type: Option<String>,
    },
    /// A volume attached to a server.
    VolumeAttachment {
        /// Server name.
        server: String,
        /// Volume name.
        volume: String,
        /// Device hint.
        device: Option<String>,
    },
    /// A floating IP associated with a server.
    FloatingIp {
        /// External network.
        network: String,
        /// Server name.
        server: String,
    },
}

impl Spec for OpenstackSpec {
    fn compare(&self, observed: &Self) -> Comparison {
        use OpenstackSpec as S;
        match (self, observed) {
            (S::Keypair { public_key: want }, S::Keypair { public_key: have }) => {
                if want == have {
                    Comparison::Same
                } else {
                    Comparison::Replace(
                        "public key changed (keypairs cannot change in place)".to_owned(),
                    )
                }
            }
            (S::SecurityGroup { description: want }, S::SecurityGroup { description: have }) => {
                if want == have {
                    Comparison::Same
                } else {
                    Comparison::Update(vec!["description changed".to_owned()])
                }
            }
            (
                S::Subnet {
                    cidr: want_cidr, gateway_ip: want_gw, dns_nameservers: want_dns, ..
                },
                S::Subnet {
                    cidr: have_cidr, gateway_ip: have_gw, dns_nameservers: have_dns, ..
                },
            ) => {
                if want_cidr != have_cidr {
                    return Comparison::Replace(format!("cidr {have_cidr} → {want_cidr}"));
                }
                let mut reasons = Vec::new();
                if want_gw.is_some() && want_gw != have_gw {
                    reasons.push("gateway changed".to_owned());
                }
                if want_dns != have_dns {
                    reasons.push("dns nameservers changed".to_owned());
                }
                if reasons.is_empty() {
                    Comparison::Same
                } else {
                    Comparison::Update(reasons)
                }
            }
            (S::Server(want), S::Server(have)) => compare_servers(want, have),
            (
                S::Volume { size_gb: want_size, volume_type: want_type },
                S::Volume { size_gb: have_size, volume_type: have_type },
            ) => {
                if want_type.is_some() && want_type != have_type {
                    Comparison::Replace(format!(
                        "volume type {} → {}",
                        have_type.as_deref().unwrap_or("default"),
                        want_type.as_deref().unwrap_or("default")
                    ))
                } else if want_size < have_size {
                    Comparison::Replace(format!(
                        "size {have_size} → {want_size} GiB (volumes cannot shrink)"
                    ))
                } else if want_size > have_size {
                    Comparison::Update(vec![format!("extend {have_size} → {want_size} GiB")])
                } else {
                    Comparison::Same
                }
            }
            (want, have) if want == have => Comparison::Same,
            (S::FloatingIp { .. }, S::FloatingIp { .. })
            | (S::VolumeAttachment { .. }, S::VolumeAttachment { .. }) => {
                Comparison::Replace("association changed".to_owned())
            }
            (S::Network, S::Network)
            | (S::SecurityGroupRule { .. }, S::SecurityGroupRule { .. }) => Comparison::Same,
            _ => Comparison::Replace("resource kind changed".to_owned()),
        }
    }
}

fn compare_servers(want: &ServerSpec, have: &ServerSpec) -> Comparison {
    if want.user_data_sha256 != have.user_data_sha256 {
        return Comparison::Replace("user data changed (template cloud-init.yaml.hbs)".to_owned());
    }
    let mut replace = Vec::new();
    changed("image", &have.image, &want.image, &mut replace);
    changed("flavor", &have.flavor, &want.flavor, &mut replace);
    changed("keypair", &have.keypair, &want.keypair, &mut replace);
    if want.availability_zone.is_some() && want.availability_zone != have.availability_zone {
        replace.push("availability zone changed".to_owned());
    }
    if want.networks != have.networks {
        replace.push("networks changed".to_owned());
    }
    if want.address.is_some() && want.address != have.address {
        replace.push("address changed".to_owned());
    }
    if !replace.is_empty() {
        return Comparison::Replace(replace.join("; "));
    }
    let mut update = Vec::new();
    if want.metadata != have.metadata {
        let keys: BTreeSet<&String> = want
            .metadata
            .keys()
            .chain(have.metadata.keys())
            .filter(|k| want.metadata.get(*k) != have.metadata.get(*k))
            .collect();
        update.push(format!(
            "metadata changed ({})",
            keys.into_iter().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    if want.security_groups != have.security_groups {
        update.push("security groups changed".to_owned());
    }
    if update.is_empty() {
        Comparison::Same
    } else {
        Comparison::Update(update)
    }
}

fn id(env: &str, kind: &str, name: impl Into<String>) -> ResourceId {
    ResourceId::new(env, ProviderKind::Openstack, kind, name)
}

/// Id of the server for `host`, which other providers depend on.
pub fn server_id(env: &str, host: &str) -> ResourceId {
    id(env, "server", host)
}

/// A readable, unique name for a rule: its content.
fn rule_name(group: &str, rule: &Rule) -> String {
    let direction = match rule.direction {
        crate::model::Direction::Ingress => "in",
        crate::model::Direction::Egress => "out",
    };
    let protocol = serde_json::to_value(rule.protocol)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let ports = match rule.ports {
        None => "all".to_owned(),
        Some((low, high)) if low == high => low.to_string(),
        Some((low, high)) => format!("{low}-{high}"),
    };
    let remote = match &rule.remote {
        Remote::Any => "any".to_owned(),
        Remote::Cidr(cidr) => cidr.clone(),
        Remote::Group(group) => format!("group:{group}"),
    };
    format!("{group}:{direction}:{protocol}:{ports}:{remote}")
}

/// What the environment asks of OpenStack.
pub fn desired(env: &Environment, rendered: &Rendered) -> DesiredSet<OpenstackSpec> {
    let name = env.name.as_str();
    let mut set = DesiredSet::new();
    let item = |spec, depends_on| DesiredItem { spec, depends_on };
    for keypair in &env.keypairs {
        set.insert(
            id(name, "keypair", &keypair.name),
            item(
                OpenstackSpec::Keypair { public_key: keypair.public_key.trim().to_owned() },
                vec![],
            ),
        );
    }
    for group in &env.security_groups {
        let group_id = id(name, "security_group", &group.name);
        set.insert(
            group_id.clone(),
            item(OpenstackSpec::SecurityGroup { description: group.description.clone() }, vec![]),
        );
        for rule in &group.rules {
            let mut depends_on = vec![group_id.clone()];
            if let Remote::Group(remote) = &rule.remote {
                depends_on.push(id(name, "security_group", remote));
            }
            set.insert(
                id(name, "security_group_rule", rule_name(&group.name, rule)),
                item(
                    OpenstackSpec::SecurityGroupRule {
                        group: group.name.clone(),
                        rule: rule.clone(),
                    },
                    depends_on,
                ),
            );
        }
    }
    for network in env.networks.iter().filter(|n| !n.external) {
        let network_id = id(name, "network", &network.name);
        set.insert(network_id.clone(), item(OpenstackSpec::Network, vec![]));
        for subnet in &network.subnets {
            let spec = OpenstackSpec::Subnet {
                network: network.name.clone(),
                cidr: subnet.cidr.clone(),
                gateway_ip: subnet.gateway_ip.clone(),
                dns_nameservers: subnet.dns_nameservers.clone(),
            };
            set.insert(id(name, "subnet", &subnet.name), item(spec, vec![network_id.clone()]));
        }
    }
    for host in &env.hosts {
        let (user_data, user_data_sha256) = rendered
            .hosts
            .get(&host.name)
            .map(|r| (r.user_data.clone(), r.user_data_sha256.clone()))
            .unwrap_or_default();
        let mut depends_on = vec![id(name, "keypair", &host.keypair)];
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
            address: host.address.clone(),
            security_groups: host.security_groups.iter().cloned().collect(),
            metadata: host.metadata.clone(),
            user_data_sha256,
            user_data,
        };
        let server = server_id(name, &host.name);
        set.insert(server.clone(), item(OpenstackSpec::Server(spec), depends_on));
        for volume in &host.volumes {
            let volume_name = format!("{}-{}", host.name, volume.name);
            let volume_id = id(name, "volume", &volume_name);
            set.insert(
                volume_id.clone(),
                item(
                    OpenstackSpec::Volume {
                        size_gb: volume.size_gb,
                        volume_type: volume.volume_type.clone(),
                    },
                    vec![],
                ),
            );
            let attachment = OpenstackSpec::VolumeAttachment {
                server: host.name.clone(),
                volume: volume_name.clone(),
                device: volume.device.clone(),
            };
            set.insert(
                id(name, "volume_attachment", &volume_name),
                item(attachment, vec![server.clone(), volume_id]),
            );
        }
        if let Some(fip) = &host.floating_ip {
            let spec = OpenstackSpec::FloatingIp {
                network: fip.network.clone(),
                server: host.name.clone(),
            };
            set.insert(id(name, "floating_ip", &host.name), item(spec, vec![server.clone()]));
        }
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> ServerSpec {
        ServerSpec {
            flavor: "s3.medium.2".into(),
            image: "Ubuntu 24.04".into(),
            keypair: "k".into(),
            availability_zone: None,
            networks: vec!["net".into()],
            address: Some("192.168.10.5".into()),
            security_groups: BTreeSet::from(["ssh".to_owned()]),
            metadata: BTreeMap::from([("team".to_owned(), "apimon".to_owned())]),
            user_data_sha256: "aaa".into(),
            user_data: String::new(),
        }
    }

    #[test]
    fn server_rules_table() {
        let base = server();
        let cases: Vec<(&str, ServerSpec, Comparison)> = vec![
            ("same", base.clone(), Comparison::Same),
            (
                "metadata in place",
                ServerSpec {
                    metadata: BTreeMap::from([("team".into(), "ops".into())]),
                    ..base.clone()
                },
                Comparison::Update(vec!["metadata changed (team)".into()]),
            ),
            (
                "groups in place",
                ServerSpec { security_groups: BTreeSet::new(), ..base.clone() },
                Comparison::Update(vec!["security groups changed".into()]),
            ),
            (
                "user data replaces",
                ServerSpec { user_data_sha256: "bbb".into(), ..base.clone() },
                Comparison::Replace("user data changed (template cloud-init.yaml.hbs)".into()),
            ),
            (
                "image replaces",
                ServerSpec { image: "Debian 12".into(), ..base.clone() },
                Comparison::Replace("image Ubuntu 24.04 → Debian 12".into()),
            ),
            (
                "flavor replaces",
                ServerSpec { flavor: "s3.large.2".into(), ..base.clone() },
                Comparison::Replace("flavor s3.medium.2 → s3.large.2".into()),
            ),
        ];
        for (name, want, expected) in cases {
            assert_eq!(
                OpenstackSpec::Server(want).compare(&OpenstackSpec::Server(base.clone())),
                expected,
                "{name}"
            );
        }
    }

    #[test]
    fn volumes_grow_in_place_but_never_shrink_in_place() {
        let have = OpenstackSpec::Volume { size_gb: 50, volume_type: None };
        let grow = OpenstackSpec::Volume { size_gb: 80, volume_type: None };
        let shrink = OpenstackSpec::Volume { size_gb: 20, volume_type: None };
        assert!(matches!(grow.compare(&have), Comparison::Update(_)));
        assert!(matches!(shrink.compare(&have), Comparison::Replace(_)));
    }
}
