//! Raw repository types: a one-to-one mirror of the YAML files.
//!
//! Every struct denies unknown keys so that a typo is an error, never a
//! silently ignored setting. Nothing here is cross-checked: `validate.rs`
//! turns these into a [`crate::model::DesiredState`].

use std::collections::BTreeMap;

use serde::Deserialize;

/// A value that is either written inline or fetched from the secret store
/// on the applying machine: `{secret: NAME}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MaybeSecret {
    /// `{secret: NAME}`: resolved where apimon applies; holds NAME.
    Secret(String),
    /// A plain value written in the repository.
    Plain(String),
}

// Hand-written rather than `untagged` so that a wrong value gets a precise
// message ("expected a string or {secret: NAME}") instead of serde's
// "did not match any variant".
impl<'de> Deserialize<'de> for MaybeSecret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = MaybeSecret;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string or `{secret: NAME}`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<MaybeSecret, E> {
                Ok(MaybeSecret::Plain(v.to_owned()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<MaybeSecret, A::Error> {
                let mut name = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key != "secret" || name.is_some() {
                        return Err(serde::de::Error::custom(format!(
                            "unexpected key `{key}`; expected `{{secret: NAME}}`"
                        )));
                    }
                    name = Some(map.next_value::<String>()?);
                }
                name.map(MaybeSecret::Secret)
                    .ok_or_else(|| serde::de::Error::custom("expected `{secret: NAME}`"))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// `apimon.yaml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Root {
    /// Prefix-free project name, used in tags and in generated names.
    pub project: String,
    /// Defaults that each environment may override.
    #[serde(default)]
    pub defaults: Policy,
    /// Environments by name, e.g. `outside` and `inside`.
    pub environments: BTreeMap<String, Environment>,
}

/// Safety policies for changing an environment.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// A plan deleting more resources than this is refused.
    pub max_deletes: Option<u32>,
    /// Whether resources removed from the repository are deleted.
    pub prune: Option<bool>,
    /// What the daemon does about drift: `repair` or `report`.
    pub drift: Option<DriftMode>,
    /// Whether a new flavor resizes a server in place instead of replacing it.
    pub resize_servers: Option<bool>,
}

/// What the daemon does when it finds drift.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DriftMode {
    /// Converge back to the repository.
    Repair,
    /// Only report it.
    Report,
}

/// Where an environment lives relative to the monitored cloud.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Placement {
    /// Outside the monitored cloud: sees what customers see.
    Outside,
    /// Inside the monitored cloud.
    Inside,
}

/// One environment in `apimon.yaml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Environment {
    /// Free text for humans.
    #[serde(default)]
    pub description: String,
    /// `outside` or `inside` the monitored cloud.
    pub location: Placement,
    /// The `clouds.yaml` entry (OS_CLOUD) apimon uses to manage this environment's VMs.
    pub cloud: String,
    /// Clouds the scenarios of this environment monitor; rendered into the
    /// executor's `clouds.yaml`.
    #[serde(default)]
    pub monitored_clouds: BTreeMap<String, MonitoredCloud>,
    /// How apimon reaches this environment's InfluxDB as administrator.
    pub influxdb: InfluxdbEndpoint,
    /// How apimon reaches this environment's Grafana.
    pub grafana: Option<GrafanaEndpoint>,
    /// SSH access to the environment's hosts.
    pub ssh: Option<SshAccess>,
    /// Overrides of the project defaults.
    #[serde(default)]
    pub policy: Policy,
}

/// A cloud the scenarios talk to (Keystone v3 password auth).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitoredCloud {
    /// Keystone URL.
    pub auth_url: String,
    /// Region.
    pub region: Option<String>,
    /// Project (tenant) name.
    pub project_name: String,
    /// Domain of the user and project.
    #[serde(default = "default_domain")]
    pub domain_name: String,
    /// User name.
    pub username: MaybeSecret,
    /// Password; must be a secret.
    pub password: MaybeSecret,
}

