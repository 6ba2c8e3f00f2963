//! The arguments several commands share: where the applying machine keeps
//! its secrets, state and keys (`LiveArgs`), and the repository (`RepoArgs`).

use std::path::PathBuf;

use clap::Args;

use crate::machine::Machine;

/// Where secrets and state live on the applying machine.
#[derive(Debug, Args)]
pub struct LiveArgs {
    /// Secrets file (mode 0600 or stricter); APIMON_SECRET_<NAME> also works.
    #[arg(long, env = "APIMON_SECRETS_FILE")]
    pub secrets: Option<PathBuf>,
    /// State store directory: what apimon owns, last applied commit, history.
    #[arg(long, env = "APIMON_STATE_DIR", default_value = crate::layout::STATE_DIR)]
    pub state_dir: PathBuf,
    /// SSH private key for the bastion and the hosts [default: ~/.ssh/id_ed25519].
    #[arg(long, env = "APIMON_SSH_KEY")]
    pub ssh_key: Option<PathBuf>,
    /// known_hosts with the bastion's and the hosts' keys [default: ~/.ssh/known_hosts].
    #[arg(long, env = "APIMON_SSH_KNOWN_HOSTS")]
    pub known_hosts: Option<PathBuf>,
    /// The apimon binary installed on executors [default: this one].
    #[arg(long, env = "APIMON_EXECUTOR_BINARY")]
    pub executor_binary: Option<PathBuf>,
    /// clouds.yaml with each environment's `cloud` [default:
    /// ~/.config/openstack/clouds.yaml, /etc/openstack/clouds.yaml; never ./].
    #[arg(long, env = "OS_CLIENT_CONFIG_FILE")]
    pub clouds_file: Option<PathBuf>,
    /// Also check what the state store's fingerprints vouch for: log in as
    /// every InfluxDB user, read every Grafana dashboard back (catches
    /// changes made by hand; costs a request each).
    #[arg(long)]
    pub verify: bool,
    /// The release key (an SSH public key, `$APIMON_RELEASE_KEY`): only
    /// releases it signed are installed (`apimon_binary.signature_url`).
    #[arg(long, value_name = "FILE")]
    pub release_key: Option<PathBuf>,
}

impl LiveArgs {
    /// Every fingerprinted value with `--verify`, none without.
    pub(super) fn probe(&self) -> crate::providers::Probe {
        let budget = if self.verify { usize::MAX } else { 0 };
        crate::providers::Probe { round: 0, budget }
    }

    pub(super) fn machine(&self) -> Machine {
        let defaults = Machine::from_env();
        Machine {
            ssh_key: self.ssh_key.clone().unwrap_or(defaults.ssh_key),
            known_hosts: self.known_hosts.clone().unwrap_or(defaults.known_hosts),
            executor_binary: self.executor_binary.clone(),
            clouds_file: self.clouds_file.clone(),
            release_key: self.release_key.clone().or(defaults.release_key),
            on_bastion: false,
        }
    }
}

/// `--repo`.
#[derive(Debug, Args)]
pub struct RepoArgs {
    /// The desired-state repository (a checkout).
    #[arg(long, default_value = ".")]
    pub repo: PathBuf,
}
