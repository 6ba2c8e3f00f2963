//! `apimon approve`: approves a pending change of a running daemon over
//! its authenticated `POST /approve`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use super::Outcome;

/// `POST /approve` to the daemon.
pub(super) async fn approve(
    id: Option<String>,
    env: Option<String>,
    config: &Path,
    daemon: Option<String>,
    token_file: Option<PathBuf>,
) -> anyhow::Result<Outcome> {
    let loaded = if daemon.is_none() || token_file.is_none() {
        Some(crate::daemon::config::Config::load(config)?)
    } else {
        None
    };
    let url = match (daemon, &loaded) {
        (Some(url), _) => url.trim_end_matches('/').to_owned(),
        (None, Some(config)) => format!("http://{}", config.raw.listen),
        (None, None) => bail!("no daemon address"),
    };
    let token_file = match (token_file, &loaded) {
        (Some(file), _) => file,
        (None, Some(config)) => config.raw.webhook_secret_file.clone().context(
            "the daemon configuration has no webhook_secret_file: the daemon takes no approvals",
        )?,
        (None, None) => bail!("no token file"),
    };
    let token = crate::fsutil::read_text_limited(&token_file, 64 * 1024)
        .with_context(|| format!("cannot read the token file {}", token_file.display()))?;
    let body = serde_json::json!({ "id": id, "environment": env });
    let response = reqwest::Client::new()
        .post(format!("{url}/approve"))
        .bearer_auth(token.trim())
        .json(&body)
        .send()
        .await
        .with_context(|| format!("cannot reach the daemon at {url}"))?;
    let status = response.status();
    let answer: serde_json::Value = response.json().await.unwrap_or_default();
    let message = answer["message"].as_str().unwrap_or_default();
    if status.is_success() {
        println!("{message}");
        Ok(Outcome::Ok)
    } else {
        eprintln!("error: the daemon answered HTTP {}: {message}", status.as_u16());
        Ok(Outcome::Invalid)
    }
}
