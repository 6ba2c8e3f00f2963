//! The daemon's git source: a bare cache of the remote repository, asked
//! each poll whether the branch moved (a cheap `ls-remote`), fetched only
//! when it did (force-pushes included), and commits exported to their own
//! directories so a rejected commit never replaces the last good one.
//!
//! Blocking (libgit2): the daemon calls it from `spawn_blocking`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use git2::{Direction, FetchOptions, Oid, RemoteCallbacks, Repository};

pub use super::failure::GitFailure;
pub use super::fetch::FetchLimits;
use crate::known_hosts::Verdict;
use crate::url::{redact_url, ssh_host_port};

use crate::model::Sensitive;

/// A commit id (hex).
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct CommitId(pub String);

impl std::fmt::Display for CommitId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// How to authenticate to the remote.
#[derive(Debug, Clone, Default)]
pub enum GitAuth {
    /// file://, git://, public https.
    #[default]
    None,
    /// ssh:// with a private key file.
    SshKey {
        /// User (usually `git`).
        user: String,
        /// Private key file.
        key: PathBuf,
    },
    /// https:// with a token as the password.
    Token {
        /// User name sent with the token.
        user: String,
        /// The token.
        token: Sensitive<String>,
    },
}

impl GitAuth {
    /// Whether these credentials may be sent to `url` (its scheme protects them).
    pub fn allowed_over(&self, url: &str) -> bool {
        use crate::url::{carries, Credential};
        match self {
            Self::None => true,
            Self::Token { .. } => carries(url, Credential::Token),
            Self::SshKey { .. } => carries(url, Credential::SshKey),
        }
    }
}

/// Which commit signatures are accepted.
#[derive(Debug, Clone, Default)]
pub struct SignaturePolicy {
    /// OpenSSH allowed-signers file (`gpg.ssh.allowedSignersFile`).
    pub ssh_allowed_signers: Option<PathBuf>,
    /// GnuPG home holding the accepted public keys.
    pub gnupg_home: Option<PathBuf>,
}

impl SignaturePolicy {
    /// Whether commits must be signed.
    pub fn required(&self) -> bool {
        self.ssh_allowed_signers.is_some() || self.gnupg_home.is_some()
    }
}

/// The git source failed.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// The server's SSH host key is refused (unknown, changed or revoked).
    #[error("git {action} {url}: {reason}")]
    HostKey {
        /// What was attempted.
        action: &'static str,
        /// Remote URL (no credentials in it).
        url: String,
        /// Why, naming the known_hosts file and line.
        reason: String,
    },
    /// libgit2 failed.
    #[error("git {action} {url}")]
    Git {
        /// What was attempted.
        action: &'static str,
        /// Remote URL (no credentials in it).
        url: String,
        /// Cause.
        #[source]
        source: git2::Error,
    },
    /// The branch does not exist on the remote.
    #[error("branch {branch} not found on {url}")]
    NoBranch {
        /// Branch.
        branch: String,
        /// Remote URL.
        url: String,
    },
    /// Writing the exported tree failed.
    #[error("cannot export commit {commit} to {path}")]
    Export {
        /// Commit.
        commit: CommitId,
        /// Target.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The commit's tree is not one apimon exports (a name that would leave
    /// the export, or past a limit): the same commit is refused every time.
    #[error("commit {commit} refused: {source}")]
    Refused {
        /// Commit.
        commit: CommitId,
        /// What is wrong with its tree.
        #[source]
        source: super::export::ExportRefusal,
    },
    /// A fetch was stopped at one of its bounds.
    #[error("fetch from {url} stopped: {reason}")]
    FetchLimit {
        /// Remote URL (no credentials in it).
        url: String,
        /// Which bound, with its value.
        reason: String,
    },
    /// The commit is not on the remote (no branch or tag leads to it).
    #[error("commit {commit} not found on {url}")]
    NoCommit {
        /// Commit.
        commit: CommitId,
        /// Remote URL.
        url: String,
    },
    /// The commit is unsigned or signed by a key that is not allowed.
    #[error("commit {commit} is not signed by an allowed key: {detail}")]
    Unsigned {
        /// Commit.
        commit: CommitId,
        /// What `git verify-commit` said.
        detail: String,
    },
}

