//! Hosts over SSH: the files each role needs (rendered configuration,
//! playbooks, and on the executor the apimon binary itself), the packages
//! that must be installed, the system accounts services run as, the
//! scenario runtime on executors (see [`runtime`]), and the systemd units
//! that must be enabled and running — restarted when a file they depend on
//! changed.
//!
//! File content never appears in a plan (it may hold secrets): files
//! compare by sha256, mode and owner. A unit's restart is driven by a
//! *restart token*, the hash of the files that restart it; the token last
//! applied lives in the state store, so a changed file restarts exactly the
//! units that declared it, once.

mod absent;
mod apply;
pub mod bastions;
mod desired;
mod error;
mod observe;
mod release;
pub mod runtime;
mod settle;
mod spec;
pub mod ssh;
mod ssh_error;

pub use desired::{binary, desired};
pub use error::HostError;
pub use settle::Unsettled;
pub use spec::{Content, HostSpec};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::model::Environment;
use crate::plan::{DesiredSet, ItemChange, ObservedSet, Planned, ProviderKind, ResourceId};

use super::locate::{Address, Locate, Which};
use super::{
    failure_kind, openstack, Availability, Context, FailureKind, Model, Ownership, Provider, Scope,
};
use ssh::{Connection, Endpoint, SshError, SshSettings};

/// Where the executor's binary is installed.
pub const BINARY_PATH: &str = "/usr/local/bin/apimon";

/// The provider's name in resource ids.
pub const KIND: ProviderKind = ProviderKind::named("host");

fn id(env: &str, kind: &'static str, name: impl Into<String>) -> ResourceId {
    ResourceId::new(env, KIND, kind, name)
}

fn file_id(env: &str, host: &str, path: &str) -> ResourceId {
    id(env, "file", format!("{host}:{path}"))
}

fn unit_id(env: &str, host: &str, unit: &str) -> ResourceId {
    id(env, "unit", format!("{host}:{unit}"))
}

fn package_id(env: &str, host: &str, package: &str) -> ResourceId {
    id(env, "package", format!("{host}:{package}"))
}

fn account_id(env: &str, host: &str, name: &str) -> ResourceId {
    id(env, "account", format!("{host}:{name}"))
}

fn runtime_id(env: &str, host: &str) -> ResourceId {
    id(env, "runtime", host)
}

fn apt_repository_id(env: &str, host: &str, name: &str) -> ResourceId {
    id(env, "apt_repository", format!("{host}:{name}"))
}

/// Where an apt repository's source entry goes.
fn sources_path(name: &str) -> String {
    format!("/etc/apt/sources.list.d/apimon-{name}.sources")
}

/// Whether deleting `id` would take the daemon away from `host` of `env`,
/// the host it runs on: its binary, daemon.yaml, unit file, unit or
/// account — and, when `leaving` (daemon.yaml goes too: `daemon:` dropped
/// or given to another bastion), the other files it reads under
/// /etc/apimon. The daemon on `host` never applies that to itself.
pub fn runs_the_daemon(env: &str, host: &str, id: &ResourceId, leaving: bool) -> bool {
    if *id.env != *env || id.provider != KIND {
        return false;
    }
    let Some(rest) = id.name.strip_prefix(host).and_then(|r| r.strip_prefix(':')) else {
        return false;
    };
    let daemon = crate::render::DAEMON_UNIT;
    match &*id.kind {
        "file" => {
            rest == BINARY_PATH
                || rest == crate::render::DAEMON_CONFIG_PATH
                || rest == format!("/etc/systemd/system/{daemon}.service")
                || (leaving && rest.starts_with("/etc/apimon/"))
        }
        "unit" | "account" => rest == daemon,
        _ => false,
    }
}

/// How the hosts are reached and managed.
#[derive(Debug, Clone)]
pub struct HostSettings {
    /// SSH user, key and known_hosts.
    pub ssh: SshSettings,
    /// Prefix of every managed path.
    pub root: PathBuf,
    /// `systemctl` or a stand-in.
    pub service_manager: String,
    /// Succeeds when `{package}` is installed.
    pub package_check: String,
    /// Installs `{package}`.
    pub package_install: String,
    /// Refreshes the package lists.
    pub package_update: String,
    /// How long a (re)started unit must stay up.
    pub unit_settle_seconds: u64,
}

/// What to manage on one host.
#[derive(Debug, Clone, Default)]
struct Managed {
    paths: Vec<String>,
    units: Vec<String>,
    packages: Vec<String>,
    accounts: Vec<String>,
    runtime: bool,
    /// Runs the executor: its syntax check's report is read.
    executor: bool,
    /// Apt repositories: name, keyring, source entry.
    repositories: Vec<(String, String, String)>,
}

