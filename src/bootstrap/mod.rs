//! `apimon bootstrap`: what installs the daemon on an environment's bastion
//! besides the files apimon converges there (daemon.yaml, the unit, the
//! binary, the credentials apimon.yaml names as secrets): the daemon's
//! own machine credentials, copied from the bootstrapping machine — the
//! environment's secrets (only those), its clouds.yaml entry (only that
//! one), the SSH key and known_hosts for the hosts and the git remote —
//! and the state store, handed over. [`bastion`] does it over SSH.

pub mod bastion;
pub mod handover;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::digest::sha256_hex;
use crate::model::{DesiredState, Environment, Secrets, Sensitive};

pub use crate::layout::{
    ALLOWED_SIGNERS_PATH, APPROVAL_TOKEN_PATH, CLOUDS_PATH, KNOWN_HOSTS_PATH, RELEASE_KEY_PATH,
    SCENARIO_SIGNERS_PATH, SECRETS_PATH, SSH_KEY_PATH, STATE_DIR,
};

pub use handover::{hold, holding, mark, release, Held, Holding};

/// How one credential is compared with what the bastion has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merge {
    /// The file must hold exactly this.
    Replace,
    /// The file must hold at least these lines (known_hosts: keys added
    /// on the bastion stay).
    Lines,
}

/// One file of the daemon's machine credentials.
#[derive(Debug, Clone)]
pub struct Credential {
    /// Path on the bastion (under `ssh.root`).
    pub path: &'static str,
    /// Content; never printed.
    pub content: Sensitive<Vec<u8>>,
    /// Permission bits.
    pub mode: u32,
    /// Owner and group.
    pub owner: &'static str,
    /// How it is compared.
    pub merge: Merge,
}

impl Credential {
    /// A file only the daemon's account reads, replaced when it differs.
    pub fn private(path: &'static str, content: Vec<u8>) -> Self {
        Self {
            path,
            content: Sensitive::new(content),
            mode: 0o600,
            owner: "apimon",
            merge: Merge::Replace,
        }
    }

    /// Hex sha256 of the content.
    pub fn sha256(&self) -> String {
        sha256_hex(self.content.expose())
    }

    /// What to write over `existing` (the bastion's file), or `None` when it
    /// holds what it must.
    pub fn update(&self, existing: Option<&[u8]>) -> Option<Vec<u8>> {
        let wanted = self.content.expose();
        match (self.merge, existing) {
            (_, None) => Some(wanted.clone()),
            (Merge::Replace, Some(have)) => (have != wanted.as_slice()).then(|| wanted.clone()),
            (Merge::Lines, Some(have)) => {
                let have = String::from_utf8_lossy(have);
                let present: BTreeSet<&str> = have.lines().map(str::trim).collect();
                let wanted = String::from_utf8_lossy(wanted);
                let missing: Vec<&str> = wanted
                    .lines()
                    .map(str::trim)
                    .filter(|line| !line.is_empty() && !present.contains(line))
                    .collect();
                if missing.is_empty() {
                    return None;
                }
                let mut merged = have.trim_end().to_owned();
                for line in missing {
                    if !merged.is_empty() {
                        merged.push('\n');
                    }
                    merged.push_str(line);
                }
                merged.push('\n');
                Some(merged.into_bytes())
            }
        }
    }
}

/// Where the bootstrapping machine's credentials come from.
#[derive(Debug, Clone)]
pub struct Sources<'a> {
    /// Resolved secrets.
    pub secrets: &'a Secrets,
    /// clouds.yaml; the standard places when `None`.
    pub clouds_file: Option<&'a Path>,
    /// The SSH key the daemon gets.
    pub ssh_key: &'a Path,
    /// known_hosts with the bastion's and the hosts' keys: the lines for
    /// this environment's hosts are copied.
    pub known_hosts: &'a Path,
    /// More known_hosts lines: the git server's key (ssh:// remotes).
    pub git_known_hosts: Option<&'a Path>,
    /// The approval token the daemon takes approvals with.
    pub approval_token: Option<&'a Path>,
    /// The allowed signers whose signed commits the daemon takes.
    pub allowed_signers: Option<&'a Path>,
    /// The release key whose signed releases the daemon installs.
    pub release_key: Option<&'a Path>,
    /// The allowed signers whose signed scenario commits the daemon takes.
    pub scenario_signers: Option<&'a Path>,
}

