//! What a commit may not decide alone: the changes between the desired
//! state in force and a new one that widen apimon's own authority — where
//! a credential is sent, what runs as root on the hosts, which secrets an
//! environment reads. The daemon holds a commit with any of them until an
//! operator approves it with the approval token; a plan shows them as
//! "needs approval". Pure: two desired states in, a list out.
//!
//! - a URL that receives a credential changes scheme or host, or appears
//!   (InfluxDB, Grafana, each monitored cloud's Keystone, the daemon's and
//!   the scenario repository);
//! - the release pin (`apimon_binary`) changes;
//! - a template override is added or changed (units, cloud-init, daemon,
//!   telegraf and clouds files all run code or carry credentials);
//! - apt repositories or their keys, `runtime.index_url`, or the SSH
//!   package commands change;
//! - a field names a secret that was used before, but only elsewhere (in
//!   another environment or for another kind of endpoint);
//! - the daemon would run on another host (its `runs_on`: what it never
//!   destroys under itself);
//! - a sweeper may run in a project that holds apimon's own platform
//!   (`sweeper.platform_project` turned on);
//! - job logs become readable by anyone (`logs.public` turned on).

pub(crate) mod pins;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

pub use pins::{check_pins, check_transport};

use super::{DesiredState, Environment, SecretUse};

/// One authority-widening change, by the key path it is at.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Widening {
    /// Where (`environments.outside.influxdb.url`).
    pub path: String,
    /// What changed (`http://127.0.0.1 → http://127.0.0.2`).
    pub change: String,
}

impl fmt::Display for Widening {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.change)
    }
}

/// The widening changes from `old` to `new` for the environments `envs`
/// (and the project-wide settings), sorted.
pub fn widenings(old: &DesiredState, new: &DesiredState, envs: &[String]) -> Vec<Widening> {
    let mut found = Vec::new();
    let mut add = |path: String, change: String| found.push(Widening { path, change });
    for name in envs {
        let Some(now) = new.environments.get(name) else { continue };
        let was = old.environments.get(name);
        for (path, was_url, now_url) in credential_urls(name, was, now) {
            if let Some(change) = moved(was_url.as_deref(), Some(&now_url)) {
                add(path, change);
            }
        }
        // The host the daemon runs on decides what it never destroys under
        // itself (`runs_on` in its daemon.yaml).
        let daemon_host = |e: &Environment| e.daemon_host().map(|h| h.name.clone());
        if let (Some(was), Some(now)) = (was.and_then(daemon_host), daemon_host(now)) {
            if was != now {
                add(format!("environments.{name}.daemon"), format!("runs on {was} → {now}"));
            }
        }
        // Job logs readable by anyone.
        let public =
            |e: Option<&Environment>| e.and_then(|e| e.logs.as_ref()).is_some_and(|l| l.public);
        if public(Some(now)) && !public(was) {
            add(format!("environments.{name}.logs.public"), "false → true".to_owned());
        }
        // A sweeper let loose on a project that holds the platform itself.
        for (cloud, sweeper) in &now.sweepers {
            let was_allowed =
                was.and_then(|w| w.sweepers.get(cloud)).is_some_and(|s| s.platform_project);
            if sweeper.platform_project && !was_allowed {
                add(
                    format!(
                        "environments.{name}.monitored_clouds.{cloud}.sweeper.platform_project"
                    ),
                    "false → true".to_owned(),
                );
            }
        }
        let commands = |e: Option<&Environment>| {
            e.and_then(|e| e.ssh.as_ref())
                .map(|s| (s.package_check.clone(), s.package_install.clone()))
        };
        if let (Some((check_now, install_now)), was) = (commands(Some(now)), commands(was)) {
            let (check_was, install_was) = was.unwrap_or_default();
            for (key, was, now) in [
                ("package_check", check_was, check_now),
                ("package_install", install_was, install_now),
            ] {
                if was != now {
                    add(format!("environments.{name}.ssh.{key}"), format!("`{was}` → `{now}`"));
                }
            }
        }
    }
    let url = |r: &Option<super::ScenarioRepository>| r.as_ref().map(|r| r.url.clone());
    if let Some(change) =
        moved(url(&old.scenario_repository).as_deref(), url(&new.scenario_repository).as_deref())
    {
        add("scenario_repository.url".to_owned(), change);
    }
    if new.apimon_binary.is_some() && old.apimon_binary != new.apimon_binary {
        let pin = |b: &Option<super::raw::ApimonBinary>| {
            b.as_ref()
                .map_or("the applying apimon".to_owned(), |b| format!("{} ({})", b.url, b.sha256))
        };
        add(
            "apimon_binary".to_owned(),
            format!("{} → {}", pin(&old.apimon_binary), pin(&new.apimon_binary)),
        );
    }
    for (name, template) in &new.templates {
        if old.templates.get(name).is_none_or(|t| t.text != template.text) {
            add(format!("templates/{name}"), "overridden anew".to_owned());
        }
    }
    let index = |s: &DesiredState| s.runtime.as_ref().and_then(|r| r.index_url.clone());
    if index(new).is_some() && index(old) != index(new) {
        add("runtime.index_url".to_owned(), format!("{:?} → {:?}", index(old), index(new)));
    }
    // The interpreter runs as root on the executors when the runtime is made.
    let interpreter = |s: &DesiredState| s.runtime.as_ref().map(|r| r.interpreter.clone());
    let default = Some(crate::model::DEFAULT_INTERPRETER.to_owned());
    if interpreter(new).is_some_and(|i| Some(&i) != default.as_ref())
        && interpreter(old) != interpreter(new)
    {
        add(
            "runtime.interpreter".to_owned(),
            format!("{:?} → {:?}", interpreter(old), interpreter(new)),
        );
    }
    let apt: BTreeMap<&str, _> =
        old.apt_repositories.iter().map(|r| (r.name.as_str(), (&r.sources, &r.key))).collect();
    for repository in &new.apt_repositories {
        if apt.get(repository.name.as_str()) != Some(&(&repository.sources, &repository.key)) {
            add(format!("apt_repositories.{}", repository.name), "source or key new".to_owned());
        }
    }
    for (path, change) in secrets_newly_used_elsewhere(old, new, envs) {
        add(path, change);
    }
    found.sort();
    found.dedup();
    found
}