/// The executor's unit.
const EXECUTOR_UNIT: &str = "apimon-executor";

/// One environment's hosts.
pub struct HostProvider {
    env: String,
    settings: HostSettings,
    bastion: Endpoint,
    hosts: BTreeMap<String, Endpoint>,
    /// The hosts whose address the cloud gives (the repository names none).
    cloud_addresses: BTreeMap<String, Address>,
    /// Who says where servers are, and whether they exist.
    locate: Option<Arc<dyn Locate>>,
    /// Commands run so far (its requests).
    commands: std::sync::atomic::AtomicUsize,
    managed: BTreeMap<String, Managed>,
    connections: tokio::sync::Mutex<BTreeMap<String, Arc<Connection>>>,
    /// The bastion's session, shared with the endpoints' tunnels.
    shared: Arc<bastions::Shared>,
    /// With a release key, only releases it signed are installed.
    release_key: Option<PathBuf>,
    /// What the last observation found (executors' unloadable playbooks).
    findings: std::sync::Mutex<Option<Vec<crate::providers::Finding>>>,
}

impl std::fmt::Debug for HostProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostProvider")
            .field("env", &self.env)
            .field("bastion", &self.bastion)
            .finish_non_exhaustive()
    }
}

impl HostProvider {
    /// The provider for `env`'s hosts in `desired`, reached as `machine`
    /// says; unavailable when the environment has no `ssh:` section (its
    /// hosts are then not managed), or when the repository leaves the
    /// bastion's address to the cloud and `locate` cannot ask it.
    pub fn for_environment(
        env: &Environment,
        desired: &DesiredSet<HostSpec>,
        machine: &crate::machine::Machine,
        locate: Option<Arc<dyn Locate>>,
    ) -> Availability<Self> {
        let Some(access) = env.ssh.as_ref() else {
            return Availability::Unavailable("no `ssh:` section in apimon.yaml".to_owned());
        };
        // The first bastion is the jump host; other bastions are reached
        // through it like any host.
        let jump = match bastions::jump_host(
            env,
            access,
            &machine.ssh_key,
            &machine.known_hosts,
            locate.as_ref(),
            machine.on_bastion,
        ) {
            Ok(jump) => jump,
            Err(why) => return Availability::Unavailable(why),
        };
        let bastion = jump.endpoint.clone();
        let mut cloud_addresses = BTreeMap::new();
        let hosts = env
            .hosts
            .iter()
            .map(|h| {
                let endpoint = if h.name == bastion.name {
                    bastion.clone()
                } else {
                    // Without an address: the fixed one Neutron gave its
                    // port, when the cloud can be asked; else its name.
                    let address = match (h.address, &locate) {
                        (Some(address), _) => address.to_string(),
                        (None, Some(locate)) => {
                            let address = Address::Cloud {
                                server: h.name.clone(),
                                which: Which::Fixed,
                                locate: Arc::clone(locate),
                            };
                            let described = address.describe();
                            cloud_addresses.insert(h.name.clone(), address);
                            described
                        }
                        (None, None) => h.name.clone(),
                    };
                    Endpoint { name: h.name.clone(), address, port: access.host_port }
                };
                (h.name.clone(), endpoint)
            })
            .collect();
        let mut managed: BTreeMap<String, Managed> = BTreeMap::new();
        for item in desired.values() {
            match &item.spec {
                HostSpec::File { host, path, .. } => {
                    managed.entry(host.clone()).or_default().paths.push(path.clone())
                }
                HostSpec::Unit { host, unit, .. } => {
                    let entry = managed.entry(host.clone()).or_default();
                    entry.executor |= unit == EXECUTOR_UNIT;
                    entry.units.push(unit.clone());
                }
                HostSpec::Package { host, package } => {
                    managed.entry(host.clone()).or_default().packages.push(package.clone())
                }
                HostSpec::Account { host, name, .. } => {
                    managed.entry(host.clone()).or_default().accounts.push(name.clone())
                }
                HostSpec::Runtime { host, .. } => {
                    managed.entry(host.clone()).or_default().runtime = true
                }
                HostSpec::AptRepository { host, name, keyring, sources_path, .. } => managed
                    .entry(host.clone())
                    .or_default()
                    .repositories
                    .push((name.clone(), keyring.clone(), sources_path.clone())),
            }
        }
        let settings = HostSettings {
            ssh: jump.settings.clone(),
            root: PathBuf::from(&access.root),
            service_manager: access.service_manager.clone(),
            package_check: access.package_check.clone(),
            package_install: access.package_install.clone(),
            package_update: access.package_update.clone(),
            unit_settle_seconds: access.unit_settle_seconds,
        };
        let shared = bastions::shared(&jump);
        Availability::Available(Self {
            env: env.name.clone(),
            settings,
            bastion,
            hosts,
            cloud_addresses,
            locate,
            commands: std::sync::atomic::AtomicUsize::new(0),
            managed,
            connections: tokio::sync::Mutex::new(BTreeMap::new()),
            shared,
            release_key: None,
            findings: std::sync::Mutex::new(None),
        })
    }

