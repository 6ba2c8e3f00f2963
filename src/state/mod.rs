//! The state store on the applying machine: what apimon created (so it
//! prunes only what it owns), the last applied commit per environment, and
//! a bounded history of runs. A lock file keeps two applies apart.
//!
//! # Design Note
//! One JSON file, replaced atomically (write a temporary file in the same
//! directory, fsync, rename, fsync the directory), rather than an embedded
//! database: the data is small (one id per owned resource), written by a
//! single writer that holds the lock (ahead of each create and after each
//! change, see [`Journal`]), read whole every time, and an operator can
//! inspect it with `jq`. A crash leaves either
//! the old or the new file, never a mix. A file that does not parse is
//! reported and left untouched, never silently replaced.

mod journal;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

pub use journal::Journal;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::plan::{Op, ResourceId, Summary};

/// Runs kept in the history.
pub const HISTORY_LIMIT: usize = 500;

/// Marks a state directory whose store `apimon bootstrap` took away to
/// apply with; removed when it hands the store back.
pub const TAKEN_FILE: &str = "state.taken";

/// The state file in the state directory.
pub const STATE_FILE: &str = "state.json";
const LOCK_FILE: &str = "apply.lock";
const FORMAT_VERSION: u32 = 1;

/// The state store failed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A file operation failed.
    #[error("state store {path}: cannot {action}")]
    Io {
        /// File or directory.
        path: PathBuf,
        /// What was attempted.
        action: &'static str,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Another apply holds the lock.
    #[error("another apimon apply is running (it holds {path}); wait for it to finish")]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// `apimon bootstrap` took the store away to apply with it, and has
    /// not handed it back: nothing here may use the directory meanwhile.
    #[error("the state store in {dir} was taken by `apimon bootstrap` ({by}) and not handed back yet; it is not used until bootstrap finishes (docs/operations.md, section 0)")]
    Taken {
        /// The state directory.
        dir: PathBuf,
        /// Who took it, and when.
        by: String,
    },
    /// The state file is not valid; it is left as it is.
    #[error("state file {path}:{line}:{column} is not valid apimon state ({message}); it was not changed: fix or move it away")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
}

/// Per-environment state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentState {
    /// Commit of the last apply that completed without failure.
    pub last_applied_commit: Option<String>,
    /// When that was.
    pub last_applied_at: Option<DateTime<Utc>>,
    /// Resources apimon created and may therefore delete.
    pub owned: BTreeSet<ResourceId>,
    /// Fingerprints of write-only secrets (e.g. a Grafana datasource
    /// password) by resource id, as last applied: such a secret cannot be
    /// read back, so a changed fingerprint is how a change is detected.
    #[serde(default)]
    pub fingerprints: BTreeMap<String, String>,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunResult {
    /// Nothing to do.
    NoChanges,
    /// Every change applied.
    Success,
    /// Some changes failed or were skipped.
    Partial,
}

/// One apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Run {
    /// Start.
    pub started_at: DateTime<Utc>,
    /// End.
    pub finished_at: DateTime<Utc>,
    /// Repository commit, if the repository is a git checkout.
    pub commit: Option<String>,
    /// Environments applied.
    pub environments: Vec<String>,
    /// Planned changes.
    pub planned: Summary,
    /// Changes applied.
    pub applied: usize,
    /// Failed changes with their errors.
    pub failed: Vec<FailedChange>,
    /// Changes skipped because a dependency failed.
    pub skipped: usize,
    /// Result.
    pub result: RunResult,
}

/// A change that failed in a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailedChange {
    /// The resource.
    pub id: ResourceId,
    /// The error.
    pub error: String,
}

/// Everything the store holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// File format version.
    pub version: u32,
    /// By environment name.
    pub environments: BTreeMap<String, EnvironmentState>,
    /// Most recent last, at most [`HISTORY_LIMIT`].
    pub history: Vec<Run>,
}

impl Default for State {
    fn default() -> Self {
        Self { version: FORMAT_VERSION, environments: BTreeMap::new(), history: Vec::new() }
    }
}

impl State {
    /// Whether apimon created `id`.
    pub fn owns(&self, id: &ResourceId) -> bool {
        self.environments.get(&*id.env).is_some_and(|env| env.owned.contains(id))
    }

    /// The fingerprint of `id`'s write-only secret as last applied.
    pub fn fingerprint(&self, id: &ResourceId) -> Option<&str> {
        self.environments
            .get(&*id.env)
            .and_then(|env| env.fingerprints.get(&id.to_string()))
            .map(String::as_str)
    }

