//! What can go wrong with SSH, by kind (the error policy retries the
//! network and the cloud's not-yet, never a refusal).

use std::path::PathBuf;

/// SSH failed.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// The private key cannot be used.
    #[error("cannot load SSH private key {path}: {message}")]
    Key {
        /// Key file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// TCP or SSH to an endpoint failed.
    #[error("cannot connect to {endpoint}{via}: {message}")]
    Connect {
        /// Where.
        endpoint: String,
        /// " through the bastion …" or "".
        via: String,
        /// Why.
        message: String,
    },
    /// The host key is not in known_hosts, or differs from it.
    #[error("host key of {endpoint} refused: {message}")]
    HostKey {
        /// Where.
        endpoint: String,
        /// Unknown or changed, and where to fix it.
        message: String,
    },
    /// Public-key authentication failed.
    #[error("{endpoint} refused public-key authentication as {user}")]
    Auth {
        /// Where.
        endpoint: String,
        /// User.
        user: String,
    },
    /// The host's address is the cloud's to say, and it could not.
    #[error("cannot tell where {host} is: {source}")]
    Locate {
        /// Host.
        host: String,
        /// Why.
        #[source]
        source: crate::providers::locate::LocateError,
    },
    /// A command could not run or the channel broke.
    #[error("on {host}: {message}")]
    Channel {
        /// Host.
        host: String,
        /// What happened.
        message: String,
    },
}

impl SshError {
    /// Worth retrying: the network, not a refusal; an address the cloud
    /// does not have yet (the same apply may be creating it).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Connect { .. } | Self::Channel { .. } | Self::Locate { .. })
    }
}
