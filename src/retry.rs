//! Retry delays for both retry paths (a failing change, a failing
//! reconcile): exponential backoff from `backon`, with a bounded jitter so
//! that many retries spread out without waiting much longer than planned.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use rand::Rng;

/// Exponential delays from `initial`, doubling up to `max`, each plus up
/// to `jitter` (a fraction, e.g. 0.25) of itself; at most `times` delays
/// (`None`: without end).
#[derive(Debug, Clone, Copy)]
pub struct Delays {
    initial: Duration,
    max: Duration,
    times: Option<usize>,
    jitter: f64,
}

impl Delays {
    /// Delays from `initial` doubling to `max`, plus up to `jitter` of each.
    pub fn new(initial: Duration, max: Duration, jitter: f64) -> Self {
        Self { initial, max, times: None, jitter }
    }

    /// The longest delay (without jitter).
    pub fn max(&self) -> Duration {
        self.max
    }

    /// At most `times` delays.
    pub fn times(self, times: usize) -> Self {
        Self { times: Some(times), ..self }
    }
}

impl BackoffBuilder for Delays {
    type Backoff = Jittered;

    fn build(self) -> Jittered {
        let builder = ExponentialBuilder::default()
            .with_min_delay(self.initial)
            .with_max_delay(self.max)
            .with_factor(2.0);
        let builder = match self.times {
            Some(times) => builder.with_max_times(times),
            None => builder.without_max_times(),
        };
        Jittered { inner: builder.build(), jitter: self.jitter }
    }
}

/// The delays of [`Delays`], jittered.
#[derive(Debug)]
pub struct Jittered {
    inner: ExponentialBackoff,
    jitter: f64,
}

impl Iterator for Jittered {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let base = self.inner.next()?;
        let extra =
            if self.jitter > 0.0 { rand::rng().random_range(0.0..self.jitter) } else { 0.0 };
        Some(base + base.mul_f64(extra))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_are_capped_jittered_and_end() {
        let delays: Vec<Duration> =
            Delays::new(Duration::from_millis(100), Duration::from_millis(350), 0.25)
                .times(4)
                .build()
                .collect();
        let bases = [100, 200, 350, 350];
        assert_eq!(delays.len(), bases.len());
        for (delay, base) in delays.iter().zip(bases) {
            let base = Duration::from_millis(base);
            assert!(*delay >= base && *delay < base.mul_f64(1.25), "{delays:?}");
        }
    }
}