    /// The jump host, and the address its session was opened at (`None`
    /// before it was): where the cloud put it, when the repository does
    /// not say.
    pub fn bastion_reached(&self) -> (&str, Option<String>) {
        (&self.bastion.name, self.shared.reached())
    }

    /// A connection to `host`, opened once and reused across changes.
    async fn connection(&self, host: &str) -> Result<Arc<Connection>, HostError> {
        let mut connections = self.connections.lock().await;
        if let Some(connection) = connections.get(host) {
            return Ok(Arc::clone(connection));
        }
        let target = self.hosts.get(host).ok_or_else(|| HostError::UnknownHost(host.to_owned()))?;
        // Through the bastion's shared session (the bastion itself: that session).
        let connection = if *target == self.bastion {
            self.shared.connection().await?
        } else {
            let target = &match self.cloud_addresses.get(host) {
                Some(address) => {
                    let located = address
                        .resolve()
                        .await
                        .map_err(|source| SshError::Locate { host: host.to_owned(), source })?;
                    Endpoint { address: located, ..target.clone() }
                }
                None => target.clone(),
            };
            let settings = &self.settings.ssh;
            let opened = self
                .shared
                .with_session(|bastion| async move {
                    Connection::open_through(settings, &bastion, target).await
                })
                .await?;
            Arc::new(opened)
        };
        connections.insert(host.to_owned(), Arc::clone(&connection));
        Ok(connection)
    }

    /// Forgets a connection that failed, so a retry opens a new one.
    async fn forget(&self, host: &str) {
        if let Some(connection) = self.connections.lock().await.remove(host) {
            // The bastion's own: its shared session goes too.
            self.shared.reset(&connection).await;
        }
    }

    /// Runs `command` on `host`; a non-zero exit is an error about `what`.
    ///
    /// # Errors
    /// SSH failed, or the command exited non-zero.
    pub async fn run(
        &self,
        host: &str,
        what: &str,
        command: &str,
        stdin: Option<&[u8]>,
    ) -> Result<Vec<u8>, HostError> {
        self.commands.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let connection = self.connection(host).await?;
        let output = match connection.exec(command, stdin).await {
            Ok(output) => output,
            Err(error) => {
                self.forget(host).await;
                return Err(error.into());
            }
        };
        match output.status {
            Some(0) => Ok(output.stdout),
            status => {
                let stderr = String::from_utf8_lossy(&output.stderr);
                let tail: String =
                    stderr.chars().rev().take(1200).collect::<Vec<_>>().into_iter().rev().collect();
                Err(HostError::Command {
                    host: host.to_owned(),
                    what: what.to_owned(),
                    status: status.unwrap_or(255),
                    stderr: tail.trim().to_owned(),
                })
            }
        }
    }
}

/// What `apimon bootstrap` does on the daemon's bastion, through the same
/// connections (jump host, known_hosts, root and service manager) as the
/// provider's changes.
impl HostProvider {
    /// Writes `bytes` to `path` on `host` atomically, with `(mode, owner, group)`.
    ///
    /// # Errors
    /// SSH failed, or the upload did not complete (the old file stays).
    pub async fn put(
        &self,
        host: &str,
        path: &str,
        bytes: &[u8],
        access: (u32, &str, &str),
    ) -> Result<(), HostError> {
        let sha256 = crate::digest::sha256_hex(bytes);
        apply::upload(self, host, path, bytes, &sha256, access, None).await
    }

    /// Where `path` is on the hosts (under `ssh.root`).
    pub fn path(&self, path: &str) -> String {
        ssh::rooted(&self.settings.root, path)
    }

    /// The service manager command (`systemctl`, or a stand-in).
    pub fn service_manager(&self) -> &str {
        &self.settings.service_manager
    }

