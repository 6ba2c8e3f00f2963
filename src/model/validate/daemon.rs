//! `environments.<env>.daemon`: the daemon's settings, checked as the
//! daemon will read them from the daemon.yaml rendered from them, so a
//! commit that would give the bastion a daemon.yaml it refuses is refused
//! here, with the place in apimon.yaml.

use super::Check;
use crate::model::load::Document;
use crate::model::{raw, Host, Role};

const SCHEMES: [&str; 5] = ["https", "http", "ssh", "git", "file"];

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
    for (key, message) in daemon.problems() {
        check.error(root, &format!("{path}.{key}"), message);
    }
    if let Some(secret) = &daemon.webhook_secret {
        check.secret(root, &format!("{path}.webhook_secret"), secret, true);
    } else if daemon.webhook.is_some() {
        check.error(
            root,
            &format!("{path}.webhook"),
            "a webhook listener needs `webhook_secret` (the forge signs with it)",
        );
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
