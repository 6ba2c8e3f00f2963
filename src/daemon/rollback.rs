//! The daemon's own restart, made safe: a new daemon.yaml or binary that
//! does not bring up a daemon reporting ready (`READY=1`) is rolled back.
//!
//! The protocol, over files in `<state_dir>/handover/`:
//!
//! 1. The old process, before it exits for the new files
//!    ([`self_image`](super::self_image)), keeps what it ran from —
//!    `previous-config`, and `previous-binary` (read from
//!    `/proc/self/exe`, which still holds the replaced file) — and writes
//!    `pending.json` last, naming the new files' digests.
//! 2. Before every start the unit's `ExecStartPre=+-… daemon --before-start`
//!    (as root: it writes /usr/local/bin) calls [`before_start`], which
//!    [`decide`]s: no hand-over pending — start; pending and not tried —
//!    count the try and start the new files; pending and tried — the new
//!    ones did not report ready (they exited, or systemd's TimeoutStartSec
//!    killed them): put the previous files back and write
//!    `rolled-back.json`.
//! 3. The new process, once serving and ready, calls [`confirm`]: the
//!    hand-over is done, and an earlier roll-back's record is moot.
//!
//! A daemon started after a roll-back reports it in `/status` and holds
//! every change that would write the same files again (by digest) until a
//! commit changes them.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The directory under the state directory.
const DIR: &str = "handover";
const PENDING: &str = "pending.json";
const ROLLED_BACK: &str = "rolled-back.json";
const PREVIOUS_CONFIG: &str = "previous-config";
const PREVIOUS_BINARY: &str = "previous-binary";

/// A hand-over to new files, not yet confirmed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// When the old process handed over.
    pub at: DateTime<Utc>,
    /// The commit in force then.
    pub commit: Option<String>,
    /// The new configuration's sha256, when it changed (its previous one
    /// is kept).
    pub config_sha256: Option<String>,
    /// The new binary's sha256, when it changed (its previous one is kept).
    pub binary_sha256: Option<String>,
    /// Starts of the new files so far.
    pub attempts: u32,
}

/// A hand-over that was rolled back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolledBack {
    /// When.
    pub at: DateTime<Utc>,
    /// The hand-over that failed.
    pub pending: Pending,
    /// Why, in words.
    pub reason: String,
}

/// What to do before a start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing is pending: start.
    Start,
    /// New files wait for their first start: count it, then start them.
    Try,
    /// The new files had their start and did not confirm: roll back.
    RollBack,
}

/// The decision, purely.
pub fn decide(pending: Option<&Pending>) -> Step {
    match pending {
        None => Step::Start,
        Some(p) if p.attempts == 0 => Step::Try,
        Some(_) => Step::RollBack,
    }
}

/// Handing over or rolling back failed.
#[derive(Debug, thiserror::Error)]
pub enum RollbackError {
    /// A file of the protocol cannot be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A record is not what this protocol writes.
    #[error("{}: {message}", path.display())]
    Record {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RollbackError + '_ {
    move |source| RollbackError::Io { path: path.to_owned(), source }
}

fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join(DIR)
}

/// Writes `bytes` to `path` (in the handover directory) through a new
/// temporary file that is never a link, synced, with `mode`, owned like
/// the directory: the helper runs as root, the daemon as its account, and
/// each must read what the other wrote.
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), RollbackError> {
    crate::fsutil::write_private(path, bytes, mode).map_err(io(path))?;
    if let Some(dir) = path.parent().and_then(|d| std::fs::symlink_metadata(d).ok()) {
        use std::os::unix::fs::MetadataExt as _;
        let _ = std::os::unix::fs::lchown(path, Some(dir.uid()), Some(dir.gid()));
    }
    Ok(())
}

/// The handover directory, which must be a directory (not a link to one).
fn checked_dir(state_dir: &Path) -> Result<PathBuf, RollbackError> {
    let dir = dir(state_dir);
    match std::fs::symlink_metadata(&dir) {
        Ok(meta) if meta.file_type().is_dir() => Ok(dir),
        Ok(_) => Err(RollbackError::Io {
            path: dir,
            source: std::io::Error::other("is not a directory (a link?); refusing to use it"),
        }),
        Err(source) => Err(RollbackError::Io { path: dir, source }),
    }
}

