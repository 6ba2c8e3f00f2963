//! The load governor: no new run starts while the host's 1-minute load
//! average is at or above `load_limit` × its CPUs. A run that starts late
//! or slow on a saturated executor would look like cloud latency; it is
//! recorded `skipped` with `reason=overloaded` instead.

/// The 1-minute load average (`/proc/loadavg`), if it can be read.
pub fn one_minute() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    parse(&text)
}

fn parse(text: &str) -> Option<f64> {
    text.split_whitespace().next()?.parse().ok().filter(|l: &f64| l.is_finite())
}

/// The CPUs this process may use.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// Whether a run may not start now: the load, when it is at or above
/// `limit` × `cpus` (a load that cannot be read holds nothing back).
pub fn overloaded(load: Option<f64>, limit: f64, cpus: usize) -> Option<f64> {
    let load = load?;
    (load >= limit * cpus as f64).then_some(load)
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! governor_cases {
        ($($name:ident: ($load:expr, $limit:expr, $cpus:expr) => $expected:expr;)+) => {$(
            #[test]
            fn $name() {
                assert_eq!(overloaded($load, $limit, $cpus), $expected);
            }
        )+};
    }

    governor_cases! {
        below_the_limit_runs: (Some(4.9), 2.5, 2) => None;
        at_the_limit_holds_back: (Some(5.0), 2.5, 2) => Some(5.0);
        above_the_limit_holds_back: (Some(7.5), 2.5, 2) => Some(7.5);
        a_limit_of_zero_holds_everything_back: (Some(0.0), 0.0, 2) => Some(0.0);
        an_unreadable_load_holds_nothing_back: (None, 0.0, 2) => None;
    }

    #[test]
    fn proc_loadavg_is_read_by_its_first_field() {
        assert_eq!(parse("0.52 0.58 0.59 1/389 12345\n"), Some(0.52));
        assert_eq!(parse("garbage"), None);
        assert_eq!(parse(""), None);
        assert!(one_minute().is_some(), "this machine has /proc/loadavg");
    }
}
