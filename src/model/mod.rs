//! The desired state: what the repository says the platform should be.
//!
//! Two stages, as in ripgrep's `LowArgs → HiArgs`: [`raw`] mirrors the
//! YAML, [`validate`] checks every rule and cross-reference and yields a
//! [`DesiredState`]. Both are pure: no network, no credentials.

pub mod authority;
pub mod daemon;
pub mod error;
pub mod health;
pub mod influx;
pub mod influxql;
pub mod inventory;
pub mod load;
pub mod raw;
pub mod role;
pub mod route;
pub mod secret;
pub mod sections;
pub mod source_map;
pub mod validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use error::{Diagnostic, Diagnostics, LoadError, Location};
pub use influx::{ContinuousQuery, Database, InfluxDuration, Influxdb, RetentionPolicy};
pub use inventory::{
    is_zone_name, Host, Keypair, Network, PublicKey, Remote, Rule, SecurityGroup, Subnet,
};
pub use raw::{Direction, DriftMode, MaybeSecret, Placement, Privilege, Protocol, Role};
pub use secret::{Secrets, Sensitive};
pub use sections::Sections;

/// Reads, parses and validates the repository at `repo`.
///
/// # Errors
/// Every problem found, each with file, line, column and key path.
pub fn load_repository(repo: &Path) -> Result<DesiredState, LoadError> {
    load_repository_with(repo, &load::NoFetch)
}

/// As [`load_repository`], fetching the scenario repository apimon.yaml
/// names (if any) with `fetcher` once its settings are valid.
///
/// # Errors
/// As [`load_repository`]; [`LoadError::Fetch`] when the scenario
/// repository cannot be reached.
pub fn load_repository_with(
    repo: &Path,
    fetcher: &dyn load::FetchScenarios,
) -> Result<DesiredState, LoadError> {
    let mut raw = load::load(repo)?;
    if raw.root.value.scenario_repository.is_some() {
        let problems = validate::check_scenario_repository(&raw.root);
        if !problems.is_empty() {
            return Err(LoadError::Invalid(Diagnostics::normalized(problems)));
        }
        load::fetch_scenario_repository(&mut raw, fetcher)?;
    }
    validate::validate(raw).map_err(LoadError::Invalid)
}

/// A validated repository.
#[derive(Debug, Clone)]
pub struct DesiredState {
    /// Project name (`apimon.yaml` `project`).
    pub project: String,
    /// Environments by name.
    pub environments: BTreeMap<String, Environment>,
    /// Scenarios by name.
    pub scenarios: BTreeMap<String, Scenario>,
    /// Files under `scenarios/` subdirectories (playbooks), by relative path.
    pub scenario_files: BTreeMap<String, Vec<u8>>,
    /// Dashboards by uid.
    pub dashboards: BTreeMap<String, Dashboard>,
    /// Template overrides by template name.
    pub templates: BTreeMap<String, TemplateOverride>,
    /// The scenario runtime executors get, when declared.
    pub runtime: Option<Runtime>,
    /// Vendor apt repositories.
    pub apt_repositories: Vec<AptRepository>,
    /// The scenario repository, at the commit in use.
    pub scenario_repository: Option<ScenarioRepository>,
    /// Every `{secret: NAME}` and where it is written.
    pub secret_uses: Vec<SecretUse>,
    /// The pinned apimon release, when declared.
    pub apimon_binary: Option<raw::ApimonBinary>,
    /// `health.yaml`'s rules, when it declares any.
    pub health: Option<health::Health>,
    /// health.yaml as written, when it declares rules.
    pub health_text: Option<String>,
}

/// Where a secret is referenced.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SecretUse {
    /// Secret name.
    pub name: String,
    /// The environment that needs it; `None` for project-wide settings.
    pub env: Option<String>,
    /// The reference.
    pub location: Location,
    /// Key path.
    pub path: String,
}

