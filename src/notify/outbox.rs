//! The outbox: one file per message and route, written (fsynced, renamed)
//! before the first attempt and removed once the route took it, so a
//! notification survives a down receiver and a restart (a SIGKILL between
//! sending and removing sends it again, with the same id: at least once).

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::Message;

/// Most bytes of one outbox file read.
const MAX_FILE: u64 = 1024 * 1024;
/// Most files kept: older ones are dropped (and counted) beyond it.
pub const MAX_PENDING: usize = 10_000;

/// One message for one route.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Delivery {
    /// The route's name.
    pub route: String,
    /// The message.
    pub message: Message,
    /// Attempts so far.
    pub attempts: u32,
    /// Not before.
    pub next_attempt: DateTime<Utc>,
    /// The last failure.
    pub last_error: Option<String>,
}

impl Delivery {
    /// Its id at the receiver (Matrix's transaction id, the mail's
    /// Message-ID, the webhook's `X-Apimon-Delivery`): the same for every
    /// attempt.
    pub fn id(&self) -> String {
        format!("{}-{}", self.message.id, self.route)
    }
}

/// The outbox directory (mode 0700: messages may name internals).
#[derive(Debug, Clone)]
pub struct Outbox {
    dir: PathBuf,
}

impl Outbox {
    /// The outbox at `dir`, made if missing.
    ///
    /// # Errors
    /// The directory cannot be made.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        Ok(Self { dir: dir.to_owned() })
    }

    fn path(&self, delivery: &Delivery) -> PathBuf {
        let safe: String = delivery
            .id()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' })
            .collect();
        let created = delivery.message.created.timestamp_nanos_opt().unwrap_or_default();
        self.dir.join(format!("{created:020}-{safe}.json"))
    }

    /// Writes `delivery` (new or updated), durably.
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn put(&self, delivery: &Delivery) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(delivery).map_err(std::io::Error::other)?;
        crate::fsutil::write_private(&self.path(delivery), &bytes, 0o600)
    }

    /// Removes `delivery` (delivered, or dropped).
    pub fn remove(&self, delivery: &Delivery) {
        let path = self.path(delivery);
        if let Err(error) = std::fs::remove_file(&path) {
            if error.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %path.display(), %error, "Cannot remove a delivered notification from the outbox.");
            }
        }
    }

    /// Every delivery waiting, oldest first; unreadable files are moved
    /// aside (`.bad`) and logged, never retried.
    pub fn pending(&self) -> Vec<Delivery> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return Vec::new() };
        let mut names: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .filter(|p| !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
            .collect();
        names.sort();
        names
            .into_iter()
            .filter_map(|path| {
                let read = crate::fsutil::read_limited(&path, MAX_FILE)
                    .map_err(|e| e.to_string())
                    .and_then(|b| serde_json::from_slice::<Delivery>(&b).map_err(|e| e.to_string()));
                match read {
                    Ok(delivery) => Some(delivery),
                    Err(error) => {
                        tracing::error!(path = %path.display(), %error, "An unreadable notification in the outbox is set aside.");
                        let _ = std::fs::rename(&path, path.with_extension("bad"));
                        None
                    }
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_put_is_pending_until_removed_and_garbage_is_set_aside() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let outbox = Outbox::open(&dir.path().join("outbox")).unwrap_or_else(|e| panic!("{e}"));
        let delivery = Delivery {
            route: "ops/chat".into(),
            message: Message::new("subject", "text", serde_json::json!({"a": 1})),
            attempts: 0,
            next_attempt: Utc::now(),
            last_error: None,
        };
        outbox.put(&delivery).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.path().join("outbox/0-garbage.json"), "{")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(outbox.pending(), vec![delivery.clone()]);
        assert!(dir.path().join("outbox/0-garbage.bad").exists());
        outbox.remove(&delivery);
        assert!(outbox.pending().is_empty());
    }
}
