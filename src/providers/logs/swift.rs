//! The Swift calls a log container needs, with a monitored cloud's own
//! Keystone session: HEAD, PUT (create), POST (ACL and key), DELETE (after
//! its objects).

use std::time::Duration;

use crate::model::Sensitive;
use crate::plan::ResourceId;
use crate::providers::keystone::{CloudAuth, KeystoneError, Session};

/// A log container could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    /// The container's cloud is not a monitored cloud of the environment
    /// with complete credentials.
    #[error("{resource}: no monitored cloud `{cloud}` with a username and password")]
    NoCloud {
        /// The resource.
        resource: String,
        /// The cloud.
        cloud: String,
    },
    /// Marked as another environment's.
    #[error("{resource}: the name is taken by environment `{other}`")]
    Foreign {
        /// The resource.
        resource: String,
        /// The environment whose marks it carries.
        other: String,
    },
    /// No token.
    #[error("{resource}: {source}")]
    Auth {
        /// The resource.
        resource: String,
        /// Why.
        source: KeystoneError,
    },
    /// Swift refused or could not be reached.
    #[error("{resource}: cannot {action}: {message}")]
    Api {
        /// The resource.
        resource: String,
        /// What was tried.
        action: &'static str,
        /// What happened (never a credential).
        message: String,
        /// Whether retrying may help.
        transient: bool,
    },
}

impl LogsError {
    /// Whether retrying may help.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Api { transient, .. } => *transient,
            Self::Auth { .. } => true,
            Self::NoCloud { .. } | Self::Foreign { .. } => false,
        }
    }
}

/// How long one request may take.
const TIMEOUT: Duration = Duration::from_secs(30);
/// Most bytes read of an answer (listings of a page of objects).
const MAX_ANSWER: usize = 4 * 1024 * 1024;
/// Objects deleted per listing page when a container is emptied.
const PAGE: usize = 1000;

const MANAGED: &str = "x-container-meta-apimon-managed";
const ENV: &str = "x-container-meta-apimon-env";
const KEY: &str = "x-container-meta-temp-url-key";
const READ: &str = "x-container-read";

/// The HTTP client of the provider: no redirects (a token never follows
/// one elsewhere).
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default()
}

/// What a HEAD of a container says.
#[derive(Debug)]
pub struct Seen {
    /// Carries apimon's mark.
    pub managed: bool,
    /// The environment its mark names.
    pub env: Option<String>,
    /// Readable without a token.
    pub public: bool,
    /// The temp-URL key, when Swift shows it.
    pub key: Option<Sensitive<String>>,
}

/// One monitored cloud's object store.
#[derive(Debug)]
pub struct Account {
    session: Session,
    http: reqwest::Client,
}

impl Account {
    /// The account `auth` logs in to (no request yet).
    pub fn new(auth: CloudAuth, http: reqwest::Client) -> Self {
        Self { session: Session::new(auth, http.clone()), http }
    }

    /// The container, or `None` when there is none.
    pub async fn head(&mut self, r: &ResourceId, name: &str) -> Result<Option<Seen>, LogsError> {
        let response =
            self.call(r, "read", reqwest::Method::HEAD, &encode(name), None, &[]).await?;
        let Some(response) = response else { return Ok(None) };
        let header = |key: &str| {
            response.headers().get(key).and_then(|v| v.to_str().ok()).map(str::to_owned)
        };
        Ok(Some(Seen {
            managed: header(MANAGED).as_deref() == Some("true"),
            env: header(ENV),
            public: header(READ).is_some_and(|acl| acl.split(',').any(|g| g.trim() == ".r:*")),
            key: header(KEY).map(Sensitive::new),
        }))
    }

    /// Creates it with apimon's marks, its key and its ACL (Swift answers
    /// 202 to a PUT of a container that exists: a retry is safe).
    pub async fn put(
        &mut self,
        r: &ResourceId,
        name: &str,
        env: &str,
        public: bool,
        key: &Sensitive<String>,
    ) -> Result<(), LogsError> {
        let mut headers = vec![(MANAGED, "true".to_owned()), (ENV, env.to_owned())];
        headers.extend(settings(public, key));
        self.call(r, "create", reqwest::Method::PUT, &encode(name), None, &headers).await?;
        Ok(())
    }

    /// Sets its ACL and key.
    pub async fn post(
        &mut self,
        r: &ResourceId,
        name: &str,
        public: bool,
        key: &Sensitive<String>,
    ) -> Result<(), LogsError> {
        let headers = settings(public, key);
        let answer =
            self.call(r, "update", reqwest::Method::POST, &encode(name), None, &headers).await?;
        answer.map(drop).ok_or_else(|| gone(r, "update"))
    }

    /// Writes apimon's marks on it (`apimon adopt`).
    pub async fn mark(&mut self, r: &ResourceId, name: &str, env: &str) -> Result<(), LogsError> {
        let headers = [(MANAGED, "true".to_owned()), (ENV, env.to_owned())];
        let answer =
            self.call(r, "mark", reqwest::Method::POST, &encode(name), None, &headers).await?;
        answer.map(drop).ok_or_else(|| gone(r, "mark"))
    }