/// What a rendered daemon.yaml may not decide, because the trust store and
/// the daemon's self-protection are the operator's: every trust-store file
/// named at its place, no signature setting of its own (which would stand
/// in for the installed signers), `runs_on` the host it is rendered for,
/// no `allow_deletes`. Each problem in words; a commit (a template
/// override) that breaks one is refused, because changing these takes
/// `apimon bootstrap`.
pub fn daemon_file_problems(raw: &super::daemon::RawConfig, runs_on: &str) -> Vec<String> {
    use crate::layout::{
        ALLOWED_SIGNERS_PATH, APPROVAL_TOKEN_PATH, RELEASE_KEY_PATH, SCENARIO_SIGNERS_PATH,
    };
    let mut problems = Vec::new();
    let anchors = [
        ("approval_token_file", &raw.approval_token_file, APPROVAL_TOKEN_PATH),
        ("allowed_signers_file", &raw.allowed_signers_file, ALLOWED_SIGNERS_PATH),
        (
            "scenario_allowed_signers_file",
            &raw.scenario_allowed_signers_file,
            SCENARIO_SIGNERS_PATH,
        ),
        ("release_key_file", &raw.release_key_file, RELEASE_KEY_PATH),
    ];
    for (key, value, expected) in anchors {
        if value.as_deref() != Some(std::path::Path::new(expected)) {
            problems.push(format!("`{key}` must be {expected} (the trust store)"));
        }
    }
    if raw.repository.ssh_allowed_signers.is_some() || raw.repository.gnupg_home.is_some() {
        problems.push("`repository.ssh_allowed_signers`/`gnupg_home` must not be set (the trust store's signers decide)".to_owned());
    }
    if raw.runs_on.as_deref() != Some(runs_on) {
        problems.push(format!("`runs_on` must be {runs_on} (the host it is rendered for)"));
    }
    if raw.allow_deletes {
        problems.push("`allow_deletes` must be false".to_owned());
    }
    problems
}

/// While scenario signatures are required (the trust store's scenario
/// signers), any change of the scenario repository's URL: the signers
/// vouch for the commits of one repository, and another one — even on
/// the same host — may carry commits they signed for something else.
pub fn scenario_repository_moved(old: &DesiredState, new: &DesiredState) -> Option<Widening> {
    let url = |s: &DesiredState| s.scenario_repository.as_ref().map(|r| r.url.clone());
    let (was, now) = (url(old), url(new)?);
    (was.as_ref() != Some(&now)).then(|| Widening {
        path: "scenario_repository.url".to_owned(),
        change: format!(
            "{} → {} (scenario signatures are required)",
            was.as_deref().map_or_else(|| "none".to_owned(), crate::url::redact_url),
            crate::url::redact_url(&now)
        ),
    })
}

