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

/// Ansible variable names: letters, digits and `_`, not starting with a digit.
pub(super) fn is_variable_name(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
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

/// Whether `text` matches the glob `pattern`: `*` is any run of
/// characters but `/`, `**` any run including `/`, `?` one character but
/// `/`. Linear in both lengths (no backtracking blow-up on hostile input).
pub(crate) fn glob_match(pattern: &str, text: &str) -> bool {
    #[derive(Clone, Copy, PartialEq)]
    enum Token {
        Char(char),
        One,
        Star,
        DoubleStar,
    }
    let mut tokens = Vec::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        tokens.push(match c {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                Token::DoubleStar
            }
            '*' => Token::Star,
            '?' => Token::One,
            c => Token::Char(c),
        });
    }
    let text: Vec<char> = text.chars().collect();
    // reachable[i]: the tokens so far can consume exactly text[..i].
    let mut reachable = vec![false; text.len() + 1];
    reachable[0] = true;
    for token in tokens {
        let mut next = vec![false; text.len() + 1];
        for i in 0..=text.len() {
            match token {
                Token::Star | Token::DoubleStar => {
                    let carried =
                        i > 0 && next[i - 1] && (token == Token::DoubleStar || text[i - 1] != '/');
                    next[i] = reachable[i] || carried;
                }
                Token::One => next[i] = i > 0 && reachable[i - 1] && text[i - 1] != '/',
                Token::Char(c) => next[i] = i > 0 && reachable[i - 1] && text[i - 1] == c,
            }
        }
        reachable = next;
    }
    reachable[text.len()]
}

/// Whether `pattern` holds glob characters (else it is one name).
pub(crate) fn is_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?'])
}

/// `30s`, `5m`, `1h` → duration.
pub(crate) fn parse_timeout(text: &str) -> Option<Duration> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let value: u64 = text[..digits].parse().ok()?;
    let seconds = match &text[digits..] {
        "s" => value,
        "m" => value.checked_mul(60)?,
        "h" => value.checked_mul(3600)?,
        "d" => value.checked_mul(86_400)?,
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

    macro_rules! glob_cases {
        ($($pattern:literal ~ $text:literal => $want:expr),* $(,)?) => {
            $(assert_eq!(glob_match($pattern, $text), $want, "{} ~ {}", $pattern, $text);)*
        };
    }

    #[test]
    fn globs_match_within_and_across_directories() {
        glob_cases! {
            "playbooks/scenario*.yaml" ~ "playbooks/scenario1_token.yaml" => true,
            "playbooks/scenario*.yaml" ~ "playbooks/sub/scenario1.yaml" => false,
            "playbooks/scenario*.yaml" ~ "playbooks/scenario1.yml" => false,
            "**/scenario*.yaml" ~ "a/b/scenario_x.yaml" => true,
            "scenario_?" ~ "scenario_a" => true,
            "scenario_?" ~ "scenario_ab" => false,
            "*" ~ "" => true,
            "*" ~ "a/b" => false,
            "**" ~ "a/b" => true,
            "exact" ~ "exact" => true,
            "exact" ~ "exactly" => false,
        }
        // Hostile patterns stay linear.
        let pattern = "*a".repeat(200);
        assert!(!glob_match(&pattern, &"a".repeat(199)));
    }
}