/// Building the credentials failed.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// A file cannot be read.
    #[error("cannot read {path} for the daemon's {what}")]
    Read {
        /// File.
        path: PathBuf,
        /// What it is for.
        what: &'static str,
        /// Cause.
        #[source]
        source: crate::fsutil::ReadError,
    },
    /// A secret the environment needs is not set.
    #[error("secret `{0}` is not set; the daemon needs it (secrets file or APIMON_SECRET_<NAME>)")]
    MissingSecret(String),
    /// The environment's cloud is in no clouds.yaml.
    #[error(
        "cloud `{cloud}` of environment {env} is in no clouds.yaml; the daemon needs its entry"
    )]
    NoCloud {
        /// Cloud name.
        cloud: String,
        /// Environment.
        env: String,
    },
    /// clouds.yaml cannot be read.
    #[error(transparent)]
    Clouds(#[from] crate::providers::openstack::client::OpenstackError),
    /// A value cannot be written as YAML.
    #[error("cannot write the daemon's {0} as YAML")]
    Yaml(&'static str),
    /// A secret the environment uses is recorded for other environments.
    #[error("secret `{secret}` is recorded in the secrets file for other environments than {env}; its bastion gets only the secrets recorded for it (add {env} to the secret's `environments`)")]
    OtherEnvironment {
        /// The secret.
        secret: String,
        /// The environment bootstrapped.
        env: String,
    },
    /// A secret the daemon needs is pinned to hosts its bastion is not among.
    #[error("secret `{secret}` is pinned to hosts in the secrets file, and the daemon's bastion {bastion} is not one of them; the daemon holds every secret it uses: add {bastion} to its hosts")]
    PinnedElsewhere {
        /// The secret.
        secret: String,
        /// The bastion.
        bastion: String,
    },
    /// The approval token is too short to be one.
    #[error("the approval token in {path} holds {length} characters; it must hold at least {min} (e.g. `openssl rand -hex 32`)")]
    ShortToken {
        /// File.
        path: PathBuf,
        /// Its length.
        length: usize,
        /// The least accepted.
        min: usize,
    },
}

fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, CredentialError> {
    crate::fsutil::read_text_limited(path, crate::fsutil::MAX_CONFIG_BYTES)
        .map(String::into_bytes)
        .map_err(|source| CredentialError::Read { path: path.to_owned(), what, source })
}

/// The secrets `env` needs (its own and the project-wide ones), as a
/// secrets file with what the operator's file records about each (hosts,
/// environments, endpoints): another environment's secret never reaches
/// its bastion, and one recorded for other environments is refused.
///
/// # Errors
/// A needed secret is not set.
pub fn secrets_file(
    state: &DesiredState,
    env: &Environment,
    secrets: &Secrets,
) -> Result<String, CredentialError> {
    let names: BTreeSet<&str> = state
        .secret_uses
        .iter()
        .filter(|use_| use_.env.as_deref().is_none_or(|e| e == env.name))
        .map(|use_| use_.name.as_str())
        .collect();
    // The daemon's bastion holds every secret it uses: a pin must name it,
    // and goes along, so the daemon enforces it too.
    let bastion = env.daemon_host();
    let bastion_names: Vec<String> = bastion
        .map(|h| [Some(h.name.clone()), h.address.map(|a| a.to_string())])
        .into_iter()
        .flatten()
        .flatten()
        .collect();
    let scope = |name: &str| match secrets {
        Secrets::Resolved(store) => store.scope(name).cloned(),
        Secrets::Redacted => None,
    };
    let mut values = std::collections::BTreeMap::new();
    for name in names {
        let value =
            secrets.value(name).ok_or_else(|| CredentialError::MissingSecret(name.to_owned()))?;
        let scope = scope(name).unwrap_or_default();
        if let Some(hosts) = &scope.hosts {
            if !bastion_names.iter().any(|n| hosts.contains(&n.to_ascii_lowercase())) {
                return Err(CredentialError::PinnedElsewhere {
                    secret: name.to_owned(),
                    bastion: bastion.map(|h| h.name.clone()).unwrap_or_default(),
                });
            }
        }
        if scope.environments.as_ref().is_some_and(|envs| !envs.contains(&env.name)) {
            return Err(CredentialError::OtherEnvironment {
                secret: name.to_owned(),
                env: env.name.clone(),
            });
        }
        // The record goes along: the daemon enforces it too.
        values.insert(name, scope.entry(value.expose()));
    }
    if values.is_empty() {
        return Ok(String::new());
    }
    yaml_serde::to_string(&values).map_err(|_| CredentialError::Yaml("secrets"))
}

/// Where the daemon reaches `env`'s hosts, as its known_hosts names them:
/// the jump host at `ssh.bastion_address` (when set), every host by name
/// and address (when set; the cloud's addresses are matched by name).
fn endpoints(env: &Environment) -> Vec<(String, u16)> {
    let Some(ssh) = &env.ssh else { return Vec::new() };
    let mut endpoints: Vec<(String, u16)> =
        ssh.bastion_address.iter().map(|a| (a.clone(), ssh.bastion_port)).collect();
    let jump = env.host_with_role(crate::model::Role::Bastion);
    for host in &env.hosts {
        let port = if jump.is_some_and(|j| j.name == host.name) {
            ssh.bastion_port
        } else {
            ssh.host_port
        };
        endpoints.push((host.name.clone(), port));
        if let Some(address) = host.address {
            endpoints.push((address.to_string(), port));
        }
    }
    endpoints
}

/// The daemon's credentials for `env`.
///
/// # Errors
/// A file cannot be read, a secret is missing, or the cloud is unknown.
pub fn credentials(
    state: &DesiredState,
    env: &Environment,
    sources: &Sources<'_>,
) -> Result<Vec<Credential>, CredentialError> {
    let secrets = secrets_file(state, env, sources.secrets)?;
    let entry = crate::providers::openstack::client::cloud_entry(&env.cloud, sources.clouds_file)?
        .ok_or_else(|| CredentialError::NoCloud {
            cloud: env.cloud.clone(),
            env: env.name.clone(),
        })?;
    let mut clouds = yaml_serde::Mapping::new();
    clouds.insert(yaml_serde::Value::from(env.cloud.clone()), entry);
    let mut document = yaml_serde::Mapping::new();
    document.insert(yaml_serde::Value::from("clouds"), yaml_serde::Value::Mapping(clouds));
    let clouds =
        yaml_serde::to_string(&document).map_err(|_| CredentialError::Yaml("clouds.yaml"))?;
    let ours = String::from_utf8_lossy(&read(sources.known_hosts, "known_hosts")?).into_owned();
    let mut known_hosts: Vec<String> = crate::known_hosts::lines_for(&ours, &endpoints(env))
        .into_iter()
        .map(str::to_owned)
        .collect();
    if let Some(git) = sources.git_known_hosts {
        let git = String::from_utf8_lossy(&read(git, "known_hosts (git server)")?).into_owned();
        known_hosts.extend(git.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned));
    }
    let mut known_hosts = known_hosts.join("\n").into_bytes();
    known_hosts.push(b'\n');
    let mut anchors = Vec::new();
    if let Some(path) = sources.approval_token {
        let token = String::from_utf8_lossy(&read(path, "approval token")?).trim().to_owned();
        if token.len() < MIN_APPROVAL_TOKEN {
            return Err(CredentialError::ShortToken {
                path: path.to_owned(),
                length: token.len(),
                min: MIN_APPROVAL_TOKEN,
            });
        }
        anchors.push(Credential::private(APPROVAL_TOKEN_PATH, format!("{token}\n").into_bytes()));
    }
    if let Some(path) = sources.release_key {
        anchors.push(Credential::private(RELEASE_KEY_PATH, read(path, "release key")?));
    }
    if let Some(path) = sources.allowed_signers {
        anchors.push(Credential::private(ALLOWED_SIGNERS_PATH, read(path, "allowed signers")?));
    }
    if let Some(path) = sources.scenario_signers {
        let signers = read(path, "scenario signers")?;
        anchors.push(Credential::private(SCENARIO_SIGNERS_PATH, signers));
    }
    let mut credentials = vec![
        Credential::private(SECRETS_PATH, secrets.into_bytes()),
        Credential::private(CLOUDS_PATH, clouds.into_bytes()),
        Credential::private(SSH_KEY_PATH, read(sources.ssh_key, "SSH key")?),
        Credential {
            path: KNOWN_HOSTS_PATH,
            content: Sensitive::new(known_hosts),
            mode: 0o644,
            owner: "root",
            merge: Merge::Lines,
        },
    ];
    credentials.extend(anchors);
    Ok(credentials)
}

