//! Validation: raw documents → [`DesiredState`], collecting every problem.
//!
//! Each rule adds a [`Diagnostic`] at the offending value and carries on,
//! so one run reports everything (vector's `compile()`). Values are parsed
//! here, once, into the model's typed values. Pure: no I/O. One file per
//! repository file it checks (vector's `config/validation.rs`).

mod apt;
mod checks;
mod continuous_queries;
mod daemon;
mod dashboards;
mod environment;
pub(super) mod grafana;
mod health;
mod health_routes;
pub(super) mod hosts;
pub(super) mod influxdb;
pub(super) mod keypairs;
pub(super) mod networks;
pub(super) mod object_storage;
mod runtime;
mod scenario_repository;
mod scenarios;
mod schedule;

use std::collections::BTreeMap;

use super::error::{Diagnostic, Diagnostics, Location};
use super::load::{Document, RawRepository};
use super::sections::RawInventory;
use super::{raw, DesiredState, SecretUse, TemplateOverride};
use checks::{is_dns_label, is_secret_name, names_list};
pub use health::check_file as check_health_file;
pub use scenario_repository::check_spec as check_scenario_repository;

/// What a section's check (`model::sections`) sees: the diagnostics so
/// far, apimon.yaml and the environment's part of it, the inventory.
pub(super) struct SectionCheck<'a> {
    check: &'a mut Check,
    root: &'a Document<raw::Root>,
    env_name: &'a str,
    env: &'a raw::Environment,
    inventory: &'a RawInventory,
    /// Host names of the environments checked before (server names share one cloud project).
    all_hosts: &'a mut BTreeMap<String, Location>,
}

/// Collects diagnostics.
#[derive(Default)]
pub(super) struct Check {
    problems: Vec<Diagnostic>,
    secret_uses: Vec<SecretUse>,
    /// The environment being checked, recorded with each secret use.
    current_env: Option<String>,
}

impl Check {
    fn error<T>(&mut self, doc: &Document<T>, path: &str, message: impl Into<String>) {
        self.problems.push(Diagnostic::new(doc.at(path), path, message));
    }

    /// Records a secret use; `must_be_secret` rejects an inline value.
    fn secret<T>(
        &mut self,
        doc: &Document<T>,
        path: &str,
        value: &raw::MaybeSecret,
        must_be_secret: bool,
    ) {
        match value {
            raw::MaybeSecret::Secret(name) => {
                if !is_secret_name(name) {
                    self.error(doc, path, format!("invalid secret name `{name}`; expected lowercase letters, digits and `_`"));
                }
                self.secret_uses.push(SecretUse {
                    name: name.clone(),
                    env: self.current_env.clone(),
                    location: doc.at(path),
                    path: path.to_owned(),
                });
            }
            raw::MaybeSecret::Plain(_) if must_be_secret => self.error(
                doc,
                path,
                "a credential must not be written in the repository; expected `{secret: NAME}`",
            ),
            raw::MaybeSecret::Plain(_) => {}
        }
    }

    /// The duration `text` at `path` (`30s`, `5m`, `2h`, `14d`), `default`
    /// when absent; a bad one is reported (with `example`) and the default
    /// stands in, so checking goes on.
    fn duration<T>(
        &mut self,
        doc: &Document<T>,
        path: &str,
        text: Option<&str>,
        default: std::time::Duration,
        example: &str,
    ) -> std::time::Duration {
        let Some(text) = text else { return default };
        checks::parse_timeout(text).unwrap_or_else(|| {
            self.error(doc, path, format!("invalid duration `{text}`; expected a whole number of seconds, minutes, hours or days like {example}"));
            default
        })
    }

