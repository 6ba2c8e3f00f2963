//! Bounds of one fetch.

use std::time::Duration;

/// Bounds of one fetch: a hostile or broken server cannot fill the disk
/// or hold the daemon forever. A server that stops sending fails at
/// libgit2's read timeout (set in `main`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchLimits {
    /// Most bytes received.
    pub max_bytes: u64,
    /// Most objects in the pack.
    pub max_objects: usize,
    /// Longest time, however steadily the server sends.
    pub max_duration: Duration,
}

impl Default for FetchLimits {
    fn default() -> Self {
        Self {
            max_bytes: crate::limits::DEFAULT_MAX_FETCH_BYTES,
            max_objects: crate::limits::MAX_FETCH_OBJECTS,
            max_duration: Duration::from_secs(crate::limits::MAX_FETCH_SECONDS),
        }
    }
}

impl FetchLimits {
    /// Why a transfer that has received `bytes` of `objects` objects after
    /// `elapsed` must stop, if it must.
    pub(super) fn exceeded(&self, bytes: u64, objects: usize, elapsed: Duration) -> Option<String> {
        if bytes > self.max_bytes {
            Some(format!(
                "received {bytes} bytes, past the limit of {} bytes (repository.max_fetch_bytes)",
                self.max_bytes
            ))
        } else if objects > self.max_objects {
            Some(format!(
                "the pack holds {objects} objects, past the limit of {}",
                self.max_objects
            ))
        } else if elapsed > self.max_duration {
            Some(format!(
                "still receiving after {} seconds, past the limit of {} (received {bytes} bytes)",
                elapsed.as_secs(),
                self.max_duration.as_secs()
            ))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetches_stop_at_each_bound() {
        let limits =
            FetchLimits { max_bytes: 1000, max_objects: 10, max_duration: Duration::from_secs(60) };
        let second = Duration::from_secs(1);
        assert_eq!(limits.exceeded(1000, 10, Duration::from_secs(60)), None);
        assert!(limits.exceeded(1001, 1, second).is_some_and(|r| r.contains("1001 bytes")));
        assert!(limits.exceeded(1, 11, second).is_some_and(|r| r.contains("11 objects")));
        assert!(limits
            .exceeded(1, 1, Duration::from_secs(61))
            .is_some_and(|r| r.contains("after 61 seconds")));
    }
}
