//! Raw inventory files: `inventory/<env>/*.yaml`.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::MaybeSecret;

/// `inventory/<env>/hosts.yaml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostsFile {
    /// The VMs of the environment.
    #[serde(default)]
    pub hosts: Vec<Host>,
}

/// The role a host plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Runs the apimon daemon; the SSH jump host.
    Bastion,
    /// Runs `apimon executor` and telegraf.
    Executor,
    /// Runs InfluxDB 1.x.
    Influxdb,
    /// Runs Grafana.
    Grafana,
}

impl Role {
    /// Lowercase name, as in the repository.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bastion => "bastion",
            Self::Executor => "executor",
            Self::Influxdb => "influxdb",
            Self::Grafana => "grafana",
        }
    }
}

/// One VM.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
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
    /// Network names (declared in networks.yaml).
    pub networks: Vec<String>,
    /// Fixed IPv4 address on the first network (needed to reach the host
    /// through the bastion and to render configuration).
    pub address: Option<String>,
    /// Security group names (declared in security_groups.yaml).
    #[serde(default)]
    pub security_groups: Vec<String>,
    /// Extra server metadata.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Data volumes.
    #[serde(default)]
    pub volumes: Vec<Volume>,
    /// A floating IP from this external network.
    pub floating_ip: Option<FloatingIp>,
    /// Boot from a volume of this size instead of the flavor's disk.
    pub root_volume: Option<RootVolume>,
}

/// The root disk as a Cinder volume made from the image.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootVolume {
    /// Size in GiB.
    pub size_gb: u32,
}

/// A data volume attached to a host.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Volume {
    /// Name, unique per host; the OpenStack name is `<host>-<name>`.
    pub name: String,
    /// Size in GiB.
    pub size_gb: u32,
    /// Volume type.
    #[serde(rename = "type")]
    pub volume_type: Option<String>,
    /// Device hint, e.g. `/dev/vdb`.
    pub device: Option<String>,
    /// Where it is mounted; default: the role's data directory for a
    /// host's first volume (influxdb, grafana), else `/mnt/<name>`.
    pub mount_path: Option<String>,
}

/// A floating IP for a host.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FloatingIp {
    /// External network (declared with `external: true`).
    pub network: String,
}

/// `inventory/<env>/keypairs.yaml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeypairsFile {
    /// Keypairs.
    #[serde(default)]
    pub keypairs: Vec<Keypair>,
}

/// An SSH public key registered in Nova.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Keypair {
    /// Name.
    pub name: String,
    /// OpenSSH public key line; apimon registers it.
    pub public_key: Option<String>,
    /// Or: a keypair that exists in the project already, referenced by
    /// name; apimon never creates, changes or deletes it.
    #[serde(default)]
    pub existing: bool,
}

/// `inventory/<env>/security_groups.yaml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityGroupsFile {
    /// Security groups.
    #[serde(default)]
    pub security_groups: Vec<SecurityGroup>,
}

/// A security group.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityGroup {
    /// Name.
    pub name: String,
    /// Description.
    #[serde(default)]
    pub description: String,
    /// Rules.
    #[serde(default)]
    pub rules: Vec<SecurityGroupRule>,
}

/// Rule direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Incoming traffic.
    Ingress,
    /// Outgoing traffic.
    Egress,
}

/// Rule protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// ICMP.
    Icmp,
    /// Any protocol.
    Any,
}

/// One security group rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityGroupRule {
    /// Direction, default `ingress`.
    #[serde(default = "default_direction")]
    pub direction: Direction,
    /// Protocol.
    pub protocol: Protocol,
    /// `22` or `8000-8100`; absent means all ports.
    pub ports: Option<PortSpec>,
    /// Source (ingress) or destination (egress) CIDR.
    pub remote_ip_prefix: Option<String>,
    /// Or: another security group of this environment.
    pub remote_group: Option<String>,
}

fn default_direction() -> Direction {
    Direction::Ingress
}

/// A port or a port range as written in YAML: `22` or `"8000-8100"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortSpec {
    /// `22`
    Single(u64),
    /// `"8000-8100"`, checked by validation.
    Range(String),
}

