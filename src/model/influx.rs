//! An environment's validated InfluxDB objects: databases with parsed
//! retention durations, users and their grants.

use std::fmt;

use super::raw::{InfluxUser, Privilege};

/// Nanoseconds per InfluxQL duration unit; longer unit names first.
const UNITS: [(&str, u64); 9] = [
    ("ns", 1),
    ("ms", 1_000_000),
    ("µ", 1_000),
    ("u", 1_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
    ("d", 86_400_000_000_000),
    ("w", 604_800_000_000_000),
];

/// An InfluxQL duration (`4w`, `1d12h`, `INF`), in nanoseconds; 0 is
/// infinite, as InfluxDB itself reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InfluxDuration(u64);

impl InfluxDuration {
    /// Infinite.
    pub const INFINITE: Self = Self(0);

    /// Parses an InfluxQL duration literal; `None` if it is not one.
    pub fn parse(text: &str) -> Option<Self> {
        if text.eq_ignore_ascii_case("inf") {
            return Some(Self::INFINITE);
        }
        if text.is_empty() {
            return None;
        }
        let mut total: u64 = 0;
        let mut rest = text;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            let value: u64 = rest[..digits].parse().ok()?;
            rest = &rest[digits..];
            let (unit, ns) = UNITS.iter().find(|(unit, _)| rest.starts_with(unit))?;
            rest = &rest[unit.len()..];
            total = total.checked_add(value.checked_mul(*ns)?)?;
        }
        Some(Self(total))
    }

    /// From nanoseconds (0: infinite).
    pub fn from_nanos(ns: u64) -> Self {
        Self(ns)
    }

    /// Nanoseconds (0: infinite).
    pub fn as_nanos(self) -> u64 {
        self.0
    }

    /// Whether it is infinite.
    pub fn is_infinite(self) -> bool {
        self.0 == 0
    }
}

impl serde::Serialize for InfluxDuration {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl fmt::Display for InfluxDuration {
    /// The shortest exact form: `INF`, `4w` as `28d`, `36h`, `90s`, `500ms`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SECOND: u64 = 1_000_000_000;
        const HOUR: u64 = 3_600 * SECOND;
        match self.0 {
            0 => f.write_str("INF"),
            n if n % (24 * HOUR) == 0 => write!(f, "{}d", n / (24 * HOUR)),
            n if n % HOUR == 0 => write!(f, "{}h", n / HOUR),
            n if n % SECOND == 0 => write!(f, "{}s", n / SECOND),
            n if n % 1_000_000 == 0 => write!(f, "{}ms", n / 1_000_000),
            n => write!(f, "{n}ns"),
        }
    }
}

/// A retention policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Name.
    pub name: String,
    /// How long data is kept.
    pub duration: InfluxDuration,
    /// Shard group duration; `None` lets InfluxDB choose.
    pub shard_duration: Option<InfluxDuration>,
    /// Replication factor.
    pub replication: u32,
    /// Whether this is the database's default policy.
    pub default: bool,
}

/// A continuous query, checked: its fragments lex and stay fragments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContinuousQuery {
    /// Name.
    pub name: String,
    /// Source retention policy.
    pub from: String,
    /// Target retention policy.
    pub into: String,
    /// `GROUP BY time(…)`.
    pub interval: InfluxDuration,
    /// `RESAMPLE EVERY`, when given.
    pub every: Option<InfluxDuration>,
    /// `RESAMPLE FOR`, when given.
    pub span: Option<InfluxDuration>,
    /// A measurement name or a `/regex/`.
    pub measurements: String,
    /// The field list.
    pub select: String,
    /// The condition, when given.
    pub condition: Option<String>,
    /// Tags kept; `None`: every tag.
    pub group_by: Option<Vec<String>>,
}

/// A database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Database {
    /// Name.
    pub name: String,
    /// Retention policies.
    pub retention_policies: Vec<RetentionPolicy>,
    /// Continuous queries.
    pub continuous_queries: Vec<ContinuousQuery>,
}

/// One environment's InfluxDB objects.
#[derive(Debug, Clone, Default)]
pub struct Influxdb {
    /// Databases.
    pub databases: Vec<Database>,
    /// Users (names and privileges are plain values already).
    pub users: Vec<InfluxUser>,
}

impl Influxdb {
    /// The user called `name`.
    pub fn user(&self, name: &str) -> Option<&InfluxUser> {
        self.users.iter().find(|u| u.name == name)
    }

    /// Whether `user` may write to `database` (admin, or a WRITE or ALL grant).
    pub fn can_write(user: &InfluxUser, database: &str) -> bool {
        user.admin
            || user.grants.iter().any(|g| {
                g.database == database && matches!(g.privilege, Privilege::Write | Privilege::All)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn influx_durations_follow_influxql() {
        for good in ["4w", "30d", "1d12h", "INF", "inf", "500ms"] {
            assert!(InfluxDuration::parse(good).is_some(), "{good}");
        }
        for bad in ["", "4", "w", "4y", "1d 2h"] {
            assert!(InfluxDuration::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn influx_durations_parse_to_nanoseconds() {
        let ns = |text| InfluxDuration::parse(text).map(InfluxDuration::as_nanos);
        assert_eq!(ns("4w"), Some(4 * 604_800_000_000_000));
        assert_eq!(ns("1d12h"), Some(36 * 3_600_000_000_000));
        assert_eq!(ns("INF"), Some(0));
    }

    #[test]
    fn durations_print_in_their_shortest_exact_form() {
        let text = |t| InfluxDuration::parse(t).map(|d| d.to_string());
        assert_eq!(text("4w").as_deref(), Some("28d"));
        assert_eq!(text("1d12h").as_deref(), Some("36h"));
        assert_eq!(text("inf").as_deref(), Some("INF"));
        assert_eq!(text("500ms").as_deref(), Some("500ms"));
    }
}
