//! A unit apimon (re)started must stay up: after the restart the host
//! watches it for the settle time (`ssh.unit_settle_seconds`) with the
//! service manager's `show`; a unit that is not active at the end, or that
//! its manager restarted meanwhile (`NRestarts` grew), fails the change
//! with the unit's last lines (`status --lines=20`). One SSH command does
//! the restart, the watch and the report; [`verdict`] judges the report.

use std::collections::BTreeMap;

use super::ssh::quote;

/// Polls per second while settling.
const TICKS_PER_SECOND: u64 = 5;

/// The script that enables and restarts `unit`, watches it for
/// `settle_seconds` and reports (see [`Report::parse`]).
pub(super) fn script(manager: &str, unit: &str, settle_seconds: u64) -> String {
    let unit = quote(unit);
    let ticks = settle_seconds * TICKS_PER_SECOND;
    format!(
        "{manager} daemon-reload && {manager} enable {unit} || exit 1\n\
         started=yes\n\
         {manager} restart {unit} >/dev/null 2>&1 || started=no\n\
         baseline=$({manager} show -p NRestarts {unit} 2>/dev/null | sed -n 's/^NRestarts=//p')\n\
         i=0\n\
         while [ \"$started\" = yes ] && [ $i -lt {ticks} ]; do\n\
           [ \"$({manager} show -p ActiveState {unit} 2>/dev/null)\" = ActiveState=failed ] && break\n\
           sleep 0.2; i=$((i + 1))\n\
         done\n\
         echo \"started=$started\"\n\
         echo \"baseline=$baseline\"\n\
         {manager} show -p ActiveState -p SubState -p NRestarts -p ExecMainStatus {unit} 2>/dev/null\n\
         echo '--- last lines'\n\
         {manager} status --no-pager --lines=20 {unit} 2>&1 | tail -n 20\n\
         exit 0\n"
    )
}

/// What the host reported after the watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Report {
    fields: BTreeMap<String, String>,
    last_lines: String,
}

impl Report {
    /// `key=value` lines, then the unit's last lines after a marker.
    pub(super) fn parse(output: &str) -> Self {
        let (head, last_lines) = output.split_once("--- last lines\n").unwrap_or((output, ""));
        let fields = head
            .lines()
            .filter_map(|line| line.split_once('='))
            .map(|(key, value)| (key.trim().to_owned(), value.trim().to_owned()))
            .collect();
        Self { fields, last_lines: last_lines.trim_end().to_owned() }
    }

    fn get(&self, key: &str) -> &str {
        self.fields.get(key).map_or("", String::as_str)
    }
}

/// Why a unit did not stay up, with its last lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsettled {
    /// What was seen, in words.
    pub problem: String,
    /// The unit's last lines, as its manager's `status` shows them.
    pub last_lines: String,
}

/// Whether the unit stayed up through the settle time.
///
/// # Errors
/// It did not start, is not active at the end, or was restarted meanwhile.
pub(super) fn verdict(report: &Report, settle_seconds: u64) -> Result<(), Unsettled> {
    let status = report.get("ExecMainStatus");
    let exit = if status.is_empty() { String::new() } else { format!(", exit status {status}") };
    let problem = if report.get("started") != "yes" {
        Some(format!("did not start ({}{exit})", state(report)))
    } else if report.get("ActiveState") != "active" {
        Some(format!(
            "is not active {settle_seconds} s after its restart ({}{exit})",
            state(report)
        ))
    } else {
        let number = |key| report.get(key).parse::<u64>().ok();
        match (number("baseline"), number("NRestarts")) {
            (Some(before), Some(after)) if after > before => Some(format!(
                "was restarted {} time(s) by its service manager within {settle_seconds} s of its restart (it exited{exit})",
                after - before
            )),
            _ => None,
        }
    };
    match problem {
        None => Ok(()),
        Some(problem) => Err(Unsettled { problem, last_lines: report.last_lines.clone() }),
    }
}

fn state(report: &Report) -> String {
    match (report.get("ActiveState"), report.get("SubState")) {
        ("", _) => "state unknown".to_owned(),
        (active, "") => active.to_owned(),
        (active, sub) => format!("{active}/{sub}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(started: &str, baseline: &str, active: &str, restarts: &str) -> Report {
        Report::parse(&format!(
            "started={started}\nbaseline={baseline}\nActiveState={active}\nSubState=x\nNRestarts={restarts}\nExecMainStatus=1\n--- last lines\nbind: address in use\n"
        ))
    }

    macro_rules! verdicts {
        ($($name:ident: ($started:expr, $baseline:expr, $active:expr, $restarts:expr) => $expected:expr;)*) => {$(
            #[test]
            fn $name() {
                let verdict = verdict(&report($started, $baseline, $active, $restarts), 10);
                let problem = verdict.as_ref().err().map(|u| u.problem.as_str());
                match ($expected, problem) {
                    (None, None) => {}
                    (Some(expected), Some(problem)) => assert!(problem.starts_with(expected), "{problem}"),
                    (expected, problem) => panic!("expected {expected:?}, got {problem:?}"),
                }
                if let Err(unsettled) = verdict {
                    assert_eq!(unsettled.last_lines, "bind: address in use");
                }
            }
        )*};
    }

    verdicts! {
        an_active_unit_not_restarted_settled: ("yes", "3", "active", "3") => None::<&str>;
        a_unit_restarted_meanwhile_did_not: ("yes", "0", "active", "2") => Some("was restarted 2 time(s)");
        a_failed_unit_did_not: ("yes", "0", "failed", "0") => Some("is not active 10 s after its restart (failed/x, exit status 1)");
        an_auto_restarting_unit_did_not: ("yes", "0", "activating", "1") => Some("is not active");
        a_unit_whose_restart_failed_did_not_start: ("no", "0", "failed", "0") => Some("did not start");
        an_unknown_restart_count_is_no_evidence: ("yes", "", "active", "") => None::<&str>;
    }

    #[test]
    fn a_report_without_its_marker_has_no_last_lines() {
        let report = Report::parse("started=yes\nActiveState=active\n");
        assert_eq!(report.get("ActiveState"), "active");
        assert_eq!(report.last_lines, "");
    }
}
