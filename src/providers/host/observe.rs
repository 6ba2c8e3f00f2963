//! Reading a host: one command per host reports, for every managed file,
//! its sha256, mode and owner; for every unit whether it is enabled and
//! active; for every package whether it is installed; for every account
//! whether it exists; and which scenario runtime is in service.

use std::fmt::Write as _;

use crate::model::Sensitive;
use crate::plan::{ObservedItem, ObservedSet};
use crate::providers::Scope;

use super::ssh::quote;
use super::{
    account_id, apt_repository_id, file_id, package_id, runtime_id, unit_id, Content, HostError,
    HostProvider, HostSpec, Managed,
};

/// Most bytes of an executor's report read.
const MAX_REPORT: usize = 64 * 1024;
/// Most scenarios of a report kept, and characters of each complaint.
const MAX_REPORT_ITEMS: usize = 200;
const MAX_REPORT_CHARS: usize = 500;

/// An executor's syntax-check report (`scenario → complaint`, JSON), as a
/// finding when it names any; a report that is not one is said so.
fn unloadable(host: &str, json: &str) -> Option<crate::providers::Finding> {
    let items: std::collections::BTreeMap<String, String> = match serde_json::from_str(json) {
        Ok(items) => items,
        Err(error) => std::collections::BTreeMap::from([(
            crate::layout::UNLOADABLE_REPORT.to_owned(),
            format!("unreadable report: {error}"),
        )]),
    };
    let items: std::collections::BTreeMap<String, String> = items
        .into_iter()
        .take(MAX_REPORT_ITEMS)
        .map(|(scenario, complaint)| {
            let clip = |s: String| s.chars().take(MAX_REPORT_CHARS).collect::<String>();
            (clip(scenario), clip(complaint))
        })
        .collect();
    (!items.is_empty()).then(|| crate::providers::Finding {
        subject: host.to_owned(),
        summary: "scheduled playbooks its runtime cannot load (ansible-playbook --syntax-check)"
            .to_owned(),
        items,
    })
}

/// The shell script that reports on `managed`, one tab-separated line per item.
fn script(provider: &HostProvider, managed: &Managed) -> String {
    let root = provider.settings.root.to_string_lossy();
    let root = if root == "/" { String::new() } else { root.trim_end_matches('/').to_owned() };
    let check = provider.settings.package_check.replace("{package}", "\"$1\"");
    let manager = &provider.settings.service_manager;
    let mut script = format!(
        "R={}\n\
         f() {{ p=\"$R$1\"; if [ -f \"$p\" ]; then printf 'F\\t%s\\t%s\\t%s\\n' \"$1\" \"$(sha256sum < \"$p\" | cut -d' ' -f1)\" \"$(stat -c '%a %U %G' \"$p\")\"; else printf 'M\\t%s\\n' \"$1\"; fi; }}\n\
         u() {{ e=$({manager} is-enabled \"$1\" 2>/dev/null); a=$({manager} is-active \"$1\" 2>/dev/null); printf 'U\\t%s\\t%s\\t%s\\n' \"$1\" \"$e\" \"$a\"; }}\n\
         p() {{ if {check}; then printf 'P\\t%s\\tyes\\n' \"$1\"; else printf 'P\\t%s\\tno\\n' \"$1\"; fi; }}\n\
         a() {{ if getent passwd \"$1\" >/dev/null 2>&1; then printf 'A\\t%s\\n' \"$1\"; fi; }}\n\
         x() {{ if [ -f \"$R$1\" ] && [ ! -L \"$R$1\" ]; then printf 'X\\t%s\\n' \"$(dd if=\"$R$1\" iflag=nofollow,nonblock bs={MAX_REPORT} count=1 2>/dev/null | tr -d '\\n\\t\\r')\"; fi; }}\n\
         k() {{ if [ -f \"$R$2\" ] && [ -f \"$R$3\" ]; then printf 'K\\t%s\\t%s\\t%s\\t%s\\n' \"$1\" \"$2\" \"$3\" \"$(cat \"$R$2\" \"$R$3\" | sha256sum | cut -d' ' -f1)\"; fi; }}\n",
        quote(&root)
    );
    script.push_str(&super::runtime::observe_function(provider));
    for path in &managed.paths {
        let _ = writeln!(script, "f {}", quote(path));
    }
    for unit in &managed.units {
        let _ = writeln!(script, "u {}", quote(unit));
    }
    for package in &managed.packages {
        let _ = writeln!(script, "p {}", quote(package));
    }
    for account in &managed.accounts {
        let _ = writeln!(script, "a {}", quote(account));
    }
    for (name, keyring, sources) in &managed.repositories {
        let _ = writeln!(script, "k {} {} {}", quote(name), quote(keyring), quote(sources));
    }
    if managed.runtime {
        script.push_str("r\n");
    }
    if managed.executor {
        let _ = writeln!(script, "x {}", quote(crate::layout::UNLOADABLE_REPORT));
    }
    script
}