    /// Deletes its objects, then it; gone already is fine.
    pub async fn delete(&mut self, r: &ResourceId, name: &str) -> Result<(), LogsError> {
        // Paged by marker: objects that answer 404 (listing lag) are not
        // listed again.
        let mut marker = String::new();
        loop {
            let query = format!("format=json&limit={PAGE}&marker={}", encode(&marker));
            let listing = self
                .call(r, "list objects", reqwest::Method::GET, &encode(name), Some(&query), &[])
                .await?;
            let Some(listing) = listing else { return Ok(()) };
            let objects: Vec<ObjectJson> =
                serde_json::from_slice(listing.body()).map_err(|e| LogsError::Api {
                    resource: r.to_string(),
                    action: "list objects",
                    message: format!("unreadable listing: {e}"),
                    transient: false,
                })?;
            for object in &objects {
                let path = format!("{}/{}", encode(name), encode(&object.name));
                self.call(r, "delete object", reqwest::Method::DELETE, &path, None, &[]).await?;
            }
            match objects.last() {
                Some(last) if objects.len() >= PAGE => marker.clone_from(&last.name),
                _ => break,
            }
        }
        self.call(r, "delete", reqwest::Method::DELETE, &encode(name), None, &[]).await?;
        Ok(())
    }

    /// One request below the account's storage URL; `None` for a 404.
    async fn call(
        &mut self,
        r: &ResourceId,
        action: &'static str,
        method: reqwest::Method,
        path: &str,
        query: Option<&str>,
        headers: &[(&str, String)],
    ) -> Result<Option<http::Response<bytes::Bytes>>, LogsError> {
        let failed = |message: String, transient: bool| LogsError::Api {
            resource: r.to_string(),
            action,
            message,
            transient,
        };
        let auth = |source| LogsError::Auth { resource: r.to_string(), source };
        let region = self.session.region().map(str::to_owned);
        let token = self.session.token().await.map_err(auth)?;
        let storage = crate::providers::keystone::object_store(token, region.as_deref())
            .ok_or_else(|| {
                failed("the catalog has no public object-store endpoint".into(), false)
            })?;
        let value = token.value.clone();
        let mut url = format!("{storage}/{path}");
        if let Some(query) = query {
            url = format!("{url}?{query}");
        }
        let mut request =
            self.http.request(method, &url).header("X-Auth-Token", value.expose()).timeout(TIMEOUT);
        for (key, value) in headers {
            request = request.header(*key, value.as_str());
        }
        let shown = crate::url::redact_url(&url);
        let response = request
            .send()
            .await
            .map_err(|e| failed(format!("{shown}: {}", crate::error::chain(&e)), true))?;
        let status = response.status();
        let mut answer = http::Response::builder().status(status.as_u16());
        for (key, value) in response.headers() {
            answer = answer.header(key.as_str(), value.as_bytes());
        }
        let body = crate::httpbody::read_limited(response, MAX_ANSWER)
            .await
            .map_err(|e| failed(format!("{shown}: {e}"), true))?;
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if status == reqwest::StatusCode::UNAUTHORIZED {
            self.session.invalidate();
        }
        if !status.is_success() {
            let text: String = String::from_utf8_lossy(&body).chars().take(300).collect();
            let transient = status.is_server_error() || status.as_u16() == 429 || status == 401;
            return Err(failed(format!("{shown}: HTTP {status}: {}", text.trim()), transient));
        }
        let answer =
            answer.body(bytes::Bytes::from(body)).map_err(|e| failed(e.to_string(), false))?;
        Ok(Some(answer))
    }
}

/// The ACL and key headers of a container.
fn settings(public: bool, key: &Sensitive<String>) -> Vec<(&'static str, String)> {
    let mut headers = vec![if public {
        (READ, ".r:*,.rlistings".to_owned())
    } else {
        ("x-remove-container-read", "x".to_owned())
    }];
    if key.expose().is_empty() {
        headers.push(("x-remove-container-meta-temp-url-key", "x".to_owned()));
    } else {
        headers.push((KEY, key.expose().clone()));
    }
    headers
}

fn gone(r: &ResourceId, action: &'static str) -> LogsError {
    LogsError::Api {
        resource: r.to_string(),
        action,
        message: "the container is gone".to_owned(),
        transient: true,
    }
}

/// An object name as one path (each `/`-separated segment percent-encoded).
fn encode(name: &str) -> String {
    // `.` and `..` too: a URL would resolve them away.
    name.split('/')
        .map(|segment| match segment {
            "." => "%2E".to_owned(),
            ".." => "%2E%2E".to_owned(),
            _ => url::form_urlencoded::byte_serialize(segment.as_bytes())
                .collect::<String>()
                .replace('+', "%20"),
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[derive(serde::Deserialize)]
struct ObjectJson {
    name: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_stay_inside_their_container() {
        assert_eq!(encode("env/a b/../x?y"), "env/a%20b/%2E%2E/x%3Fy");
        assert_eq!(encode("./."), "%2E/%2E");
    }
}
