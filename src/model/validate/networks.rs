//! `inventory/<env>/networks.yaml` and `security_groups.yaml`: subnets
//! with parsed CIDRs and addresses, and rules with parsed ports and remotes.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;

use super::checks::names_list;
use super::{Check, SectionCheck};
use crate::model::load::Document;
use crate::model::{raw, Network, Remote, Rule, Sections, SecurityGroup, Subnet};

/// A CIDR with its host bits cleared (Neutron stores it that way too).
pub(super) fn parse_cidr(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>().ok().map(|net| net.trunc())
}

/// Checks the networks; invalid subnets are left out of the result.
pub(in crate::model) fn check_networks(cx: &mut SectionCheck<'_>, _: &Sections) -> Vec<Network> {
    let (check, doc) = (&mut *cx.check, &cx.inventory.networks);
    let networks = &doc.value.networks;
    check.unique(
        doc,
        "network",
        networks.iter().enumerate().map(|(i, n)| (n.name.as_str(), format!("networks[{i}].name"))),
    );
    check.unique(
        doc,
        "subnet",
        networks.iter().enumerate().flat_map(|(i, n)| {
            n.subnets
                .iter()
                .enumerate()
                .map(move |(j, s)| (s.name.as_str(), format!("networks[{i}].subnets[{j}].name")))
        }),
    );
    networks
        .iter()
        .enumerate()
        .map(|(i, network)| {
            let path = format!("networks[{i}]");
            if network.external && !network.subnets.is_empty() {
                check.error(doc, &format!("{path}.subnets"), "an external network is only referenced; its subnets are not managed, so remove them");
            }
            if !network.external && network.subnets.is_empty() {
                check.error(doc, &path, format!("network `{}` has no subnets; expected at least one (or `external: true` for an existing network)", network.name));
            }
            let subnets = network
                .subnets
                .iter()
                .enumerate()
                .filter_map(|(j, subnet)| check_subnet(check, doc, &format!("{path}.subnets[{j}]"), subnet))
                .collect();
            Network { name: network.name.clone(), external: network.external, subnets }
        })
        .collect()
}

fn check_subnet(
    check: &mut Check,
    doc: &Document<raw::NetworksFile>,
    path: &str,
    subnet: &raw::Subnet,
) -> Option<Subnet> {
    let mut dns_nameservers = Vec::new();
    for (k, dns) in subnet.dns_nameservers.iter().enumerate() {
        match dns.parse::<IpAddr>() {
            Ok(address) => dns_nameservers.push(address),
            Err(_) => check.error(
                doc,
                &format!("{path}.dns_nameservers[{k}]"),
                format!("invalid address `{dns}`; expected an IP address"),
            ),
        }
    }
    let Some(cidr) = parse_cidr(&subnet.cidr) else {
        check.error(
            doc,
            &format!("{path}.cidr"),
            format!("invalid CIDR `{}`; expected a network like 192.168.10.0/24", subnet.cidr),
        );
        return None;
    };
    let gateway_ip = match &subnet.gateway_ip {
        None => None,
        Some(gateway) => match gateway.parse::<IpAddr>() {
            Ok(ip) if cidr.contains(&ip) => Some(ip),
            _ => {
                check.error(
                    doc,
                    &format!("{path}.gateway_ip"),
                    format!("gateway `{gateway}` is not an address in {}", subnet.cidr),
                );
                None
            }
        },
    };
    Some(Subnet {
        name: subnet.name.clone(),
        cidr,
        gateway_ip,
        dns_nameservers,
        enable_dhcp: subnet.enable_dhcp,
    })
}