/// Each URL of `now` that receives a credential, with the URL the same
/// key had in `was`.
fn credential_urls(
    name: &str,
    was: Option<&Environment>,
    now: &Environment,
) -> Vec<(String, Option<String>, String)> {
    let prefix = format!("environments.{name}");
    let mut urls = vec![(
        format!("{prefix}.influxdb.url"),
        was.map(|e| e.influxdb_endpoint.url.clone()),
        now.influxdb_endpoint.url.clone(),
    )];
    if let Some(grafana) = &now.grafana_endpoint {
        let before = was.and_then(|e| e.grafana_endpoint.as_ref()).map(|g| g.url.clone());
        urls.push((format!("{prefix}.grafana.url"), before, grafana.url.clone()));
    }
    for (cloud, monitored) in &now.monitored_clouds {
        let before = was.and_then(|e| e.monitored_clouds.get(cloud)).map(|c| c.auth_url.clone());
        let path = format!("{prefix}.monitored_clouds.{cloud}.auth_url");
        urls.push((path, before, monitored.auth_url.clone()));
    }
    if let Some(daemon) = &now.daemon {
        let before = was.and_then(|e| e.daemon.as_ref()).map(|d| d.repository.url.clone());
        urls.push((
            format!("{prefix}.daemon.repository.url"),
            before,
            daemon.repository.url.clone(),
        ));
    }
    urls
}

/// Where a credential sent to `url` goes: its scheme and host.
fn destination(url: &str) -> (String, String) {
    let scheme = url.split_once("://").map_or("", |(s, _)| s).to_ascii_lowercase();
    let host = crate::url::authority(url).map(|a| a.host.to_ascii_lowercase()).unwrap_or_default();
    (scheme, host)
}

/// How the destination moved from `was` to `now`, if it did (a URL that
/// appears moves from nowhere).
fn moved(was: Option<&str>, now: Option<&str>) -> Option<String> {
    let now = now?;
    let shown = |url: &str| {
        let (scheme, host) = destination(url);
        format!("{scheme}://{host}")
    };
    match was {
        Some(was) if destination(was) == destination(now) => None,
        Some(was) => Some(format!("{} → {}", shown(was), shown(now))),
        None => Some(format!("new, {}", shown(now))),
    }
}

/// Where a secret is used, as far as trust goes: the environment, the
/// file and the key path without list indices.
fn use_kind(secret_use: &SecretUse) -> (Option<String>, String) {
    let mut path = String::new();
    let mut in_index = false;
    for c in secret_use.path.chars() {
        match c {
            '[' => in_index = true,
            ']' => in_index = false,
            c if !in_index => path.push(c),
            _ => {}
        }
    }
    (secret_use.env.clone(), format!("{}:{path}", secret_use.location.file.display()))
}

/// Uses in `new` of a secret `old` used, but never at such a place.
fn secrets_newly_used_elsewhere(
    old: &DesiredState,
    new: &DesiredState,
    envs: &[String],
) -> Vec<(String, String)> {
    let mut before: BTreeMap<&str, BTreeSet<(Option<String>, String)>> = BTreeMap::new();
    for secret_use in &old.secret_uses {
        before.entry(&secret_use.name).or_default().insert(use_kind(secret_use));
    }
    let relevant = |u: &&SecretUse| u.env.as_ref().is_none_or(|e| envs.contains(e));
    new.secret_uses
        .iter()
        .filter(relevant)
        .filter_map(|u| {
            let places = before.get(u.name.as_str())?;
            let kind = use_kind(u);
            (!places.contains(&kind)).then(|| {
                let elsewhere: Vec<String> = places
                    .iter()
                    .map(|(env, at)| {
                        format!(
                            "{}{at}",
                            env.as_ref().map(|e| format!("{e}: ")).unwrap_or_default()
                        )
                    })
                    .collect();
                (
                    format!("{}:{}", u.location.file.display(), u.path),
                    format!(
                        "names secret `{}`, used before only at {}",
                        u.name,
                        elsewhere.join(", ")
                    ),
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;
