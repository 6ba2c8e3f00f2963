//! The daemon's HTTP endpoint: `/healthz`, `/metrics` (Prometheus text),
//! `/status` (JSON), `POST /hooks/git` (push webhooks from GitHub, Gitea
//! or GitLab, signature verified), `POST /trigger` (bearer token: the
//! webhook secret) and `POST /approve` (bearer token: the approval token,
//! which forges never see).

use std::sync::{Arc, Mutex, RwLock};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::mpsc;

use super::metrics::Metrics;
use super::{Status, Trigger};
use crate::model::Sensitive;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// Current status.
    pub status: Arc<RwLock<Status>>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Wakes the reconcile loop.
    pub triggers: mpsc::Sender<Trigger>,
    /// Webhook secret; the webhook and /trigger are disabled without one.
    pub secret: Option<Sensitive<Vec<u8>>>,
    /// The branch the daemon follows (other pushes are ignored).
    pub branch: String,
    /// Delivery ids of the webhooks already taken.
    pub deliveries: Arc<Mutex<Deliveries>>,
    /// Approvals the next reconcile takes.
    pub approvals: Arc<Mutex<super::approvals::Approvals>>,
    /// The file holding the approval token (`approval_token_file`).
    pub approval_token_file: Option<std::path::PathBuf>,
}

/// The last [`Deliveries::KEPT`] webhook delivery ids: a delivery replayed
/// (by an attacker who captured one, or a server retrying) triggers nothing.
#[derive(Debug, Default)]
pub struct Deliveries {
    order: std::collections::VecDeque<String>,
    seen: std::collections::BTreeSet<String>,
}

impl Deliveries {
    /// How many ids are remembered.
    pub const KEPT: usize = 1024;

    /// Records `id`; false when it was seen before.
    pub fn first_time(&mut self, id: &str) -> bool {
        if !self.seen.insert(id.to_owned()) {
            return false;
        }
        self.order.push_back(id.to_owned());
        if self.order.len() > Self::KEPT {
            if let Some(oldest) = self.order.pop_front() {
                self.seen.remove(&oldest);
            }
        }
        true
    }
}

/// The delivery id the forges send: GitHub, Gitea (and Forgejo), GitLab.
fn delivery_id(headers: &HeaderMap) -> Option<&str> {
    ["x-github-delivery", "x-gitea-delivery", "x-gogs-delivery", "x-gitlab-event-uuid"]
        .iter()
        .find_map(|name| headers.get(*name).and_then(|v| v.to_str().ok()))
        .filter(|id| !id.is_empty())
}

/// The webhook listener's router (`webhook_listen`): `POST /hooks/git`
/// and nothing else, for the forge to reach from another network.
pub fn webhook_router(state: AppState) -> Router {
    Router::new().route("/hooks/git", post(webhook)).with_state(state)
}

/// The router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/hooks/git", post(webhook))
        .route("/trigger", post(trigger))
        .route("/approve", post(approve))
        .with_state(state)
}

async fn metrics(State(state): State<AppState>) -> Response {
    ([("content-type", "text/plain; version=0.0.4")], state.metrics.render()).into_response()
}

async fn status(State(state): State<AppState>) -> Response {
    match state.status.read() {
        Ok(status) => Json(status.clone()).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

fn reply(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "message": message }))).into_response()
}

async fn webhook(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(secret) = &state.secret else {
        return reply(StatusCode::NOT_FOUND, "webhook not configured (webhook_secret_file)");
    };
    if !signature_valid(&headers, &body, secret.expose()) {
        tracing::warn!("Webhook with a missing or bad signature rejected.");
        return reply(StatusCode::UNAUTHORIZED, "missing or bad signature");
    }
    if let Some(id) = delivery_id(&headers) {
        let first = state.deliveries.lock().map(|mut d| d.first_time(id)).unwrap_or(true);
        if !first {
            tracing::warn!(delivery = id, "Webhook delivery seen before; ignored.");
            return reply(StatusCode::OK, "ignored: this delivery was taken before");
        }
    }
    // A push to another branch changes nothing this daemon follows.
    let pushed = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("ref").and_then(|r| r.as_str()).map(str::to_owned));
    if let Some(reference) = pushed {
        if reference != format!("refs/heads/{}", state.branch) {
            return reply(StatusCode::ACCEPTED, "ignored: not the followed branch");
        }
    }
    let _ = state.triggers.try_send(Trigger::Webhook);
    reply(StatusCode::ACCEPTED, "reconcile triggered")
}

