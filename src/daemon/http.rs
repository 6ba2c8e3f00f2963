//! The daemon's HTTP endpoint: `/healthz`, `/metrics` (Prometheus text),
//! `/status` (JSON), `POST /hooks/git` (push webhooks from GitHub, Gitea
//! or GitLab, signature verified), `POST /trigger` and `POST /approve`
//! (bearer token: the webhook secret).

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

/// The bearer token check of `/trigger` and `/approve`: the refusal, if any.
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

/// `{"id": "<resource id>"}` or `{"environment": "<name>"}`: approves that
/// pending change (or all of that environment's) for the next reconcile,
/// which starts at once.
async fn approve(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(answer) = refused(&state, &headers) {
        return answer;
    }
    let request = match serde_json::from_slice::<super::approvals::Request>(&body) {
        Ok(request) => request,
        Err(error) => {
            return reply(
                StatusCode::BAD_REQUEST,
                &format!("expected {{\"id\": …}} or {{\"environment\": …}}: {error}"),
            )
        }
    };
    let pending: Vec<(String, String)> = state
        .status
        .read()
        .map(|s| {
            s.environments
                .iter()
                .flat_map(|(env, e)| e.pending.iter().map(move |p| (env.clone(), p.id.clone())))
                .collect()
        })
        .unwrap_or_default();
    let listed = || {
        let ids: Vec<&str> = pending.iter().map(|(_, id)| id.as_str()).collect();
        if ids.is_empty() {
            "nothing is pending".to_owned()
        } else {
            format!("pending: {}", ids.join(", "))
        }
    };
    let Ok(mut approvals) = state.approvals.lock() else {
        return reply(StatusCode::INTERNAL_SERVER_ERROR, "approvals lock poisoned");
    };
    let approved = match (request.id, request.environment) {
        (Some(id), None) if pending.iter().any(|(_, p)| *p == id) => {
            approvals.ids.insert(id.clone());
            id
        }
        (None, Some(env)) if pending.iter().any(|(e, _)| *e == env) => {
            approvals.environments.insert(env.clone());
            format!("every pending change of {env}")
        }
        (Some(id), None) => {
            return reply(StatusCode::NOT_FOUND, &format!("no pending change {id}; {}", listed()))
        }
        (None, Some(env)) => {
            return reply(StatusCode::NOT_FOUND, &format!("nothing pending in {env}; {}", listed()))
        }
        _ => return reply(StatusCode::BAD_REQUEST, "give exactly one of `id` and `environment`"),
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
