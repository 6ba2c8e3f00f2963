//! OpenSSH's known_hosts, read as OpenSSH reads it: host patterns with
//! wildcards (`*`, `?`) and negation (`!`), hashed names (`|1|salt|hash`),
//! `[host]:port` for other ports, and the markers `@revoked` (that key is
//! refused for every host) and `@cert-authority` (a CA key, never a host
//! key: apimon checks plain host keys). Shared by the host provider and
//! the daemon's git source.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use hmac::{Hmac, Mac};

use russh::keys::ssh_key::PublicKey;

/// What known_hosts says about a key a host presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Recorded for that host.
    Known,
    /// The host is recorded with other keys only.
    Changed {
        /// Line of the first entry for the host.
        line: usize,
    },
    /// Marked `@revoked`.
    Revoked {
        /// Line of the revocation.
        line: usize,
    },
    /// No entry for the host.
    Unknown,
}

/// Checking failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {}", path.display())]
pub struct KnownHostsError {
    /// The file.
    pub path: PathBuf,
    /// Cause.
    #[source]
    pub source: std::io::Error,
}

/// What `path` says of `key` presented by `host` (a name or an address) on `port`.
///
/// # Errors
/// The file cannot be read.
pub fn check(
    path: &Path,
    host: &str,
    port: u16,
    key: &PublicKey,
) -> Result<Verdict, KnownHostsError> {
    let text = crate::fsutil::read_text_limited(path, crate::fsutil::MAX_CONFIG_BYTES)
        .map_err(|e| KnownHostsError { path: path.to_owned(), source: e.into() })?;
    Ok(verdict(&text, host, port, key))
}

/// [`check`] on the file's text.
pub fn verdict(text: &str, host: &str, port: u16, key: &PublicKey) -> Verdict {
    let name = if port == 22 { host.to_owned() } else { format!("[{host}]:{port}") };
    let mut changed = None;
    let mut known = false;
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let Some(entry) = Entry::parse(line) else { continue };
        match entry.marker {
            Some("@revoked") if entry.key.as_ref() == Some(key) => {
                return Verdict::Revoked { line: number };
            }
            Some(_) => continue,
            None => {}
        }
        if !matches_patterns(entry.hosts, &name) {
            continue;
        }
        if entry.key.as_ref() == Some(key) {
            known = true;
        } else if changed.is_none() {
            changed = Some(number);
        }
    }
    match (known, changed) {
        (true, _) => Verdict::Known,
        (false, Some(line)) => Verdict::Changed { line },
        (false, None) => Verdict::Unknown,
    }
}

/// The lines of `text` another machine needs to reach `endpoints` (host
/// and port each): the entries for them (hashed names included) and every
/// `@revoked` line; nothing about other hosts.
pub fn lines_for<'a>(text: &'a str, endpoints: &[(String, u16)]) -> Vec<&'a str> {
    let names: Vec<String> = endpoints
        .iter()
        .map(|(host, port)| if *port == 22 { host.clone() } else { format!("[{host}]:{port}") })
        .collect();
    text.lines()
        .filter(|line| {
            Entry::parse(line).is_some_and(|entry| match entry.marker {
                Some("@revoked") => true,
                Some(_) => false,
                None => names.iter().any(|name| matches_patterns(entry.hosts, name)),
            })
        })
        .map(str::trim)
        .collect()
}

/// One line: an optional marker, host patterns and a key.
struct Entry<'a> {
    marker: Option<&'a str>,
    hosts: &'a str,
    key: Option<PublicKey>,
}

impl<'a> Entry<'a> {
    fn parse(line: &'a str) -> Option<Self> {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let mut fields = line.split_whitespace();
        let first = fields.next()?;
        let (marker, hosts) =
            if first.starts_with('@') { (Some(first), fields.next()?) } else { (None, first) };
        let algorithm = fields.next()?;
        let data = fields.next()?;
        // A key that does not parse never matches; the line is skipped.
        let key = PublicKey::from_openssh(&format!("{algorithm} {data}")).ok();
        Some(Self { marker, hosts, key })
    }
}

/// Whether the comma-separated `patterns` accept `name`: one positive
/// pattern matches and no negated one does.
fn matches_patterns(patterns: &str, name: &str) -> bool {
    let mut accepted = false;
    for pattern in patterns.split(',') {
        if let Some(negated) = pattern.strip_prefix('!') {
            if matches_one(negated, name) {
                return false;
            }
        } else if matches_one(pattern, name) {
            accepted = true;
        }
    }
    accepted
}

