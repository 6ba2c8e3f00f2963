//! Small value checks shared by the file checks: names, URLs, durations.

use std::time::Duration;

/// Secret names: lowercase letters, digits and `_`.
pub(super) fn is_secret_name(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// DNS-label-like names: hosts, environments, project, volumes.
pub(super) fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// InfluxQL identifiers apimon accepts without quoting surprises.
pub(super) fn is_influx_identifier(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Grafana uids: at most 40 of `[a-zA-Z0-9_-]`.
pub(super) fn is_grafana_uid(uid: &str) -> bool {
    !uid.is_empty()
        && uid.len() <= 40
        && uid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// An http(s) URL with a host: its port (explicit or the scheme's).
pub(super) fn http_url_port(url: &str) -> Option<u16> {
    let parsed = reqwest::Url::parse(url).ok()?;
    let scheme_ok = matches!(parsed.scheme(), "http" | "https");
    let host_ok = parsed.host_str().is_some_and(|h| !h.is_empty());
    (scheme_ok && host_ok && !url.contains(char::is_whitespace))
        .then(|| parsed.port_or_known_default())
        .flatten()
}

/// Whether `url` is an http(s) URL with a host.
pub(super) fn is_http_url(url: &str) -> bool {
    http_url_port(url).is_some()
}

/// `30s`, `5m`, `1h` → duration.
pub(crate) fn parse_timeout(text: &str) -> Option<Duration> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let value: u64 = text[..digits].parse().ok()?;
    let seconds = match &text[digits..] {
        "s" => value,
        "m" => value.checked_mul(60)?,
        "h" => value.checked_mul(3600)?,
        _ => return None,
    };
    (seconds > 0).then(|| Duration::from_secs(seconds))
}

/// "expected one of: a, b" or "none are declared".
pub(super) fn names_list<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let names: Vec<&str> = names.into_iter().collect();
    if names.is_empty() {
        "none are declared".to_owned()
    } else {
        format!("expected one of: {}", names.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_take_seconds_minutes_hours() {
        assert_eq!(parse_timeout("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_timeout("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_timeout("0s"), None);
        assert_eq!(parse_timeout("5 m"), None);
    }

    #[test]
    fn urls_need_http_a_host_and_no_spaces() {
        assert_eq!(http_url_port("http://192.168.10.30:8086"), Some(8086));
        assert_eq!(http_url_port("https://grafana.example.net"), Some(443));
        assert_eq!(http_url_port("ftp://x"), None);
        assert_eq!(http_url_port("http://"), None);
        assert_eq!(http_url_port("http://a b"), None);
    }
}
