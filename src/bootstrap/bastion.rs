//! The daemon's bastion over SSH (the host provider's connections): what
//! is installed there, writing the credentials and the state store,
//! stopping and starting the unit, and the daemon's `/status` through an
//! SSH tunnel.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use super::{Credential, Merge, KNOWN_HOSTS_PATH, STATE_DIR};
use crate::providers::host::ssh::quote;
use crate::providers::host::{HostError, HostProvider};
use crate::render::DAEMON_UNIT;

/// What the bastion has.
#[derive(Debug, Default)]
pub struct Installed {
    /// sha256 of each credential file present, by path.
    pub sha256: BTreeMap<String, String>,
    /// known_hosts as it is.
    pub known_hosts: Option<Vec<u8>>,
    /// The daemon's state store, when it has one.
    pub state: Option<String>,
    /// Whether the daemon's unit is active.
    pub active: bool,
    /// The mark of a bootstrap that took the state store and has not
    /// handed it back.
    pub taken: Option<String>,
}

impl Installed {
    /// The credentials of `credentials` the bastion lacks, with what to write.
    pub fn updates<'c>(&self, credentials: &'c [Credential]) -> Vec<(&'c Credential, Vec<u8>)> {
        credentials.iter().filter_map(|c| self.update(c).map(|bytes| (c, bytes))).collect()
    }

    /// What to write for `credential`, or `None` when the bastion has it.
    pub fn update(&self, credential: &Credential) -> Option<Vec<u8>> {
        match credential.merge {
            Merge::Lines => credential.update(self.known_hosts.as_deref()),
            Merge::Replace => (self.sha256.get(credential.path) != Some(&credential.sha256()))
                .then(|| credential.content.expose().clone()),
        }
    }
}

/// The daemon's bastion.
pub struct Bastion<'a> {
    provider: &'a HostProvider,
    host: String,
}

impl<'a> Bastion<'a> {
    /// `host` of `provider`'s environment.
    pub fn new(provider: &'a HostProvider, host: &str) -> Self {
        Self { provider, host: host.to_owned() }
    }

    fn state_path(&self) -> String {
        format!("{STATE_DIR}/{}", crate::state::STATE_FILE)
    }

    async fn run(&self, what: &str, command: &str) -> Result<Vec<u8>, HostError> {
        self.provider.run(&self.host, what, command, None).await
    }

    /// Reads what is installed: the credentials' hashes, known_hosts, the
    /// state store, whether the daemon runs.
    ///
    /// # Errors
    /// SSH failed, or a command failed.
    pub async fn installed(&self, credentials: &[Credential]) -> Result<Installed, HostError> {
        let manager = self.provider.service_manager();
        let mut script = String::from(
            "f() { if [ -f \"$1\" ]; then printf 'F\\t%s\\t%s\\n' \"$2\" \"$(sha256sum < \"$1\" | cut -d' ' -f1)\"; fi; }\n",
        );
        for credential in credentials {
            let path = credential.path;
            let _ = writeln!(script, "f {} {}", quote(&self.provider.path(path)), quote(path));
        }
        let _ = writeln!(
            script,
            "printf 'A\\t%s\\n' \"$({manager} is-active {} 2>/dev/null)\"",
            quote(DAEMON_UNIT)
        );
        let output = self.run("reading the daemon's installation", &script).await?;
        let mut installed = Installed::default();
        for line in String::from_utf8_lossy(&output).lines() {
            match line.split('\t').collect::<Vec<_>>().as_slice() {
                ["F", path, sha256] => {
                    installed.sha256.insert((*path).to_owned(), (*sha256).to_owned());
                }
                // Anything but stopped (activating, waiting to restart, reloading) runs.
                ["A", state] => {
                    installed.active = !matches!(*state, "" | "inactive" | "failed" | "unknown")
                }
                _ => {}
            }
        }
        installed.known_hosts = self.read(KNOWN_HOSTS_PATH, &installed).await?;
        let state_path = self.state_path();
        let state = self.read_if_present(&state_path).await?;
        installed.state = state.map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
        let taken = self.read_if_present(&self.taken_path()).await?;
        installed.taken = taken.map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
        Ok(installed)
    }

    fn taken_path(&self) -> String {
        format!("{STATE_DIR}/{}", crate::state::TAKEN_FILE)
    }

    /// Marks the daemon's state store as taken by this bootstrap: the
    /// daemon does not use it until [`hand_over_state`](Self::hand_over_state).
    /// Created exclusively: another bootstrap's mark is never overwritten.
    ///
    /// # Errors
    /// SSH failed, or a mark is there already (another bootstrap took it).
    pub async fn take(&self, mark: &str) -> Result<(), HostError> {
        let target = quote(&self.provider.path(&self.taken_path()));
        // Root's (the account may not exist yet), readable: it says who holds the store.
        let command =
            format!("set -e; mkdir -p \"$(dirname {target})\"; umask 022; set -C; cat > {target}");
        self.provider
            .run(&self.host, "marking the state store as taken", &command, Some(mark.as_bytes()))
            .await
            .map(drop)
    }

    async fn read(&self, path: &str, installed: &Installed) -> Result<Option<Vec<u8>>, HostError> {
        if !installed.sha256.contains_key(path) {
            return Ok(None);
        }
        self.read_if_present(path).await
    }

    async fn read_if_present(&self, path: &str) -> Result<Option<Vec<u8>>, HostError> {
        let target = quote(&self.provider.path(path));
        let command = format!("if [ -f {target} ]; then printf 'y'; cat {target}; fi");
        let output = self.run(&format!("reading {path}"), &command).await?;
        Ok(output.strip_prefix(b"y").map(<[u8]>::to_vec))
    }