    /// Records that the change `op` to `id` applied: a creation makes it
    /// apimon's, a deletion forgets it, and `fingerprint` (of a write-only
    /// value, or of what a restart depends on) is kept for the next plan.
    pub fn record_applied(&mut self, id: &ResourceId, op: &Op, fingerprint: Option<&str>) {
        let env = self.environments.entry(id.env.to_string()).or_default();
        match op {
            Op::Create => {
                env.owned.insert(id.clone());
            }
            Op::Delete => {
                env.owned.remove(id);
                env.fingerprints.remove(&id.to_string());
            }
            _ => {}
        }
        if let Some(fingerprint) = fingerprint {
            env.fingerprints.insert(id.to_string(), fingerprint.to_owned());
        }
    }

    /// Forgets `id` (it no longer exists); whether anything changed.
    pub fn forget(&mut self, id: &ResourceId) -> bool {
        let Some(env) = self.environments.get_mut(&*id.env) else { return false };
        let owned = env.owned.remove(id);
        owned | env.fingerprints.remove(&id.to_string()).is_some()
    }

    /// Records that `env` reached `commit` at `at` (an apply without failure).
    pub fn record_converged(&mut self, env: &str, commit: Option<&str>, at: DateTime<Utc>) {
        let env = self.environments.entry(env.to_owned()).or_default();
        env.last_applied_commit = commit.map(str::to_owned);
        env.last_applied_at = Some(at);
    }

    /// Appends a run, dropping the oldest beyond the limit.
    pub fn record(&mut self, run: Run) {
        self.history.push(run);
        let excess = self.history.len().saturating_sub(HISTORY_LIMIT);
        self.history.drain(..excess);
    }
}

/// Reads the state file at `dir`, without locking (for read-only plans).
///
/// # Errors
/// The file exists but cannot be read or parsed.
pub fn read(dir: &Path) -> Result<State, StateError> {
    let path = dir.join(STATE_FILE);
    let text = match crate::fsutil::read_text_limited(&path, crate::fsutil::MAX_CONFIG_BYTES) {
        Ok(text) => text,
        Err(crate::fsutil::ReadError::Io(error))
            if error.kind() == std::io::ErrorKind::NotFound =>
        {
            return Ok(State::default())
        }
        Err(error) => return Err(StateError::Io { path, action: "read", source: error.into() }),
    };
    parse(&path, &text)
}

/// Parses a state file's `text` (read from `path`, named in errors).
///
/// # Errors
/// Not JSON of a state, or of another format version.
pub fn parse(path: &Path, text: &str) -> Result<State, StateError> {
    let path = path.to_owned();
    let state: State = serde_json::from_str(text).map_err(|error| StateError::Corrupt {
        path: path.clone(),
        line: error.line(),
        column: error.column(),
        message: error.to_string().split(" at line ").next().unwrap_or_default().to_owned(),
    })?;
    if state.version != FORMAT_VERSION {
        return Err(StateError::Corrupt {
            path,
            line: 1,
            column: 1,
            message: format!("format version {} is not {FORMAT_VERSION}", state.version),
        });
    }
    Ok(state)
}

/// Removes temporary state files a killed writer left behind.
fn remove_leftovers(dir: &Path) {
    let prefix = format!(".{STATE_FILE}.tmp");
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// The store, locked for one apply; the lock is released on drop.
#[derive(Debug)]
pub struct LockedStore {
    dir: PathBuf,
    _lock: File,
}

impl LockedStore {
    /// Creates `dir` (mode 0700) if needed and takes the apply lock.
    ///
    /// # Errors
    /// [`StateError::Locked`] if another apply holds it.
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        let io = |action, source| StateError::Io { path: dir.to_owned(), action, source };
        std::fs::create_dir_all(dir).map_err(|e| io("create the directory", e))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| io("set permissions", e))?;
        }
        let lock_path = dir.join(LOCK_FILE);
        let lock =
            OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path).map_err(
                |source| StateError::Io {
                    path: lock_path.clone(),
                    action: "open the lock file",
                    source,
                },
            )?;
        match lock.try_lock() {
            Ok(()) => {
                let taken = dir.join(TAKEN_FILE);
                if taken.exists() {
                    let by = crate::fsutil::read_text_limited(&taken, 4096)
                        .map(|text| text.split_whitespace().collect::<Vec<_>>().join(" "))
                        .unwrap_or_else(|e| e.to_string());
                    return Err(StateError::Taken { dir: dir.to_owned(), by });
                }
                // Holding the lock, no one else writes: what a crashed writer
                // left half-written goes.
                remove_leftovers(dir);
                Ok(Self { dir: dir.to_owned(), _lock: lock })
            }
            Err(std::fs::TryLockError::WouldBlock) => Err(StateError::Locked { path: lock_path }),
            Err(std::fs::TryLockError::Error(source)) => {
                Err(StateError::Io { path: lock_path, action: "lock", source })
            }
        }
    }

    /// The current state.
    ///
    /// # Errors
    /// As [`read`].
    pub fn load(&self) -> Result<State, StateError> {
        read(&self.dir)
    }

    /// Replaces the state file atomically.
    ///
    /// # Errors
    /// Writing, syncing or renaming failed; the old file is then intact.
    pub fn save(&self, state: &State) -> Result<(), StateError> {
        write(&self.dir, state)
    }

    /// A journal of one apply (see [`Journal`]).
    ///
    /// # Errors
    /// The state cannot be read, or `forget` cannot be recorded.
    pub fn journal(&self, forget: &[ResourceId]) -> Result<Journal, StateError> {
        Journal::open(&self.dir, self.load()?, forget)
    }
}

