//! `inventory/<env>/hosts.yaml`: every host's references (keypair,
//! networks, security groups, floating IP network), its address, volumes
//! and metadata, and how many hosts of each role there are.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use super::checks::{is_dns_label, names_list};
use super::{Check, SectionCheck};
use crate::model::load::Document;
use crate::model::{raw, Host, Network, Role, Sections};

/// What the other inventory files declare, for reference checks.
pub(super) struct Declared<'a> {
    pub keypairs: BTreeSet<&'a str>,
    pub networks: &'a [Network],
    pub groups: BTreeSet<&'a str>,
}

/// Checks every host of the environment; `cx.all_hosts` holds the names
/// seen in earlier environments (server names share one cloud project).
/// Keypairs and groups are known by every declared name, valid or not, so
/// one bad keypair is one error, not one per host.
pub(in crate::model) fn check(cx: &mut SectionCheck<'_>, earlier: &Sections) -> Vec<Host> {
    let inventory = cx.inventory;
    let declared = &Declared {
        keypairs: inventory.keypairs.value.keypairs.iter().map(|k| k.name.as_str()).collect(),
        networks: &earlier.networks,
        groups: inventory
            .security_groups
            .value
            .security_groups
            .iter()
            .map(|g| g.name.as_str())
            .collect(),
    };
    let (check, doc) = (&mut *cx.check, &inventory.hosts);
    let (env_name, all_hosts) = (cx.env_name, &mut *cx.all_hosts);
    let hosts: Vec<Host> = doc
        .value
        .hosts
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let path = format!("hosts[{i}]");
            let here = doc.at(&format!("{path}.name"));
            match all_hosts.get(&host.name) {
                Some(first) => check.error(
                    doc,
                    &format!("{path}.name"),
                    format!("duplicate host `{}`; first declared at {first}", host.name),
                ),
                None => {
                    all_hosts.insert(host.name.clone(), here);
                }
            }
            check_host(check, doc, &path, host, env_name, declared)
        })
        .collect();
    hosts
}

fn check_host(
    check: &mut Check,
    doc: &Document<raw::HostsFile>,
    path: &str,
    host: &raw::Host,
    env_name: &str,
    declared: &Declared<'_>,
) -> Host {
    // A DNS name, dots allowed (`executor-1.apimon.example.net`, as
    // platforms built by other tools name their servers): each label a DNS
    // label, 253 characters at most.
    let valid_name = host.name.len() <= 253 && host.name.split('.').all(is_dns_label);
    if !valid_name {
        check.error(
            doc,
            &format!("{path}.name"),
            format!(
                "invalid host name `{}`; expected a DNS name: labels of lowercase letters, digits and `-` (at most 63 each), separated by dots",
                host.name
            ),
        );
    }
    for (field, value) in [("flavor", &host.flavor), ("image", &host.image)] {
        if value.trim().is_empty() {
            check.error(
                doc,
                &format!("{path}.{field}"),
                format!("empty {field}; expected a {field} name"),
            );
        }
    }
    if !declared.keypairs.contains(host.keypair.as_str()) {
        check.error(
            doc,
            &format!("{path}.keypair"),
            format!(
                "unknown keypair `{}` (inventory/{env_name}/keypairs.yaml); {}",
                host.keypair,
                names_list(declared.keypairs.iter().copied())
            ),
        );
    }
    check_networks(check, doc, path, host, env_name, declared.networks);
    let address = check_address(check, doc, path, host, declared.networks);
    for (j, group) in host.security_groups.iter().enumerate() {
        if !declared.groups.contains(group.as_str()) {
            check.error(doc, &format!("{path}.security_groups[{j}]"), format!("unknown security group `{group}` (inventory/{env_name}/security_groups.yaml); {}", names_list(declared.groups.iter().copied())));
        }
    }
    for key in host.metadata.keys().filter(|key| key.starts_with("apimon:")) {
        check.error(
            doc,
            &format!("{path}.metadata.{key}"),
            "metadata keys starting with `apimon:` are reserved for apimon's ownership marks",
        );
    }
    check_volumes(check, doc, path, host);
    check_floating_ip(check, doc, path, host, declared.networks);
    Host {
        name: host.name.clone(),
        role: host.role,
        flavor: host.flavor.clone(),
        image: host.image.clone(),
        keypair: host.keypair.clone(),
        availability_zone: host.availability_zone.clone(),
        networks: host.networks.clone(),
        address,
        security_groups: host.security_groups.clone(),
        metadata: host.metadata.clone(),
        volumes: host.volumes.clone(),
        floating_ip: host.floating_ip.as_ref().map(|f| f.network.clone()),
        root_volume_gb: check_root_volume(check, doc, path, host),
    }
}

/// Largest root volume accepted: 64 TiB, beyond any real root disk.
const MAX_ROOT_VOLUME_GB: u32 = 65_536;