    /// Appends `line` to the bastion's record of take-overs
    /// (`/var/lib/apimon/take-over.log`, root's).
    ///
    /// # Errors
    /// SSH failed, or the command failed.
    pub async fn log_take_over(&self, line: &str) -> Result<(), HostError> {
        let path = quote(&self.provider.path(&format!("{STATE_DIR}/take-over.log")));
        let command = format!("umask 077; printf '%s\\n' {} >> {path}", quote(line));
        self.run("recording the take-over", &command).await.map(drop)
    }

    /// Makes the daemon's directories: its state directory (its own,
    /// 0700) and /etc/apimon (root's, readable by its group).
    ///
    /// # Errors
    /// SSH failed, or the command failed (no `apimon` account yet).
    pub async fn prepare_directories(&self) -> Result<(), HostError> {
        let path = |p: &str| quote(&self.provider.path(p));
        let command = format!(
            "install -d -m 0700 -o apimon -g apimon {} {} && install -d -m 0750 -o root -g apimon {}",
            path(STATE_DIR),
            path(&format!("{STATE_DIR}/.ssh")),
            path("/etc/apimon"),
        );
        self.run("making the daemon's directories", &command).await.map(drop)
    }

    /// Writes `bytes` as `credential`.
    ///
    /// # Errors
    /// SSH failed, or the upload did not complete (the old file stays).
    pub async fn write(&self, credential: &Credential, bytes: &[u8]) -> Result<(), HostError> {
        let access = (credential.mode, credential.owner, credential.owner);
        self.provider.put(&self.host, credential.path, bytes, access).await
    }

    /// Hands the state store over: the daemon then knows what apimon made.
    /// The store first, then the mark goes: interrupted in between, the
    /// bastion has the newest store and a re-run takes it from there.
    ///
    /// # Errors
    /// SSH failed, or the upload did not complete.
    pub async fn hand_over_state(&self, state: &[u8], mark: &str) -> Result<(), HostError> {
        let path = self.state_path();
        self.provider.put(&self.host, &path, state, (0o600, "apimon", "apimon")).await?;
        self.unmark(mark).await
    }

    /// Removes `mark`, this bootstrap's, never another's: the bastion's
    /// store is in force again.
    ///
    /// # Errors
    /// SSH failed, or the command failed.
    pub async fn unmark(&self, mark: &str) -> Result<(), HostError> {
        let taken = quote(&self.provider.path(&self.taken_path()));
        let token = mark.lines().next().unwrap_or_default();
        let command =
            format!("if grep -qxF {} {taken} 2>/dev/null; then rm -f {taken}; fi", quote(token));
        self.run("handing the state store back", &command).await.map(drop)
    }

    /// `<service manager> stop|start apimon`.
    ///
    /// # Errors
    /// SSH failed, or the service manager failed.
    pub async fn unit(&self, action: &str) -> Result<(), HostError> {
        let command =
            format!("{} {action} {}", self.provider.service_manager(), quote(DAEMON_UNIT));
        self.run(&format!("{action} the daemon ({DAEMON_UNIT})"), &command).await.map(drop)
    }

    /// The daemon's `/status` (JSON) through an SSH tunnel to its `listen` address.
    ///
    /// # Errors
    /// The tunnel or the daemon did not answer, or answered other than 200.
    pub async fn status(&self, listen: (&str, u16)) -> Result<serde_json::Value, StatusError> {
        let (status, body) = self
            .provider
            .http_get(&self.host, listen, "/status", Duration::from_secs(10))
            .await
            .map_err(StatusError::Tunnel)?;
        if status != 200 {
            return Err(StatusError::Status(status));
        }
        serde_json::from_slice(&body).map_err(StatusError::NotJson)
    }
}

/// The daemon's `/status` could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The SSH tunnel or the daemon did not answer.
    #[error("/status through the SSH tunnel")]
    Tunnel(#[source] HostError),
    /// Another status than 200.
    #[error("/status answered {0}")]
    Status(u16),
    /// Not JSON.
    #[error("/status is not JSON")]
    NotJson(#[source] serde_json::Error),
}

/// The daemon's bastion with the credentials bootstrap installs: what the
/// hand-over uses ([`super::handover::DaemonHost`]).
pub struct DaemonBastion<'a> {
    /// The bastion.
    pub bastion: &'a Bastion<'a>,
    /// The daemon's credentials.
    pub credentials: &'a [Credential],
}

#[async_trait::async_trait]
impl super::handover::DaemonHost for DaemonBastion<'_> {
    async fn installed(&self) -> Result<Installed, HostError> {
        self.bastion.installed(self.credentials).await
    }

    async fn take(&self, mark: &str) -> Result<(), HostError> {
        self.bastion.take(mark).await
    }

    async fn unmark(&self, mark: &str) -> Result<(), HostError> {
        self.bastion.unmark(mark).await
    }

    async fn hand_over(&self, store: &[u8], mark: &str) -> Result<(), HostError> {
        self.bastion.hand_over_state(store, mark).await
    }

    async fn unit(&self, start: bool) -> Result<(), HostError> {
        self.bastion.unit(if start { "start" } else { "stop" }).await
    }

    async fn install_credentials(&self) -> Result<Vec<String>, HostError> {
        let now = self.bastion.installed(self.credentials).await?;
        self.bastion.prepare_directories().await?;
        let mut written = Vec::new();
        for (credential, bytes) in now.updates(self.credentials) {
            self.bastion.write(credential, &bytes).await?;
            written.push(credential.path.to_owned());
        }
        Ok(written)
    }
}
