//! InfluxDB line protocol as the executor receives it from scenario runs
//! (openstacksdk's metrics, the Ansible callback): each line checked before
//! it enters the results buffer (one malformed line would otherwise get a
//! whole batch refused later), the run's tags added, and a nanosecond
//! timestamp made explicit (a point sent without one gets the time it
//! arrived, not the time a buffered batch reaches InfluxDB).

/// Longest line accepted, in bytes.
pub const MAX_LINE: usize = 64 * 1024;

/// Why a line was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// Longer than [`MAX_LINE`].
    #[error("line is {0} bytes; at most {MAX_LINE}")]
    TooLong(usize),
    /// No measurement before the first comma or space.
    #[error("missing measurement")]
    NoMeasurement,
    /// A tag without `key=value`.
    #[error("bad tag `{0}`")]
    BadTag(String),
    /// No field set.
    #[error("missing fields")]
    NoFields,
    /// A field without `key=value` or with a value of no known type.
    #[error("bad field `{0}`")]
    BadField(String),
    /// An unterminated string field.
    #[error("unterminated string field")]
    Unterminated,
    /// A timestamp that is not an integer, or text after it.
    #[error("bad timestamp `{0}`")]
    BadTimestamp(String),
}

/// Timestamp unit of a write (`precision` parameter of `/write`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// ns (the default).
    Nanoseconds,
    /// u or µ.
    Microseconds,
    /// ms.
    Milliseconds,
    /// s.
    Seconds,
    /// m.
    Minutes,
    /// h.
    Hours,
}

impl Precision {
    /// From the `precision` parameter; `None` for an unknown unit.
    pub fn parse(text: Option<&str>) -> Option<Self> {
        Some(match text.unwrap_or("ns") {
            "" | "n" | "ns" => Self::Nanoseconds,
            "u" | "µ" | "us" => Self::Microseconds,
            "ms" => Self::Milliseconds,
            "s" => Self::Seconds,
            "m" => Self::Minutes,
            "h" => Self::Hours,
            _ => return None,
        })
    }

    fn nanos(self) -> i64 {
        match self {
            Self::Nanoseconds => 1,
            Self::Microseconds => 1_000,
            Self::Milliseconds => 1_000_000,
            Self::Seconds => 1_000_000_000,
            Self::Minutes => 60_000_000_000,
            Self::Hours => 3_600_000_000_000,
        }
    }
}

/// One parsed line; keys and values stay escaped as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line<'a> {
    /// Measurement, escaped.
    pub measurement: &'a str,
    /// Tags, escaped.
    pub tags: Vec<(&'a str, &'a str)>,
    /// The field set, as written (checked).
    pub fields: &'a str,
    /// The timestamp, in the write's precision.
    pub timestamp: Option<i64>,
}

/// Splits `text` at each `separator` that is neither escaped nor inside a
/// double-quoted string (strings only where `quotes`).
fn split_unescaped(text: &str, separator: u8, quotes: bool) -> Result<Vec<&str>, LineError> {
    let bytes = text.as_bytes();
    let (mut parts, mut start, mut i, mut quoted) = (Vec::new(), 0, 0, false);
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 1,
            b'"' if quotes => quoted = !quoted,
            b if b == separator && !quoted => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    if quoted {
        return Err(LineError::Unterminated);
    }
    parts.push(&text[start.min(text.len())..]);
    Ok(parts)
}

/// Position of the first unescaped `=` in `text`.
fn key_end(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 1,
            b'=' => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

fn check_field_value(value: &str) -> bool {
    let number = |digits: &str| {
        let digits = digits.strip_prefix('-').unwrap_or(digits);
        !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
    };
    if value.len() >= 2 && value.starts_with('"') && value.ends_with('"') {
        return true;
    }
    if let Some(integer) = value.strip_suffix('i') {
        return number(integer);
    }
    if let Some(unsigned) = value.strip_suffix('u') {
        return !unsigned.is_empty() && unsigned.bytes().all(|b| b.is_ascii_digit());
    }
    matches!(value, "t" | "T" | "true" | "True" | "TRUE" | "f" | "F" | "false" | "False" | "FALSE")
        || value.parse::<f64>().is_ok_and(f64::is_finite)
}

/// Parses one line (without its line break).
///
/// # Errors
/// The line is not valid line protocol.
pub fn parse(line: &str) -> Result<Line<'_>, LineError> {
    if line.len() > MAX_LINE {
        return Err(LineError::TooLong(line.len()));
    }
    // Series and fields: the series part has no strings; the field set
    // may hold spaces inside quotes; the timestamp follows.
    let series_end = {
        let bytes = line.as_bytes();
        let mut i = 0;
        loop {
            match bytes.get(i) {
                None => return Err(LineError::NoFields),
                Some(b'\\') => i += 2,
                Some(b' ') => break i,
                Some(_) => i += 1,
            }
        }
    };
    let series = &line[..series_end];
    let rest = &line[series_end + 1..];
    let mut parts = split_unescaped(rest, b' ', true)?.into_iter().filter(|p| !p.is_empty());
    let fields = parts.next().ok_or(LineError::NoFields)?;
    let timestamp = match parts.next() {
        None => None,
        Some(text) => Some(text.parse::<i64>().map_err(|_| LineError::BadTimestamp(text.into()))?),
    };
    if let Some(extra) = parts.next() {
        return Err(LineError::BadTimestamp(extra.into()));
    }
    let mut series_parts = split_unescaped(series, b',', false)?.into_iter();
    let measurement = series_parts.next().unwrap_or_default();
    if measurement.is_empty() {
        return Err(LineError::NoMeasurement);
    }
    let mut tags = Vec::new();
    for tag in series_parts {
        match key_end(tag) {
            Some(end) if end > 0 && end + 1 < tag.len() => {
                tags.push((&tag[..end], &tag[end + 1..]))
            }
            _ => return Err(LineError::BadTag(tag.into())),
        }
    }
    for field in split_unescaped(fields, b',', true)? {
        match key_end(field) {
            Some(end) if end > 0 && check_field_value(&field[end + 1..]) => {}
            _ => return Err(LineError::BadField(field.into())),
        }
    }
    Ok(Line { measurement, tags, fields, timestamp })
}

