//! Hosts over SSH: the files each role needs and the systemd units that
//! must run, with the restarts a file change triggers.
//!
//! The pure part. File content never appears in a plan (it may hold
//! secrets): files compare by sha256, mode and owner.

use serde::Serialize;

use crate::model::{Environment, Sensitive};
use crate::plan::{Comparison, DesiredItem, DesiredSet, ProviderKind, ResourceId, Spec};
use crate::render::Rendered;

use super::openstack;

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
        content: Sensitive<Vec<u8>>,
    },
    /// A systemd unit, enabled and running.
    Unit {
        /// Host name.
        host: String,
        /// Unit name without `.service`.
        unit: String,
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
            (HostSpec::Unit { .. }, HostSpec::Unit { .. }) => Comparison::Same,
            _ => Comparison::Replace("resource kind changed".to_owned()),
        }
    }
}

fn id(env: &str, kind: &str, name: impl Into<String>) -> ResourceId {
    ResourceId::new(env, ProviderKind::Host, kind, name)
}

/// What the environment's hosts need: rendered files and running units.
pub fn desired(env: &Environment, rendered: &Rendered) -> DesiredSet<HostSpec> {
    let mut set = DesiredSet::new();
    for host in rendered.hosts.values().filter(|h| h.env == env.name) {
        let server = openstack::server_id(&env.name, &host.host);
        let mut file_ids = Vec::new();
        for file in &host.files {
            let file_id = id(&env.name, "file", format!("{}:{}", host.host, file.path));
            let spec = HostSpec::File {
                host: host.host.clone(),
                path: file.path.clone(),
                sha256: file.sha256.clone(),
                mode: file.mode,
                owner: file.owner.clone(),
                group: file.group.clone(),
                restarts: file.restarts.clone(),
                template: file.template.clone(),
                content: file.content.clone(),
            };
            file_ids.push((file_id.clone(), file.restarts.clone()));
            set.insert(file_id, DesiredItem { spec, depends_on: vec![server.clone()] });
        }
        for unit in &host.units {
            let mut depends_on = vec![server.clone()];
            depends_on.extend(
                file_ids
                    .iter()
                    .filter(|(_, restarts)| restarts.contains(unit))
                    .map(|(id, _)| id.clone()),
            );
            set.insert(
                id(&env.name, "unit", format!("{}:{unit}", host.host)),
                DesiredItem {
                    spec: HostSpec::Unit { host: host.host.clone(), unit: unit.clone() },
                    depends_on,
                },
            );
        }
    }
    set
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
            content: Sensitive::new(vec![]),
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
}