impl DesiredState {
    /// Checks that every secret the `environments` need resolves (all
    /// environments when `None`).
    ///
    /// # Errors
    /// One diagnostic per missing secret, at the place that references it.
    pub fn check_secrets(
        &self,
        secrets: &Secrets,
        environments: Option<&[&Environment]>,
    ) -> Result<(), Diagnostics> {
        let needed = |use_: &&SecretUse| match (environments, &use_.env) {
            (None, _) | (_, None) => true,
            (Some(selected), Some(env)) => selected.iter().any(|e| &e.name == env),
        };
        let missing: Vec<Diagnostic> = self
            .secret_uses
            .iter()
            .filter(needed)
            .filter(|use_| secrets.value(&use_.name).is_none())
            .map(|use_| {
                let of = use_
                    .env
                    .as_ref()
                    .map(|env| format!(" (environment {env})"))
                    .unwrap_or_default();
                Diagnostic::new(
                    use_.location.clone(),
                    use_.path.clone(),
                    format!(
                        "secret `{}`{of} is not set; expected it in the secrets file or in ${}",
                        use_.name,
                        secret::env_var_name(&use_.name)
                    ),
                )
            })
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(Diagnostics::normalized(missing))
        }
    }

    /// The environments named in `names`, or all when it is empty.
    ///
    /// # Errors
    /// A name is not an environment; the message lists the known ones.
    pub fn select_many(&self, names: &[String]) -> Result<Vec<&Environment>, String> {
        if names.is_empty() {
            return self.select(None);
        }
        let mut selected = Vec::new();
        for name in names {
            selected.extend(self.select(Some(name))?);
        }
        Ok(selected)
    }

    /// The environments selected by `--env`, or all.
    ///
    /// # Errors
    /// The name is not an environment; the message lists the known ones.
    pub fn select(&self, only: Option<&str>) -> Result<Vec<&Environment>, String> {
        match only {
            None => Ok(self.environments.values().collect()),
            Some(name) => self.environments.get(name).map(|env| vec![env]).ok_or_else(|| {
                let known: Vec<&str> = self.environments.keys().map(String::as_str).collect();
                format!("unknown environment `{name}`; expected one of: {}", known.join(", "))
            }),
        }
    }
}

/// The effective policy of an environment (defaults applied).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Policy {
    /// A plan deleting more than this many resources is refused.
    pub max_deletes: u32,
    /// Whether owned resources absent from the repository are deleted.
    pub prune: bool,
    /// What the daemon does about drift.
    pub drift: DriftMode,
    /// A new flavor resizes the server (Nova resize + confirm) instead of replacing it.
    pub resize_servers: bool,
}

/// Default for `max_deletes`: small, so an emptied file cannot wipe an environment.
pub const DEFAULT_MAX_DELETES: u32 = 5;

/// One monitored cloud's catalog probing, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogProbe {
    /// Between two rounds.
    pub interval: Duration,
    /// `public`, `internal` or `admin`.
    pub interface: String,
    /// Service types left out.
    pub skip: Vec<String>,
    /// Requests at once.
    pub concurrency: u32,
    /// A request without an answer by then is `failed`.
    pub timeout: Duration,
}

/// One monitored cloud's sweeper, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sweeper {
    /// Between two passes.
    pub interval: Duration,
    /// Only what is older is deleted.
    pub age: Duration,
    /// Everything old enough in the project, not only what carries a job id.
    pub whole_project: bool,
    /// Only report.
    pub dry_run: bool,
    /// The project may hold apimon's own platform resources.
    pub platform_project: bool,
}

/// Job logs in object storage, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logs {
    /// The monitored cloud whose credentials upload.
    pub cloud: String,
    /// Container.
    pub container: String,
    /// `X-Delete-After`.
    pub retention: Duration,
    /// Readable by anyone.
    pub public: bool,
    /// The temp-URL key, when not public.
    pub temp_url_key: Option<raw::MaybeSecret>,
}

/// One validated environment.
#[derive(Debug, Clone)]
pub struct Environment {
    /// Name, e.g. `outside`.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Outside or inside the monitored cloud.
    pub placement: Placement,
    /// clouds.yaml entry apimon manages the VMs with.
    pub cloud: String,
    /// Clouds the scenarios monitor.
    pub monitored_clouds: BTreeMap<String, raw::MonitoredCloud>,
    /// Catalog probes the executor runs, by monitored cloud.
    pub catalog_probes: BTreeMap<String, CatalogProbe>,
    /// Sweepers the executor runs, by monitored cloud.
    pub sweepers: BTreeMap<String, Sweeper>,
    /// Where job logs go, when anywhere.
    pub logs: Option<Logs>,
    /// InfluxDB admin endpoint.
    pub influxdb_endpoint: InfluxdbEndpoint,
    /// Grafana endpoint.
    pub grafana_endpoint: Option<GrafanaEndpoint>,
    /// SSH access through the bastion.
    pub ssh: Option<raw::SshAccess>,
    /// The daemon on the first bastion, when declared.
    pub daemon: Option<raw::Daemon>,
    /// Effective policy.
    pub policy: Policy,
    /// Its inventory, checked: hosts, keypairs, security groups, networks
    /// (external ones only referenced), InfluxDB and Grafana objects; read
    /// through the environment (`env.hosts`).
    pub sections: Sections,
    /// Scenarios the executor of this environment runs.
    pub schedule: Vec<ScheduledScenario>,
}

