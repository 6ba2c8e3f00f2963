//! Reading and writing files that may be hostile or precious.
//!
//! Every file apimon reads (repository files, its configuration, the state
//! store, the secrets file) may be a device, a fifo or huge: [`read_limited`]
//! opens without blocking, insists on a regular file and reads at most a
//! limit. Every file it writes that may hold a secret is created with its
//! final mode from the start ([`write_private`]), never chmod-ed afterwards.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Reading a file failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file system refused.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Not a regular file.
    #[error("is a {0}, not a regular file")]
    NotRegular(&'static str),
    /// Larger than the limit.
    #[error("is {size} bytes; the limit is {limit} bytes")]
    TooLarge {
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
}

impl From<ReadError> for std::io::Error {
    fn from(error: ReadError) -> Self {
        match error {
            ReadError::Io(error) => error,
            other => std::io::Error::other(other.to_string()),
        }
    }
}

/// Largest configuration, secrets or state file apimon reads.
pub const MAX_CONFIG_BYTES: u64 = 16 * 1024 * 1024;

/// What kind of non-regular file `file_type` is.
pub fn kind_of(file_type: std::fs::FileType) -> &'static str {
    if file_type.is_dir() {
        "directory"
    } else if file_type.is_symlink() {
        "symbolic link"
    } else if file_type.is_fifo() {
        "fifo"
    } else if file_type.is_socket() {
        "socket"
    } else if file_type.is_char_device() || file_type.is_block_device() {
        "device"
    } else {
        "regular file"
    }
}

/// Reads `path` (following symlinks) if it is a regular file of at most
/// `limit` bytes. A fifo does not block and a device is not read.
///
/// # Errors
/// Unreadable, not a regular file, or too large.
pub fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
    // O_NONBLOCK: opening a fifo for reading would otherwise wait for a writer.
    let file = OpenOptions::new().read(true).custom_flags(nix::libc::O_NONBLOCK).open(path)?;
    read_open(file, limit)
}

/// Reads an open file under the same rules as [`read_limited`].
fn read_open(file: File, limit: u64) -> Result<Vec<u8>, ReadError> {
    let metadata = file.metadata()?;
    if !metadata.file_type().is_file() {
        return Err(ReadError::NotRegular(kind_of(metadata.file_type())));
    }
    if metadata.len() > limit {
        return Err(ReadError::TooLarge { size: metadata.len(), limit });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(metadata.len()).unwrap_or(0));
    // The file may grow between the stat and the read: never read past the limit.
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(ReadError::TooLarge { size: bytes.len() as u64, limit });
    }
    Ok(bytes)
}

/// Reads `path` as UTF-8 text under the rules of [`read_limited`].
///
/// # Errors
/// As [`read_limited`], or invalid UTF-8.
pub fn read_text_limited(path: &Path, limit: u64) -> Result<String, ReadError> {
    String::from_utf8(read_limited(path, limit)?).map_err(|e| {
        ReadError::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, e.utf8_error()))
    })
}

/// Writes `bytes` to a new temporary file beside `path`, created with
/// `mode` from the start, fsyncs it and renames it over `path`; the
/// temporary file is removed if anything fails.
///
/// # Errors
/// Creating, writing, syncing or renaming failed; `path` is then unchanged.
pub fn write_private(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temporary = path.with_file_name(format!(".{name}.tmp.{}", std::process::id()));
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&temporary)?;
        // The umask may have narrowed the mode further; never widened it.
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written?;
    if let Some(dir) = path.parent().and_then(|d| File::open(d).ok()) {
        // Makes the rename itself durable; best effort on filesystems that refuse.
        let _ = dir.sync_all();
    }
    Ok(())
}

/// A directory only this user can read (mode 0700, under the system's
/// temporary directory, named `<prefix>-<pid>-<random>`), removed with
/// everything in it when dropped.
pub struct PrivateTempDir(std::path::PathBuf);

impl PrivateTempDir {
    /// Creates it.
    ///
    /// # Errors
    /// The directory cannot be created.
    pub fn new(prefix: &str) -> std::io::Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        let name = format!("{prefix}-{}-{:016x}", std::process::id(), rand::random::<u64>());
        let path = std::env::temp_dir().join(name);
        std::fs::DirBuilder::new().mode(0o700).create(&path).map(|()| Self(path))
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for PrivateTempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Whether a trust anchor at `path` counts as installed: only a file that
/// does not exist is absent; one that cannot even be looked at counts as
/// there (and then fails to verify), so an unreadable anchor never turns a
/// check off.
pub fn anchor_installed(path: &Path) -> bool {
    !matches!(std::fs::symlink_metadata(path), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_fifos_and_large_files_are_refused_without_blocking() {
        let dir = tempfile::tempdir().expect("temp dir");
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("fifo");
        assert!(matches!(read_limited(&fifo, 10), Err(ReadError::NotRegular("fifo"))));
        assert!(matches!(
            read_limited(Path::new("/dev/zero"), 10),
            Err(ReadError::NotRegular("device"))
        ));
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'x'; 11]).expect("write");
        assert!(matches!(read_limited(&big, 10), Err(ReadError::TooLarge { size: 11, limit: 10 })));
        assert_eq!(read_limited(&big, 11).expect("fits").len(), 11);
    }

    #[test]
    fn private_files_are_never_readable_by_others() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("secret");
        write_private(&path, b"s3cret", 0o600).expect("write");
        let mode = std::fs::metadata(&path).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read(&path).expect("read"), b"s3cret");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp."))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn a_private_temp_dir_is_the_users_alone_and_gone_when_dropped() {
        let dir = PrivateTempDir::new("apimon-test").expect("temp dir");
        let path = dir.path().to_owned();
        let mode = std::fs::metadata(&path).expect("exists").permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        std::fs::write(path.join("f"), b"x").expect("write");
        drop(dir);
        assert!(!path.exists());
    }

    #[test]
    fn an_anchor_is_absent_only_when_it_does_not_exist() {
        let dir = tempfile::tempdir().expect("temp dir");
        let anchor = dir.path().join("allowed_signers");
        assert!(!anchor_installed(&anchor));
        std::fs::write(&anchor, b"").expect("write");
        assert!(anchor_installed(&anchor));
        let dangling = dir.path().join("link");
        std::os::unix::fs::symlink(dir.path().join("gone"), &dangling).expect("link");
        assert!(anchor_installed(&dangling), "a link that resolves nowhere is not an absent file");
    }
}
