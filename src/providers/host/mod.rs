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

mod apply;
mod observe;
pub mod runtime;
pub mod ssh;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::model::{Environment, Role, Sensitive};
use crate::plan::{
    Comparison, DesiredItem, DesiredSet, ItemChange, ObservedSet, Planned, ProviderKind,
    ResourceId, Spec,
};
use crate::render::Rendered;

use super::{
    failure_kind, openstack, Availability, Context, FailureKind, Model, Ownership, Provider, Scope,
};
use ssh::{Connection, Endpoint, SshError, SshSettings};

/// Where the executor's binary is installed.
pub const BINARY_PATH: &str = "/usr/local/bin/apimon";

/// What a file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// Rendered or copied bytes; may hold secrets.
    Bytes(Sensitive<Vec<u8>>),
    /// A file on the applying machine, read at upload (the apimon binary).
    Local(PathBuf),
}

/// One thing on a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HostSpec {
    /// A file.
    File {
        /// Host name.
        host: String,
        /// Absolute path.
        path: String,
        /// Hex sha256 of the content.
        sha256: String,
        /// Permission bits.
        mode: u32,
        /// Owner.
        owner: String,
        /// Group.
        group: String,
        /// Units restarted when it changes.
        restarts: Vec<String>,
        /// Template it is rendered from, for plan reasons.
        template: Option<String>,
        /// Content, uploaded on apply; never printed.
        #[serde(skip)]
        content: Content,
    },
    /// A systemd unit, enabled and running.
    Unit {
        /// Host name.
        host: String,
        /// Unit name without `.service`.
        unit: String,
        /// Enabled at boot.
        enabled: bool,
        /// Active.
        running: bool,
        /// Hash of the files that restart it, as last applied.
        restart_token: String,
    },
    /// An installed package.
    Package {
        /// Host name.
        host: String,
        /// Package name.
        package: String,
    },
    /// A system account (and its group) a service runs as.
    Account {
        /// Host name.
        host: String,
        /// User and group name.
        name: String,
        /// Home directory.
        home: String,
    },
    /// A vendor apt repository: its key in a keyring file of its own and a
    /// `Signed-By` source entry; the package lists refreshed on change.
    AptRepository {
        /// Host name.
        host: String,
        /// Repository name.
        name: String,
        /// Keyring path.
        keyring: String,
        /// Source entry path.
        sources_path: String,
        /// Hex sha256 of the key followed by the source entry.
        sha256: String,
        /// The key and the source entry, uploaded on apply.
        #[serde(skip)]
        content: Option<(Arc<Vec<u8>>, String)>,
    },
    /// The scenario runtime in service (see [`runtime`]).
    Runtime {
        /// Host name.
        host: String,
        /// The runtime's id (its directory); observed: the one in service.
        id: String,
        /// pip requirements.
        python: Vec<String>,
        /// Collection archives: repository path and sha256.
        collections: Vec<String>,
        /// pip's index, when not the default.
        index_url: Option<String>,
        /// The archives, uploaded on apply.
        #[serde(skip)]
        archives: Vec<(String, Arc<Vec<u8>>)>,
    },
}

