//! What every floor says about failures: how one is handled
//! ([`FailureKind`]), and how one is shown ([`chain`]).

use serde::Serialize;

/// How a failure is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// Unreachable, timed out, or failed on the system's side (5xx):
    /// retrying may help.
    Transient,
    /// Refused for a reason retrying cannot change (bad credentials, a
    /// conflict, a limit): wait for a new commit or an operator.
    Permanent,
}

/// `error` and its causes, on one line.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    message
}