    /// `GET path` from `address:port` as `host` sees it, through SSH.
    ///
    /// # Errors
    /// As [`ssh::Connection::http_get`].
    pub async fn http_get(
        &self,
        host: &str,
        (address, port): (&str, u16),
        path: &str,
        timeout: std::time::Duration,
    ) -> Result<(u16, Vec<u8>), HostError> {
        let connection = self.connection(host).await?;
        match connection.http_get(address, port, path, timeout).await {
            Ok(answer) => Ok(answer),
            Err(error) => {
                self.forget(host).await;
                Err(error.into())
            }
        }
    }
}

impl Provider for HostProvider {
    const KIND: ProviderKind = KIND;
    const OWNERSHIP: Ownership = Ownership::StateStore;
    type Spec = HostSpec;
    type Error = HostError;

    fn desired(model: &Model<'_>, env: &Environment) -> DesiredSet<HostSpec> {
        // A release pinned in apimon.yaml, else the apimon that applies.
        let binary = match &model.state.apimon_binary {
            Some(pin) => Some((
                Content::Remote { url: pin.url.clone(), signature_url: pin.signature_url.clone() },
                pin.sha256.clone(),
            )),
            None => model
                .executor_binary
                .map(|(path, sha256)| (Content::Local(path.clone()), sha256.clone())),
        };
        desired(
            env,
            model.rendered,
            binary.as_ref(),
            model.state.runtime.as_ref(),
            &model.state.apt_repositories,
        )
    }

    fn connect(
        context: &Context<'_>,
        env: &Environment,
        desired: &DesiredSet<HostSpec>,
    ) -> Result<Availability<Self>, HostError> {
        let machine = context.machine;
        let locate = context.locators.get(&env.name).cloned();
        let provider = Self::for_environment(env, desired, machine, locate);
        Ok(match provider {
            Availability::Available(provider) => Availability::Available(Self {
                release_key: machine.release_key.clone(),
                ..provider
            }),
            unavailable => unavailable,
        })
    }

    /// Commands run over SSH so far.
    fn requests(&self) -> usize {
        self.commands.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn findings(&self) -> Option<Vec<crate::providers::Finding>> {
        self.findings.lock().ok().and_then(|found| found.clone())
    }

    fn fingerprint(spec: &HostSpec) -> Option<&str> {
        match spec {
            HostSpec::Unit { restart_token, .. } => Some(restart_token),
            _ => None,
        }
    }

    async fn observe(&self, scope: &Scope) -> Result<ObservedSet<HostSpec>, HostError> {
        observe::observe(self, scope).await
    }

    async fn apply(&self, change: &Planned<ItemChange<HostSpec>>) -> Result<(), HostError> {
        apply::apply(self, change).await
    }

    fn classify(error: &HostError) -> FailureKind {
        failure_kind(error.is_transient())
    }

    /// The daemon's own files, unit and account on its host; all of
    /// /etc/apimon when its daemon.yaml goes too (the daemon is leaving).
    fn endangers(
        own: &super::OwnHost<'_>,
        id: &ResourceId,
        deleted: &std::collections::BTreeSet<ResourceId>,
    ) -> bool {
        let (env, host) = (own.env.name.as_str(), own.host.name.as_str());
        let leaving = deleted.contains(&file_id(env, host, crate::render::DAEMON_CONFIG_PATH));
        runs_the_daemon(env, host, id, leaving)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! daemon_cases {
        ($($name:ident: ($kind:expr, $resource:expr, $leaving:expr) => $expected:expr;)+) => {
            $(
                #[test]
                fn $name() {
                    let id = id("outside", $kind, $resource);
                    assert_eq!(runs_the_daemon("outside", "outside-bastion", &id, $leaving), $expected);
                }
            )+
        };
    }

    daemon_cases! {
        its_binary: ("file", "outside-bastion:/usr/local/bin/apimon", false) => true;
        its_configuration: ("file", "outside-bastion:/etc/apimon/daemon.yaml", false) => true;
        its_unit_file: ("file", "outside-bastion:/etc/systemd/system/apimon.service", false) => true;
        its_unit: ("unit", "outside-bastion:apimon", false) => true;
        its_account: ("account", "outside-bastion:apimon", false) => true;
        a_credential_it_no_longer_names: ("file", "outside-bastion:/etc/apimon/git_token", false) => false;
        a_credential_while_it_leaves: ("file", "outside-bastion:/etc/apimon/webhook_secret", true) => true;
        another_unit_file: ("file", "outside-bastion:/etc/systemd/system/telegraf.service", true) => false;
        another_hosts_binary: ("file", "outside-executor:/usr/local/bin/apimon", true) => false;
        a_host_named_like_a_prefix: ("file", "outside-bastion2:/etc/apimon/daemon.yaml", true) => false;
    }
}
