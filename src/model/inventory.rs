//! An environment's validated inventory: hosts, keypairs, networks and
//! security groups, with every value parsed (addresses, CIDRs, public
//! keys), so no consumer parses again.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use serde::Serialize;

use super::raw::{Direction, Protocol, Role, Volume};

/// One VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// Server name in OpenStack; unique across all environments.
    pub name: String,
    /// What runs there.
    pub role: Role,
    /// Flavor name.
    pub flavor: String,
    /// Image name.
    pub image: String,
    /// Keypair name (declared in keypairs.yaml).
    pub keypair: String,
    /// Availability zone.
    pub availability_zone: Option<String>,
    /// Network names (declared in networks.yaml), the first one primary.
    pub networks: Vec<String>,
    /// Fixed IPv4 address on the first network.
    pub address: Option<Ipv4Addr>,
    /// Security group names (declared in security_groups.yaml).
    pub security_groups: Vec<String>,
    /// Extra server metadata.
    pub metadata: BTreeMap<String, String>,
    /// Data volumes.
    pub volumes: Vec<Volume>,
    /// External network a floating IP comes from.
    pub floating_ip: Option<String>,
    /// Boot from a volume of this many GiB (made from the image).
    pub root_volume_gb: Option<u32>,
}

/// An OpenSSH public key, parsed, with the line as written (what Nova gets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    line: String,
    key: russh::keys::ssh_key::PublicKey,
}

impl PublicKey {
    /// Parses an OpenSSH public key line (`ssh-ed25519 AAAA... comment`).
    ///
    /// # Errors
    /// What is wrong with it.
    pub fn parse(line: &str) -> Result<Self, String> {
        let line = line.trim();
        russh::keys::ssh_key::PublicKey::from_openssh(line)
            .map(|key| Self { line: line.to_owned(), key })
            .map_err(|error| error.to_string())
    }

    /// The line as written (trimmed).
    pub fn line(&self) -> &str {
        &self.line
    }

    /// The key's algorithm, e.g. `ssh-ed25519`.
    pub fn algorithm(&self) -> String {
        self.key.algorithm().to_string()
    }
}

/// An SSH public key registered in Nova.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keypair {
    /// Name.
    pub name: String,
    /// The key apimon registers; `None` for an existing keypair it only
    /// references.
    pub public_key: Option<PublicKey>,
}

/// A network; `external` ones exist already and are only referenced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    /// Name.
    pub name: String,
    /// Exists already (e.g. the provider's external network); never managed.
    pub external: bool,
    /// Subnets (managed networks only).
    pub subnets: Vec<Subnet>,
}

/// A subnet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subnet {
    /// Name.
    pub name: String,
    /// Network address and prefix (host bits cleared).
    pub cidr: IpNet,
    /// Gateway address; `None` for Neutron's default (the first address).
    pub gateway_ip: Option<IpAddr>,
    /// DNS servers.
    pub dns_nameservers: Vec<IpAddr>,
    /// Neutron's DHCP on the subnet.
    pub enable_dhcp: bool,
}

/// A security group whose rules were checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityGroup {
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Rules in repository order.
    pub rules: Vec<Rule>,
}

/// A checked security group rule.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Rule {
    /// Direction.
    pub direction: Direction,
    /// Protocol.
    pub protocol: Protocol,
    /// Port range; `None` for all ports.
    pub ports: Option<(u16, u16)>,
    /// Remote CIDR, or group name, or anywhere.
    pub remote: Remote,
}

/// The other end of a rule.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Remote {
    /// Any address.
    Any,
    /// A network (host bits cleared).
    Cidr(IpNet),
    /// Members of a security group of the same environment.
    Group(String),
}

/// A zone name as clouds give them: 1 to 255 of letters, digits, `-`,
/// `_`, `.`, `:`.
pub fn is_zone_name(zone: &str) -> bool {
    !zone.is_empty()
        && zone.len() <= 255
        && zone.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}
