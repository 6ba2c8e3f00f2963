//! What the host provider manages, as specs: files, units, packages,
//! accounts, apt repositories and the scenario runtime, and how a desired
//! one compares with what was observed.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

use crate::model::Sensitive;
use crate::plan::{Comparison, Spec};

/// What a file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// Rendered or copied bytes; may hold secrets.
    Bytes(Sensitive<Vec<u8>>),
    /// A file on the applying machine, read at upload (the apimon binary).
    Local(PathBuf),
    /// Downloaded at upload from `url` and checked against the spec's
    /// sha256, and (with a release key) against the signature at
    /// `signature_url` (a pinned apimon release).
    Remote {
        /// The release.
        url: String,
        /// Its SSH signature.
        signature_url: Option<String>,
    },
    /// The availability zone of server `0`, asked of the cloud when the
    /// file is written (its server created or replaced, or the file
    /// missing); empty when the cloud cannot be asked from here. The
    /// spec's `sha256` is empty: any content is as declared.
    Zone(String),
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
        /// Active. In a desired unit, `false` means apimon enables it but
        /// never starts or restarts it: the daemon's own unit (bootstrap
        /// starts it; it restarts itself).
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
        /// The Python the environment is made with.
        interpreter: String,
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
                // Empty: content only known when written (Content::Zone).
                if !sha256.is_empty() && sha256 != s {
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
                HostSpec::Unit { restart_token, running: managed, .. },
                HostSpec::Unit { enabled, running, restart_token: have, .. },
            ) => {
                let mut reasons = Vec::new();
                if !enabled {
                    reasons.push("not enabled".to_owned());
                }
                if *managed && !running {
                    reasons.push("not running".to_owned());
                }
                if restart_token != have && *enabled {
                    if !managed {
                        reasons.push("reload: its unit file changed".to_owned());
                    } else if *running {
                        reasons.push("restart: a file it depends on changed".to_owned());
                    }
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
    fn a_file_known_only_when_written_compares_by_presence_mode_and_owner() {
        assert_eq!(file("", 0o644).compare(&file("e3b0c442", 0o644)), Comparison::Same);
        assert_eq!(
            file("", 0o644).compare(&file("e3b0c442", 0o600)),
            Comparison::Update(vec!["mode 0600 → 0644".into()])
        );
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

    #[test]
    fn a_unit_apimon_does_not_run_is_only_enabled_and_reloaded() {
        assert_eq!(unit(true, false, "t1").compare(&unit(true, false, "t1")), Comparison::Same);
        assert_eq!(unit(true, false, "t1").compare(&unit(true, true, "t1")), Comparison::Same);
        assert_eq!(
            unit(true, false, "t2").compare(&unit(true, true, "t1")),
            Comparison::Update(vec!["reload: its unit file changed".into()])
        );
        assert_eq!(
            unit(true, false, "t1").compare(&unit(false, false, "")),
            Comparison::Update(vec!["not enabled".into()])
        );
    }
}