/// The content of the regular file `path`, never through a link.
fn read_regular(path: &Path) -> Result<Vec<u8>, RollbackError> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
        .map_err(io(path))?;
    let meta = file.metadata().map_err(io(path))?;
    if !meta.is_file() {
        return Err(RollbackError::Io {
            path: path.to_owned(),
            source: std::io::Error::other("is not a regular file"),
        });
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(io(path))?;
    Ok(bytes)
}

fn read_record<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, RollbackError> {
    match crate::fsutil::read_text_limited(path, 64 * 1024) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| RollbackError::Record { path: path.to_owned(), message: e.to_string() }),
        Err(crate::fsutil::ReadError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            Ok(None)
        }
        Err(e) => Err(RollbackError::Io { path: path.to_owned(), source: e.into() }),
    }
}

fn write_record<T: Serialize>(path: &Path, record: &T) -> Result<(), RollbackError> {
    let text = serde_json::to_vec_pretty(record)
        .map_err(|e| RollbackError::Record { path: path.to_owned(), message: e.to_string() })?;
    write_atomic(path, &text, 0o600)
}

/// What the old process ran from, kept before it hands over.
pub struct Previous<'a> {
    /// Its configuration as it started, when the new one differs.
    pub config: Option<&'a [u8]>,
    /// Its binary (a path that still reads the running file, such as
    /// `/proc/self/exe`), when the new one differs.
    pub binary: Option<&'a Path>,
}

/// Step 1: keeps the previous files and records the hand-over to the new
/// ones (their digests); `pending.json` is written last, so a process
/// killed before it leaves no hand-over to roll back.
///
/// # Errors
/// A file cannot be written: the caller runs on rather than hand over
/// without a way back.
pub fn prepare(
    state_dir: &Path,
    previous: &Previous<'_>,
    new_config: Option<&[u8]>,
    new_binary: Option<&Path>,
    commit: Option<String>,
) -> Result<(), RollbackError> {
    std::fs::create_dir_all(dir(state_dir)).map_err(io(&dir(state_dir)))?;
    let dir = checked_dir(state_dir)?;
    for name in [PREVIOUS_CONFIG, PREVIOUS_BINARY, PENDING] {
        let _ = std::fs::remove_file(dir.join(name));
    }
    if let Some(config) = previous.config {
        write_atomic(&dir.join(PREVIOUS_CONFIG), config, 0o600)?;
    }
    if let Some(binary) = previous.binary {
        let bytes = std::fs::read(binary).map_err(io(binary))?;
        write_atomic(&dir.join(PREVIOUS_BINARY), &bytes, 0o700)?;
    }
    let binary_sha256 = match new_binary {
        Some(path) => Some(crate::digest::sha256_hex(&std::fs::read(path).map_err(io(path))?)),
        None => None,
    };
    let pending = Pending {
        at: Utc::now(),
        commit,
        config_sha256: new_config.map(crate::digest::sha256_hex),
        binary_sha256,
        attempts: 0,
    };
    write_record(&dir.join(PENDING), &pending)
}

/// What [`before_start`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Started {
    /// Nothing pending.
    Plain,
    /// The new files' first start.
    Trying(Pending),
    /// The previous files are back.
    RolledBack(RolledBack),
}

