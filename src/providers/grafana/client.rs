//! A small client for Grafana's HTTP API (datasources, folders, search,
//! dashboards), authenticated with a service-account token.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::model::Sensitive;

/// Talking to Grafana failed.
#[derive(Debug, thiserror::Error)]
pub enum GrafanaError {
    /// No connection, or it broke.
    #[error("cannot reach Grafana at {url}")]
    Connect {
        /// Base URL.
        url: String,
        /// Cause.
        #[source]
        source: reqwest::Error,
    },
    /// The token was rejected.
    #[error(
        "Grafana at {url} rejected the service-account token (HTTP {status}); check its secret"
    )]
    Unauthorized {
        /// Base URL.
        url: String,
        /// 401 or 403.
        status: u16,
    },
    /// Any other unexpected answer.
    #[error("Grafana at {url}: {method} {path} answered HTTP {status}: {message}")]
    Http {
        /// Base URL.
        url: String,
        /// Method.
        method: String,
        /// Path.
        path: String,
        /// Status.
        status: u16,
        /// Grafana's `message`.
        message: String,
    },
    /// The answer was not the JSON expected.
    #[error("Grafana at {url}: {path} answered JSON of an unexpected shape")]
    Decode {
        /// Base URL.
        url: String,
        /// Path.
        path: String,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// The client could not be set up.
    #[error("cannot set up the Grafana client for {url}: {message}")]
    Setup {
        /// Base URL.
        url: String,
        /// What failed.
        message: String,
    },
}

impl GrafanaError {
    /// Worth retrying: unreachable, timeout, or a 5xx.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Connect { .. } => true,
            Self::Http { status, .. } => *status >= 500,
            _ => false,
        }
    }

    /// The HTTP status, if Grafana answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Http { status, .. } | Self::Unauthorized { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// One Grafana.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    url: String,
    token: Sensitive<String>,
    requests: Arc<AtomicUsize>,
}

impl Client {
    /// A client for `url` sending `token` as a bearer token.
    ///
    /// # Errors
    /// The HTTP client cannot be built.
    pub fn new(
        url: &str,
        token: Sensitive<String>,
        timeout: Duration,
    ) -> Result<Self, GrafanaError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| GrafanaError::Setup { url: url.to_owned(), message: e.to_string() })?;
        Ok(Self {
            http,
            url: url.trim_end_matches('/').to_owned(),
            token,
            requests: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// Requests sent so far (shared by clones).
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }

    /// Sends a request; `Ok(None)` for 404.
    ///
    /// # Errors
    /// Unreachable, rejected token, any other non-2xx answer, bad JSON.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Option<T>, GrafanaError> {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.url))
            .bearer_auth(self.token.expose());
        if let Some(body) = body {
            request = request.json(body);
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        let response = request
            .send()
            .await
            .map_err(|source| GrafanaError::Connect { url: self.url.clone(), source })?;
        let status = response.status().as_u16();
        let bytes = response
            .bytes()
            .await
            .map_err(|source| GrafanaError::Connect { url: self.url.clone(), source })?;
        match status {
            200..=299 => {
                let value = if bytes.is_empty() {
                    Value::Null
                } else {
                    serde_json::from_slice(&bytes).map_err(|source| self.decode(path, source))?
                };
                serde_json::from_value(value).map(Some).map_err(|source| self.decode(path, source))
            }
            404 => Ok(None),
            401 | 403 => Err(GrafanaError::Unauthorized { url: self.url.clone(), status }),
            _ => {
                let message = serde_json::from_slice::<Value>(&bytes)
                    .ok()
                    .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_owned))
                    .unwrap_or_else(|| String::from_utf8_lossy(&bytes).chars().take(200).collect());
                Err(GrafanaError::Http {
                    url: self.url.clone(),
                    method: method.to_string(),
                    path: path.to_owned(),
                    status,
                    message,
                })
            }
        }
    }

    fn decode(&self, path: &str, source: serde_json::Error) -> GrafanaError {
        GrafanaError::Decode { url: self.url.clone(), path: path.to_owned(), source }
    }
}

/// Percent-encodes a path segment (uids are restricted, but be safe).
pub fn segment(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
