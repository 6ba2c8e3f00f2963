//! `apimon approve`: approves what a running daemon holds for an operator,
//! over its `POST /approve` with the approval token. It reads `/status`
//! first and sends the digest shown there, so the approval covers exactly
//! what it prints: a change that moves meanwhile is not approved.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use super::Outcome;

/// What is approved.
pub(super) enum What {
    /// One pending change, by resource id.
    Change(String),
    /// Every change pending in an environment.
    Environment(String),
    /// A held commit.
    Commit(String),
}

/// `POST /approve` to the daemon.
pub(super) async fn approve(
    what: What,
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
        (None, Some(config)) => config.raw.approval_token_file.clone().context(
            "the daemon configuration has no approval_token_file: the daemon takes no approvals (apimon bootstrap --approval-token installs one)",
        )?,
        (None, None) => bail!("no token file"),
    };
    let token = crate::fsutil::read_text_limited(&token_file, 64 * 1024)
        .with_context(|| format!("cannot read the approval token file {}", token_file.display()))?;
    if let Some(problem) = token_problem(token.trim()) {
        bail!(
            "the approval token file {} is malformed: {problem}; expected one line of at least {} visible ASCII characters, as `apimon bootstrap --approval-token` installs it",
            token_file.display(),
            crate::bootstrap::MIN_APPROVAL_TOKEN
        );
    }
    let client = reqwest::Client::new();
    let status: Value = client
        .get(format!("{url}/status"))
        .send()
        .await
        .with_context(|| format!("cannot reach the daemon at {url}"))?
        .json()
        .await
        .with_context(|| {
            format!("the daemon at {url} answered /status with something else than JSON")
        })?;
    let body = match &what {
        What::Change(id) => {
            let pending = status["environments"]
                .as_object()
                .into_iter()
                .flat_map(|envs| envs.values())
                .filter_map(|env| env["pending"].as_array())
                .flatten()
                .find(|p| p["id"] == id.as_str());
            match pending {
                Some(p) => {
                    println!(
                        "approving {id}: {} (waiting for {})",
                        text(&p["change"]),
                        text(&p["waiting_for"])
                    );
                    json!({ "id": id, "digest": p["digest"] })
                }
                None => json!({ "id": id }),
            }
        }
        What::Environment(env) => json!({ "environment": env }),
        What::Commit(commit) => {
            let held = &status["held"];
            if held["commit"] == commit.as_str() {
                println!("approving commit {commit}, which widens apimon's authority:");
                for line in held["widenings"].as_array().into_iter().flatten() {
                    println!("  {}", text(line));
                }
                json!({ "commit": commit, "digest": held["digest"] })
            } else {
                json!({ "commit": commit })
            }
        }
    };
    let response = client
        .post(format!("{url}/approve"))
        .bearer_auth(token.trim())
        .json(&body)
        .send()
        .await
        .with_context(|| format!("cannot reach the daemon at {url}"))?;
    let code = response.status();
    let answer: Value = response.json().await.unwrap_or_default();
    let message = text(&answer["message"]);
    if code.is_success() {
        println!("{message}");
        Ok(Outcome::Ok)
    } else {
        eprintln!("error: the daemon answered HTTP {}: {message}", code.as_u16());
        Ok(Outcome::Invalid)
    }
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or_default()
}

/// What is wrong with an approval token, if anything (never quoting it).
fn token_problem(token: &str) -> Option<String> {
    if token.is_empty() {
        return Some("it is empty".to_owned());
    }
    if let Some(c) = token.chars().find(|c| !c.is_ascii_graphic()) {
        let what = if c.is_whitespace() { "a space or a line break" } else { "a character" };
        return Some(format!("it holds {what} a token cannot carry"));
    }
    let length = token.len();
    (length < crate::bootstrap::MIN_APPROVAL_TOKEN).then(|| format!("it holds {length} characters"))
}

#[cfg(test)]
mod tests {
    use super::token_problem;

    #[test]
    fn a_malformed_token_is_named_as_such_and_never_quoted() {
        let good = "0123456789abcdef0123456789abcdef";
        assert_eq!(token_problem(good), None);
        assert_eq!(token_problem("").as_deref(), Some("it is empty"));
        assert_eq!(token_problem("short").as_deref(), Some("it holds 5 characters"));
        let two_lines = format!("{good}\n{good}");
        assert!(token_problem(&two_lines).is_some_and(|p| p.contains("line break")));
        let binary = format!("{good}\u{7f}");
        assert!(token_problem(&binary).is_some_and(|p| !p.contains(good)));
    }
}