impl GitError {
    /// What kind of failure this is.
    pub fn failure(&self) -> GitFailure {
        match self {
            Self::Git { source, .. } => GitFailure::of(source),
            Self::HostKey { .. } => GitFailure::HostKey,
            Self::NoBranch { .. } | Self::NoCommit { .. } => GitFailure::NotFound,
            Self::Refused { .. } | Self::FetchLimit { .. } | Self::Unsigned { .. } => {
                GitFailure::Refused
            }
            Self::Export { .. } => GitFailure::Local,
        }
    }
}

/// A remote repository and its local bare cache.
pub struct GitSource {
    url: String,
    branch: String,
    auth: GitAuth,
    repo: Repository,
    known_hosts: Option<PathBuf>,
    limits: FetchLimits,
    /// Why the last host key was refused (libgit2 reports its own words).
    refusal: std::sync::Arc<std::sync::Mutex<Option<String>>>,
    /// Why the last transfer was stopped at a bound.
    stopped: std::sync::Arc<std::sync::Mutex<Option<String>>>,
}

impl std::fmt::Debug for GitSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitSource")
            .field("url", &redact_url(&self.url))
            .field("branch", &self.branch)
            .finish_non_exhaustive()
    }
}

impl GitSource {
    /// Opens (or creates) the bare cache at `cache` for `url`.
    ///
    /// # Errors
    /// The cache cannot be created or opened.
    pub fn open(url: &str, branch: &str, auth: GitAuth, cache: &Path) -> Result<Self, GitError> {
        let error = |action, source| GitError::Git { action, url: redact_url(url), source };
        let repo = match Repository::open_bare(cache) {
            Ok(repo) => repo,
            Err(_) => {
                std::fs::create_dir_all(cache).map_err(|e| {
                    error("create cache for", git2::Error::from_str(&e.to_string()))
                })?;
                Repository::init_bare(cache).map_err(|e| error("init cache for", e))?
            }
        };
        match repo.find_remote("origin") {
            Ok(remote) if remote.url().ok() == Some(url) => {}
            Ok(_) => repo.remote_set_url("origin", url).map_err(|e| error("set remote", e))?,
            Err(_) => {
                repo.remote("origin", url).map_err(|e| error("add remote", e))?;
            }
        }
        Ok(Self {
            url: url.to_owned(),
            branch: branch.to_owned(),
            auth,
            repo,
            known_hosts: None,
            limits: FetchLimits::default(),
            refusal: Default::default(),
            stopped: Default::default(),
        })
    }

    /// Bounds every fetch by `limits`.
    pub fn with_fetch_limits(mut self, limits: FetchLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Verifies ssh:// host keys against `known_hosts` (unknown or changed: refused).
    pub fn with_known_hosts(mut self, known_hosts: PathBuf) -> Self {
        self.known_hosts = Some(known_hosts);
        self
    }

    fn callbacks(&self) -> RemoteCallbacks<'_> {
        let mut callbacks = RemoteCallbacks::new();
        let url = self.url.clone();
        let known_hosts = self.known_hosts.clone();
        let refusal = std::sync::Arc::clone(&self.refusal);
        callbacks.certificate_check(move |cert, _host| {
            let refuse = |message: String| {
                if let Ok(mut slot) = refusal.lock() {
                    *slot = Some(message.clone());
                }
                Err(git2::Error::from_str(&message))
            };
            let Some(hostkey) = cert.as_hostkey().and_then(|h| h.hostkey()) else {
                // TLS: libgit2 has verified the certificate chain already.
                return Ok(git2::CertificateCheckStatus::CertificatePassthrough);
            };
            let (host, port) = ssh_host_port(&url);
            let Some(known_hosts) = &known_hosts else {
                return refuse(format!("refusing SSH host key of {host}:{port}: no known_hosts file configured (ssh_known_hosts)"));
            };
            let Ok(key) = russh::keys::ssh_key::PublicKey::from_bytes(hostkey) else {
                return refuse(format!("refusing SSH host key of {host}:{port}: it cannot be decoded"));
            };
            match crate::known_hosts::check(known_hosts, &host, port, &key) {
                Ok(Verdict::Known) => Ok(git2::CertificateCheckStatus::CertificateOk),
                Ok(Verdict::Unknown) => refuse(format!("refusing SSH host key of {host}:{port}: no entry in {}", known_hosts.display())),
                Ok(Verdict::Changed { line }) => refuse(format!("refusing SSH host key of {host}:{port}: it does not match {}:{line}", known_hosts.display())),
                Ok(Verdict::Revoked { line }) => refuse(format!("refusing SSH host key of {host}:{port}: it is revoked at {}:{line}", known_hosts.display())),
                Err(error) => Err(git2::Error::from_str(&crate::error::chain(&error))),
            }
        });
        let (limits, stopped, started) =
            (self.limits, std::sync::Arc::clone(&self.stopped), Instant::now());
        callbacks.transfer_progress(move |progress| {
            // A moving transfer is progress: the daemon's watchdog sees it.
            crate::progress::tick();
            let bytes = progress.received_bytes() as u64;
            match limits.exceeded(bytes, progress.total_objects(), started.elapsed()) {
                None => true,
                Some(reason) => {
                    if let Ok(mut slot) = stopped.lock() {
                        *slot = Some(reason);
                    }
                    false
                }
            }
        });
        callbacks.sideband_progress(|_| {
            crate::progress::tick();
            true
        });
        let auth = self.auth.clone();
        callbacks.credentials(move |_url, username, _allowed| match &auth {
            GitAuth::None => git2::Cred::default(),
            GitAuth::SshKey { user, key } => {
                git2::Cred::ssh_key(username.unwrap_or(user), None, key, None)
            }
            GitAuth::Token { user, token } => git2::Cred::userpass_plaintext(user, token.expose()),
        });
        callbacks
    }

