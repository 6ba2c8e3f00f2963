//! A small client for Grafana's HTTP API (datasources, folders, search,
//! dashboards), authenticated with a service-account token.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::model::Sensitive;

/// Talking to Grafana failed. Every variant that Grafana answered carries
/// Grafana's own `message`.
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
    /// The credentials were rejected.
    #[error("Grafana at {url} rejected the credentials (HTTP 401: {message}); check the token (or admin password) secret")]
    Unauthorized {
        /// Base URL.
        url: String,
        /// Grafana's `message`.
        message: String,
    },
    /// The credentials are valid but may not do this.
    #[error("Grafana at {url}: {method} {path} is not allowed for these credentials (HTTP 403: {message}); a service-account token needs the Admin role to write datasources, Editor for folders and dashboards")]
    Forbidden {
        /// Base URL.
        url: String,
        /// Method.
        method: String,
        /// Path.
        path: String,
        /// Grafana's `message`.
        message: String,
    },
    /// The object is provisioned from files on the Grafana host: the API
    /// may not change it.
    #[error("Grafana at {url}: {what} is provisioned (read-only) on the Grafana host, so the API cannot change it (HTTP {status}: {message}); remove it from Grafana's provisioning files or from the repository")]
    ReadOnly {
        /// Base URL.
        url: String,
        /// Which object (`datasource x`).
        what: String,
        /// Status.
        status: u16,
        /// Grafana's `message`.
        message: String,
    },
    /// An API that always exists answered 404: the URL is not Grafana's
    /// (a missing sub-path behind a reverse proxy, a wrong port).
    #[error("Grafana at {url}: {method} {path} answered HTTP 404 ({message}), but that API always exists; is the URL right (a sub-path behind a reverse proxy)?")]
    NotGrafana {
        /// Base URL.
        url: String,
        /// Method.
        method: String,
        /// Path.
        path: String,
        /// Grafana's (or the proxy's) `message`.
        message: String,
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
    /// Saving a dashboard would have replaced another one (Grafana up to
    /// 11.2 keeps one dashboard per title and folder).
    #[error("Grafana at {url}: dashboard {uid} would take over dashboard {other} (same title {title:?} in folder {folder:?}); rename one of them")]
    TakeOver {
        /// Base URL.
        url: String,
        /// The dashboard apimon saves.
        uid: String,
        /// The dashboard Grafana answered with.
        other: String,
        /// Title.
        title: String,
        /// Folder uid.
        folder: String,
    },
    /// A folder apimon owns holds what it does not own.
    #[error("Grafana at {url}: refusing to delete folder {uid}: it holds {inside} that apimon does not manage; move or delete them by hand")]
    NotEmpty {
        /// Base URL.
        url: String,
        /// Folder uid.
        uid: String,
        /// What is inside.
        inside: String,
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
    /// A read of dashboard `uid` did not finish (its task failed).
    #[error("reading dashboard {uid} did not finish: {message}")]
    Unfinished {
        /// Dashboard uid.
        uid: String,
        /// Why.
        message: String,
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
            Self::Http { status, .. } | Self::ReadOnly { status, .. } => Some(*status),
            Self::Unauthorized { .. } => Some(401),
            Self::Forbidden { .. } => Some(403),
            Self::NotGrafana { .. } => Some(404),
            _ => None,
        }
    }

    /// Grafana's `message`, if it answered.
    pub fn message(&self) -> Option<&str> {
        match self {
            Self::Http { message, .. }
            | Self::ReadOnly { message, .. }
            | Self::Unauthorized { message, .. }
            | Self::Forbidden { message, .. }
            | Self::NotGrafana { message, .. } => Some(message),
            _ => None,
        }
    }
}

/// How apimon authenticates to Grafana.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// A service-account token (bearer).
    Token(Sensitive<String>),
    /// Basic auth, e.g. the admin user set up by grafana.ini.
    Basic {
        /// User.
        user: String,
        /// Password.
        password: Sensitive<String>,
    },
}

/// One Grafana.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    url: String,
    /// Where requests go: `url`, or the tunnel's forwarder.
    base: String,
    credentials: Credentials,
    requests: Arc<AtomicUsize>,
}

