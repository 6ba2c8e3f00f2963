//! Scenario repositories: a bare cache per remote URL, a pinned commit
//! fetched once (then served from the cache), a followed branch asked
//! with `ls-remote` and fetched only when it moved, and each commit
//! exported to a directory of its own that the model reads.
//!
//! Credentials are sent only to the host they were configured for: the
//! URL comes from the repository, which anyone with merge rights — or a
//! pull request under review — can point anywhere.
//!
//! Blocking (libgit2).

use std::path::PathBuf;

use sha2::Digest;

use super::git::{CommitId, FetchLimits, GitAuth, GitError, GitSource, SignaturePolicy};
use crate::model::load::{FetchError, FetchScenarios, Fetched, Pin};
use crate::url::url_host;

/// Credentials and the one host they may be sent to.
#[derive(Debug, Clone, Default)]
pub struct ScopedAuth {
    /// `host` or `host:port`, lowercase, as in the URLs it serves.
    pub host: Option<String>,
    /// The credentials.
    pub auth: GitAuth,
}

/// Where scenario repositories are cached, and how to reach them.
#[derive(Debug, Clone)]
pub struct SourceCache {
    dir: PathBuf,
    auth: ScopedAuth,
    known_hosts: Option<PathBuf>,
    limits: FetchLimits,
    /// The trust store's allowed signers for scenario commits: while the
    /// file is installed, every commit checked out must be signed by one
    /// of its keys.
    signers: Option<PathBuf>,
}

impl SourceCache {
    /// A cache in `dir` (created on first use).
    pub fn new(dir: PathBuf, auth: ScopedAuth, known_hosts: Option<PathBuf>) -> Self {
        Self { dir, auth, known_hosts, limits: FetchLimits::default(), signers: None }
    }

    /// Takes only commits signed by a key of `file` (OpenSSH allowed
    /// signers) while that file is installed.
    pub fn with_required_signers(mut self, file: Option<PathBuf>) -> Self {
        self.signers = file;
        self
    }

    /// Bounds every fetch by `limits`.
    pub fn with_fetch_limits(mut self, limits: FetchLimits) -> Self {
        self.limits = limits;
        self
    }

