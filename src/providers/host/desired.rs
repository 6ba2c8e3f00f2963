//! What each host of an environment needs: its role's accounts, packages
//! (from the distribution or a vendor repository), rendered files, the
//! apimon binary on executors, the scenario runtime, and its units.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use sha2::{Digest, Sha256};

use crate::model::{Environment, Role};
use crate::plan::{DesiredItem, DesiredSet, ResourceId};
use crate::render::Rendered;

use super::{
    account_id, apt_repository_id, file_id, openstack, package_id, runtime_id, sources_path,
    unit_id, Content, HostSpec, BINARY_PATH,
};

/// The account the daemon runs as, on the host that runs it.
const DAEMON_ACCOUNT: (&str, &str) = ("apimon", crate::layout::STATE_DIR);

fn digest(path: &Path) -> Option<(PathBuf, String)> {
    let bytes = std::fs::read(path).ok()?;
    Some((path.to_owned(), crate::digest::sha256_hex(&bytes)))
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
    binary: Option<&(Content, String)>,
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
        // Executors run the apimon that applies, and so do the bastion
        // that runs the daemon (which restarts itself when it changed) and
        // the host of the health service.
        if host.role == Role::Executor || host.runs_daemon || host.runs_health {
            if let Some((content, sha256)) = binary {
                let mut restarts = Vec::new();
                if host.role == Role::Executor && !host.runs_daemon {
                    restarts.push("apimon-executor".to_owned());
                }
                if host.runs_health {
                    restarts.push(crate::render::health::UNIT.to_owned());
                }
                let spec = HostSpec::File {
                    host: host.host.clone(),
                    path: BINARY_PATH.to_owned(),
                    sha256: sha256.clone(),
                    mode: 0o755,
                    owner: "root".to_owned(),
                    group: "root".to_owned(),
                    restarts,
                    template: None,
                    content: content.clone(),
                };
                files.push((file_id(&env.name, &host.host, BINARY_PATH), spec));
            }
        }
        // An executor whose zone the repository leaves to Nova: the zone
        // Nova gave its server, asked when the server is created or
        // replaced (the file lives on it) and read by the executor.
        let zone_left_to_nova =
            env.hosts.iter().any(|h| h.name == host.host && h.availability_zone.is_none());
        if host.role == Role::Executor && zone_left_to_nova {
            let spec = HostSpec::File {
                host: host.host.clone(),
                path: crate::layout::EXECUTOR_ZONE_PATH.to_owned(),
                sha256: String::new(),
                mode: 0o644,
                owner: "root".to_owned(),
                group: "root".to_owned(),
                restarts: Vec::new(),
                template: None,
                content: Content::Zone(host.host.clone()),
            };
            files.push((file_id(&env.name, &host.host, crate::layout::EXECUTOR_ZONE_PATH), spec));
        }
        let zone_file = zone_left_to_nova
            .then(|| file_id(&env.name, &host.host, crate::layout::EXECUTOR_ZONE_PATH));
        // Accounts first: files and units name them.
        let mut account_ids = Vec::new();
        let daemon_account = host.runs_daemon.then_some(DAEMON_ACCOUNT);
        let accounts = host.role.profile().accounts.iter().chain(daemon_account.iter());
        for (name, home) in accounts {
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
        let mut packages: Vec<&str> = host.role.profile().packages.to_vec();
        packages.extend(
            from_repository.keys().copied().filter(|p| !host.role.profile().packages.contains(p)),
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
            // The daemon's own unit is enabled, never started or restarted
            // by an apply: bootstrap starts it, and it restarts itself.
            let running = unit != crate::render::DAEMON_UNIT;
            let spec = HostSpec::Unit {
                host: host.host.clone(),
                unit: unit.clone(),
                enabled: true,
                running,
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
                interpreter: runtime.interpreter.clone(),
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
        let has_runtime = host.role == Role::Executor && runtime.is_some();
        for (file_id, spec) in files {
            let mut depends_on = vec![server.clone()];
            // What names the runtime (executor.yaml's ansible_playbook) is
            // written once the runtime is there: the executor reloads it
            // at once, and a runner that does not exist yet is no run.
            if has_runtime && names_runtime(&spec) {
                depends_on.push(runtime_id(&env.name, &host.host));
            }
            let is_config = file_id.name.ends_with(crate::layout::EXECUTOR_CONFIG_PATH);
            // executor.yaml names the zone file: it is written first.
            if let (Role::Executor, true, Some(zone)) = (host.role, is_config, &zone_file) {
                depends_on.push(zone.clone());
            }
            // executor.yaml names the job-log container: it is there first.
            if let (Role::Executor, Some(logs)) = (host.role, &env.logs) {
                if is_config {
                    depends_on.push(crate::providers::logs::container_id(
                        &env.name,
                        &logs.cloud,
                        &logs.container,
                    ));
                }
            }
            if let HostSpec::File { owner, group, .. } = &spec {
                let accounts: Vec<ResourceId> = account_ids
                    .iter()
                    .filter(|id| {
                        id.name.ends_with(&format!(":{owner}"))
                            || id.name.ends_with(&format!(":{group}"))
                    })
                    .cloned()
                    .collect();
                // Owned by a user or group no apimon account makes: the
                // packages make it (telegraf, grafana), so they go first.
                let by_package = [owner, group].iter().any(|name| {
                    *name != "root"
                        && !accounts.iter().any(|id| id.name.ends_with(&format!(":{name}")))
                });
                depends_on.extend(accounts);
                if by_package {
                    depends_on.extend(package_ids.iter().cloned());
                }
            }
            set.insert(file_id, DesiredItem::new(spec, depends_on).on(server.clone()));
        }
    }
    // Every host is reached through the jump host: where the cloud puts
    // it, its floating IP must exist first.
    if let Some(jump) = jump_floating_ip(env) {
        for item in set.values_mut() {
            item.depends_on.push(jump.clone());
        }
    }
    set
}

/// Whether a file's content names a path of the scenario runtime.
fn names_runtime(spec: &HostSpec) -> bool {
    let HostSpec::File { content: super::Content::Bytes(bytes), .. } = spec else { return false };
    let needle = crate::layout::RUNTIME_BASE.as_bytes();
    bytes.expose().windows(needle.len()).any(|w| w == needle)
}

/// The jump host's floating IP, when the repository gives no
/// `ssh.bastion_address` and apimon reaches it there.
fn jump_floating_ip(env: &Environment) -> Option<ResourceId> {
    env.ssh.as_ref().filter(|ssh| ssh.bastion_address.is_none())?;
    let jump = env.host_with_role(Role::Bastion).filter(|h| h.floating_ip.is_some())?;
    Some(openstack::floating_ip_id(&env.name, &jump.name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Secrets;
    use crate::render::{render_all, Templates};

    /// The example's `outside` hosts' resources, with `bastion_address`
    /// as `address` says.
    fn depends_on_floating_ip(address: Option<&str>) -> (usize, usize) {
        let mut state = crate::model::authority::pins::tests::example();
        let env = state.environments.get_mut("outside").expect("outside");
        if let Some(ssh) = env.ssh.as_mut() {
            ssh.bastion_address = address.map(str::to_owned);
        }
        let env = &state.environments["outside"];
        let templates = Templates::new(&state.templates).expect("templates");
        let rendered = render_all(&state, &[env], &templates, &Secrets::Redacted).expect("render");
        let set = desired(env, &rendered, None, None, &[]);
        let jump = openstack::floating_ip_id("outside", "outside-bastion");
        (set.values().filter(|item| item.depends_on.contains(&jump)).count(), set.len())
    }

    #[test]
    fn what_names_the_runtime_is_written_after_it() {
        let state = crate::model::authority::pins::tests::example();
        assert!(state.runtime.is_some(), "the example declares a runtime");
        let env = &state.environments["outside"];
        let templates = Templates::new(&state.templates).expect("templates");
        let rendered = render_all(&state, &[env], &templates, &Secrets::Redacted).expect("render");
        let set = desired(env, &rendered, None, state.runtime.as_ref(), &[]);
        let runtime = runtime_id("outside", "outside-executor");
        assert!(set.contains_key(&runtime));
        let config = file_id("outside", "outside-executor", "/etc/apimon/executor.yaml");
        assert!(set[&config].depends_on.contains(&runtime), "{:?}", set[&config].depends_on);
        let clouds = file_id("outside", "outside-executor", "/etc/apimon/clouds.yaml");
        assert!(!set[&clouds].depends_on.contains(&runtime), "only what names the runtime waits");
        let logs =
            crate::providers::logs::container_id("outside", "production", "apimon-logs-outside");
        assert!(set[&config].depends_on.contains(&logs), "executor.yaml names the log container");
        assert!(!set[&clouds].depends_on.contains(&logs));
        // The example leaves the executor's zone to Nova: a zone file,
        // any content, written before executor.yaml.
        let zone = file_id("outside", "outside-executor", crate::layout::EXECUTOR_ZONE_PATH);
        assert!(
            matches!(&set[&zone].spec, HostSpec::File { sha256, content: Content::Zone(server), .. } if sha256.is_empty() && server == "outside-executor")
        );
        assert!(set[&config].depends_on.contains(&zone));
        assert_eq!(set[&zone].lives_on, Some(openstack::server_id("outside", "outside-executor")));
        let bastion = file_id("outside", "outside-bastion", crate::layout::EXECUTOR_ZONE_PATH);
        assert!(!set.contains_key(&bastion), "executors only");
    }

    #[test]
    fn host_resources_wait_for_the_bastions_floating_ip_only_where_the_cloud_gives_its_address() {
        assert_eq!(depends_on_floating_ip(Some("203.0.113.10")).0, 0);
        let (waiting, all) = depends_on_floating_ip(None);
        assert!(all > 0);
        assert_eq!(waiting, all, "every host resource goes through the bastion");
    }
}