/// The bearer token check of `/trigger`: the refusal, if any.
fn refused(state: &AppState, headers: &HeaderMap) -> Option<Response> {
    let Some(secret) = &state.secret else {
        return Some(reply(StatusCode::NOT_FOUND, "not configured (webhook_secret_file)"));
    };
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if !token.is_some_and(|t| constant_time_eq(t.as_bytes(), secret.expose())) {
        return Some(reply(StatusCode::UNAUTHORIZED, "missing or bad bearer token"));
    }
    None
}

async fn trigger(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(answer) = refused(&state, &headers) {
        return answer;
    }
    let _ = state.triggers.try_send(Trigger::Manual);
    reply(StatusCode::ACCEPTED, "reconcile triggered")
}

/// The approval token check of `/approve`: the refusal, if any. The token
/// is read on every request (a new one takes effect at once) from a file
/// only its owner may read.
fn not_approver(state: &AppState, headers: &HeaderMap) -> Option<Response> {
    let Some(path) = &state.approval_token_file else {
        return Some(reply(
            StatusCode::NOT_FOUND,
            "approvals not configured (approval_token_file)",
        ));
    };
    let token = match super::read_secret_file("approval token file", path) {
        Ok(token) if token.expose().trim().len() >= MIN_APPROVAL_TOKEN => token,
        Ok(_) => {
            return Some(reply(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!(
                    "the approval token in {} is too short; `apimon bootstrap` installs one",
                    path.display()
                ),
            ))
        }
        Err(error) => {
            tracing::warn!(error = %error, "No usable approval token.");
            return Some(reply(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!(
                    "no usable approval token at {}; `apimon bootstrap` installs one",
                    path.display()
                ),
            ));
        }
    };
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if !given.is_some_and(|t| constant_time_eq(t.as_bytes(), token.expose().trim().as_bytes())) {
        return Some(reply(StatusCode::UNAUTHORIZED, "missing or bad approval token"));
    }
    None
}

/// A pending change as `/approve` checks it: environment, id, digest.
type PendingEntry = (String, String, String);

/// Shortest approval token accepted.
pub const MIN_APPROVAL_TOKEN: usize = crate::bootstrap::MIN_APPROVAL_TOKEN;

