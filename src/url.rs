//! Reading URLs that come from a repository: what may be shown of them
//! (credentials redacted), and which host they name (credentials are sent
//! to their own host only; SSH host keys are checked for it).

/// `url` with the password (or token) of its user part replaced by `***`:
/// what logs, errors and `/status` show.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((user, host)) => {
            let user = user.split_once(':').map_or(user, |(name, _)| name);
            format!("{scheme}://{user}:***@{host}{path}")
        }
        None => url.to_owned(),
    }
}

/// The authority of a URL: `scheme://[user@]host[:port]/…`, or scp-like
/// `user@host:path` (no port there). One parser for every place that
/// needs a URL's host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Authority<'a> {
    /// The user part, password included, if any.
    pub user: Option<&'a str>,
    /// The host, without IPv6 brackets.
    pub host: &'a str,
    /// The port, when written.
    pub port: Option<u16>,
    /// `host[:port]` as written.
    pub host_port: &'a str,
}

/// The authority of `url`, if it has one.
pub fn authority(url: &str) -> Option<Authority<'_>> {
    let (raw, scp) = match url.split_once("://") {
        Some((_, rest)) => (rest.split(['/', '?', '#']).next()?, false),
        None => {
            let (before, _) = url.split_once(':')?;
            if before.contains('/') {
                return None;
            }
            (before, true)
        }
    };
    let (user, host_port) = match raw.rsplit_once('@') {
        Some((user, host_port)) => (Some(user), host_port),
        None => (None, raw),
    };
    let (host, port) = if scp {
        (host_port, None)
    } else if let Some(v6) = host_port.strip_prefix('[') {
        let (host, rest) = v6.split_once(']')?;
        (host, rest.strip_prefix(':').and_then(|p| p.parse().ok()))
    } else {
        match host_port.rsplit_once(':') {
            Some((host, port)) => (host, port.parse().ok()),
            None => (host_port, None),
        }
    };
    Some(Authority { user, host, port, host_port })
}

/// Whether a credential of `kind` may be sent to `url`: a token only over
/// https:// (or http:// to this machine: loopback traffic never leaves
/// it, and a tunnel's near end is there), an SSH key only over ssh:// (or
/// scp-like `user@host:path`). Never over http:// or git:// to another
/// machine, where anyone on the path reads it.
pub fn carries(url: &str, kind: Credential) -> bool {
    let scheme = url.split_once("://").map(|(scheme, _)| scheme.to_ascii_lowercase());
    match kind {
        Credential::Token => match scheme.as_deref() {
            Some("https") => true,
            Some("http") => authority(url).is_some_and(|a| is_loopback(a.host)),
            _ => false,
        },
        Credential::SshKey => match scheme.as_deref() {
            Some(scheme) => scheme == "ssh" || scheme == "git+ssh",
            None => authority(url).is_some(),
        },
    }
}

/// Whether `host` names this machine: `localhost`, 127.0.0.0/8 or ::1.
pub fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A kind of credential a URL may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// A token sent as a password.
    Token,
    /// An SSH private key.
    SshKey,
}

/// `host` or `host:port` of a URL (scp-like `user@host:path` included),
/// lowercase: the scope credentials are sent to.
pub fn url_host(url: &str) -> Option<String> {
    authority(url).filter(|a| !a.host_port.is_empty()).map(|a| a.host_port.to_ascii_lowercase())
}

/// Host and port of an ssh:// or scp-like (`user@host:path`) URL.
pub fn ssh_host_port(url: &str) -> (String, u16) {
    authority(url)
        .map_or_else(|| (String::new(), 22), |a| (a.host.to_owned(), a.port.unwrap_or(22)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_urls_are_redacted() {
        assert_eq!(
            redact_url("https://apimon:s3cret@git.example/r.git"),
            "https://apimon:***@git.example/r.git"
        );
        assert_eq!(
            redact_url("https://tok3n@git.example/r.git"),
            "https://tok3n:***@git.example/r.git"
        );
        assert_eq!(redact_url("https://git.example/r.git"), "https://git.example/r.git");
        assert_eq!(redact_url("file:///srv/r.git"), "file:///srv/r.git");
    }

    #[test]
    fn ssh_urls_give_host_and_port() {
        assert_eq!(
            ssh_host_port("ssh://git@git.example.net:2222/ops/desired.git"),
            ("git.example.net".to_owned(), 2222)
        );
        assert_eq!(
            ssh_host_port("ssh://git@git.example.net/ops/desired.git"),
            ("git.example.net".to_owned(), 22)
        );
        assert_eq!(
            ssh_host_port("git@git.example.net:ops/desired.git"),
            ("git.example.net".to_owned(), 22)
        );
        assert_eq!(
            ssh_host_port("ssh://root@127.0.0.1:4022/tmp/origin.git"),
            ("127.0.0.1".to_owned(), 4022)
        );
    }

    #[test]
    fn hosts_are_taken_from_every_url_form() {
        assert_eq!(
            url_host("https://tok@Git.Example:8443/a.git").as_deref(),
            Some("git.example:8443")
        );
        assert_eq!(url_host("ssh://git@git.example/a.git").as_deref(), Some("git.example"));
        assert_eq!(url_host("git@git.example:ops/a.git").as_deref(), Some("git.example"));
        assert_eq!(url_host("file:///srv/a.git"), None);
    }

    #[test]
    fn credentials_go_over_their_own_scheme_only() {
        use Credential::{SshKey, Token};
        assert!(carries("https://git.example/r.git", Token));
        assert!(carries("HTTPS://git.example/r.git", Token));
        assert!(!carries("http://git.example/r.git", Token));
        assert!(!carries("http://192.168.1.5/r.git", Token));
        assert!(!carries("http://127.0.0.1.evil.test/r.git", Token));
        assert!(carries("http://127.0.0.1:3000/r.git", Token), "this machine");
        assert!(carries("http://[::1]:3000/r.git", Token));
        assert!(carries("http://localhost/r.git", Token));
        assert!(!carries("git://git.example/r.git", Token));
        assert!(!carries("ssh://git@git.example/r.git", Token));
        assert!(carries("ssh://git@git.example/r.git", SshKey));
        assert!(carries("git@git.example:ops/r.git", SshKey));
        assert!(!carries("https://git.example/r.git", SshKey));
        assert!(!carries("file:///srv/r.git", SshKey));
    }

    #[test]
    fn the_host_of_a_url() {
        for (url, host) in [
            ("http://192.168.10.30:8086", Some("192.168.10.30")),
            ("https://grafana.example.net/sub/path", Some("grafana.example.net")),
            ("http://user:pw@influx.internal:8086/", Some("influx.internal")),
            ("http://[fd00::30]:8086", Some("fd00::30")),
            ("https://grafana.example.net?x=1", Some("grafana.example.net")),
            ("no-scheme", None),
        ] {
            assert_eq!(authority(url).map(|a| a.host), host, "{url}");
        }
        assert_eq!(ssh_host_port("ssh://git@[::1]:2222/r.git"), ("::1".to_owned(), 2222));
    }
}
