//! systemd's watchdog, fed only while the reconcile loop makes progress.
//!
//! A timer that pings regardless would keep a hung reconcile alive
//! forever. Instead the loop and long-running work tick
//! [`crate::progress`]; every half limit this task pings `WATCHDOG=1` if
//! the count moved or the loop is idle (waiting for a trigger). After a
//! whole limit without progress it stops pinging and asks systemd to act
//! now (`WATCHDOG=trigger`), logging why.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::notify::notify;

/// Whether the loop is waiting for a trigger (nothing to make progress on).
#[derive(Debug, Clone, Default)]
pub(super) struct Idle(Arc<AtomicBool>);

impl Idle {
    pub(super) fn set(&self, idle: bool) {
        self.0.store(idle, Ordering::SeqCst);
    }

    fn get(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Feeds the watchdog every `limit / 2` while there is progress.
pub(super) async fn feed(limit: Duration, idle: Idle, shutdown: CancellationToken) {
    let every = limit / 2;
    let mut last = crate::progress::count();
    let mut stalled = Duration::ZERO;
    let mut tripped = false;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        let now = crate::progress::count();
        if idle.get() || now != last {
            last = now;
            stalled = Duration::ZERO;
            tripped = false;
            notify("WATCHDOG=1");
            continue;
        }
        stalled += every;
        if stalled >= limit && !tripped {
            tripped = true;
            tracing::error!(
                stalled_s = stalled.as_secs(),
                "The reconcile made no progress within the watchdog limit; asking systemd to restart the daemon."
            );
            notify("WATCHDOG=trigger");
        }
    }
}
