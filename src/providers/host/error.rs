//! What goes wrong on a host, and whether retrying may help.

use std::path::PathBuf;

use super::settle::Unsettled;
use super::ssh_error::SshError;

/// Host management failed.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// SSH failed.
    #[error(transparent)]
    Ssh(#[from] SshError),
    /// A command failed on the host.
    #[error("on {host}: {what} failed (exit {status}): {stderr}")]
    Command {
        /// Host.
        host: String,
        /// What was being done.
        what: String,
        /// Exit status.
        status: u32,
        /// The end of its stderr.
        stderr: String,
    },
    /// A unit apimon (re)started did not stay up.
    #[error("on {host}: unit {unit} {}{}", unsettled.problem, last_lines(&unsettled.last_lines))]
    Unsettled {
        /// Host.
        host: String,
        /// Unit.
        unit: String,
        /// What was seen.
        unsettled: Unsettled,
    },
    /// The pinned apimon release could not be downloaded, or is not the
    /// file apimon.yaml names.
    #[error("apimon_binary {url}: {message}")]
    Download {
        /// Where from.
        url: String,
        /// Why.
        message: String,
        /// Worth retrying (the network, not the file).
        transient: bool,
    },
    /// A local file could not be read (the binary to install).
    #[error("cannot read {path} to upload it")]
    Local {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The resource names a host the environment does not have.
    #[error("unknown host {0}")]
    UnknownHost(String),
}

impl HostError {
    /// Worth retrying: the connection, not the host's answer.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Ssh(error) => error.is_transient(),
            Self::Download { transient, .. } => *transient,
            // A port taken, a dependency not up yet: it may start later.
            Self::Unsettled { .. } => true,
            _ => false,
        }
    }
}

/// A unit's last lines as an error shows them (after a colon), if any.
fn last_lines(lines: &str) -> String {
    if lines.is_empty() {
        String::new()
    } else {
        format!("; its last lines:\n{lines}")
    }
}
