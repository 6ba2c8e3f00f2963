//! One directory per playbook run: its working directory and its log,
//! `<runs_dir>/<scenario>/<UTC start>-<job id>/output.log`. Only the newest
//! `keep_runs` directories of a scenario are kept.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use tokio::io::AsyncWriteExt;

/// Most bytes of output kept in a run's log; the rest is counted, not kept.
pub const MAX_LOG_BYTES: u64 = 16 * 1024 * 1024;

/// A new run's identity and directory.
#[derive(Debug, Clone)]
pub struct RunDir {
    /// 32 lowercase hex digits, unique per run (`TASK_EXECUTOR_JOB_ID`).
    pub job_id: String,
    /// The run's working directory.
    pub path: PathBuf,
}

/// A fresh job id: 128 random bits as 32 hex digits, the form the original
/// APImon executor gave its playbooks.
pub fn new_job_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

impl RunDir {
    /// Creates the directory of a run of `scenario` started at `started_at`
    /// (readable by the executor's user and group only).
    ///
    /// # Errors
    /// The directory cannot be created.
    pub fn create(
        runs_dir: &Path,
        scenario: &str,
        started_at: DateTime<Utc>,
    ) -> std::io::Result<Self> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        let job_id = new_job_id();
        let name = format!("{}-{job_id}", started_at.format("%Y%m%dT%H%M%S%.3fZ"));
        let parent = runs_dir.join(scenario);
        std::fs::DirBuilder::new().recursive(true).mode(0o750).create(&parent)?;
        let path = parent.join(name);
        std::fs::DirBuilder::new().mode(0o750).create(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o750))?;
        Ok(Self { job_id, path })
    }

    /// The run's log file.
    pub fn log_path(&self) -> PathBuf {
        self.path.join("output.log")
    }
}

/// Removes all but the newest `keep` run directories of `scenario` (names
/// start with the UTC start time, so they sort by age).
pub fn prune(runs_dir: &Path, scenario: &str, keep: usize) {
    let parent = runs_dir.join(scenario);
    let Ok(entries) = std::fs::read_dir(&parent) else { return };
    let mut runs: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    runs.sort();
    let excess = runs.len().saturating_sub(keep);
    for old in &runs[..excess] {
        if let Err(error) = std::fs::remove_dir_all(old) {
            tracing::warn!(dir = %old.display(), %error, "Cannot remove an old run directory.");
        }
    }
}

/// Appends a run's output to its log, up to [`MAX_LOG_BYTES`].
#[derive(Debug)]
pub struct LogWriter {
    file: Option<tokio::fs::File>,
    written: u64,
    cut: bool,
}

impl LogWriter {
    /// A writer to `path`, or one that keeps nothing when it cannot be
    /// created (the run goes on; the failure is logged).
    pub async fn open(path: Option<&Path>) -> Self {
        let file = match path {
            Some(path) => match tokio::fs::File::create(path).await {
                Ok(file) => Some(file),
                Err(error) => {
                    tracing::warn!(file = %path.display(), %error, "Cannot write the run's log.");
                    None
                }
            },
            None => None,
        };
        Self { file, written: 0, cut: false }
    }

    /// Appends `bytes` while under the limit.
    pub async fn write(&mut self, bytes: &[u8]) {
        let Some(file) = self.file.as_mut() else { return };
        let room = MAX_LOG_BYTES.saturating_sub(self.written);
        let take = usize::try_from(room).unwrap_or(usize::MAX).min(bytes.len());
        if take > 0 && file.write_all(&bytes[..take]).await.is_ok() {
            self.written += take as u64;
        }
        if take < bytes.len() && !self.cut {
            self.cut = true;
            let _ = file.write_all(b"\n[apimon: output past this point not kept]\n").await;
        }
    }

    /// Flushes the file.
    pub async fn finish(mut self) {
        if let Some(file) = self.file.as_mut() {
            let _ = file.flush().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_are_32_hex_digits_and_differ() {
        let (a, b) = (new_job_id(), new_job_id());
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, b);
    }

    #[test]
    fn only_the_newest_runs_are_kept() {
        let dir = tempfile::tempdir().expect("temp dir");
        let start = DateTime::from_timestamp(1_800_000_000, 0).expect("time");
        let runs: Vec<RunDir> = (0..5)
            .map(|i| {
                RunDir::create(dir.path(), "s", start + chrono::Duration::seconds(i))
                    .expect("run dir")
            })
            .collect();
        prune(dir.path(), "s", 2);
        let left: Vec<bool> = runs.iter().map(|r| r.path.exists()).collect();
        assert_eq!(left, [false, false, false, true, true]);
    }

    #[tokio::test]
    async fn a_log_stops_at_its_limit_and_says_so() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("output.log");
        let mut log = LogWriter::open(Some(&path)).await;
        log.written = MAX_LOG_BYTES - 3;
        log.write(b"abcdef").await;
        log.write(b"more").await;
        log.finish().await;
        let text = std::fs::read_to_string(&path).expect("log");
        assert_eq!(text, "abc\n[apimon: output past this point not kept]\n");
    }
}