/// Escapes a tag key or value.
pub fn escape_tag(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            ',' | ' ' | '=' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            // No line break survives in line protocol: an escaped space.
            '\n' | '\r' => out.push_str("\\ "),
            _ => out.push(c),
        }
    }
    out
}

impl Line<'_> {
    /// The line with `extra` tags (plain keys and values; they replace
    /// tags of the same key) and a nanosecond timestamp (`now_ns` when
    /// the line had none).
    pub fn render(&self, extra: &[(&str, &str)], precision: Precision, now_ns: i64) -> String {
        let mut tags: Vec<(String, String)> = self
            .tags
            .iter()
            .filter(|(key, _)| !extra.iter().any(|(k, _)| k == key))
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        tags.extend(
            extra
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| (escape_tag(k), escape_tag(v))),
        );
        tags.sort();
        let time = self.timestamp.map_or(now_ns, |t| t.saturating_mul(precision.nanos()));
        let mut out = String::with_capacity(self.measurement.len() + self.fields.len() + 64);
        out.push_str(self.measurement);
        for (key, value) in &tags {
            out.push(',');
            out.push_str(key);
            out.push('=');
            out.push_str(value);
        }
        out.push(' ');
        out.push_str(self.fields);
        out.push(' ');
        out.push_str(&time.to_string());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_break_in_a_tag_value_stays_on_its_line() {
        assert_eq!(escape_tag("eu-de\n01"), "eu-de\\ 01");
        parse(&format!("m,zone={} f=1i 5", escape_tag("a\nb\rc"))).expect("one valid line");
    }

    macro_rules! refused {
        ($($name:ident: $line:expr => $error:pat,)*) => {$(
            #[test]
            fn $name() {
                let result = parse($line);
                assert!(matches!(result, Err($error)), "{:?}", result);
            }
        )*};
    }

    refused! {
        no_fields: "cpu" => LineError::NoFields,
        empty_field_set: "cpu " => LineError::NoFields,
        empty_measurement: ",a=b x=1" => LineError::NoMeasurement,
        tag_without_value: "cpu,a x=1" => LineError::BadTag(_),
        tag_with_empty_value: "cpu,a= x=1" => LineError::BadTag(_),
        field_without_value: "cpu x" => LineError::BadField(_),
        field_of_no_type: "cpu x=abc" => LineError::BadField(_),
        integer_with_junk: "cpu x=1.5i" => LineError::BadField(_),
        open_string: "cpu x=\"abc" => LineError::Unterminated,
        text_timestamp: "cpu x=1 yesterday" => LineError::BadTimestamp(_),
        two_timestamps: "cpu x=1 1 2" => LineError::BadTimestamp(_),
        infinite_float: "cpu x=inf" => LineError::BadField(_),
    }

    #[test]
    fn an_openstacksdk_point_keeps_its_names_and_gets_the_runs_tags_and_time() {
        let line = "openstack_api.compute,method=GET,name=servers_detail,status_code=200 200=1i,GET.200=1i,attempted=1i,duration=5i,status_code_val=200i";
        let parsed = parse(line).expect("valid");
        assert_eq!(parsed.measurement, "openstack_api.compute");
        let rendered = parsed.render(
            &[("job_id", "abc"), ("scenario", "list servers"), ("method", "GET")],
            Precision::Nanoseconds,
            42,
        );
        assert_eq!(
            rendered,
            "openstack_api.compute,job_id=abc,method=GET,name=servers_detail,scenario=list\\ servers,status_code=200 200=1i,GET.200=1i,attempted=1i,duration=5i,status_code_val=200i 42"
        );
    }

    #[test]
    fn strings_may_hold_spaces_commas_and_escaped_quotes() {
        let line = r#"apimon_task,task=create\ server message="it said \"no, not now\"",duration_ms=3i 1700000000"#;
        let parsed = parse(line).expect("valid");
        assert_eq!(parsed.tags, vec![("task", r"create\ server")]);
        assert_eq!(parsed.timestamp, Some(1_700_000_000));
        let rendered = parsed.render(&[], Precision::Seconds, 0);
        assert!(rendered.ends_with(" 1700000000000000000"), "{rendered}");
    }

    #[test]
    fn escaped_separators_in_the_measurement_and_tags_are_kept() {
        let parsed = parse(r"my\ meas,a\,b=c\=d x=1").expect("valid");
        assert_eq!(
            (parsed.measurement, parsed.tags.clone()),
            (r"my\ meas", vec![(r"a\,b", r"c\=d")])
        );
    }

    #[test]
    fn every_field_type_is_accepted() {
        parse("m a=1,b=-2i,c=3u,d=t,e=FALSE,f=\"s\",g=1e3,h=-0.5").expect("valid");
    }

    #[test]
    fn precision_units() {
        assert_eq!(Precision::parse(None), Some(Precision::Nanoseconds));
        assert_eq!(Precision::parse(Some("ms")), Some(Precision::Milliseconds));
        assert_eq!(Precision::parse(Some("fortnight")), None);
    }
}
