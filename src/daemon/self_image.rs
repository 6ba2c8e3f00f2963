//! The daemon's own binary and configuration as they were when it started.
//! After each reconcile the daemon looks again; when either changed on
//! disk — an upgrade, or a commit that rewrote them on this very host — it
//! stops cleanly with exit status [`RESTART_EXIT_STATUS`], and its service
//! manager starts the new one (`RestartForceExitStatus=75`): the new
//! process takes over after the old one finished its apply, never in the
//! middle of it. A new file that could not start a daemon (a configuration
//! that does not load, a binary that does not answer `--version`) is
//! refused with an error in the log, and the daemon runs on. Only under a
//! service manager ([`supervised`]): by hand, nobody would start the new one.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Exit status asking the service manager for a restart.
pub const RESTART_EXIT_STATUS: u8 = 75;

/// Which file a rename or a write replaced: a binary is replaced by
/// renaming a new one over it (a running one cannot be written), which
/// changes the inode; an edit changes size or modification time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileId {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
}

fn file_id(path: &Path) -> Option<FileId> {
    let meta = std::fs::metadata(path).ok()?;
    Some(FileId {
        dev: meta.dev(),
        ino: meta.ino(),
        len: meta.len(),
        mtime: (meta.mtime(), meta.mtime_nsec()),
    })
}

/// The files the running daemon was started from.
#[derive(Debug)]
pub struct SelfImage {
    binary: Option<(PathBuf, FileId)>,
    config: Option<(PathBuf, Vec<u8>)>,
}

/// One of the daemon's own files changed on disk, as it was seen: what is
/// checked is what a refusal remembers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Its executable.
    Binary(PathBuf, FileId),
    /// Its configuration file, with its new content.
    Config(PathBuf, Vec<u8>),
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Binary(path, _) => write!(f, "its binary {}", path.display()),
            Self::Config(path, _) => write!(f, "its configuration {}", path.display()),
        }
    }
}

/// Whether a service manager runs the daemon (systemd sets `INVOCATION_ID`
/// for every service): only then is there someone to start the new one.
pub fn supervised() -> bool {
    std::env::var_os("INVOCATION_ID").is_some()
}

impl SelfImage {
    /// Looks at this process's binary and at `config` now.
    pub fn capture(config: &Path) -> Self {
        // After a replacement /proc/self/exe reads "<path> (deleted)": the
        // path is taken now, while it still names this binary.
        let binary =
            std::env::current_exe().ok().and_then(|path| file_id(&path).map(|id| (path, id)));
        let config = std::fs::read(config).ok().map(|text| (config.to_path_buf(), text));
        Self { binary, config }
    }

    /// What changed on disk since [`capture`](Self::capture), if anything.
    /// A file that is gone or unreadable counts as unchanged: a restart
    /// could not start from it.
    pub fn changed(&self) -> Option<Change> {
        self.changes().into_iter().next()
    }

    /// Every file that changed (the binary first): a commit may change both.
    pub fn changes(&self) -> Vec<Change> {
        let binary = self.binary.as_ref().and_then(|(path, id)| {
            file_id(path).filter(|now| now != id).map(|now| Change::Binary(path.clone(), now))
        });
        let config = self.config.as_ref().and_then(|(path, text)| {
            std::fs::read(path)
                .ok()
                .filter(|now| now != text)
                .map(|now| Change::Config(path.clone(), now))
        });
        binary.into_iter().chain(config).collect()
    }

    /// Takes the file as `change` saw it, so a change that was refused
    /// (see [`check`]) is not reported again until the file changes again.
    pub fn accept(&mut self, change: &Change) {
        match (change, &mut self.binary, &mut self.config) {
            (Change::Binary(_, now), Some((_, id)), _) => *id = now.clone(),
            (Change::Config(_, now), _, Some((_, text))) => text.clone_from(now),
            _ => {}
        }
    }
}

