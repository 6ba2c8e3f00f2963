//! What kind of failure a git error is, for the daemon's error policy.

/// What kind of failure a [`GitError`](super::git::GitError) is, for the daemon's error policy:
/// only a network failure (or a local one) may go away by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GitFailure {
    /// Unreachable, timed out, reset: retry with backoff.
    Network,
    /// Credentials refused or missing.
    Auth,
    /// The server's SSH host key (or TLS certificate) is refused.
    HostKey,
    /// No such repository, branch or commit.
    NotFound,
    /// What the server sent is refused (a hostile tree, past a bound).
    Refused,
    /// Reading or writing the local cache or export failed.
    Local,
}

impl GitFailure {
    /// Whether retrying without a change (a new commit, new credentials,
    /// a new known_hosts) cannot help.
    pub fn is_permanent(self) -> bool {
        matches!(self, Self::Auth | Self::HostKey | Self::NotFound | Self::Refused)
    }

    pub(super) fn of(error: &git2::Error) -> Self {
        let message = error.message().to_ascii_lowercase();
        match error.code() {
            git2::ErrorCode::Auth => return Self::Auth,
            git2::ErrorCode::Certificate => return Self::HostKey,
            git2::ErrorCode::NotFound => return Self::NotFound,
            _ => {}
        }
        if message.contains("authenticat")
            || message.contains("status code: 401")
            || message.contains("status code: 403")
        {
            Self::Auth
        } else if message.contains("not found")
            || message.contains("not exported")
            || message.contains("does not appear to be a git repository")
            || message.contains("status code: 404")
        {
            Self::NotFound
        } else {
            Self::Network
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::git::GitError;

    #[test]
    fn git_failures_are_classified_by_kind() {
        use git2::{Error, ErrorClass as Class, ErrorCode as Code};
        let cases = [
            (Error::new(Code::Auth, Class::Http, "authentication required"), GitFailure::Auth),
            (
                Error::new(Code::GenericError, Class::Ssh, "Failed to authenticate SSH session: x"),
                GitFailure::Auth,
            ),
            (
                Error::new(Code::GenericError, Class::Http, "unexpected http status code: 403"),
                GitFailure::Auth,
            ),
            (
                Error::new(Code::Certificate, Class::Ssl, "certificate not trusted"),
                GitFailure::HostKey,
            ),
            (
                Error::new(Code::NotFound, Class::Reference, "reference not found"),
                GitFailure::NotFound,
            ),
            (
                Error::new(
                    Code::GenericError,
                    Class::Net,
                    "remote error: access denied or repository not exported: /x",
                ),
                GitFailure::NotFound,
            ),
            (
                Error::new(Code::GenericError, Class::Http, "unexpected http status code: 404"),
                GitFailure::NotFound,
            ),
            (
                Error::new(
                    Code::GenericError,
                    Class::Net,
                    "failed to connect to 127.0.0.1: Connection refused",
                ),
                GitFailure::Network,
            ),
            (Error::new(Code::GenericError, Class::Net, "timed out"), GitFailure::Network),
        ];
        for (error, expected) in cases {
            assert_eq!(GitFailure::of(&error), expected, "{error}");
        }
        assert!(GitFailure::Auth.is_permanent() && GitFailure::HostKey.is_permanent());
        assert!(!GitFailure::Network.is_permanent() && !GitFailure::Local.is_permanent());
        let refused = GitError::HostKey {
            action: "connect to",
            url: "ssh://h/r".into(),
            reason: "refusing".into(),
        };
        assert_eq!(refused.failure(), GitFailure::HostKey);
    }
}