    /// Reports names seen twice in `items` (name, key path).
    fn unique<'a, T>(
        &mut self,
        doc: &Document<T>,
        what: &str,
        items: impl IntoIterator<Item = (&'a str, String)>,
    ) {
        let mut seen: BTreeMap<&str, String> = BTreeMap::new();
        for (name, path) in items {
            if let Some(first) = seen.get(name) {
                let first = doc.at(first);
                self.error(
                    doc,
                    &path,
                    format!("duplicate {what} `{name}`; first declared at {first}"),
                );
            } else {
                seen.insert(name, path);
            }
        }
    }
}

/// Turns a parsed repository into a [`DesiredState`], or every problem in it.
///
/// # Errors
/// All diagnostics found, sorted by file and position.
pub fn validate(repo: RawRepository) -> Result<DesiredState, Diagnostics> {
    let mut check = Check::default();
    check_project(&mut check, &repo);
    // Host names are unique across environments: they are server names in one cloud project.
    let mut all_hosts: BTreeMap<String, Location> = BTreeMap::new();
    let mut environments = BTreeMap::new();
    for (env_name, env) in &repo.root.value.environments {
        let env_path = format!("environments.{env_name}");
        if !is_dns_label(env_name) {
            check.error(&repo.root, &env_path, format!("invalid environment name `{env_name}`; expected lowercase letters, digits and `-`"));
        }
        let Some(inventory) = repo.inventories.get(env_name) else {
            check.error(&repo.root, &env_path, format!("environment `{env_name}` has no inventory; expected a directory inventory/{env_name}/"));
            continue;
        };
        check.current_env = Some(env_name.clone());
        let environment =
            environment::check(&mut check, &repo.root, env_name, env, inventory, &mut all_hosts);
        environments.insert(env_name.clone(), environment);
        check.current_env = None;
    }
    // Datasources may read another environment's InfluxDB: checked once all are known.
    let datasources: Vec<_> = repo
        .inventories
        .iter()
        .filter(|(name, _)| environments.contains_key(*name))
        .map(|(name, inventory)| {
            let list = grafana::check_datasources(
                &mut check,
                inventory,
                name,
                &environments,
                &repo.root.value.environments,
            );
            (name.clone(), list)
        })
        .collect();
    for (name, list) in datasources {
        if let Some(environment) = environments.get_mut(&name) {
            environment.grafana.datasources = list;
        }
    }
    let mut scenarios = scenarios::check(&mut check, &repo);
    let scenario_repository = scenario_repository::discover(&mut check, &repo, &mut scenarios);
    schedule::check(&mut check, &repo, &scenarios, &mut environments);
    check_sweeper_ages(&mut check, &repo.root, &environments, &scenarios);
    let dashboards = dashboards::check(&mut check, &repo, &environments);
    let runtime = runtime::check(&mut check, &repo);
    let apt_repositories = apt::check(&mut check, &repo);
    let apimon_binary = check_apimon_binary(&mut check, &repo.root);
    let environment_names: std::collections::BTreeSet<&str> =
        repo.root.value.environments.keys().map(String::as_str).collect();
    let health = health::check(&mut check, &repo.health, &environment_names);
    for (env, host) in health.iter().flat_map(|h| &h.hosts) {
        let path = format!("hosts.{env}");
        match environments.get(env) {
            None => check.error(
                &repo.health,
                &path,
                format!(
                    "unknown environment `{env}`; {}",
                    checks::names_list(environment_names.iter().copied())
                ),
            ),
            Some(environment) if !environment.hosts.iter().any(|h| h.name == *host) => {
                let names = checks::names_list(environment.hosts.iter().map(|h| h.name.as_str()));
                check.error(
                    &repo.health,
                    &path,
                    format!("`{host}` is no host of environment `{env}`; {names}"),
                );
            }
            Some(_) => {}
        }
    }
    let templates = repo
        .templates
        .iter()
        .map(|(name, t)| {
            (name.clone(), TemplateOverride { file: t.file.clone(), text: t.text.clone() })
        })
        .collect();
    if !check.problems.is_empty() {
        return Err(Diagnostics::normalized(check.problems));
    }
    check.secret_uses.sort();
    Ok(DesiredState {
        project: repo.root.value.project.clone(),
        environments,
        scenarios,
        scenario_files: repo.scenario_files,
        dashboards,
        templates,
        runtime,
        apt_repositories,
        scenario_repository,
        secret_uses: check.secret_uses,
        apimon_binary,
        health_text: health.as_ref().and(repo.health_text.clone()),
        health,
    })
}