impl Spec for HostSpec {
    fn compare(&self, observed: &Self) -> Comparison {
        match (self, observed) {
            (
                HostSpec::File { sha256, mode, owner, group, template, .. },
                HostSpec::File { sha256: s, mode: m, owner: o, group: g, .. },
            ) => {
                let mut reasons = Vec::new();
                if sha256 != s {
                    reasons.push(match template {
                        Some(template) => format!("content changed (template {template})"),
                        None => "content changed".to_owned(),
                    });
                }
                if mode != m {
                    reasons.push(format!("mode {m:04o} → {mode:04o}"));
                }
                if owner != o || group != g {
                    reasons.push(format!("owner {o}:{g} → {owner}:{group}"));
                }
                if reasons.is_empty() {
                    Comparison::Same
                } else {
                    Comparison::Update(reasons)
                }
            }
            (
                HostSpec::Unit { restart_token, .. },
                HostSpec::Unit { enabled, running, restart_token: have, .. },
            ) => {
                let mut reasons = Vec::new();
                if !enabled {
                    reasons.push("not enabled".to_owned());
                }
                if !running {
                    reasons.push("not running".to_owned());
                }
                if restart_token != have && *enabled && *running {
                    reasons.push("restart: a file it depends on changed".to_owned());
                }
                if reasons.is_empty() {
                    Comparison::Same
                } else {
                    Comparison::Update(reasons)
                }
            }
            (HostSpec::Package { .. }, HostSpec::Package { .. })
            | (HostSpec::Account { .. }, HostSpec::Account { .. }) => Comparison::Same,
            (
                HostSpec::AptRepository { sha256, .. },
                HostSpec::AptRepository { sha256: have, .. },
            ) => {
                if sha256 == have {
                    Comparison::Same
                } else {
                    Comparison::Update(vec!["key or source entry changed".to_owned()])
                }
            }
            (HostSpec::Runtime { id, .. }, HostSpec::Runtime { id: have, .. }) => {
                if id == have {
                    Comparison::Same
                } else {
                    Comparison::Update(vec![format!("runtime {have} → {id}")])
                }
            }
            _ => Comparison::Replace("resource kind changed".to_owned()),
        }
    }
}

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

/// System accounts each role's services run as: (name, home).
pub fn accounts_for(role: Role) -> &'static [(&'static str, &'static str)] {
    match role {
        Role::Executor => &[("apimon", "/var/lib/apimon")],
        Role::Influxdb | Role::Bastion | Role::Grafana => &[],
    }
}

/// Packages each role needs on its host.
pub fn packages_for(role: Role) -> &'static [&'static str] {
    match role {
        Role::Executor => &["ansible-core", "telegraf"],
        Role::Influxdb => &["influxdb"],
        Role::Bastion | Role::Grafana => &[],
    }
}

fn digest(path: &Path) -> Option<(PathBuf, String)> {
    let bytes = std::fs::read(path).ok()?;
    Some((path.to_owned(), hex::encode(Sha256::digest(bytes))))
}

/// The binary executors get and its sha256: `path`, or the running apimon
/// (hashed once per process).
pub fn binary(path: Option<&Path>) -> Option<(PathBuf, String)> {
    static OWN: OnceLock<Option<(PathBuf, String)>> = OnceLock::new();
    match path {
        Some(path) => digest(path),
        None => OWN.get_or_init(|| std::env::current_exe().ok().and_then(|p| digest(&p))).clone(),
    }
}