/// Shortest approval token accepted (as the daemon's `/approve` requires).
pub const MIN_APPROVAL_TOKEN: usize = 32;

#[cfg(test)]
mod tests {
    use super::*;

    fn known_hosts(text: &str) -> Credential {
        Credential {
            path: KNOWN_HOSTS_PATH,
            content: Sensitive::new(text.as_bytes().to_vec()),
            mode: 0o644,
            owner: "root",
            merge: Merge::Lines,
        }
    }

    #[test]
    fn replaced_files_are_written_when_they_differ() {
        let key = Credential::private(SSH_KEY_PATH, b"key\n".to_vec());
        assert_eq!(key.update(None), Some(b"key\n".to_vec()));
        assert_eq!(key.update(Some(b"key\n")), None);
        assert_eq!(key.update(Some(b"old\n")), Some(b"key\n".to_vec()));
    }

    #[test]
    fn known_hosts_keeps_the_bastions_lines_and_adds_missing_ones() {
        let wanted = known_hosts("[a]:22 ssh-ed25519 A\n[b]:22 ssh-ed25519 B\n");
        assert_eq!(wanted.update(Some(b"[b]:22 ssh-ed25519 B\n[a]:22 ssh-ed25519 A\n")), None);
        assert_eq!(
            wanted.update(Some(b"git ssh-ed25519 G\n[a]:22 ssh-ed25519 A")),
            Some(b"git ssh-ed25519 G\n[a]:22 ssh-ed25519 A\n[b]:22 ssh-ed25519 B\n".to_vec())
        );
    }