    fn git_error(&self, action: &'static str, source: git2::Error) -> GitError {
        if let Some(reason) = self.stopped.lock().ok().and_then(|mut slot| slot.take()) {
            return GitError::FetchLimit { url: redact_url(&self.url), reason };
        }
        if let Some(reason) = self.refusal.lock().ok().and_then(|mut slot| slot.take()) {
            return GitError::HostKey { action, url: redact_url(&self.url), reason };
        }
        // libgit2's own message may quote the URL, credentials and all.
        let message = source.message().replace(&self.url, &redact_url(&self.url));
        let source = git2::Error::new(source.code(), source.class(), message);
        GitError::Git { action, url: redact_url(&self.url), source }
    }

    /// The branch's commit on the remote, without fetching (`ls-remote`).
    ///
    /// # Errors
    /// The remote cannot be reached or has no such branch.
    pub fn remote_head(&self) -> Result<CommitId, GitError> {
        let mut remote =
            self.repo.find_remote("origin").map_err(|e| self.git_error("open remote", e))?;
        let connection = remote
            .connect_auth(Direction::Fetch, Some(self.callbacks()), None)
            .map_err(|e| self.git_error("connect to", e))?;
        let wanted = format!("refs/heads/{}", self.branch);
        let heads = connection.list().map_err(|e| self.git_error("list refs of", e))?;
        heads
            .iter()
            .find(|head| head.name() == wanted)
            .map(|head| CommitId(head.oid().to_string()))
            .ok_or_else(|| GitError::NoBranch {
                branch: self.branch.clone(),
                url: redact_url(&self.url),
            })
    }

    /// The commit the cache last fetched, if any.
    pub fn cached_head(&self) -> Option<CommitId> {
        let reference =
            self.repo.find_reference(&format!("refs/remotes/origin/{}", self.branch)).ok()?;
        reference.target().map(|oid| CommitId(oid.to_string()))
    }

    /// Fetches the branch (force: a rewritten history is followed).
    ///
    /// # Errors
    /// The fetch failed.
    pub fn fetch(&self) -> Result<CommitId, GitError> {
        let mut remote =
            self.repo.find_remote("origin").map_err(|e| self.git_error("open remote", e))?;
        let refspec = format!("+refs/heads/{0}:refs/remotes/origin/{0}", self.branch);
        let mut options = FetchOptions::new();
        options.remote_callbacks(self.callbacks());
        remote
            .fetch(&[refspec.as_str()], Some(&mut options), None)
            .map_err(|e| self.git_error("fetch from", e))?;
        self.cached_head().ok_or_else(|| GitError::NoBranch {
            branch: self.branch.clone(),
            url: redact_url(&self.url),
        })
    }