fn check_root_volume(
    check: &mut Check,
    doc: &Document<raw::HostsFile>,
    path: &str,
    host: &raw::Host,
) -> Option<u32> {
    let size = host.root_volume.as_ref()?.size_gb;
    if size == 0 || size > MAX_ROOT_VOLUME_GB {
        check.error(
            doc,
            &format!("{path}.root_volume.size_gb"),
            format!("root volume of {size} GiB; expected 1 to {MAX_ROOT_VOLUME_GB}"),
        );
        return None;
    }
    Some(size)
}

fn check_networks(
    check: &mut Check,
    doc: &Document<raw::HostsFile>,
    path: &str,
    host: &raw::Host,
    env_name: &str,
    networks: &[Network],
) {
    if host.networks.is_empty() {
        check.error(
            doc,
            &format!("{path}.networks"),
            "no networks; expected at least one network name",
        );
    }
    let managed = networks.iter().filter(|n| !n.external).map(|n| n.name.as_str());
    for (j, name) in host.networks.iter().enumerate() {
        match networks.iter().find(|n| &n.name == name) {
            None => check.error(doc, &format!("{path}.networks[{j}]"), format!("unknown network `{name}` (inventory/{env_name}/networks.yaml); {}", names_list(managed.clone()))),
            Some(n) if n.external => check.error(doc, &format!("{path}.networks[{j}]"), format!("network `{name}` is external; a host's networks must be managed ones, external networks serve floating IPs")),
            Some(_) => {}
        }
    }
}

/// The host's address, which must lie in a subnet of its first network.
fn check_address(
    check: &mut Check,
    doc: &Document<raw::HostsFile>,
    path: &str,
    host: &raw::Host,
    networks: &[Network],
) -> Option<Ipv4Addr> {
    let text = host.address.as_ref()?;
    let Ok(address) = text.parse::<Ipv4Addr>() else {
        check.error(
            doc,
            &format!("{path}.address"),
            format!("invalid address `{text}`; expected an IPv4 address"),
        );
        return None;
    };
    let first = host.networks.first().and_then(|name| networks.iter().find(|n| &n.name == name));
    if let Some(network) = first.filter(|n| !n.external) {
        if !network.subnets.iter().any(|s| s.cidr.contains(&IpAddr::V4(address))) {
            let cidrs: Vec<String> = network.subnets.iter().map(|s| s.cidr.to_string()).collect();
            check.error(
                doc,
                &format!("{path}.address"),
                format!(
                    "address {text} is in no subnet of network `{}`; expected an address in {}",
                    network.name,
                    cidrs.join(", ")
                ),
            );
        }
    }
    Some(address)
}

fn check_volumes(check: &mut Check, doc: &Document<raw::HostsFile>, path: &str, host: &raw::Host) {
    check.unique(
        doc,
        "volume",
        host.volumes
            .iter()
            .enumerate()
            .map(|(j, v)| (v.name.as_str(), format!("{path}.volumes[{j}].name"))),
    );
    for (j, volume) in host.volumes.iter().enumerate() {
        if volume.size_gb == 0 {
            check.error(
                doc,
                &format!("{path}.volumes[{j}].size_gb"),
                "size 0; expected at least 1 (GiB)",
            );
        }
        if !is_dns_label(&volume.name) {
            check.error(
                doc,
                &format!("{path}.volumes[{j}].name"),
                format!(
                    "invalid volume name `{}`; expected lowercase letters, digits and `-`",
                    volume.name
                ),
            );
        }
        if let Some(mount) = &volume.mount_path {
            let bad = !mount.starts_with('/')
                || mount == "/"
                || mount.split('/').any(|p| p == ".." || p == ".")
                || mount.contains(|c: char| {
                    c.is_whitespace() || c.is_control() || c == '"' || c == '\\'
                });
            if bad {
                check.error(
                    doc,
                    &format!("{path}.volumes[{j}].mount_path"),
                    format!("invalid mount path `{mount}`; expected an absolute directory like /srv/data"),
                );
            }
        }
    }
    let mut mounts: Vec<&str> =
        host.volumes.iter().filter_map(|v| v.mount_path.as_deref()).collect();
    mounts.sort_unstable();
    if let Some(twice) = mounts.windows(2).find(|w| w[0] == w[1]) {
        check.error(
            doc,
            &format!("{path}.volumes"),
            format!("two volumes mounted at `{}`", twice[0]),
        );
    }
}

fn check_floating_ip(
    check: &mut Check,
    doc: &Document<raw::HostsFile>,
    path: &str,
    host: &raw::Host,
    networks: &[Network],
) {
    let externals = || networks.iter().filter(|n| n.external).map(|n| n.name.as_str());
    match &host.floating_ip {
        Some(fip) => match networks.iter().find(|n| n.name == fip.network) {
            Some(n) if n.external => {}
            Some(_) => check.error(doc, &format!("{path}.floating_ip.network"), format!("network `{}` is not external; floating IPs come from an `external: true` network", fip.network)),
            None => check.error(doc, &format!("{path}.floating_ip.network"), format!("unknown network `{}`; {}", fip.network, names_list(externals()))),
        },
        None if host.role == Role::Bastion => check.error(doc, path, "the bastion needs `floating_ip` so the daemon and operators can reach the environment"),
        None => {}
    }
}
