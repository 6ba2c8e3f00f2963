//! `environments.<env>.daemon`: the daemon's settings, checked as the
//! daemon will read them from the daemon.yaml rendered from them, so a
//! commit that would give the bastion a daemon.yaml it refuses is refused
//! here, with the place in apimon.yaml.

use super::Check;
use crate::model::load::Document;
use crate::model::{raw, Host, Role};

const SCHEMES: [&str; 5] = ["https", "http", "ssh", "git", "file"];

use crate::model::daemon::MAX_WINDOW_MINUTES;

/// Checks `daemon` of environment `env_path`, whose hosts are `hosts`.
pub(super) fn check(
    check: &mut Check,
    root: &Document<raw::Root>,
    env_path: &str,
    env: &raw::Environment,
    hosts: &[Host],
) {
    let Some(daemon) = &env.daemon else { return };
    let path = format!("{env_path}.daemon");
    if !hosts.iter().any(|h| h.role == Role::Bastion) {
        check.error(
            root,
            &path,
            "no host has role `bastion`; the daemon runs on the environment's first bastion",
        );
    }
    if env.ssh.is_none() {
        check.error(
            root,
            &path,
            "no `ssh:` section; the daemon's files reach its bastion over SSH",
        );
    }
    check_repository(check, root, &format!("{path}.repository"), &daemon.repository);
    if daemon.listen.parse::<std::net::SocketAddr>().is_err() {
        check.error(
            root,
            &format!("{path}.listen"),
            format!("invalid address `{}`; expected host:port like 127.0.0.1:9110", daemon.listen),
        );
    }
    if let Some(secret) = &daemon.webhook_secret {
        check.secret(root, &format!("{path}.webhook_secret"), secret, true);
    }
    if let Some(cron) = &daemon.drift_cron {
        if let Err(message) = crate::cron::Schedule::parse(cron) {
            check.error(root, &format!("{path}.drift_cron"), message);
        }
    }
    for (i, window) in daemon.maintenance_windows.iter().enumerate() {
        let at = format!("{path}.maintenance_windows[{i}]");
        if let Err(message) = crate::cron::Schedule::parse(&window.cron) {
            check.error(root, &format!("{at}.cron"), message);
        }
        if !(1..=MAX_WINDOW_MINUTES).contains(&window.duration_minutes) {
            check.error(
                root,
                &format!("{at}.duration_minutes"),
                format!("{}; expected 1 to {MAX_WINDOW_MINUTES} (a year)", window.duration_minutes),
            );
        }
    }
    for (key, value) in [("parallelism", daemon.parallelism), ("attempts", daemon.attempts)] {
        if value == 0 {
            check.error(root, &format!("{path}.{key}"), "0; expected at least 1");
        }
    }
}

fn check_repository(
    check: &mut Check,
    root: &Document<raw::Root>,
    path: &str,
    repository: &raw::DaemonRepository,
) {
    let scheme = repository.url.split_once("://").map(|(scheme, _)| scheme);
    match scheme {
        Some(scheme) if SCHEMES.contains(&scheme) => {}
        _ => check.error(
            root,
            &format!("{path}.url"),
            format!(
                "invalid remote `{}`; expected an https://, http://, ssh://, git:// or file:// URL",
                crate::url::redact_url(&repository.url)
            ),
        ),
    }
    if repository.url.contains(char::is_control) {
        check.error(root, &format!("{path}.url"), "control characters in the URL");
    }
    if repository.branch.is_empty()
        || repository.branch.contains(|c: char| c.is_whitespace() || c.is_control())
    {
        check.error(root, &format!("{path}.branch"), "expected a branch name");
    }
    if repository.poll_interval_seconds == 0 {
        check.error(root, &format!("{path}.poll_interval_seconds"), "0; expected at least 1");
    }
    if repository.max_fetch_bytes == Some(0) {
        check.error(root, &format!("{path}.max_fetch_bytes"), "0; expected at least 1");
    }
    // Each credential, the one scheme it is sent to.
    let credentials = [
        ("token", &repository.token, "https", "a token authenticates to an https:// remote only"),
        (
            "ssh_key",
            &repository.ssh_key,
            "ssh",
            "a deploy key authenticates to an ssh:// remote only",
        ),
    ];
    for (key, value, wanted, message) in credentials {
        let Some(value) = value else { continue };
        check.secret(root, &format!("{path}.{key}"), value, true);
        if scheme != Some(wanted) {
            check.error(root, &format!("{path}.{key}"), message);
        }
    }
}