    /// Makes `commit` available in the cache: fetched with every branch and
    /// tag unless it is there already, then asked for by id (servers that
    /// allow it serve commits no ref points at).
    ///
    /// # Errors
    /// [`GitError::NoCommit`] when the remote does not have it; a fetch failed.
    pub fn fetch_commit(&self, commit: &CommitId) -> Result<(), GitError> {
        let oid = Oid::from_str(&commit.0).map_err(|e| self.git_error("parse commit of", e))?;
        if self.repo.find_commit(oid).is_ok() {
            return Ok(());
        }
        let mut remote =
            self.repo.find_remote("origin").map_err(|e| self.git_error("open remote", e))?;
        let mut options = FetchOptions::new();
        options.remote_callbacks(self.callbacks());
        remote
            .fetch(
                &["+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*"],
                Some(&mut options),
                None,
            )
            .map_err(|e| self.git_error("fetch from", e))?;
        if self.repo.find_commit(oid).is_ok() {
            return Ok(());
        }
        let mut options = FetchOptions::new();
        options.remote_callbacks(self.callbacks());
        // Refused by servers that serve only what a ref points at: that is
        // the same answer as "not there".
        if let Err(error) = remote.fetch(&[commit.0.as_str()], Some(&mut options), None) {
            let error = self.git_error("fetch from", error);
            if matches!(error, GitError::FetchLimit { .. }) {
                return Err(error);
            }
        }
        if self.repo.find_commit(oid).is_ok() {
            Ok(())
        } else {
            Err(GitError::NoCommit { commit: commit.clone(), url: redact_url(&self.url) })
        }
    }

    /// Writes the tree of `commit` into `dir` (replaced if it exists).
    ///
    /// # Errors
    /// Unknown commit, or the files cannot be written.
    pub fn export(&self, commit: &CommitId, dir: &Path) -> Result<(), GitError> {
        let oid = Oid::from_str(&commit.0).map_err(|e| self.git_error("parse commit of", e))?;
        let tree = self
            .repo
            .find_commit(oid)
            .and_then(|c| c.tree())
            .map_err(|e| self.git_error("read commit of", e))?;
        super::export::write_tree(&self.repo, &tree, commit, dir)
    }

    /// Checks `commit`'s signature with `git verify-commit`.
    ///
    /// # Errors
    /// [`GitError::Unsigned`] when unsigned or signed by another key.
    pub fn verify(&self, commit: &CommitId, policy: &SignaturePolicy) -> Result<(), GitError> {
        let mut command = Command::new("git");
        command.arg("--git-dir").arg(self.repo.path());
        if let Some(signers) = &policy.ssh_allowed_signers {
            command.arg("-c").arg(format!("gpg.ssh.allowedSignersFile={}", signers.display()));
        }
        if let Some(home) = &policy.gnupg_home {
            command.env("GNUPGHOME", home);
        }
        command.args(["verify-commit", &commit.0]);
        let output = command.output().map_err(|e| GitError::Unsigned {
            commit: commit.clone(),
            detail: format!("cannot run git verify-commit: {e}"),
        })?;
        if output.status.success() {
            Ok(())
        } else {
            let detail = String::from_utf8_lossy(&output.stderr)
                .lines()
                .last()
                .unwrap_or("no signature")
                .trim()
                .to_owned();
            let detail = if detail.is_empty() { "no signature".to_owned() } else { detail };
            Err(GitError::Unsigned { commit: commit.clone(), detail })
        }
    }
}

/// Writes the state of the checkout holding `path` at revision `rev`
/// (`origin/main`, a commit id, `HEAD~1`) into `dir`: the directory that
/// corresponds to `path` in that commit. For previews of a change against
/// the desired state before it.
///
/// # Errors
/// `path` is not in a git checkout, `rev` does not resolve, or the files
/// cannot be written.
pub fn export_revision(path: &Path, rev: &str, dir: &Path) -> Result<CommitId, GitError> {
    let local = |action: &'static str, source: git2::Error| GitError::Git {
        action,
        url: path.display().to_string(),
        source,
    };
    let repo = Repository::discover(path).map_err(|e| local("open the checkout at", e))?;
    let object = repo.revparse_single(rev).map_err(|e| local("resolve the revision in", e))?;
    let commit = object.peel_to_commit().map_err(|e| local("find the commit in", e))?;
    let id = CommitId(commit.id().to_string());
    let mut tree = commit.tree().map_err(|e| local("read the commit in", e))?;
    let workdir = repo.workdir().and_then(|w| w.canonicalize().ok());
    let inside = path
        .canonicalize()
        .ok()
        .zip(workdir)
        .and_then(|(p, w)| p.strip_prefix(&w).ok().map(Path::to_path_buf));
    if let Some(rel) = inside.filter(|r| !r.as_os_str().is_empty()) {
        let entry = tree.get_path(&rel).map_err(|e| local("find the directory in", e))?;
        tree = entry
            .to_object(&repo)
            .and_then(|o| o.peel_to_tree())
            .map_err(|e| local("read the directory in", e))?;
    }
    super::export::write_tree(&repo, &tree, &id, dir)?;
    Ok(id)
}
