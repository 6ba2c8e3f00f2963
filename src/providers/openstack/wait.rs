//! Waiting for a resource to settle: one look per poll interval until it
//! is done, fails, or the timeout passes.

use std::time::Instant;

use super::client::OpenstackError;
use super::OpenstackProvider;

/// What one look at a resource found.
pub(super) enum Look {
    /// The wait is over.
    Done,
    /// Not yet: the current status.
    Waiting(String),
}

/// Looks with `look` every poll interval until it is done, fails, or
/// `timeout` passes (a transient error: the change is retried).
pub(super) async fn poll<F, Fut>(
    p: &OpenstackProvider,
    r: &str,
    wanted: &str,
    timeout: std::time::Duration,
    mut look: F,
) -> Result<(), OpenstackError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Look, OpenstackError>>,
{
    let started = Instant::now();
    loop {
        crate::progress::tick();
        let status = match look().await? {
            Look::Done => return Ok(()),
            Look::Waiting(status) => status,
        };
        if started.elapsed() > timeout {
            return Err(OpenstackError::Timeout {
                resource: r.to_owned(),
                state: format!("{wanted} (status {status})"),
                seconds: timeout.as_secs(),
            });
        }
        tokio::time::sleep(p.wait.poll_interval).await;
    }
}