/// `{"id": …, "digest": …}`, `{"environment": …}` or `{"commit": …,
/// "digest": …}`: approves that pending change (or every change of that
/// environment pending now, each as it is now), or that held commit, for
/// the next reconcile, which starts at once.
async fn approve(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(answer) = not_approver(&state, &headers) {
        return answer;
    }
    let request = match serde_json::from_slice::<super::approvals::Request>(&body) {
        Ok(request) => request,
        Err(error) => {
            return reply(
                StatusCode::BAD_REQUEST,
                &format!("expected {{\"id\": …}}, {{\"environment\": …}} or {{\"commit\": …, \"digest\": …}}: {error}"),
            )
        }
    };
    let (pending, held): (Vec<PendingEntry>, Option<(String, String)>) = state
        .status
        .read()
        .map(|s| {
            let pending = s
                .environments
                .iter()
                .flat_map(|(env, e)| {
                    e.pending.iter().map(move |p| (env.clone(), p.id.clone(), p.digest.clone()))
                })
                .collect();
            (pending, s.held.as_ref().map(|h| (h.commit.0.clone(), h.digest.clone())))
        })
        .unwrap_or_default();
    let listed = || {
        let mut waiting: Vec<String> = pending.iter().map(|(_, id, _)| id.clone()).collect();
        waiting.extend(held.iter().map(|(commit, _)| format!("commit {commit}")));
        if waiting.is_empty() {
            "nothing is pending".to_owned()
        } else {
            format!("pending: {}", waiting.join(", "))
        }
    };
    let Ok(mut approvals) = state.approvals.lock() else {
        return reply(StatusCode::INTERNAL_SERVER_ERROR, "approvals lock poisoned");
    };
    let approved = match (request.id, request.environment, request.commit) {
        (Some(id), None, None) => {
            let Some((_, _, digest)) = pending.iter().find(|(_, p, _)| *p == id) else {
                return reply(
                    StatusCode::NOT_FOUND,
                    &format!("no pending change {id}; {}", listed()),
                );
            };
            if request.digest.as_ref().is_some_and(|d| d != digest) {
                return reply(
                    StatusCode::CONFLICT,
                    &format!("{id} changed since (digest {digest} now); look at /status again"),
                );
            }
            approvals.changes.insert(id.clone(), digest.clone());
            format!("{id} (digest {digest})")
        }
        (None, Some(env), None) => {
            let mine: Vec<_> = pending.iter().filter(|(e, _, _)| *e == env).collect();
            if mine.is_empty() {
                return reply(
                    StatusCode::NOT_FOUND,
                    &format!("nothing pending in {env}; {}", listed()),
                );
            }
            for (_, id, digest) in &mine {
                approvals.changes.insert(id.clone(), digest.clone());
            }
            let ids: Vec<&str> = mine.iter().map(|(_, id, _)| id.as_str()).collect();
            format!("every change pending in {env}: {}", ids.join(", "))
        }
        (None, None, Some(commit)) => {
            let Some((held_commit, digest)) = held.as_ref().filter(|(c, _)| *c == commit) else {
                return reply(
                    StatusCode::NOT_FOUND,
                    &format!("commit {commit} is not held; {}", listed()),
                );
            };
            if request.digest.as_deref() != Some(digest.as_str()) {
                return reply(StatusCode::CONFLICT, &format!("commit {commit} is held with digest {digest}; approve it with that digest, as /status shows it"));
            }
            approvals.commit = Some((held_commit.clone(), digest.clone()));
            format!("commit {commit} (digest {digest})")
        }
        _ => {
            return reply(
                StatusCode::BAD_REQUEST,
                "give exactly one of `id`, `environment` and `commit`",
            )
        }
    };
    drop(approvals);
    tracing::info!(approved = %approved, "Approved.");
    let _ = state.triggers.try_send(Trigger::Approval);
    reply(StatusCode::ACCEPTED, &format!("approved {approved}; applying"))
}

/// GitHub (`X-Hub-Signature-256: sha256=<hex>`), Gitea (`X-Gitea-Signature:
/// <hex>`), both HMAC-SHA256 of the body; GitLab (`X-Gitlab-Token: <secret>`).
pub fn signature_valid(headers: &HeaderMap, body: &[u8], secret: &[u8]) -> bool {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let hmac_matches = |hex_signature: &str| {
        let Ok(expected) = hex::decode(hex_signature.trim()) else { return false };
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else { return false };
        mac.update(body);
        mac.verify_slice(&expected).is_ok()
    };
    if let Some(signature) = header("x-hub-signature-256") {
        return signature.strip_prefix("sha256=").is_some_and(hmac_matches);
    }
    if let Some(signature) = header("x-gitea-signature") {
        return hmac_matches(signature);
    }
    if let Some(token) = header("x-gitlab-token") {
        return constant_time_eq(token.as_bytes(), secret);
    }
    false
}

/// Compares without leaking where the first difference is.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &[u8], body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("key");
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }

    fn headers(name: &'static str, value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(name, value.parse().expect("header"));
        headers
    }

    #[test]
    fn github_gitea_and_gitlab_signatures_are_checked() {
        let body = br#"{"ref":"refs/heads/main"}"#;
        let good = sign(b"s3cret", body);
        assert!(signature_valid(
            &headers("x-hub-signature-256", &format!("sha256={good}")),
            body,
            b"s3cret"
        ));
        assert!(signature_valid(&headers("x-gitea-signature", &good), body, b"s3cret"));
        assert!(signature_valid(&headers("x-gitlab-token", "s3cret"), body, b"s3cret"));
        assert!(!signature_valid(
            &headers("x-hub-signature-256", &format!("sha256={good}")),
            b"tampered",
            b"s3cret"
        ));
        assert!(
            !signature_valid(&headers("x-hub-signature-256", &good), body, b"s3cret"),
            "missing sha256= prefix"
        );
        assert!(!signature_valid(&headers("x-gitlab-token", "guess"), body, b"s3cret"));
        assert!(!signature_valid(&HeaderMap::new(), body, b"s3cret"));
    }
}