/// Step 2, before every start: see [`decide`]. `config` and `binary` are
/// the paths the unit starts from (its own command line, never a record).
///
/// # Errors
/// A record is unreadable, or a file cannot be put back.
pub fn before_start(
    state_dir: &Path,
    config: &Path,
    binary: &Path,
) -> Result<Started, RollbackError> {
    let pending_path = dir(state_dir).join(PENDING);
    if std::fs::symlink_metadata(&pending_path).is_err() {
        return Ok(Started::Plain);
    }
    let dir = checked_dir(state_dir)?;
    let pending: Option<Pending> = read_record(&pending_path)?;
    match (decide(pending.as_ref()), pending) {
        (Step::Start, _) | (_, None) => Ok(Started::Plain),
        (Step::Try, Some(mut pending)) => {
            pending.attempts += 1;
            write_record(&pending_path, &pending)?;
            Ok(Started::Trying(pending))
        }
        (Step::RollBack, Some(pending)) => {
            for (kept, target) in [(PREVIOUS_CONFIG, config), (PREVIOUS_BINARY, binary)] {
                let kept = dir.join(kept);
                if kept.exists() {
                    restore(&kept, target)?;
                }
            }
            let record = RolledBack {
                at: Utc::now(),
                pending,
                reason: "the new files did not bring up a daemon that reported ready (READY=1): it exited or its start timed out".to_owned(),
            };
            write_record(&dir.join(ROLLED_BACK), &record)?;
            std::fs::remove_file(&pending_path).map_err(io(&pending_path))?;
            Ok(Started::RolledBack(record))
        }
    }
}

/// Puts `kept` back at `target`, with the owner and mode `target` has.
fn restore(kept: &Path, target: &Path) -> Result<(), RollbackError> {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let bytes = read_regular(kept)?;
    let meta = std::fs::metadata(target).ok();
    let mode = meta.as_ref().map_or(0o644, |m| m.permissions().mode() & 0o7777);
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = target.with_file_name(format!(".{name}.apimon-rollback"));
    write_atomic(&tmp, &bytes, mode)?;
    if let Some(meta) = meta {
        let _ = std::os::unix::fs::chown(&tmp, Some(meta.uid()), Some(meta.gid()));
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).map_err(io(&tmp))?;
    }
    std::fs::rename(&tmp, target).map_err(io(target))
}

/// Step 3, once the daemon serves and reported ready: the hand-over (if
/// any) is done; an earlier roll-back's record goes with it. Whether a
/// hand-over was pending.
///
/// # Errors
/// A record cannot be removed.
pub fn confirm(state_dir: &Path) -> Result<Option<Pending>, RollbackError> {
    let dir = dir(state_dir);
    let pending_path = dir.join(PENDING);
    // Removed whether it reads or not: this process reported ready.
    let was_pending = std::fs::symlink_metadata(&pending_path).is_ok();
    let pending: Option<Pending> = read_record(&pending_path).unwrap_or(None);
    if was_pending {
        for name in [PENDING, ROLLED_BACK, PREVIOUS_CONFIG, PREVIOUS_BINARY] {
            let path = dir.join(name);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(RollbackError::Io { path, source }),
            }
        }
    }
    Ok(pending)
}

/// Drops the record of the last roll-back: the commit in force no longer
/// asks for the files that were rolled back.
///
/// # Errors
/// The record cannot be removed.
pub fn forget(state_dir: &Path) -> Result<(), RollbackError> {
    let path = dir(state_dir).join(ROLLED_BACK);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(RollbackError::Io { path, source: e })
        }
        _ => Ok(()),
    }
}

