//! Raw repository types: a one-to-one mirror of the YAML files.
//!
//! Every struct denies unknown keys so that a typo is an error, never a
//! silently ignored setting. Nothing here is cross-checked: `validate.rs`
//! turns these into a [`crate::model::DesiredState`].

pub mod health;
mod inventory;
mod object_storage;
mod scenario;

use std::collections::BTreeMap;

use serde::Deserialize;

pub use health::HealthFile;
pub use inventory::*;
pub use object_storage::*;
pub use scenario::*;

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
    /// What scenarios need on the executors: Python packages and Ansible
    /// collections, installed as one versioned environment.
    pub runtime: Option<Runtime>,
    /// Vendor apt repositories, by name, and the packages hosts install from them.
    #[serde(default)]
    pub apt_repositories: BTreeMap<String, AptRepository>,
    /// A git repository of scenario playbooks, each discovered playbook a scenario.
    pub scenario_repository: Option<ScenarioRepository>,
    /// The apimon release every executor and each daemon's bastion run;
    /// the applying apimon when absent.
    pub apimon_binary: Option<ApimonBinary>,
}

/// `apimon_binary:` in apimon.yaml: where a release is downloaded from,
/// and its checksum.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApimonBinary {
    /// http(s) URL of the executable.
    pub url: String,
    /// Its hex sha256: what is downloaded must match.
    pub sha256: String,
    /// http(s) URL of its SSH signature (`ssh-keygen -Y sign -n
    /// apimon-release`): required, and checked against the release key,
    /// wherever a release key is installed.
    pub signature_url: Option<String>,
}

/// `apt_repositories.<name>` in apimon.yaml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AptRepository {
    /// Base URI, e.g. `https://repos.influxdata.com/debian`.
    pub uri: String,
    /// Suite (`stable`, or a release code name).
    pub suite: String,
    /// Components; default `[main]`.
    #[serde(default = "default_components")]
    pub components: Vec<String>,
    /// The repository's signing key (armored `.asc` or binary `.gpg`), a file under `apt/`.
    pub key: String,
    /// Packages to install from it, by host role.
    #[serde(default)]
    pub packages: BTreeMap<Role, Vec<String>>,
}

fn default_components() -> Vec<String> {
    vec!["main".to_owned()]
}

/// `runtime:` in apimon.yaml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Runtime {
    /// pip requirements, pinned (`ansible-core==2.17.7`).
    #[serde(default)]
    pub python: Vec<String>,
    /// Collection archives kept in the repository, under `runtime/`.
    #[serde(default)]
    pub collections: Vec<String>,
    /// The package index pip uses (a mirror); pip's default otherwise.
    pub index_url: Option<String>,
    /// The Python the environment is made with: an absolute path on the
    /// executor, `/usr/bin/python3` (the distribution's) by default —
    /// never whichever `python3` comes first on the SSH session's PATH.
    pub interpreter: Option<String>,
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Placement {
    /// Outside the monitored cloud: sees what customers see.
    #[default]
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
    /// `outside` (the default) or `inside` the monitored cloud: a tag of
    /// its points and dashboards, not a requirement.
    #[serde(default)]
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
    /// The apimon daemon on the environment's first bastion: what its
    /// daemon.yaml says (`apimon bootstrap` installs it; it then manages
    /// its own files from here).
    pub daemon: Option<Daemon>,
    /// Where the executor uploads job logs.
    pub logs: Option<Logs>,
    /// Overrides of the project defaults.
    #[serde(default)]
    pub policy: Policy,
}

/// `environments.<env>.logs`: job logs in a Swift container.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Logs {
    /// A monitored cloud of the environment (its credentials upload).
    pub cloud: String,
    /// Container.
    pub container: String,
    /// `X-Delete-After` (`14d`); default 14 days.
    pub retention: Option<String>,
    /// Readable by anyone; else through temp URLs.
    #[serde(default)]
    pub public: bool,
    /// The container's temp-URL key (a secret; required unless public).
    pub temp_url_key: Option<MaybeSecret>,
}

