//! The applying machine: where it keeps what is not in the repository
//! (SSH key and known_hosts, clouds.yaml, the binary executors get).

use std::path::PathBuf;

/// Where the applying machine keeps what is not in the repository.
#[derive(Debug, Clone)]
pub struct Machine {
    /// SSH private key for the bastion and the hosts.
    pub ssh_key: PathBuf,
    /// known_hosts with the bastion's and the hosts' keys.
    pub known_hosts: PathBuf,
    /// The apimon binary executors get; this one when `None`.
    pub executor_binary: Option<PathBuf>,
    /// clouds.yaml with the environments' clouds; `None`: the standard places.
    pub clouds_file: Option<PathBuf>,
    /// The release key (an SSH public key): with one, only releases it
    /// signed are installed (`apimon_binary.signature_url`).
    pub release_key: Option<PathBuf>,
    /// Whether this machine is the environment's bastion (the daemon):
    /// its HTTP endpoints are reached directly, never through itself.
    pub on_bastion: bool,
}

impl Machine {
    /// `$APIMON_SSH_KEY` and `$APIMON_SSH_KNOWN_HOSTS`, else `~/.ssh/id_ed25519`
    /// and `~/.ssh/known_hosts`; `$OS_CLIENT_CONFIG_FILE` for clouds.yaml;
    /// `$APIMON_RELEASE_KEY` for the release key.
    pub fn from_env() -> Self {
        let home = std::env::var_os("HOME")
            .map_or_else(|| PathBuf::from(crate::layout::STATE_DIR), PathBuf::from);
        let var =
            |name: &str, default: PathBuf| std::env::var_os(name).map_or(default, PathBuf::from);
        Self {
            ssh_key: var("APIMON_SSH_KEY", home.join(".ssh/id_ed25519")),
            known_hosts: var("APIMON_SSH_KNOWN_HOSTS", home.join(".ssh/known_hosts")),
            executor_binary: std::env::var_os("APIMON_EXECUTOR_BINARY").map(PathBuf::from),
            clouds_file: std::env::var_os("OS_CLIENT_CONFIG_FILE").map(PathBuf::from),
            release_key: std::env::var_os("APIMON_RELEASE_KEY").map(PathBuf::from),
            on_bastion: false,
        }
    }
}