/// A sweeper's `age` outlasts every run that may still be going in its
/// cloud (the longest timeout of a scenario scheduled there, plus its
/// cleanup's): what a run made is never swept while it runs, even in
/// project mode, where names do not say whose it is.
fn check_sweeper_ages(
    check: &mut Check,
    root: &Document<raw::Root>,
    environments: &BTreeMap<String, super::Environment>,
    scenarios: &BTreeMap<String, super::Scenario>,
) {
    for (env_name, environment) in environments {
        for (cloud, sweeper) in &environment.sweepers {
            let longest = environment
                .schedule
                .iter()
                .filter_map(|s| scenarios.get(&s.scenario))
                .filter_map(|s| match &s.runner {
                    super::Runner::Ansible { cloud: Some(c), cleanup, .. } if c == cloud => Some(
                        s.timeout
                            + cleanup.as_ref().map_or(std::time::Duration::ZERO, |c| c.timeout),
                    ),
                    _ => None,
                })
                .max();
            if let Some(longest) = longest.filter(|l| sweeper.age <= *l) {
                let path = format!("environments.{env_name}.monitored_clouds.{cloud}.sweeper.age");
                check.error(root, &path, format!("{} s is not longer than the longest run in this cloud ({} s with its cleanup); a running run's resources would be swept", sweeper.age.as_secs(), longest.as_secs()));
            }
        }
    }
}

/// `apimon_binary`: an http(s) URL and a sha256 (64 hex digits).
fn check_apimon_binary(check: &mut Check, root: &Document<raw::Root>) -> Option<raw::ApimonBinary> {
    let binary = root.value.apimon_binary.as_ref()?;
    if !checks::is_http_url(&binary.url) {
        check.error(
            root,
            "apimon_binary.url",
            format!("invalid URL `{}`; expected http:// or https://", binary.url),
        );
    }
    if binary.sha256.len() != 64 || !binary.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        check.error(root, "apimon_binary.sha256", "expected the file's sha256: 64 hex digits");
    }
    if let Some(url) = binary.signature_url.as_ref().filter(|u| !checks::is_http_url(u)) {
        check.error(
            root,
            "apimon_binary.signature_url",
            format!("invalid URL `{url}`; expected http:// or https://"),
        );
    }
    Some(raw::ApimonBinary {
        url: binary.url.clone(),
        sha256: binary.sha256.to_ascii_lowercase(),
        signature_url: binary.signature_url.clone(),
    })
}

/// apimon.yaml's project-wide rules: the project name, at least one
/// environment, no inventory without an environment. (One environment
/// outside and one inside the monitored cloud is advice, not a rule: a
/// single deployment is a valid platform.)
fn check_project(check: &mut Check, repo: &RawRepository) {
    let root = &repo.root;
    if !is_dns_label(&root.value.project) {
        check.error(
            root,
            "project",
            format!(
                "invalid project name `{}`; expected lowercase letters, digits and `-`",
                root.value.project
            ),
        );
    }
    if root.value.environments.is_empty() {
        check.error(root, "environments", "no environments; expected at least one");
    }
    for name in repo.inventories.keys() {
        if !root.value.environments.contains_key(name) {
            check.problems.push(Diagnostic::new(
                Location::file(format!("inventory/{name}")),
                "",
                format!(
                    "directory for unknown environment `{name}`; {}",
                    names_list(root.value.environments.keys().map(String::as_str))
                ),
            ));
        }
    }
}
