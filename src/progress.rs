//! A liveness heartbeat. Long-running work (a reconcile step, one change,
//! one poll of a resource that is still building) calls [`tick`]; the
//! daemon feeds systemd's watchdog only while the count moves (or while it
//! idles), so a reconcile that hangs trips the watchdog instead of being
//! kept alive by a timer.

use std::sync::atomic::{AtomicU64, Ordering};

static PROGRESS: AtomicU64 = AtomicU64::new(0);

/// Records that something made progress.
pub fn tick() {
    PROGRESS.fetch_add(1, Ordering::Relaxed);
}

/// The number of ticks so far.
pub fn count() -> u64 {
    PROGRESS.load(Ordering::Relaxed)
}