/// What the environment's hosts need: files, packages, running units.
/// The executor also gets the apimon binary that is applying, so it runs
/// the same version.
pub fn desired(
    env: &Environment,
    rendered: &Rendered,
    binary: Option<&(PathBuf, String)>,
    runtime: Option<&crate::model::Runtime>,
    apt: &[crate::model::AptRepository],
) -> DesiredSet<HostSpec> {
    let mut set = DesiredSet::new();
    for host in rendered.hosts.values().filter(|h| h.env == env.name) {
        let server = openstack::server_id(&env.name, &host.host);
        let mut files: Vec<(ResourceId, HostSpec)> = host
            .files
            .iter()
            .map(|file| {
                let spec = HostSpec::File {
                    host: host.host.clone(),
                    path: file.path.clone(),
                    sha256: file.sha256.clone(),
                    mode: file.mode,
                    owner: file.owner.clone(),
                    group: file.group.clone(),
                    restarts: file.restarts.clone(),
                    template: file.template.clone(),
                    content: Content::Bytes(file.content.clone()),
                };
                (file_id(&env.name, &host.host, &file.path), spec)
            })
            .collect();
        if host.role == Role::Executor {
            if let Some((path, sha256)) = binary {
                let spec = HostSpec::File {
                    host: host.host.clone(),
                    path: BINARY_PATH.to_owned(),
                    sha256: sha256.clone(),
                    mode: 0o755,
                    owner: "root".to_owned(),
                    group: "root".to_owned(),
                    restarts: vec!["apimon-executor".to_owned()],
                    template: None,
                    content: Content::Local(path.clone()),
                };
                files.push((file_id(&env.name, &host.host, BINARY_PATH), spec));
            }
        }
        // Accounts first: files and units name them.
        let mut account_ids = Vec::new();
        for (name, home) in accounts_for(host.role) {
            let account_id = account_id(&env.name, &host.host, name);
            account_ids.push(account_id.clone());
            let spec = HostSpec::Account {
                host: host.host.clone(),
                name: (*name).to_owned(),
                home: (*home).to_owned(),
            };
            set.insert(account_id, DesiredItem::new(spec, vec![server.clone()]).on(server.clone()));
        }
        // Vendor repositories this role installs from; their packages
        // wait for them (and for the refreshed package lists).
        let mut from_repository: BTreeMap<&str, Vec<ResourceId>> = BTreeMap::new();
        for repository in apt {
            let Some(packages) = repository.packages.get(&host.role) else { continue };
            let repository_id = apt_repository_id(&env.name, &host.host, &repository.name);
            let sources = sources_path(&repository.name);
            let mut hash = Sha256::new();
            hash.update(repository.key.as_slice());
            hash.update(repository.sources.as_bytes());
            let spec = HostSpec::AptRepository {
                host: host.host.clone(),
                name: repository.name.clone(),
                keyring: repository.keyring.clone(),
                sources_path: sources,
                sha256: hex::encode(hash.finalize()),
                content: Some((Arc::clone(&repository.key), repository.sources.clone())),
            };
            set.insert(
                repository_id.clone(),
                DesiredItem::new(spec, vec![server.clone()]).on(server.clone()),
            );
            for package in packages {
                from_repository.entry(package.as_str()).or_default().push(repository_id.clone());
            }
        }
        let mut package_ids = Vec::new();
        let mut packages: Vec<&str> = packages_for(host.role).to_vec();
        packages.extend(
            from_repository.keys().copied().filter(|p| !packages_for(host.role).contains(p)),
        );
        for package in packages {
            let package_id = package_id(&env.name, &host.host, package);
            package_ids.push(package_id.clone());
            let spec = HostSpec::Package { host: host.host.clone(), package: package.to_owned() };
            let mut depends_on = vec![server.clone()];
            depends_on.extend(from_repository.get(package).cloned().unwrap_or_default());
            let item = DesiredItem::new(spec, depends_on).on(server.clone());
            set.insert(package_id, item);
        }
        for unit in &host.units {
            let triggers: Vec<&(ResourceId, HostSpec)> = files.iter().filter(|(_, spec)| matches!(spec, HostSpec::File { restarts, .. } if restarts.contains(unit))).collect();
            let mut token = Sha256::new();
            for (_, spec) in &triggers {
                if let HostSpec::File { path, sha256, .. } = spec {
                    token.update(format!("{path}\0{sha256}\n"));
                }
            }
            let mut depends_on = vec![server.clone()];
            depends_on.extend(triggers.iter().map(|(id, _)| id.clone()));
            depends_on.extend(package_ids.iter().cloned());
            depends_on.extend(account_ids.iter().cloned());
            let spec = HostSpec::Unit {
                host: host.host.clone(),
                unit: unit.clone(),
                enabled: true,
                running: true,
                restart_token: hex::encode(token.finalize()),
            };
            // A file restored by hand restarts its unit even though the
            // token, the hash of what the files should hold, is unchanged.
            let triggered_by = triggers.iter().map(|(id, _)| id.clone()).collect();
            let item =
                DesiredItem::new(spec, depends_on).on(server.clone()).triggered_by(triggered_by);
            set.insert(unit_id(&env.name, &host.host, unit), item);
        }
        if let (Role::Executor, Some(runtime)) = (host.role, runtime) {
            let spec = HostSpec::Runtime {
                host: host.host.clone(),
                id: runtime.id.clone(),
                python: runtime.python.clone(),
                collections: runtime
                    .collections
                    .iter()
                    .map(|c| format!("{} ({})", c.path, &c.sha256[..12]))
                    .collect(),
                index_url: runtime.index_url.clone(),
                archives: runtime
                    .collections
                    .iter()
                    .map(|c| {
                        (
                            c.path.rsplit('/').next().unwrap_or("collection.tar.gz").to_owned(),
                            Arc::clone(&c.content),
                        )
                    })
                    .collect(),
            };
            let mut depends_on = vec![server.clone()];
            depends_on.extend(package_ids.iter().cloned());
            set.insert(
                runtime_id(&env.name, &host.host),
                DesiredItem::new(spec, depends_on).on(server.clone()),
            );
        }
        for (file_id, spec) in files {
            let mut depends_on = vec![server.clone()];
            if let HostSpec::File { owner, group, .. } = &spec {
                depends_on.extend(
                    account_ids
                        .iter()
                        .filter(|id| {
                            id.name.ends_with(&format!(":{owner}"))
                                || id.name.ends_with(&format!(":{group}"))
                        })
                        .cloned(),
                );
            }
            set.insert(file_id, DesiredItem::new(spec, depends_on).on(server.clone()));
        }
    }
    set
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
}