/// Checks the security groups; invalid rules are left out of the result.
pub(in crate::model) fn check_security_groups(
    cx: &mut SectionCheck<'_>,
    _: &Sections,
) -> Vec<SecurityGroup> {
    let (check, doc) = (&mut *cx.check, &cx.inventory.security_groups);
    let groups = &doc.value.security_groups;
    check.unique(
        doc,
        "security group",
        groups
            .iter()
            .enumerate()
            .map(|(i, g)| (g.name.as_str(), format!("security_groups[{i}].name"))),
    );
    let names: BTreeSet<&str> = groups.iter().map(|g| g.name.as_str()).collect();
    groups
        .iter()
        .enumerate()
        .map(|(i, group)| {
            let rules = group
                .rules
                .iter()
                .enumerate()
                .filter_map(|(j, rule)| {
                    check_rule(
                        check,
                        doc,
                        &format!("security_groups[{i}].rules[{j}]"),
                        rule,
                        &names,
                    )
                })
                .collect();
            SecurityGroup {
                name: group.name.clone(),
                description: group.description.clone(),
                rules,
            }
        })
        .collect()
}

fn check_rule(
    check: &mut Check,
    doc: &Document<raw::SecurityGroupsFile>,
    path: &str,
    rule: &raw::SecurityGroupRule,
    group_names: &BTreeSet<&str>,
) -> Option<Rule> {
    let ports = check_ports(check, doc, path, rule);
    let remote = match (&rule.remote_ip_prefix, &rule.remote_group) {
        (Some(_), Some(_)) => {
            check.error(
                doc,
                path,
                "a rule has either `remote_ip_prefix` or `remote_group`, not both",
            );
            None
        }
        (Some(cidr), None) => {
            let parsed = parse_cidr(cidr);
            if parsed.is_none() {
                check.error(
                    doc,
                    &format!("{path}.remote_ip_prefix"),
                    format!("invalid CIDR `{cidr}`; expected a network like 0.0.0.0/0"),
                );
            }
            parsed.map(Remote::Cidr)
        }
        (None, Some(group)) => {
            let known = group_names.contains(group.as_str());
            if !known {
                check.error(
                    doc,
                    &format!("{path}.remote_group"),
                    format!(
                        "unknown security group `{group}`; {}",
                        names_list(group_names.iter().copied())
                    ),
                );
            }
            known.then(|| Remote::Group(group.clone()))
        }
        (None, None) => Some(Remote::Any),
    };
    Some(Rule {
        direction: rule.direction,
        protocol: rule.protocol,
        ports: ports?,
        remote: remote?,
    })
}

/// `Some(None)`: all ports; `None`: invalid (reported).
fn check_ports(
    check: &mut Check,
    doc: &Document<raw::SecurityGroupsFile>,
    path: &str,
    rule: &raw::SecurityGroupRule,
) -> Option<Option<(u16, u16)>> {
    let Some(spec) = &rule.ports else { return Some(None) };
    let parsed = match spec {
        raw::PortSpec::Single(port) => u16::try_from(*port).ok().filter(|p| *p > 0).map(|p| (p, p)),
        raw::PortSpec::Range(text) => text.split_once('-').and_then(|(low, high)| {
            let low: u16 = low.trim().parse().ok()?;
            let high: u16 = high.trim().parse().ok()?;
            (low > 0 && low <= high).then_some((low, high))
        }),
    };
    if parsed.is_none() {
        check.error(
            doc,
            &format!("{path}.ports"),
            "invalid ports; expected a port 1-65535 or a range like \"8000-8100\"",
        );
    }
    if !matches!(rule.protocol, raw::Protocol::Tcp | raw::Protocol::Udp) {
        check.error(
            doc,
            &format!("{path}.ports"),
            "ports apply to tcp and udp only; remove `ports` or change `protocol`",
        );
        return None;
    }
    parsed.map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_for_both_families_with_host_bits_cleared() {
        assert_eq!(
            parse_cidr("192.168.10.5/24").map(|c| c.to_string()).as_deref(),
            Some("192.168.10.0/24")
        );
        assert_eq!(
            parse_cidr("2001:db8::1/64").map(|c| c.to_string()).as_deref(),
            Some("2001:db8::/64")
        );
        assert!(parse_cidr("192.168.10.0/33").is_none());
        assert!(parse_cidr("0.0.0.0/0")
            .is_some_and(|c| c.contains(&"8.8.8.8".parse::<IpAddr>().expect("ip"))));
    }
}
