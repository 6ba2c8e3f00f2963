//! The long-running commands (`apimon executor`, `apimon health`): SIGHUP
//! reloads, SIGTERM and SIGINT stop.

use std::path::PathBuf;

use anyhow::Context as _;
use tokio::sync::mpsc;

use super::Outcome;

/// A receiver of `reload` on SIGHUP and `stop` on SIGTERM or SIGINT.
fn signals<T: Copy + Send + 'static>(
    reload: T,
    stop: T,
) -> anyhow::Result<mpsc::UnboundedReceiver<T>> {
    use tokio::signal::unix::{signal, SignalKind};
    let (controls, receiver) = mpsc::unbounded_channel();
    let mut hangup = signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?;
    let mut terminate =
        signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    let mut interrupt =
        signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;
    tokio::spawn(async move {
        loop {
            let control = tokio::select! {
                _ = hangup.recv() => reload,
                _ = terminate.recv() => stop,
                _ = interrupt.recv() => stop,
            };
            if controls.send(control).is_err() {
                return;
            }
        }
    });
    Ok(receiver)
}

/// `apimon executor`.
pub(super) async fn executor(config: PathBuf) -> anyhow::Result<Outcome> {
    use crate::executor::Control;
    let receiver = signals(Control::Reload, Control::Shutdown)?;
    crate::executor::run(config, crate::executor::Options::default(), receiver).await?;
    Ok(Outcome::Ok)
}

/// `apimon health`.
pub(super) async fn health(config: PathBuf) -> anyhow::Result<Outcome> {
    use crate::health::Control;
    let receiver = signals(Control::Reload, Control::Shutdown)?;
    crate::health::run(config, receiver).await?;
    Ok(Outcome::Ok)
}
