//! Exponential backoff with jitter and reset, the shape of kube-rs's
//! `DefaultBackoff`: 800 ms doubling to 30 s, back to the start once the
//! last failure is two minutes old.

use std::time::{Duration, Instant};

use backon::BackoffBuilder;

use crate::retry::{Delays, Jittered};

/// Retry delays for a failing reconcile.
#[derive(Debug)]
pub struct Backoff {
    delays: Delays,
    reset_after: Duration,
    next: Jittered,
    last_failure: Option<Instant>,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(Duration::from_millis(800), Duration::from_secs(30), Duration::from_secs(120))
    }
}

impl Backoff {
    /// A backoff from `initial` doubling to `max`, reset after `reset_after` without failure.
    pub fn new(initial: Duration, max: Duration, reset_after: Duration) -> Self {
        let delays = Delays::new(initial, max, 0.2);
        Self { delays, reset_after, next: delays.build(), last_failure: None }
    }

    /// The delay before retrying after a failure now (with up to 20 % jitter).
    pub fn failure(&mut self, now: Instant) -> Duration {
        if self.last_failure.is_some_and(|at| now.duration_since(at) > self.reset_after) {
            self.next = self.delays.build();
        }
        self.last_failure = Some(now);
        // Without a limit the delays never end; the cap is the fallback all the same.
        self.next.next().unwrap_or(self.delays.max())
    }

    /// A success: the next failure starts from the beginning.
    pub fn success(&mut self) {
        self.next = self.delays.build();
        self.last_failure = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_reset() {
        let mut backoff = Backoff::new(
            Duration::from_millis(100),
            Duration::from_millis(400),
            Duration::from_secs(60),
        );
        let now = Instant::now();
        let delays: Vec<u128> = (0..5).map(|_| backoff.failure(now).as_millis()).collect();
        for (delay, base) in delays.iter().zip([100, 200, 400, 400, 400]) {
            assert!(*delay >= base && *delay < base * 6 / 5, "{delays:?}");
        }
        backoff.success();
        assert!(backoff.failure(now).as_millis() < 120);
        let later = now + Duration::from_secs(61);
        backoff.failure(now);
        assert!(
            backoff.failure(later).as_millis() < 120,
            "a failure after a quiet period starts over"
        );
    }
}