impl std::ops::Deref for Environment {
    type Target = Sections;
    fn deref(&self) -> &Sections {
        &self.sections
    }
}

impl std::ops::DerefMut for Environment {
    fn deref_mut(&mut self) -> &mut Sections {
        &mut self.sections
    }
}

impl Environment {
    /// The host the environment's daemon runs on: its first bastion, when
    /// `daemon:` is declared.
    pub fn daemon_host(&self) -> Option<&Host> {
        self.daemon.as_ref().and(self.host_with_role(Role::Bastion))
    }

    /// The security-group rules the daemon's webhook needs on its bastion's
    /// first security group: one per `allow_from` range, to the listener's
    /// port (none for a loopback listener, behind the operator's own proxy).
    pub fn webhook_rules(&self) -> Vec<(String, Rule)> {
        let (Some(daemon), Some(host)) = (&self.daemon, self.daemon_host()) else {
            return Vec::new();
        };
        let Some(webhook) = &daemon.webhook else { return Vec::new() };
        let Ok(address) = webhook.listen.parse::<std::net::SocketAddr>() else {
            return Vec::new();
        };
        let Some(group) = host.security_groups.first() else { return Vec::new() };
        if address.ip().is_loopback() {
            return Vec::new();
        }
        webhook
            .allow_from
            .iter()
            .map(|net| {
                let rule = Rule {
                    direction: Direction::Ingress,
                    protocol: Protocol::Tcp,
                    ports: Some((address.port(), address.port())),
                    remote: Remote::Cidr(net.trunc()),
                };
                (group.clone(), rule)
            })
            .collect()
    }

    /// The first host with `role`.
    pub fn host_with_role(&self, role: Role) -> Option<&Host> {
        self.hosts.iter().find(|host| host.role == role)
    }

    /// The host of `role` behind `url`: the one whose name or address is
    /// the URL's host, else the first with that role (a load balancer or
    /// DNS name in front of several).
    pub fn serving_host(&self, role: Role, url: &str) -> Option<&Host> {
        let wanted = crate::url::authority(url).map(|a| a.host);
        self.hosts
            .iter()
            .filter(|h| h.role == role)
            .find(|h| {
                wanted.is_some_and(|w| {
                    h.name.eq_ignore_ascii_case(w) || h.address.is_some_and(|a| a.to_string() == w)
                })
            })
            .or_else(|| self.host_with_role(role))
    }
}

/// How apimon reaches an environment's InfluxDB as administrator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfluxdbEndpoint {
    /// Base URL as written (`http://192.168.10.30:8086`).
    pub url: String,
    /// Its port (explicit, or the scheme's).
    pub port: u16,
    /// Administrator apimon logs in as.
    pub admin_user: String,
    /// Database the executor's results are written to.
    pub results_database: String,
    /// User the results are written as.
    pub results_user: String,
    /// Through telegraf, or straight to InfluxDB.
    pub results_via: raw::ResultsVia,
    /// PEM file with a CA to trust in addition to the system roots.
    pub ca_file: Option<PathBuf>,
    /// Through the bastion or directly (`model::route`).
    pub via: raw::Via,
}

/// How apimon reaches an environment's Grafana.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrafanaEndpoint {
    /// Base URL as written.
    pub url: String,
    /// Service-account token (a secret).
    pub token: Option<MaybeSecret>,
    /// The admin user's password (a secret), for grafana.ini and as the
    /// credentials when there is no token.
    pub admin_password: Option<MaybeSecret>,
    /// Through the bastion or directly (`model::route`).
    pub via: raw::Via,
}

/// Grafana objects of one environment, with defaults applied.
#[derive(Debug, Clone, Default)]
pub struct Grafana {
    /// Folders.
    pub folders: Vec<raw::Folder>,
    /// Datasources.
    pub datasources: Vec<Datasource>,
}

/// A checked datasource.
#[derive(Debug, Clone)]
pub struct Datasource {
    /// Name.
    pub name: String,
    /// uid.
    pub uid: String,
    /// Environment whose InfluxDB it reads.
    pub environment: String,
    /// InfluxDB URL of that environment.
    pub url: String,
    /// Database.
    pub database: String,
    /// Read-only user.
    pub user: String,
    /// That user's password (a secret name).
    pub password_secret: String,
    /// Grafana's default datasource.
    pub default: bool,
}

