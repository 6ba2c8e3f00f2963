//! Cron schedules, parsed once: the scenario schedule, the daemon's drift
//! check and maintenance windows. Five fields (minute first) have crontab's
//! meaning (day of week 0-7, 0 and 7 = Sunday); six fields start with
//! seconds.

use chrono::{DateTime, Utc};
use croner::parser::{CronParser, Seconds};

/// A parsed cron expression.
#[derive(Clone)]
pub struct Schedule {
    expression: String,
    normalized: String,
    cron: croner::Cron,
}

impl Schedule {
    /// Parses `expression`; it must fire at least once in the coming years.
    ///
    /// # Errors
    /// What is wrong with it, quoting it.
    pub fn parse(expression: &str) -> Result<Self, String> {
        let normalized = normalize_cron(expression)?;
        let cron =
            CronParser::builder().seconds(Seconds::Optional).build().parse(&normalized).map_err(
                |error| match out_of_range(&normalized) {
                    Some(problem) => format!("invalid cron expression `{expression}`: {problem}"),
                    None => format!("invalid cron expression `{expression}`: {error}"),
                },
            )?;
        let schedule = Self { expression: expression.to_owned(), normalized, cron };
        if schedule.next_after(&Utc::now()).is_none() {
            return Err(format!(
                "cron expression `{expression}` never fires (no such date); expected a schedule that runs"
            ));
        }
        Ok(schedule)
    }

    /// The first instant strictly after `after`, if there is one.
    pub fn next_after(&self, after: &DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.find_next_occurrence(after, false).ok()
    }

    /// The expression as written.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The expression with its seconds field (six fields).
    pub fn normalized(&self) -> &str {
        &self.normalized
    }
}

impl std::fmt::Debug for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Schedule({:?})", self.expression)
    }
}

impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.expression)
    }
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.normalized == other.normalized
    }
}

impl Eq for Schedule {}

/// A 5-field crontab expression (minute first) gets a seconds field; 6
/// fields (seconds first) and 7 (with a year last) pass as they are.
/// Day of week keeps crontab's meaning in every form (0 and 7 = Sunday).
/// The first number outside its field's range in a six-field expression,
/// in words (`minute 75 is out of range (0-59)`): the parser only says
/// "Number out of bounds".
fn out_of_range(normalized: &str) -> Option<String> {
    const FIELDS: [(&str, u32, u32); 6] = [
        ("second", 0, 59),
        ("minute", 0, 59),
        ("hour", 0, 23),
        ("day of month", 1, 31),
        ("month", 1, 12),
        ("day of week", 0, 7),
    ];
    for (field, (name, low, high)) in normalized.split_whitespace().zip(FIELDS) {
        for part in field.split(',') {
            // `a-b/step`: the step is a count, not a value of the field.
            let range = part.split('/').next().unwrap_or_default();
            for number in range.split('-').filter_map(|n| n.parse::<u32>().ok()) {
                if !(low..=high).contains(&number) {
                    return Some(format!("{name} {number} is out of range ({low}-{high})"));
                }
            }
        }
    }
    None
}

pub fn normalize_cron(expression: &str) -> Result<String, String> {
    let fields: Vec<&str> = expression.split_whitespace().collect();
    match fields.len() {
        5 => Ok(format!("0 {}", fields.join(" "))),
        6 | 7 => Ok(fields.join(" ")),
        n => Err(format!("invalid cron expression `{expression}`: it has {n} fields; expected 5 (minute hour day month weekday) or 6 (with seconds first)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_field_cron_gets_a_seconds_field() {
        assert_eq!(normalize_cron("*/5 * * * *").as_deref(), Ok("0 */5 * * * *"));
        let error = Schedule::parse("61 * * * *").expect_err("minute 61");
        assert!(error.ends_with("minute 61 is out of range (0-59)"), "{error}");
        let error = Schedule::parse("0 0 * 13 *").expect_err("month 13");
        assert!(error.ends_with("month 13 is out of range (1-12)"), "{error}");
        let error = Schedule::parse("70 * * * * *").expect_err("second 70");
        assert!(error.ends_with("second 70 is out of range (0-59)"), "{error}");
        assert!(normalize_cron("* * *").expect_err("3 fields").contains("3 fields"));
    }

    #[test]
    fn a_schedule_that_never_fires_is_refused() {
        let error = Schedule::parse("0 0 30 2 *").expect_err("30 February");
        assert!(error.contains("never fires"), "{error}");
        assert!(Schedule::parse("0 0 29 2 *").is_ok(), "29 February comes in leap years");
    }

    #[test]
    fn crontab_weekdays_keep_their_meaning() {
        use chrono::{Datelike, Weekday};
        let first_day = |expression: &str| {
            let schedule = Schedule::parse(expression).expect("valid");
            schedule.next_after(&Utc::now()).expect("upcoming").weekday()
        };
        assert_eq!(first_day("0 9 * * 1"), Weekday::Mon);
        assert_eq!(first_day("0 9 * * 0"), Weekday::Sun);
        assert_eq!(first_day("0 9 * * 7"), Weekday::Sun);
        assert_eq!(first_day("0 9 * * 6"), Weekday::Sat);
        assert_eq!(first_day("0 9 * * Wed"), Weekday::Wed);
        let days = |expression: &str| {
            let schedule = Schedule::parse(expression).expect("valid");
            let mut at = Utc::now();
            let mut seen = std::collections::BTreeSet::new();
            for _ in 0..14 {
                at = schedule.next_after(&at).expect("upcoming");
                seen.insert(at.weekday().num_days_from_monday());
            }
            seen.into_iter().collect::<Vec<_>>()
        };
        assert_eq!(days("0 9 * * 1-5"), [0, 1, 2, 3, 4], "Monday to Friday");
        assert_eq!(days("0 9 * * 5-7"), [4, 5, 6], "Friday to Sunday");
        assert!(Schedule::parse("0 9 * * 8").is_err());
    }
}