    #[test]
    fn a_pinned_secret_reaches_the_bastion_only_if_its_pin_names_it_and_keeps_its_pin() {
        use crate::model::authority::pins::tests::{example, secrets};
        let state = example();
        let env = &state.environments["outside"];
        let admin = "outside_influxdb_admin_password";
        let elsewhere = secrets(&state, &[(admin, &["192.168.10.30"])]);
        let error = secrets_file(&state, env, &elsewhere).expect_err("not for the bastion");
        assert!(error.to_string().contains(&format!("secret `{admin}` is pinned")), "{error}");
        let with_bastion = secrets(&state, &[(admin, &["192.168.10.30", "outside-bastion"])]);
        let text = secrets_file(&state, env, &with_bastion).expect("secrets file");
        let parsed: yaml_serde::Value = yaml_serde::from_str(&text).expect("yaml");
        assert_eq!(parsed[admin]["hosts"][1], yaml_serde::Value::from("outside-bastion"), "{text}");
        assert_eq!(parsed[admin]["value"], yaml_serde::Value::from(format!("value-of-{admin}")));
    }

    #[test]
    fn only_secrets_recorded_for_the_environment_reach_its_bastion_with_their_record() {
        use crate::model::authority::pins::tests::{example, scoped_secrets};
        let state = example();
        let env = &state.environments["outside"];
        let token = "outside_grafana_token";
        let other = scoped_secrets(&state, &[(token, "environments: [inside]")]);
        let error = secrets_file(&state, env, &other).expect_err("recorded for inside");
        assert!(error.to_string().contains(&format!("secret `{token}` is recorded in the secrets file for other environments than outside")), "{error}");
        let own =
            scoped_secrets(&state, &[(token, "environments: [outside], endpoints: [grafana]")]);
        let text = secrets_file(&state, env, &own).expect("secrets file");
        let parsed: yaml_serde::Value = yaml_serde::from_str(&text).expect("yaml");
        assert_eq!(parsed[token]["environments"][0], yaml_serde::Value::from("outside"), "{text}");
        assert_eq!(parsed[token]["endpoints"][0], yaml_serde::Value::from("grafana"), "{text}");
        assert!(!text.contains("inside_grafana_token"), "another environment's secret: {text}");
    }
}