impl Client {
    /// A client for `url` authenticating with `credentials`.
    ///
    /// # Errors
    /// The HTTP client cannot be built.
    pub fn new(
        url: &str,
        credentials: Credentials,
        timeout: Duration,
        forward: Option<&crate::providers::tunnel::Forward>,
    ) -> Result<Self, GrafanaError> {
        let setup = |message: String| GrafanaError::Setup { url: url.to_owned(), message };
        let builder = reqwest::Client::builder().timeout(timeout).connect_timeout(timeout);
        let (builder, base) =
            crate::providers::tunnel::configure(builder, url, forward).map_err(setup)?;
        let http = builder.build().map_err(|e| setup(e.to_string()))?;
        Ok(Self {
            http,
            url: url.trim_end_matches('/').to_owned(),
            base,
            credentials,
            requests: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// Requests sent so far (shared by clones).
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }

    /// The base URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// GET of an object that may be absent: `Ok(None)` for 404.
    ///
    /// # Errors
    /// As [`Self::send`].
    pub async fn get_optional<T: DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<Option<T>, GrafanaError> {
        match self.request(Method::GET, path, None).await? {
            Answer::Found(value) => self.parse(path, value).map(Some),
            Answer::NotFound(_) => Ok(None),
        }
    }

    /// GET of an API that always exists (a list): 404 means the URL is
    /// not Grafana's, never "empty".
    ///
    /// # Errors
    /// As [`Self::send`]; [`GrafanaError::NotGrafana`] for 404.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, GrafanaError> {
        self.send(Method::GET, path, None).await
    }

    /// A write (POST, PUT): 404 is an error with Grafana's message.
    ///
    /// # Errors
    /// Unreachable, rejected credentials, any non-2xx answer, bad JSON.
    pub async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<T, GrafanaError> {
        match self.request(method.clone(), path, body).await? {
            Answer::Found(value) => self.parse(path, value),
            Answer::NotFound(message) => Err(if method == Method::GET {
                GrafanaError::NotGrafana {
                    url: self.url.clone(),
                    method: method.to_string(),
                    path: path.to_owned(),
                    message,
                }
            } else {
                GrafanaError::Http {
                    url: self.url.clone(),
                    method: method.to_string(),
                    path: path.to_owned(),
                    status: 404,
                    message,
                }
            }),
        }
    }

    /// DELETE: already gone (404) is done.
    ///
    /// # Errors
    /// As [`Self::send`].
    pub async fn delete(&self, path: &str) -> Result<(), GrafanaError> {
        self.request(Method::DELETE, path, None).await.map(drop)
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer, GrafanaError> {
        let mut request = self.http.request(method.clone(), format!("{}{path}", self.base));
        request = match &self.credentials {
            Credentials::Token(token) => request.bearer_auth(token.expose()),
            Credentials::Basic { user, password } => {
                request.basic_auth(user, Some(password.expose()))
            }
        };
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
        if (200..=299).contains(&status) {
            let value = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).map_err(|source| self.decode(path, source))?
            };
            return Ok(Answer::Found(value));
        }
        let message = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).chars().take(200).collect());
        let (url, method, path) = (self.url.clone(), method.to_string(), path.to_owned());
        Err(match status {
            404 => return Ok(Answer::NotFound(message)),
            401 => GrafanaError::Unauthorized { url, message },
            403 if message.to_ascii_lowercase().contains("read-only") => {
                GrafanaError::ReadOnly { url, what: path, status, message }
            }
            403 => GrafanaError::Forbidden { url, method, path, message },
            _ => GrafanaError::Http { url, method, path, status, message },
        })
    }

    fn parse<T: DeserializeOwned>(&self, path: &str, value: Value) -> Result<T, GrafanaError> {
        serde_json::from_value(value).map_err(|source| self.decode(path, source))
    }

    fn decode(&self, path: &str, source: serde_json::Error) -> GrafanaError {
        GrafanaError::Decode { url: self.url.clone(), path: path.to_owned(), source }
    }
}

/// A 2xx answer, or a 404 with its message.
enum Answer {
    Found(Value),
    NotFound(String),
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