/// Keeps what this process runs from for a roll-back (see
/// [`rollback`](super::rollback)) and records the hand-over to `change`.
///
/// # Errors
/// The previous files or the record cannot be written.
pub fn hand_over(
    image: &SelfImage,
    change: &Change,
    state_dir: &Path,
    commit: Option<String>,
) -> Result<(), super::rollback::RollbackError> {
    use super::rollback::{prepare, Previous};
    // Both files are kept, whichever changed: a commit may change both,
    // and a roll-back must put back a pair that starts together.
    // /proc/self/exe still reads the binary this process runs, even after
    // a new file was renamed over its path.
    let running = Path::new("/proc/self/exe");
    let previous_config = image.config.as_ref().map(|(_, text)| text.as_slice());
    let new_config = match (change, &image.config) {
        (Change::Config(_, new), _) => Some(new.clone()),
        (Change::Binary(..), Some((path, _))) => std::fs::read(path).ok(),
        (Change::Binary(..), None) => None,
    };
    let binary = image.binary.as_ref().map(|(path, _)| path.as_path());
    let previous = Previous { config: previous_config, binary: binary.map(|_| running) };
    prepare(state_dir, &previous, new_config.as_deref(), binary, commit)
}

/// Why a new binary or configuration cannot start a daemon.
#[derive(Debug, thiserror::Error)]
pub enum Unstartable {
    /// The configuration is not UTF-8.
    #[error("{} is not UTF-8", path.display())]
    NotText {
        /// The file.
        path: std::path::PathBuf,
    },
    /// The configuration does not load.
    #[error(transparent)]
    Config(#[from] super::config::ConfigError),
    /// The binary failed its `--version`.
    #[error("`{} --version` failed ({status})", path.display())]
    Failed {
        /// The binary.
        path: std::path::PathBuf,
        /// How it ended.
        status: std::process::ExitStatus,
    },
    /// The binary cannot be started.
    #[error("cannot start {}", path.display())]
    Start {
        /// The binary.
        path: std::path::PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The binary did not answer in time.
    #[error("`{} --version` did not answer within 10 s", path.display())]
    Hung {
        /// The binary.
        path: std::path::PathBuf,
    },
}

/// Whether the new file can start a daemon: the configuration loads, the
/// binary answers `--version` within 10 s. A restart into a broken one
/// would leave no daemon at all.
///
/// # Errors
/// Why it cannot.
pub async fn check(change: &Change) -> Result<(), Unstartable> {
    match change {
        Change::Config(path, text) => {
            let text = std::str::from_utf8(text)
                .map_err(|_| Unstartable::NotText { path: path.clone() })?;
            super::config::Config::parse(path, text).map(drop).map_err(Unstartable::from)
        }
        Change::Binary(path, _) => {
            let run = tokio::process::Command::new(path)
                .arg("--version")
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .status();
            let path = path.clone();
            match tokio::time::timeout(std::time::Duration::from_secs(10), run).await {
                Ok(Ok(status)) if status.success() => Ok(()),
                Ok(Ok(status)) => Err(Unstartable::Failed { path, status }),
                Ok(Err(source)) => Err(Unstartable::Start { path, source }),
                Err(_) => Err(Unstartable::Hung { path }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_edited_configuration_is_a_change_a_removed_one_is_not() {
        let dir = tempfile::tempdir().expect("dir");
        let config = dir.path().join("daemon.yaml");
        std::fs::write(&config, "listen: 127.0.0.1:1\n").expect("write");
        let image = SelfImage::capture(&config);
        assert_eq!(image.changed(), None);
        std::fs::write(&config, "listen: 127.0.0.1:2\n").expect("write");
        assert_eq!(
            image.changed(),
            Some(Change::Config(config.clone(), b"listen: 127.0.0.1:2\n".to_vec()))
        );
        std::fs::remove_file(&config).expect("remove");
        assert_eq!(image.changed(), None);
    }
}
