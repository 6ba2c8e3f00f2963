//! Cron schedules, parsed once: the scenario schedule, the daemon's drift
//! check and maintenance windows. Five fields (minute first) have crontab's
//! meaning (day of week 0-7, 0 and 7 = Sunday); six fields start with
//! seconds.

use std::str::FromStr;

use chrono::{DateTime, Utc};

/// A parsed cron expression.
#[derive(Clone)]
pub struct Schedule {
    expression: String,
    normalized: String,
    schedule: cron::Schedule,
}

impl Schedule {
    /// Parses `expression`.
    ///
    /// # Errors
    /// What is wrong with it, quoting it.
    pub fn parse(expression: &str) -> Result<Self, String> {
        let normalized = normalize_cron(expression)?;
        let schedule = cron::Schedule::from_str(&normalized)
            .map_err(|error| format!("invalid cron expression `{expression}`: {error}"))?;
        Ok(Self { expression: expression.to_owned(), normalized, schedule })
    }

    /// The first instant strictly after `after`, if there is one.
    pub fn next_after(&self, after: &DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.schedule.after(after).next()
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

/// A standard 5-field cron (minute first) gets a seconds field and its
/// day-of-week translated from crontab's numbering (0 or 7 = Sunday) to the
/// `cron` crate's (1 = Sunday); 6 and 7 fields (seconds first, optional
/// year) are the `cron` crate's own syntax and pass as they are.
pub fn normalize_cron(expression: &str) -> Result<String, String> {
    let fields: Vec<&str> = expression.split_whitespace().collect();
    let normalized = match fields.len() {
        5 => {
            let weekday = crontab_weekdays(fields[4])
                .map_err(|why| format!("invalid cron expression `{expression}`: {why}"))?;
            format!("0 {} {} {} {} {weekday}", fields[0], fields[1], fields[2], fields[3])
        }
        6 | 7 => fields.join(" "),
        n => return Err(format!("invalid cron expression `{expression}`: it has {n} fields; expected 5 (minute hour day month weekday) or 6 (with seconds first)")),
    };
    cron::Schedule::from_str(&normalized)
        .map(|_| normalized)
        .map_err(|error| format!("invalid cron expression `{expression}`: {error}"))
}

/// Translates a crontab day-of-week field (0-7, 0 and 7 = Sunday) to the
/// `cron` crate's numbering (1-7, 1 = Sunday). Names pass unchanged.
fn crontab_weekdays(field: &str) -> Result<String, String> {
    let day = |text: &str| -> Result<Option<u8>, String> {
        if text.bytes().all(|b| b.is_ascii_digit()) && !text.is_empty() {
            match text.parse::<u8>() {
                Ok(n) if n <= 7 => Ok(Some(n % 7 + 1)),
                _ => Err(format!("day of week {text} is out of range; expected 0-7 (0 and 7 = Sunday) or a name like Mon")),
            }
        } else {
            Ok(None)
        }
    };
    let mut items = Vec::new();
    for item in field.split(',') {
        let (base, step) = match item.split_once('/') {
            Some((base, step)) => (base, Some(step)),
            None => (item, None),
        };
        let suffix = step.map(|s| format!("/{s}")).unwrap_or_default();
        let translated = match base.split_once('-') {
            Some((low, high)) => match (day(low)?, day(high)?, high) {
                // `5-7` (Friday to Sunday) wraps in the target numbering.
                (Some(low), Some(1), "7") if low > 1 && step.is_none() => format!("{low}-7,1"),
                (Some(_), Some(1), "7") => {
                    return Err(
                        "a day-of-week range ending in 7 cannot take a step; use 0 for Sunday"
                            .to_owned(),
                    )
                }
                (Some(low), Some(high), _) => format!("{low}-{high}{suffix}"),
                _ => item.to_owned(),
            },
            None => match day(base)? {
                Some(n) => format!("{n}{suffix}"),
                None => item.to_owned(),
            },
        };
        items.push(translated);
    }
    Ok(items.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_field_cron_gets_a_seconds_field() {
        assert_eq!(normalize_cron("*/5 * * * *").as_deref(), Ok("0 */5 * * * *"));
        assert!(normalize_cron("61 * * * *").is_err());
        assert!(normalize_cron("* * *").expect_err("3 fields").contains("3 fields"));
    }

    #[test]
    fn crontab_weekdays_keep_their_meaning() {
        use chrono::{Datelike, Weekday};
        let first_day = |expression: &str| {
            let normalized = normalize_cron(expression).expect("valid");
            let schedule = cron::Schedule::from_str(&normalized).expect("parses");
            schedule.upcoming(chrono::Utc).next().expect("upcoming").weekday()
        };
        assert_eq!(first_day("0 9 * * 1"), Weekday::Mon);
        assert_eq!(first_day("0 9 * * 0"), Weekday::Sun);
        assert_eq!(first_day("0 9 * * 7"), Weekday::Sun);
        assert_eq!(first_day("0 9 * * 6"), Weekday::Sat);
        assert_eq!(first_day("0 9 * * Wed"), Weekday::Wed);
        assert_eq!(normalize_cron("0 9 * * 1-5").as_deref(), Ok("0 0 9 * * 2-6"));
        assert_eq!(normalize_cron("0 9 * * 5-7").as_deref(), Ok("0 0 9 * * 6-7,1"));
        assert!(normalize_cron("0 9 * * 8").expect_err("out of range").contains("0-7"));
    }
}