/// The record of the last roll-back, while no later hand-over confirmed.
///
/// # Errors
/// The record is unreadable.
pub fn rolled_back(state_dir: &Path) -> Result<Option<RolledBack>, RollbackError> {
    read_record(&dir(state_dir).join(ROLLED_BACK))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(attempts: u32) -> Pending {
        Pending {
            at: Utc::now(),
            commit: None,
            config_sha256: Some("c".into()),
            binary_sha256: None,
            attempts,
        }
    }

    macro_rules! steps {
        ($($name:ident: $pending:expr => $step:expr;)*) => {$(
            #[test]
            fn $name() {
                assert_eq!(decide($pending.as_ref()), $step);
            }
        )*};
    }

    steps! {
        nothing_pending_starts: None::<Pending> => Step::Start;
        new_files_get_one_start: Some(pending(0)) => Step::Try;
        new_files_that_had_their_start_are_rolled_back: Some(pending(1)) => Step::RollBack;
        more_tries_change_nothing: Some(pending(7)) => Step::RollBack;
    }

    #[test]
    fn a_hand_over_that_never_confirms_is_rolled_back_on_the_second_start_and_one_that_does_is_kept(
    ) {
        let dir = tempfile::tempdir().expect("dir");
        let state = dir.path().join("state");
        let config = dir.path().join("daemon.yaml");
        let binary = dir.path().join("apimon");
        let old_binary = dir.path().join("old-apimon");
        std::fs::write(&config, "listen: 127.0.0.1:9110\n").expect("old config");
        std::fs::write(&binary, "new binary").expect("new binary");
        std::fs::write(&old_binary, "old binary").expect("old binary");
        let previous =
            Previous { config: Some(b"listen: 127.0.0.1:9110\n"), binary: Some(&old_binary) };
        std::fs::write(&config, "listen: 127.0.0.1:80\n").expect("new config");
        prepare(
            &state,
            &previous,
            Some(b"listen: 127.0.0.1:80\n"),
            Some(&binary),
            Some("abc".into()),
        )
        .expect("prepare");
        // The helper runs as root, the daemon as its account: what the
        // helper writes belongs to the directory's owner (when root can
        // give it away, as in CI).
        let handover = state.join(DIR);
        let chowned = std::os::unix::fs::chown(&handover, Some(65534), None).is_ok();
        // First start: the new files get their chance.
        let Started::Trying(tried) = before_start(&state, &config, &binary).expect("try") else {
            panic!("expected a try")
        };
        if chowned {
            use std::os::unix::fs::MetadataExt as _;
            let record = std::fs::metadata(handover.join(PENDING)).expect("record");
            assert_eq!(record.uid(), 65534, "the daemon's account must read the record");
        }
        assert_eq!(
            tried.binary_sha256.as_deref(),
            Some(crate::digest::sha256_hex(b"new binary").as_str())
        );
        // No READY: the next start rolls back, both files.
        let Started::RolledBack(record) = before_start(&state, &config, &binary).expect("rollback")
        else {
            panic!("expected a roll-back")
        };
        assert_eq!(std::fs::read_to_string(&config).expect("config"), "listen: 127.0.0.1:9110\n");
        assert_eq!(std::fs::read_to_string(&binary).expect("binary"), "old binary");
        assert_eq!(record.pending.commit.as_deref(), Some("abc"));
        assert_eq!(rolled_back(&state).expect("record"), Some(record));
        // The start after that is a plain one, with the record kept.
        assert_eq!(before_start(&state, &config, &binary).expect("plain"), Started::Plain);
        assert!(confirm(&state).expect("confirm").is_none(), "nothing was pending");
        assert!(rolled_back(&state).expect("record").is_some());

        // A link where a kept file should be is never followed.
        prepare(&state, &Previous { config: Some(b"x"), binary: None }, Some(b"y"), None, None)
            .expect("prepare");
        let kept = handover.join(PREVIOUS_CONFIG);
        std::fs::remove_file(&kept).expect("rm");
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "not for the config").expect("secret");
        std::os::unix::fs::symlink(&secret, &kept).expect("link");
        assert!(matches!(before_start(&state, &config, &binary), Ok(Started::Trying(_))));
        assert!(before_start(&state, &config, &binary).is_err(), "followed a link");
        assert_ne!(std::fs::read_to_string(&config).expect("config"), "not for the config");
        std::fs::remove_file(handover.join(PENDING)).expect("rm");
        std::fs::remove_file(&kept).expect("rm");

        // A later hand-over that reports ready clears it all.
        prepare(&state, &Previous { config: Some(b"x"), binary: None }, Some(b"y"), None, None)
            .expect("prepare");
        assert!(matches!(before_start(&state, &config, &binary), Ok(Started::Trying(_))));
        assert!(confirm(&state).expect("confirm").is_some());
        assert_eq!(rolled_back(&state).expect("record"), None);
        assert_eq!(before_start(&state, &config, &binary).expect("plain"), Started::Plain);
    }
}