pub use super::daemon::{Daemon, DaemonRepository, DaemonWindow};

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
    /// What the executor probes on its own, besides the scenarios.
    #[serde(default)]
    pub probes: Probes,
    /// Deletes what scenario runs left behind in this cloud.
    pub sweeper: Option<RawSweeper>,
}

/// `monitored_clouds.<name>.sweeper`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSweeper {
    /// Between two passes (`20m`); default 20 minutes.
    pub interval: Option<String>,
    /// Only what is older is deleted (`2h`); default 2 hours.
    pub age: Option<String>,
    /// `job_id` (default) or `project`.
    pub select: Option<String>,
    /// Only report what would be deleted.
    #[serde(default)]
    pub dry_run: bool,
    /// The project may hold apimon's own platform resources.
    #[serde(default)]
    pub platform_project: bool,
}

/// `monitored_clouds.<name>.probes`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Probes {
    /// One GET of every catalog endpoint's root, every `interval`.
    pub catalog: Option<CatalogProbes>,
}

/// `probes.catalog`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogProbes {
    /// Between two rounds (`30s`, `1m`); default 30 s.
    pub interval: Option<String>,
    /// Catalog interface: `public` (default), `internal` or `admin`.
    pub interface: Option<String>,
    /// Service types left out.
    #[serde(default)]
    pub skip: Vec<String>,
    /// Requests at once; default 8.
    pub concurrency: Option<u32>,
    /// A request without an answer by then is `failed`; default 10 s.
    pub timeout: Option<String>,
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
    /// How the executor's points reach InfluxDB; default through telegraf.
    #[serde(default)]
    pub results_via: ResultsVia,
    /// PEM file with a CA to trust in addition to the system roots.
    pub ca_file: Option<String>,
    /// How apimon reaches it: through the environment's SSH bastion, or
    /// directly; by default through the bastion when its host is on the
    /// environment's networks.
    #[serde(default)]
    pub via: Via,
}

/// How apimon reaches an HTTP API of an environment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    /// Through the bastion when the URL's host is an address in one of the
    /// environment's networks, or a declared host's name or address
    /// (never a loopback address); directly otherwise.
    #[default]
    Auto,
    /// Always through the environment's SSH bastion (`direct-tcpip`).
    Bastion,
    /// Always directly.
    Direct,
}

/// How the executor's points reach InfluxDB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ResultsVia {
    /// telegraf's listener on the executor, which forwards them.
    #[default]
    Telegraf,
    /// The executor writes to InfluxDB itself (as `results_user`).
    Direct,
}

/// The Grafana HTTP API of an environment.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrafanaEndpoint {
    /// Base URL, e.g. `https://grafana.example.net`.
    pub url: String,
    /// Service-account token; must be a secret.
    pub token: Option<MaybeSecret>,
    /// The `admin` user's password, written into grafana.ini on the
    /// grafana host; apimon logs in with it when there is no token.
    pub admin_password: Option<MaybeSecret>,
    /// How apimon reaches it (see [`Via`]).
    #[serde(default)]
    pub via: Via,
}

/// SSH access: through the bastion as a jump host.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshAccess {
    /// User on every host.
    pub user: String,
    /// Address of the bastion (its floating IP or DNS name); without it,
    /// apimon asks the cloud for the bastion's floating IP when it
    /// connects (its fixed address from the bastion itself).
    pub bastion_address: Option<String>,
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
    /// Shell command that refreshes the package lists (after an apt
    /// repository changed).
    #[serde(default = "default_package_update")]
    pub package_update: String,
    /// Seconds a unit apimon (re)started must stay up: not active at the
    /// end, or restarted by its manager meanwhile, fails the change.
    #[serde(default = "default_unit_settle_seconds")]
    pub unit_settle_seconds: u64,
}

fn default_unit_settle_seconds() -> u64 {
    10
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

fn default_package_update() -> String {
    "DEBIAN_FRONTEND=noninteractive apt-get update -q".to_owned()
}

fn default_ssh_port() -> u16 {
    22
}