    /// For the command line: `$APIMON_CACHE_DIR`, else `$XDG_CACHE_HOME/apimon`,
    /// else `~/.cache/apimon`; credentials from `$APIMON_GIT_SSH_KEY` or
    /// `$APIMON_GIT_TOKEN_FILE`, sent only to `$APIMON_GIT_HOST`.
    ///
    /// # Errors
    /// The token file cannot be read.
    pub fn from_env(known_hosts: PathBuf) -> std::io::Result<Self> {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        let base = var("APIMON_CACHE_DIR")
            .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("apimon")))
            .or_else(|| var("HOME").map(|d| d.join(".cache/apimon")))
            .unwrap_or_else(|| std::env::temp_dir().join("apimon-cache"));
        let host = std::env::var("APIMON_GIT_HOST").ok().map(|h| h.to_ascii_lowercase());
        let auth = match (var("APIMON_GIT_SSH_KEY"), var("APIMON_GIT_TOKEN_FILE")) {
            (Some(key), _) => GitAuth::SshKey { user: "git".to_owned(), key },
            (None, Some(file)) => {
                let text = crate::fsutil::read_text_limited(&file, 64 * 1024)
                    .map_err(|e| std::io::Error::other(format!("{}: {e}", file.display())))?;
                GitAuth::Token {
                    user: "apimon".to_owned(),
                    token: crate::model::Sensitive::new(text.trim().to_owned()),
                }
            }
            (None, None) => GitAuth::None,
        };
        Ok(Self::new(
            base.join("scenario-repositories"),
            ScopedAuth { host, auth },
            Some(known_hosts),
        ))
    }

    /// The credentials sent to `url`: only to their own host, and only
    /// over a scheme that protects them (a token never over http://).
    fn auth_for(&self, url: &str) -> GitAuth {
        match &self.auth.host {
            Some(host)
                if url_host(url).as_deref() == Some(host.as_str())
                    && self.auth.auth.allowed_over(url) =>
            {
                self.auth.auth.clone()
            }
            _ => GitAuth::None,
        }
    }

    fn open(&self, url: &str, branch: &str) -> Result<(GitSource, PathBuf), GitError> {
        let key = hex::encode(&sha2::Sha256::digest(url.as_bytes())[..8]);
        let auth = self.auth_for(url);
        let mut source = GitSource::open(url, branch, auth, &self.dir.join(format!("{key}.git")))?
            .with_fetch_limits(self.limits);
        if let Some(known_hosts) = &self.known_hosts {
            source = source.with_known_hosts(known_hosts.clone());
        }
        Ok((source, self.dir.join(key)))
    }

    /// The commit `branch` of `url` points at now (`ls-remote`).
    ///
    /// # Errors
    /// The remote cannot be reached or has no such branch.
    pub fn remote_head(&self, url: &str, branch: &str) -> Result<CommitId, GitError> {
        self.open(url, branch)?.0.remote_head()
    }

    fn checkout(&self, url: &str, pin: Pin<'_>) -> Result<Fetched, GitError> {
        let branch = match pin {
            Pin::Branch(branch) => branch,
            Pin::Commit(_) => "main",
        };
        let (source, exports) = self.open(url, branch)?;
        let commit = match pin {
            Pin::Commit(commit) => {
                let commit = CommitId(commit.to_owned());
                source.fetch_commit(&commit)?;
                commit
            }
            Pin::Branch(_) => {
                let remote = source.remote_head()?;
                if source.cached_head().as_ref() == Some(&remote) {
                    remote
                } else {
                    source.fetch()?
                }
            }
        };
        if let Some(signers) =
            self.signers.as_ref().filter(|file| crate::fsutil::anchor_installed(file))
        {
            let policy =
                SignaturePolicy { ssh_allowed_signers: Some(signers.clone()), gnupg_home: None };
            source.verify(&commit, &policy)?;
        }
        // Exported every time: a directory left on disk is not trusted to
        // still be what the commit holds.
        let dir = exports.join(&commit.0);
        source.export(&commit, &dir)?;
        // The model has read what it needs from the others.
        super::export::prune_exports(&exports, &commit.0);
        Ok(Fetched { dir, commit: commit.0 })
    }
}

impl FetchScenarios for SourceCache {
    fn fetch(&self, url: &str, pin: Pin<'_>) -> Result<Fetched, FetchError> {
        self.checkout(url, pin).map_err(|error| match error {
            GitError::NoBranch { .. } | GitError::NoCommit { .. } => {
                FetchError::Missing(crate::error::chain(&error))
            }
            GitError::Refused { .. } | GitError::FetchLimit { .. } | GitError::Unsigned { .. } => {
                FetchError::Refused(crate::error::chain(&error))
            }
            other if other.failure().is_permanent() => {
                FetchError::Denied(crate::error::chain(&other))
            }
            other => FetchError::Unavailable(crate::error::chain(&other)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_goes_to_its_host_over_https_only() {
        let token = GitAuth::Token {
            user: "apimon".into(),
            token: crate::model::Sensitive::new("s3cret".into()),
        };
        let auth = ScopedAuth { host: Some("git.example".into()), auth: token };
        let cache = SourceCache::new(PathBuf::from("/nonexistent"), auth, None);
        let sent = |url: &str| matches!(cache.auth_for(url), GitAuth::Token { .. });
        assert!(sent("https://git.example/scenarios.git"));
        assert!(!sent("http://git.example/scenarios.git"), "a token over http://");
        assert!(!sent("git://git.example/scenarios.git"));
        assert!(!sent("https://elsewhere.example/scenarios.git"));
    }
}