fn matches_one(pattern: &str, name: &str) -> bool {
    if let Some(hashed) = pattern.strip_prefix("|1|") {
        return hashed_matches(hashed, name);
    }
    wildcard(pattern.as_bytes(), name.as_bytes())
}

/// `salt|hash`, both base64: HMAC-SHA1 of the name keyed with the salt.
fn hashed_matches(hashed: &str, name: &str) -> bool {
    let engine = base64::engine::general_purpose::STANDARD;
    let Some((salt, hash)) = hashed.split_once('|') else { return false };
    let (Ok(salt), Ok(hash)) = (engine.decode(salt), engine.decode(hash)) else { return false };
    let Ok(mut mac) = Hmac::<sha1::Sha1>::new_from_slice(&salt) else { return false };
    mac.update(name.as_bytes());
    mac.verify_slice(&hash).is_ok()
}

/// `*` (any run) and `?` (one character), case-insensitive as OpenSSH's.
fn wildcard(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(c) if *c == b'?' || c.eq_ignore_ascii_case(&name[n]) => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((star_p, star_n)) => {
                    p = star_p + 1;
                    n = star_n + 1;
                    star = Some((star_p, star_n + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|c| *c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG7mB9bJ5cXf0cS2qkJ3pQy8nT4uV1wX2yZ3aB4cD5eF";
    const OTHER: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINSH8GjEj0SHCaPZAD+3JGeseQq5Quj60V03VqvTetwP";

    fn key(text: &str) -> PublicKey {
        PublicKey::from_openssh(text).expect("key")
    }

    #[test]
    fn table_of_known_hosts_lines() {
        let cases: &[(&str, &str, u16, Verdict)] = &[
            (&format!("bastion {KEY}"), "bastion", 22, Verdict::Known),
            (&format!("[10.0.0.5]:2222 {KEY}"), "10.0.0.5", 2222, Verdict::Known),
            (&format!("10.0.0.5 {KEY}"), "10.0.0.5", 2222, Verdict::Unknown),
            (
                &format!("*.example.net,!evil.example.net {KEY}"),
                "h1.example.net",
                22,
                Verdict::Known,
            ),
            (
                &format!("*.example.net,!evil.example.net {KEY}"),
                "evil.example.net",
                22,
                Verdict::Unknown,
            ),
            (&format!("host?? {KEY}"), "host01", 22, Verdict::Known),
            (&format!("bastion {OTHER}"), "bastion", 22, Verdict::Changed { line: 1 }),
            (&format!("bastion {OTHER}\nbastion {KEY}"), "bastion", 22, Verdict::Known),
            (
                &format!("bastion {KEY}\n@revoked * {KEY}"),
                "bastion",
                22,
                Verdict::Revoked { line: 2 },
            ),
            (&format!("@cert-authority bastion {KEY}"), "bastion", 22, Verdict::Unknown),
            (&format!("# bastion {KEY}\n\n   "), "bastion", 22, Verdict::Unknown),
        ];
        for (text, host, port, expected) in cases {
            assert_eq!(
                &verdict(text, host, *port, &key(KEY)),
                expected,
                "{text:?} for {host}:{port}"
            );
        }
    }

    #[test]
    fn only_the_lines_for_the_endpoints_are_kept() {
        let text = "[10.0.0.1]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl a\n\
                    other.example ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl b\n\
                    bastion.example,10.0.0.2 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl c\n\
                    @revoked * ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl d\n";
        let kept = lines_for(text, &[("10.0.0.1".into(), 2222), ("10.0.0.2".into(), 22)]);
        assert_eq!(kept.len(), 3, "{kept:?}");
        assert!(kept.iter().all(|l| !l.starts_with("other.example")), "{kept:?}");
    }

    #[test]
    fn hashed_names_match() {
        // `ssh-keygen -H` of "bastion" with this salt.
        let engine = base64::engine::general_purpose::STANDARD;
        let salt = [7u8; 20];
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(&salt).expect("mac");
        mac.update(b"bastion");
        let hash = mac.finalize().into_bytes();
        let line = format!("|1|{}|{} {KEY}", engine.encode(salt), engine.encode(hash));
        assert_eq!(verdict(&line, "bastion", 22, &key(KEY)), Verdict::Known);
        assert_eq!(verdict(&line, "other", 22, &key(KEY)), Verdict::Unknown);
    }
}