/// What to manage on one host.
#[derive(Debug, Clone, Default)]
struct Managed {
    paths: Vec<String>,
    units: Vec<String>,
    packages: Vec<String>,
    accounts: Vec<String>,
    runtime: bool,
    /// Apt repositories: name, keyring, source entry.
    repositories: Vec<(String, String, String)>,
}

/// Host management failed.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// SSH failed.
    #[error(transparent)]
    Ssh(#[from] SshError),
    /// A command failed on the host.
    #[error("on {host}: {what} failed (exit {status}): {stderr}")]
    Command {
        /// Host.
        host: String,
        /// What was being done.
        what: String,
        /// Exit status.
        status: u32,
        /// The end of its stderr.
        stderr: String,
    },
    /// A local file could not be read (the binary to install).
    #[error("cannot read {path} to upload it")]
    Local {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The resource names a host the environment does not have.
    #[error("unknown host {0}")]
    UnknownHost(String),
}

/// One environment's hosts.
pub struct HostProvider {
    env: String,
    settings: HostSettings,
    bastion: Endpoint,
    hosts: BTreeMap<String, Endpoint>,
    managed: BTreeMap<String, Managed>,
    connections: tokio::sync::Mutex<BTreeMap<String, Arc<Connection>>>,
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
    /// The provider for `env`'s hosts in `desired`; unavailable when the
    /// environment has no `ssh:` section (its hosts are then not managed).
    pub fn for_environment(
        env: &Environment,
        desired: &DesiredSet<HostSpec>,
        key: &Path,
        known_hosts: &Path,
    ) -> Availability<Self> {
        let Some(access) = env.ssh.as_ref() else {
            return Availability::Unavailable("no `ssh:` section in apimon.yaml".to_owned());
        };
        let bastion_name = env
            .host_with_role(Role::Bastion)
            .map_or_else(|| "bastion".to_owned(), |h| h.name.clone());
        let bastion = Endpoint {
            name: bastion_name,
            address: access.bastion_address.clone(),
            port: access.bastion_port,
        };
        let hosts = env
            .hosts
            .iter()
            .map(|h| {
                let endpoint = if h.role == Role::Bastion {
                    bastion.clone()
                } else {
                    Endpoint {
                        name: h.name.clone(),
                        address: h.address.map_or_else(|| h.name.clone(), |a| a.to_string()),
                        port: access.host_port,
                    }
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
                    managed.entry(host.clone()).or_default().units.push(unit.clone())
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
            ssh: SshSettings {
                user: access.user.clone(),
                key: key.to_owned(),
                known_hosts: known_hosts.to_owned(),
                timeout: std::time::Duration::from_secs(15),
            },
            root: PathBuf::from(&access.root),
            service_manager: access.service_manager.clone(),
            package_check: access.package_check.clone(),
            package_install: access.package_install.clone(),
            package_update: access.package_update.clone(),
        };
        Availability::Available(Self {
            env: env.name.clone(),
            settings,
            bastion,
            hosts,
            managed,
            connections: tokio::sync::Mutex::new(BTreeMap::new()),
        })
    }

    /// A connection to `host`, opened once and reused across changes.
    async fn connection(&self, host: &str) -> Result<Arc<Connection>, HostError> {
        let mut connections = self.connections.lock().await;
        if let Some(connection) = connections.get(host) {
            return Ok(Arc::clone(connection));
        }
        let target = self.hosts.get(host).ok_or_else(|| HostError::UnknownHost(host.to_owned()))?;
        let connection =
            Arc::new(Connection::open(&self.settings.ssh, &self.bastion, target).await?);
        connections.insert(host.to_owned(), Arc::clone(&connection));
        Ok(connection)
    }

    /// Forgets a connection that failed, so a retry opens a new one.
    async fn forget(&self, host: &str) {
        self.connections.lock().await.remove(host);
    }

    /// Runs `command` on `host`; a non-zero exit is an error about `what`.
    async fn run(
        &self,
        host: &str,
        what: &str,
        command: &str,
        stdin: Option<&[u8]>,
    ) -> Result<Vec<u8>, HostError> {
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

impl HostError {
    /// Worth retrying: the connection, not the host's answer.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Ssh(error) => error.is_transient(),
            _ => false,
        }
    }
}

impl Provider for HostProvider {
    const KIND: ProviderKind = KIND;
    const OWNERSHIP: Ownership = Ownership::StateStore;
    type Spec = HostSpec;
    type Error = HostError;

    fn desired(model: &Model<'_>, env: &Environment) -> DesiredSet<HostSpec> {
        desired(
            env,
            model.rendered,
            model.executor_binary,
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
        Ok(Self::for_environment(env, desired, &machine.ssh_key, &machine.known_hosts))
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(sha: &str, mode: u32) -> HostSpec {
        HostSpec::File {
            host: "h".into(),
            path: "/etc/x".into(),
            sha256: sha.into(),
            mode,
            owner: "root".into(),
            group: "root".into(),
            restarts: vec![],
            template: Some("telegraf.conf.hbs".into()),
            content: Content::Bytes(Sensitive::new(vec![])),
        }
    }

    fn unit(enabled: bool, running: bool, token: &str) -> HostSpec {
        HostSpec::Unit {
            host: "h".into(),
            unit: "telegraf".into(),
            enabled,
            running,
            restart_token: token.into(),
        }
    }

    #[test]
    fn files_compare_by_hash_mode_and_owner_and_name_their_template() {
        assert_eq!(file("a", 0o644).compare(&file("a", 0o644)), Comparison::Same);
        assert_eq!(
            file("b", 0o644).compare(&file("a", 0o644)),
            Comparison::Update(vec!["content changed (template telegraf.conf.hbs)".into()])
        );
        assert_eq!(
            file("a", 0o600).compare(&file("a", 0o644)),
            Comparison::Update(vec!["mode 0644 → 0600".into()])
        );
    }

    #[test]
    fn units_restart_only_when_their_files_changed() {
        assert_eq!(unit(true, true, "t1").compare(&unit(true, true, "t1")), Comparison::Same);
        assert_eq!(
            unit(true, true, "t2").compare(&unit(true, true, "t1")),
            Comparison::Update(vec!["restart: a file it depends on changed".into()])
        );
        assert_eq!(
            unit(true, true, "t1").compare(&unit(false, false, "")),
            Comparison::Update(vec!["not enabled".into(), "not running".into()])
        );
    }
}