/// Writes `state` to `dir` atomically, readable by its owner only.
fn write(dir: &Path, state: &State) -> Result<(), StateError> {
    let path = dir.join(STATE_FILE);
    let io = |action, source| StateError::Io { path: path.clone(), action, source };
    let mut bytes =
        serde_json::to_vec_pretty(state).map_err(|e| io("serialize", std::io::Error::other(e)))?;
    bytes.push(b'\n');
    crate::fsutil::write_private(&path, &bytes, 0o600).map_err(|e| io("replace", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::ProviderKind;

    fn id(name: &str) -> ResourceId {
        ResourceId::new("outside", ProviderKind::named("influxdb"), "user", name)
    }

    #[test]
    fn a_store_taken_by_bootstrap_is_not_used_until_handed_back() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join(TAKEN_FILE), "token=abc\nhost=ws1\n").expect("marker");
        let error = LockedStore::open(dir.path()).expect_err("taken");
        assert!(
            error.to_string().contains("taken by `apimon bootstrap` (token=abc host=ws1)"),
            "{error}"
        );
        std::fs::remove_file(dir.path().join(TAKEN_FILE)).expect("hand back");
        assert!(LockedStore::open(dir.path()).is_ok());
    }

    #[test]
    fn state_round_trips_and_missing_file_is_empty() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = LockedStore::open(dir.path()).expect("open");
        assert_eq!(store.load().expect("load"), State::default());
        let mut state = State::default();
        state.environments.entry("outside".into()).or_default().owned.insert(id("grafana"));
        store.save(&state).expect("save");
        let again = store.load().expect("load");
        assert!(again.owns(&id("grafana")));
        assert!(!again.owns(&id("admin")));
    }

    #[test]
    fn a_second_apply_cannot_take_the_lock() {
        let dir = tempfile::tempdir().expect("temp dir");
        let _first = LockedStore::open(dir.path()).expect("first");
        let error = LockedStore::open(dir.path()).expect_err("second");
        assert!(matches!(error, StateError::Locked { .. }), "{error}");
    }

    #[test]
    fn a_corrupt_state_file_is_reported_with_its_position_and_kept() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join(STATE_FILE), "{\n  \"version\": 1,\n  oops\n}")
            .expect("write");
        let error = read(dir.path()).expect_err("corrupt");
        let text = error.to_string();
        assert!(text.contains("state.json:3:3"), "{text}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join(STATE_FILE)).expect("read"),
            "{\n  \"version\": 1,\n  oops\n}"
        );
    }

    #[test]
    fn applied_changes_are_recorded_by_op() {
        let mut state = State::default();
        state.record_applied(&id("a"), &Op::Create, Some("f1"));
        assert!(state.owns(&id("a")));
        assert_eq!(state.fingerprint(&id("a")), Some("f1"));
        state.record_applied(&id("a"), &Op::Update { reason: "x".into() }, Some("f2"));
        assert_eq!(state.fingerprint(&id("a")), Some("f2"));
        state.record_applied(&id("a"), &Op::Delete, None);
        assert!(!state.owns(&id("a")));
        assert_eq!(state.fingerprint(&id("a")), None);
    }

    #[test]
    fn history_is_bounded() {
        let mut state = State::default();
        let run = Run {
            started_at: Utc::now(),
            finished_at: Utc::now(),
            commit: None,
            environments: vec![],
            planned: Summary::default(),
            applied: 0,
            failed: vec![],
            skipped: 0,
            result: RunResult::NoChanges,
        };
        for _ in 0..HISTORY_LIMIT + 3 {
            state.record(run.clone());
        }
        assert_eq!(state.history.len(), HISTORY_LIMIT);
    }
}