impl<'de> Deserialize<'de> for PortSpec {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = PortSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a port number or a range like \"8000-8100\"")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<PortSpec, E> {
                Ok(PortSpec::Single(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<PortSpec, E> {
                u64::try_from(v)
                    .map(PortSpec::Single)
                    .map_err(|_| E::custom(format!("port {v} is negative")))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<PortSpec, E> {
                Ok(PortSpec::Range(v.to_owned()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// `inventory/<env>/networks.yaml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworksFile {
    /// Networks.
    #[serde(default)]
    pub networks: Vec<Network>,
}

/// A network; `external: true` marks one that exists and is only referenced.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// Name.
    pub name: String,
    /// Exists already (e.g. the provider's external network); never managed.
    #[serde(default)]
    pub external: bool,
    /// Subnets (managed networks only).
    #[serde(default)]
    pub subnets: Vec<Subnet>,
}

/// A subnet.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subnet {
    /// Name.
    pub name: String,
    /// IPv4 CIDR.
    pub cidr: String,
    /// Gateway address; default the first address.
    pub gateway_ip: Option<String>,
    /// DNS servers.
    #[serde(default)]
    pub dns_nameservers: Vec<String>,
    /// Neutron's DHCP on the subnet; on unless set to false (a subnet of
    /// loopback or config-drive-only addresses has none).
    #[serde(default = "default_true")]
    pub enable_dhcp: bool,
}

fn default_true() -> bool {
    true
}

/// `inventory/<env>/influxdb.yaml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InfluxdbFile {
    /// Databases.
    #[serde(default)]
    pub databases: Vec<Database>,
    /// Users.
    #[serde(default)]
    pub users: Vec<InfluxUser>,
}

/// An InfluxDB database.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Database {
    /// Name.
    pub name: String,
    /// Retention policies.
    #[serde(default)]
    pub retention_policies: Vec<RetentionPolicy>,
    /// Continuous queries that downsample into the coarser policies.
    #[serde(default)]
    pub continuous_queries: Vec<ContinuousQuery>,
}

/// An InfluxDB continuous query: `SELECT <select> INTO <db>.<into>.:MEASUREMENT
/// FROM <db>.<from>.<measurements> [WHERE <where>] GROUP BY time(<interval>), <group_by>`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContinuousQuery {
    /// Name.
    pub name: String,
    /// Source retention policy.
    pub from: String,
    /// Target retention policy.
    pub into: String,
    /// `GROUP BY time(…)` interval, an InfluxQL duration.
    pub interval: String,
    /// A measurement name, or a `/regex/` over measurement names.
    pub measurements: String,
    /// The field list of the SELECT (`mean(elapsed) AS elapsed, …`).
    pub select: String,
    /// An optional condition (no time condition: InfluxDB sets those).
    #[serde(default, rename = "where")]
    pub condition: Option<String>,
    /// Tags kept (`GROUP BY time(…), <tags>`); absent: every tag (`*`).
    pub group_by: Option<Vec<String>>,
    /// `RESAMPLE EVERY`: how often it runs, default the interval.
    pub every: Option<String>,
    /// `RESAMPLE FOR`: how far back each run recomputes, default the interval.
    #[serde(rename = "for")]
    pub span: Option<String>,
}

/// An InfluxDB retention policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionPolicy {
    /// Name.
    pub name: String,
    /// InfluxQL duration (`30d`, `4w`, `INF`).
    pub duration: String,
    /// Shard group duration; InfluxDB picks one when absent.
    pub shard_duration: Option<String>,
    /// Replication factor, default 1.
    #[serde(default = "one")]
    pub replication: u32,
    /// Whether this is the database's default policy.
    #[serde(default)]
    pub default: bool,
}

fn one() -> u32 {
    1
}

/// Privilege on one database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Privilege {
    /// Read.
    Read,
    /// Write.
    Write,
    /// Read and write.
    All,
}

/// An InfluxDB user.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InfluxUser {
    /// Name.
    pub name: String,
    /// Cluster administrator.
    #[serde(default)]
    pub admin: bool,
    /// Password; must be a secret.
    pub password: MaybeSecret,
    /// Grants per database.
    #[serde(default)]
    pub grants: Vec<Grant>,
}

/// One grant.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// Database name.
    pub database: String,
    /// Privilege.
    pub privilege: Privilege,
}

/// `inventory/<env>/grafana.yaml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrafanaFile {
    /// Folders; `dashboards/<uid>/` holds a folder's dashboards.
    #[serde(default)]
    pub folders: Vec<Folder>,
    /// InfluxDB datasources.
    #[serde(default)]
    pub datasources: Vec<Datasource>,
}

/// A Grafana folder.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Folder {
    /// uid; also the directory name under `dashboards/`.
    pub uid: String,
    /// Title shown in Grafana.
    pub title: String,
}

/// An InfluxDB datasource in Grafana.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Datasource {
    /// Name, unique in the Grafana.
    pub name: String,
    /// uid; default the name.
    pub uid: Option<String>,
    /// Environment whose InfluxDB this reads; default this environment.
    pub environment: Option<String>,
    /// Database in that InfluxDB.
    pub database: String,
    /// Read-only user in that InfluxDB.
    pub user: String,
    /// Whether it is Grafana's default datasource.
    #[serde(default)]
    pub default: bool,
}