pub(super) async fn observe(
    provider: &HostProvider,
    scope: &Scope,
) -> Result<ObservedSet<HostSpec>, HostError> {
    let env = provider.env.as_str();
    let mut observed = ObservedSet::new();
    // Files apimon created that are no longer declared are read too, so
    // that they can be pruned.
    let mut managed_now = provider.managed.clone();
    let owned_files =
        scope.owned.iter().filter(|id| id.provider == super::KIND && id.kind == "file");
    for id in owned_files {
        let Some((host, path)) = id.name.split_once(':') else { continue };
        if !provider.hosts.contains_key(host) {
            continue;
        }
        let entry = managed_now.entry(host.to_owned()).or_default();
        if !entry.paths.iter().any(|p| p == path) {
            entry.paths.push(path.to_owned());
        }
    }
    // So are apt repositories apimon added that are no longer declared.
    let owned_repositories =
        scope.owned.iter().filter(|id| id.provider == super::KIND && id.kind == "apt_repository");
    for id in owned_repositories {
        let Some((host, name)) = id.name.split_once(':') else { continue };
        if !provider.hosts.contains_key(host) {
            continue;
        }
        let entry = managed_now.entry(host.to_owned()).or_default();
        if !entry.repositories.iter().any(|(n, ..)| n == name) {
            for extension in ["asc", "gpg"] {
                entry.repositories.push((
                    name.to_owned(),
                    format!("/etc/apt/keyrings/apimon-{name}.{extension}"),
                    super::sources_path(name),
                ));
            }
        }
    }
    let mut findings = Vec::new();
    for (host, managed) in &managed_now {
        let read = provider
            .run(host, "reading files, units and packages", &script(provider, managed), None)
            .await;
        let output = match read {
            Ok(output) => output,
            Err(error) if provider.not_there_yet(host, &error).await => {
                tracing::info!(host = %host, reason = %crate::error::chain(&error), "Nothing to read on the host: its server is not there yet.");
                continue;
            }
            Err(error) => return Err(error),
        };
        let text = String::from_utf8_lossy(&output);
        for line in text.lines() {
            let fields: Vec<&str> = line.split('\t').collect();
            match fields.as_slice() {
                ["F", path, sha256, stat] => {
                    let mut parts = stat.split(' ');
                    let mode =
                        parts.next().and_then(|m| u32::from_str_radix(m, 8).ok()).unwrap_or(0);
                    let owner = parts.next().unwrap_or_default().to_owned();
                    let group = parts.next().unwrap_or_default().to_owned();
                    let spec = HostSpec::File {
                        host: host.clone(),
                        path: (*path).to_owned(),
                        sha256: (*sha256).to_owned(),
                        mode,
                        owner,
                        group,
                        restarts: Vec::new(),
                        template: None,
                        content: Content::Bytes(Sensitive::default()),
                    };
                    observed.insert(
                        file_id(env, host, path),
                        ObservedItem { spec, owned: false, depends_on: vec![] },
                    );
                }
                ["U", unit, enabled, active] => {
                    let id = unit_id(env, host, unit);
                    let restart_token =
                        scope.fingerprints.get(&id.to_string()).cloned().unwrap_or_default();
                    let spec = HostSpec::Unit {
                        host: host.clone(),
                        unit: (*unit).to_owned(),
                        enabled: *enabled == "enabled",
                        running: *active == "active",
                        restart_token,
                    };
                    observed.insert(id, ObservedItem { spec, owned: false, depends_on: vec![] });
                }
                ["P", package, "yes"] => {
                    let spec =
                        HostSpec::Package { host: host.clone(), package: (*package).to_owned() };
                    observed.insert(
                        package_id(env, host, package),
                        ObservedItem { spec, owned: false, depends_on: vec![] },
                    );
                }
                ["A", name] => {
                    let spec = HostSpec::Account {
                        host: host.clone(),
                        name: (*name).to_owned(),
                        home: String::new(),
                    };
                    observed.insert(
                        account_id(env, host, name),
                        ObservedItem { spec, owned: false, depends_on: vec![] },
                    );
                }
                ["K", name, keyring, sources, sha256] => {
                    let spec = HostSpec::AptRepository {
                        host: host.clone(),
                        name: (*name).to_owned(),
                        keyring: (*keyring).to_owned(),
                        sources_path: (*sources).to_owned(),
                        sha256: (*sha256).to_owned(),
                        content: None,
                    };
                    observed.insert(
                        apt_repository_id(env, host, name),
                        ObservedItem { spec, owned: false, depends_on: vec![] },
                    );
                }
                ["X", report] => findings.extend(unloadable(host, report)),
                ["R", id] if *id != "-" => {
                    let spec = HostSpec::Runtime {
                        host: host.clone(),
                        id: (*id).to_owned(),
                        python: Vec::new(),
                        collections: Vec::new(),
                        index_url: None,
                        interpreter: String::new(),
                        archives: Vec::new(),
                    };
                    observed.insert(
                        runtime_id(env, host),
                        ObservedItem { spec, owned: false, depends_on: vec![] },
                    );
                }
                _ => {}
            }
        }
    }
    if let Ok(mut found) = provider.findings.lock() {
        *found = Some(findings);
    }
    Ok(observed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_executors_report_is_a_finding_only_when_it_names_a_playbook() {
        assert_eq!(unloadable("e", "{}"), None);
        let found = unloadable("e", r#"{"bad": "[ERROR]: couldn't resolve module"}"#);
        let found = found.expect("a finding");
        assert_eq!((found.subject.as_str(), found.items.len()), ("e", 1));
        // Cut short or not JSON: said so, never its content.
        let broken = unloadable("e", r#"{"bad": "secret-looking tex"#).expect("a finding");
        assert!(broken.items.values().all(|v| v.starts_with("unreadable report")), "{broken:?}");
        assert!(!format!("{broken:?}").contains("secret-looking"));
        // Bounded in items and characters.
        let many: std::collections::BTreeMap<String, String> =
            (0..1000).map(|i| (format!("s{i:04}"), "x".repeat(5000))).collect();
        let json = serde_json::to_string(&many).unwrap_or_default();
        let found = unloadable("e", &json).expect("a finding");
        assert_eq!(found.items.len(), MAX_REPORT_ITEMS);
        assert!(found.items.values().all(|v| v.chars().count() == MAX_REPORT_CHARS));
    }
}
