//! `/etc/apimon/daemon.yaml`: where the repository is, where secrets and
//! state live, how often to poll, when to repair drift, and when
//! destructive changes may run. Unknown keys are errors with file, line
//! and column.

use std::path::{Path, PathBuf};

use crate::apply::ApplyOptions;
pub use crate::model::daemon::{
    DaemonFile, RawConfig, RawRepository, RawWindow, MAX_WINDOW_MINUTES,
};

/// A checked configuration, with the apply options it sets.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file, checked.
    pub file: DaemonFile,
    /// Apply options.
    pub apply: ApplyOptions,
}

impl std::ops::Deref for Config {
    type Target = DaemonFile;

    fn deref(&self) -> &DaemonFile {
        &self.file
    }
}

/// The configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Unreadable.
    #[error("cannot read daemon config {path}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Invalid: every problem with its place.
    #[error("invalid daemon config:\n{}", .0.join("\n"))]
    Invalid(Vec<String>),
}

impl Config {
    /// Reads and checks `path`.
    ///
    /// # Errors
    /// Unreadable, or invalid (file:line:column for each problem).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = crate::fsutil::read_text_limited(path, crate::fsutil::MAX_CONFIG_BYTES)
            .map_err(|e| ConfigError::Read { path: path.to_owned(), source: e.into() })?;
        Self::parse(path, &text)
    }

    /// Checks `text`, naming `path` in errors.
    ///
    /// # Errors
    /// As [`Config::load`].
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let file = DaemonFile::parse(path, text).map_err(ConfigError::Invalid)?;
        let apply = ApplyOptions {
            parallelism: (file.raw.parallelism as usize).max(1),
            max_attempts: file.raw.attempts.max(1),
            ..ApplyOptions::default()
        };
        Ok(Self { file, apply })
    }
}
