//! The files of the host an environment's daemon runs on: its unit, its
//! daemon.yaml, and the credentials apimon.yaml names as secrets (the git
//! token or deploy key, the webhook secret). daemon.yaml records the
//! unit's hash, so a new unit is a changed configuration and the daemon
//! restarts itself for it, after the apply that wrote it.

use serde_json::{json, Value};

use super::{secret_value, sha256_hex, RenderError, RenderedFile, Templates};
use crate::model::{raw, Environment, Host, MaybeSecret, Secrets, Sensitive};

/// The daemon's unit.
pub const UNIT: &str = "apimon";
/// Its unit file.
pub const UNIT_PATH: &str = "/etc/systemd/system/apimon.service";
/// Its configuration.
pub const CONFIG_PATH: &str = "/etc/apimon/daemon.yaml";
const TOKEN_PATH: &str = "/etc/apimon/git_token";
const DEPLOY_KEY_PATH: &str = "/etc/apimon/git_ssh_key";
const WEBHOOK_SECRET_PATH: &str = "/etc/apimon/webhook_secret";

fn file(path: &str, text: String, mode: u32, group: &str, template: Option<&str>) -> RenderedFile {
    RenderedFile {
        path: path.to_owned(),
        sha256: sha256_hex(text.as_bytes()),
        content: Sensitive::new(text.into_bytes()),
        mode,
        owner: if mode & 0o040 == 0 { "apimon" } else { "root" }.to_owned(),
        group: group.to_owned(),
        // Only a new unit file needs systemd to reload it; the daemon
        // restarts itself for the rest (never restarted by an apply).
        restarts: if path == UNIT_PATH { vec![UNIT.to_owned()] } else { Vec::new() },
        template: template.map(str::to_owned),
    }
}

/// A secret file's content: the value and one newline (OpenSSH needs it
/// after a key).
fn secret_file(secrets: &Secrets, value: &MaybeSecret) -> String {
    let mut missing = Vec::new();
    let mut text = secret_value(secrets, value, &mut missing);
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

/// The daemon's files on `host`; adds `daemon` to `context` for the templates.
pub(super) fn files(
    environment: &Environment,
    host: &Host,
    daemon: &raw::Daemon,
    templates: &Templates,
    secrets: &Secrets,
    context: &mut Value,
) -> Result<Vec<RenderedFile>, RenderError> {
    let unit = templates.render("apimon.service.hbs", &host.name, context)?;
    let repository = &daemon.repository;
    let settings = json!({
        "unit_sha256": sha256_hex(unit.as_bytes()),
        "runs_on": format!("{}/{}", environment.name, host.name),
        "listen": daemon.listen,
        "webhook": daemon.webhook,
        "drift_cron": daemon.drift_cron,
        "maintenance_windows": daemon.maintenance_windows,
        "parallelism": daemon.parallelism,
        "attempts": daemon.attempts,
        "webhook_secret_file": daemon.webhook_secret.as_ref().map(|_| WEBHOOK_SECRET_PATH),
        "repository": {
            "url": repository.url,
            "branch": repository.branch,
            "poll_interval_seconds": repository.poll_interval_seconds,
            "max_fetch_bytes": repository.max_fetch_bytes,
            "token_file": repository.token.as_ref().map(|_| TOKEN_PATH),
            "ssh_key": repository.ssh_key.as_ref().map(|_| DEPLOY_KEY_PATH),
        },
    });
    if let Some(object) = context.as_object_mut() {
        object.insert("daemon".to_owned(), settings);
    }
    let config = templates.render("daemon.yaml.hbs", &host.name, context)?;
    // What validation let through, and template overrides, must still give
    // a daemon.yaml the daemon starts with: it cannot fix it from there.
    let parsed =
        crate::model::daemon::DaemonFile::parse(std::path::Path::new(CONFIG_PATH), &config)
            .map_err(|problems| RenderError::Daemon {
                host: host.name.clone(),
                what: CONFIG_PATH.to_owned(),
                message: format!("invalid daemon config:\n{}", problems.join("\n")),
            })?;
    let runs_on = format!("{}/{}", environment.name, host.name);
    let problems = crate::model::authority::daemon_file_problems(&parsed.raw, &runs_on);
    if !problems.is_empty() {
        return Err(RenderError::Daemon {
            host: host.name.clone(),
            what: CONFIG_PATH.to_owned(),
            message: format!(
                "a commit may not change what the daemon trusts: {}; changing these takes `apimon bootstrap` on the bastion (docs/security.md)",
                problems.join("; ")
            ),
        });
    }
    if let (Some(secret), Secrets::Resolved(_)) = (&daemon.webhook_secret, secrets) {
        let length = secret_file(secrets, secret).trim().len();
        if length < crate::model::daemon::MIN_WEBHOOK_SECRET {
            return Err(RenderError::Daemon {
                host: host.name.clone(),
                what: WEBHOOK_SECRET_PATH.to_owned(),
                message: format!(
                    "the webhook secret (environments.{}.daemon.webhook_secret) holds {length} bytes; it must hold at least {}",
                    environment.name,
                    crate::model::daemon::MIN_WEBHOOK_SECRET
                ),
            });
        }
    }
    let mut files = vec![
        file(UNIT_PATH, unit, 0o644, "root", Some("apimon.service.hbs")),
        // Read by the daemon through its group; written by root only.
        file(CONFIG_PATH, config, 0o640, "apimon", Some("daemon.yaml.hbs")),
    ];
    // The daemon refuses credentials anyone but its user can read.
    let credentials = [
        (TOKEN_PATH, repository.token.as_ref()),
        (DEPLOY_KEY_PATH, repository.ssh_key.as_ref()),
        (WEBHOOK_SECRET_PATH, daemon.webhook_secret.as_ref()),
    ];
    for (path, value) in credentials {
        if let Some(value) = value {
            files.push(file(path, secret_file(secrets, value), 0o600, "apimon", None));
        }
    }
    Ok(files)
}
