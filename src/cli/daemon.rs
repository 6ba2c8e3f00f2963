//! `apimon daemon`: the daemon under its signals, and the unit's
//! `ExecStartPre` helper (`--before-start`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use super::Outcome;

/// The unit's ExecStartPre: rolls back a hand-over that did not report
/// ready (see `daemon::rollback`), for the binary this runs from and
/// `config`.
pub(super) fn before_start(config: &Path) -> anyhow::Result<Outcome> {
    use crate::daemon::rollback::{before_start, Started};
    // The configuration may be the new, failing one: its state directory
    // is the built-in one whenever it does not load.
    let state_dir = crate::daemon::config::Config::load(config)
        .map_or_else(|_| PathBuf::from(crate::layout::STATE_DIR), |c| c.raw.state_dir.clone());
    let binary = std::env::current_exe().context("cannot tell which binary runs")?;
    match before_start(&state_dir, config, &binary)? {
        Started::Plain => {}
        Started::Trying(pending) => eprintln!(
            "apimon: starting the new daemon files (commit {}); they are rolled back unless the daemon reports ready",
            pending.commit.as_deref().unwrap_or("unknown")
        ),
        Started::RolledBack(record) => eprintln!(
            "apimon: rolled back to the previous daemon files (commit {}): {}",
            record.pending.commit.as_deref().unwrap_or("unknown"),
            record.reason
        ),
    }
    Ok(Outcome::Ok)
}

/// Runs the daemon; the first SIGTERM/SIGINT finishes the change in
/// progress and stops, a second one stops at once.
pub(super) async fn daemon(config: crate::daemon::config::Config) -> anyhow::Result<Outcome> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate =
        signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    let mut interrupt =
        signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let daemon = crate::daemon::run(config, shutdown.clone());
    tokio::pin!(daemon);
    loop {
        tokio::select! {
            result = &mut daemon => {
                return Ok(match result? {
                    crate::daemon::Stopped::Shutdown => Outcome::Ok,
                    crate::daemon::Stopped::Restart(_) => Outcome::Restart,
                });
            }
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        if shutdown.is_cancelled() {
            tracing::error!("Second shutdown request: stopping at once.");
            bail!("stopped at once by a second signal; the next start converges");
        }
        tracing::warn!(
            "Shutdown requested: finishing the change in progress (send again to stop at once)."
        );
        shutdown.cancel();
    }
}