/// A scenario in an environment's schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledScenario {
    /// Scenario name.
    pub scenario: String,
    /// When it runs.
    pub cron: crate::cron::Schedule,
    /// The executor hosts that run it.
    pub executors: Vec<String>,
}

/// A validated scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Name (file stem).
    pub name: String,
    /// Free text.
    pub description: String,
    /// Kill the run after this long.
    pub timeout: Duration,
    /// How it runs.
    pub runner: Runner,
}

/// The scenario runtime: one Python environment with these packages and
/// collections, identified by a hash of all of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runtime {
    /// 16 hex digits over everything below: the directory name on the host.
    pub id: String,
    /// pip requirements.
    pub python: Vec<String>,
    /// Collection archives.
    pub collections: Vec<CollectionArchive>,
    /// pip's index, when not the default.
    pub index_url: Option<String>,
    /// The Python the environment is made with (absolute path).
    pub interpreter: String,
}

/// The Python a runtime is made with unless the repository names another.
pub const DEFAULT_INTERPRETER: &str = "/usr/bin/python3";

/// A vendor apt repository: its signing key in a keyring file of its own,
/// a `Signed-By` source entry, and the packages installed from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AptRepository {
    /// Name (file names on the host).
    pub name: String,
    /// The deb822 source entry.
    pub sources: String,
    /// Where the key goes on the host (`.asc` or `.gpg`, as in the repository).
    pub keyring: String,
    /// The key.
    pub key: std::sync::Arc<Vec<u8>>,
    /// Packages by role.
    pub packages: BTreeMap<Role, Vec<String>>,
}

/// An Ansible collection archive from the repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectionArchive {
    /// Path in the repository (`runtime/collections/x.tar.gz`).
    pub path: String,
    /// Hex sha256 of the content.
    pub sha256: String,
    /// The archive.
    pub content: std::sync::Arc<Vec<u8>>,
}

/// Where an executor keeps the scenario repository's tree.
pub const SCENARIO_REPOSITORY_DIR: &str = "/etc/apimon/scenario-repository";

/// The scenario repository apimon.yaml names, at the commit in use.
#[derive(Debug, Clone)]
pub struct ScenarioRepository {
    /// Remote URL.
    pub url: String,
    /// The branch followed, when not pinned to a commit.
    pub branch: Option<String>,
    /// The commit its files are at.
    pub commit: String,
    /// Every file, by path relative to the repository; deployed verbatim
    /// to [`SCENARIO_REPOSITORY_DIR`] on executors.
    pub files: BTreeMap<String, Vec<u8>>,
}

/// A scenario's cleanup playbook, run with the job id of the run it cleans up after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cleanup {
    /// Playbook path relative to `scenarios/`.
    pub playbook: String,
    /// Kill it after this long.
    pub timeout: Duration,
}

/// Default scenario timeout.
pub const DEFAULT_SCENARIO_TIMEOUT: Duration = Duration::from_secs(300);

/// How a scenario runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Runner {
    /// `ansible-playbook`.
    Ansible {
        /// Playbook path relative to its tree (`scenarios/`, or the scenario repository).
        playbook: String,
        /// The tree's directory on the executor when it is not the
        /// executor's `scenarios_dir` (the scenario repository's).
        base_dir: Option<String>,
        /// Monitored cloud (OS_CLOUD).
        cloud: Option<String>,
        /// `-e` variables.
        extra_vars: BTreeMap<String, String>,
        /// Inventory variables (`all.vars` of an inventory the executor writes).
        vars: BTreeMap<String, serde_json::Value>,
        /// Runs after a run that timed out or was aborted.
        cleanup: Option<Cleanup>,
    },
    /// Built-in HTTP probe.
    Http {
        /// URL.
        url: String,
        /// Method.
        method: String,
        /// Expected status.
        expect_status: u16,
    },
}

impl Runner {
    /// `ansible` or `http`: the `runner` tag of result points.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Ansible { .. } => "ansible",
            Self::Http { .. } => "http",
        }
    }
}

/// A dashboard.
#[derive(Debug, Clone)]
pub struct Dashboard {
    /// uid.
    pub uid: String,
    /// Title.
    pub title: String,
    /// Folder uid.
    pub folder: String,
    /// Source file.
    pub file: PathBuf,
    /// The JSON model as written.
    pub model: serde_json::Value,
}

/// A template from the repository that replaces a built-in one.
#[derive(Debug, Clone)]
pub struct TemplateOverride {
    /// Source file, for error messages.
    pub file: PathBuf,
    /// Template text.
    pub text: String,
}