fn default_domain() -> String {
    "Default".to_owned()
}

/// The InfluxDB HTTP API of an environment.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InfluxdbEndpoint {
    /// Base URL, e.g. `http://192.168.10.30:8086`.
    pub url: String,
    /// Administrator apimon logs in as; must be declared in influxdb.yaml.
    pub admin_user: String,
    /// Database the executor's results are written to.
    pub results_database: String,
    /// User telegraf writes the results as (WRITE or ALL on `results_database`).
    pub results_user: String,
    /// PEM file with a CA to trust in addition to the system roots.
    pub ca_file: Option<String>,
}

/// The Grafana HTTP API of an environment.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrafanaEndpoint {
    /// Base URL, e.g. `https://grafana.example.net`.
    pub url: String,
    /// Service-account token; must be a secret.
    pub token: MaybeSecret,
}

/// SSH access: through the bastion as a jump host.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshAccess {
    /// User on every host.
    pub user: String,
    /// Address of the bastion (its floating IP or DNS name).
    pub bastion_address: String,
    /// Port of the bastion's sshd.
    #[serde(default = "default_ssh_port")]
    pub bastion_port: u16,
    /// Port of the hosts' sshd (reached from the bastion).
    #[serde(default = "default_ssh_port")]
    pub host_port: u16,
    /// Service manager command (`systemctl`, or a stand-in where there is no systemd).
    #[serde(default = "default_service_manager")]
    pub service_manager: String,
    /// Prefix of every managed path on the hosts; `/` for real hosts.
    #[serde(default = "default_root")]
    pub root: String,
    /// Shell command that succeeds when `{package}` is installed.
    #[serde(default = "default_package_check")]
    pub package_check: String,
    /// Shell command that installs `{package}`.
    #[serde(default = "default_package_install")]
    pub package_install: String,
}

fn default_service_manager() -> String {
    "systemctl".to_owned()
}

fn default_root() -> String {
    "/".to_owned()
}

fn default_package_check() -> String {
    "dpkg-query -W -f='${Status}' {package} 2>/dev/null | grep -q 'install ok installed'".to_owned()
}

fn default_package_install() -> String {
    "DEBIAN_FRONTEND=noninteractive apt-get install -y -q {package}".to_owned()
}

fn default_ssh_port() -> u16 {
    22
}

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
    /// OpenSSH public key line.
    pub public_key: String,
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

/// `scenarios/<name>.yaml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Kill the run after this long (`30s`, `5m`); default 5m.
    pub timeout: Option<String>,
    /// Run an Ansible playbook.
    pub ansible: Option<AnsibleRunner>,
    /// Or: a built-in HTTP probe.
    pub http: Option<HttpProbe>,
}

/// `ansible:` section of a scenario.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnsibleRunner {
    /// Playbook path relative to `scenarios/`.
    pub playbook: String,
    /// Monitored cloud (OS_CLOUD) the playbook talks to.
    pub cloud: Option<String>,
    /// Extra variables passed with `-e`.
    #[serde(default)]
    pub extra_vars: BTreeMap<String, String>,
}

/// `http:` section of a scenario.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpProbe {
    /// URL to request.
    pub url: String,
    /// Method, default GET.
    #[serde(default = "default_method")]
    pub method: String,
    /// Expected status, default 200.
    #[serde(default = "default_status")]
    pub expect_status: u16,
}

fn default_method() -> String {
    "GET".to_owned()
}

fn default_status() -> u16 {
    200
}

/// `scenarios/schedule.yaml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleFile {
    /// Entries.
    #[serde(default)]
    pub schedule: Vec<ScheduleEntry>,
}

/// When a scenario runs, and where.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleEntry {
    /// Scenario name (file stem under `scenarios/`).
    pub scenario: String,
    /// Environments whose executor runs it.
    pub environments: Vec<String>,
    /// Cron expression, 5 fields (minute first) or 6 (second first).
    pub cron: String,
}
