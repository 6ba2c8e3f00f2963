//! Swift, as the log store needs it: the container's storage URL (the
//! container itself is the daemon's: `providers::logs`), one object per
//! log with `X-Delete-After`, and temp URLs signed locally (HMAC-SHA256,
//! Swift's `tempurl` middleware).

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::model::Sensitive;
use crate::providers::keystone::{KeystoneError, Session};

/// An upload failed.
#[derive(Debug, thiserror::Error)]
pub enum SwiftError {
    /// No token.
    #[error(transparent)]
    Auth(#[from] KeystoneError),
    /// The catalog has no object store in the entry's region.
    #[error("cloud `{0}`: the catalog has no public object-store endpoint")]
    NoEndpoint(String),
    /// Swift refused or could not be reached.
    #[error("{method} {url}: {message}")]
    Call {
        /// HTTP method.
        method: &'static str,
        /// URL.
        url: String,
        /// What happened.
        message: String,
    },
}

/// How long one request may take (a log is at most 16 MiB).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

pub use crate::providers::keystone::object_store as storage_url;

/// One container of one cloud.
pub struct Container<'a> {
    /// The session.
    pub session: &'a mut Session,
    /// HTTP client.
    pub http: &'a reqwest::Client,
    /// Container name.
    pub name: &'a str,
}

impl Container<'_> {
    /// The token and storage URL, fetched when needed.
    async fn target(&mut self) -> Result<(Sensitive<String>, String), SwiftError> {
        let region = self.session.region().map(str::to_owned);
        let cloud = self.session.cloud().to_owned();
        let token = self.session.token().await?;
        let url = storage_url(token, region.as_deref()).ok_or(SwiftError::NoEndpoint(cloud))?;
        Ok((token.value.clone(), url))
    }

    /// The storage URL, once the container is there: apimon's daemon
    /// makes it (with its temp-URL key and read ACL) before it writes the
    /// executor.yaml that names it; until then uploads wait.
    ///
    /// # Errors
    /// No token, no object store, no container, or Swift refused.
    pub async fn check(&mut self) -> Result<String, SwiftError> {
        let (token, storage) = self.target().await?;
        let url = format!("{storage}/{}", self.name);
        let response = self
            .http
            .head(&url)
            .header("X-Auth-Token", token.expose())
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(|e| call("HEAD", &url, crate::error::chain(&e)))?;
        if response.status() == reqwest::StatusCode::UNAUTHORIZED {
            self.session.invalidate();
        }
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Err(call("HEAD", &url, "no such container (yet): apimon makes it".to_owned()));
        }
        refused("HEAD", &url, response).await?;
        Ok(storage)
    }

    /// Uploads `body` as `object`, deleted by Swift after `retention`.
    ///
    /// # Errors
    /// No token, or Swift refused.
    pub async fn put(
        &mut self,
        object: &str,
        body: Vec<u8>,
        retention: Duration,
    ) -> Result<(), SwiftError> {
        let (token, storage) = self.target().await?;
        let url = format!("{storage}/{}/{object}", self.name);
        let response = self
            .http
            .put(&url)
            .header("X-Auth-Token", token.expose())
            .header("X-Delete-After", retention.as_secs().max(1).to_string())
            .header("Content-Type", "text/plain; charset=utf-8")
            .body(body)
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(|e| call("PUT", &url, crate::error::chain(&e)))?;
        if response.status() == reqwest::StatusCode::UNAUTHORIZED {
            self.session.invalidate();
        }
        refused("PUT", &url, response).await
    }
}

async fn refused(
    method: &'static str,
    url: &str,
    response: reqwest::Response,
) -> Result<(), SwiftError> {
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let text = crate::httpbody::read_limited(response, 2048).await.unwrap_or_default();
    Err(call(method, url, format!("HTTP {status}: {}", String::from_utf8_lossy(&text).trim())))
}

fn call(method: &'static str, url: &str, message: String) -> SwiftError {
    SwiftError::Call { method, url: crate::url::redact_url(url), message }
}

/// A temp URL for GET of `object` in `container`, valid until `expires`
/// (Unix seconds): `<storage>/<container>/<object>?temp_url_sig=…&temp_url_expires=…`,
/// the signature over `GET\n<expires>\n<path>` with the container's key.
pub fn temp_url(storage: &str, container: &str, object: &str, key: &str, expires: i64) -> String {
    let url = format!("{storage}/{container}/{object}");
    let path = reqwest::Url::parse(&url).map(|u| u.path().to_owned()).unwrap_or_default();
    let signature = Hmac::<Sha256>::new_from_slice(key.as_bytes())
        .map(|mut mac| {
            mac.update(format!("GET\n{expires}\n{path}").as_bytes());
            hex::encode(mac.finalize().into_bytes())
        })
        .unwrap_or_default();
    format!("{url}?temp_url_sig={signature}&temp_url_expires={expires}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_temp_url_signs_method_expiry_and_path() {
        let url = temp_url(
            "http://s:8080/v1/AUTH_p",
            "logs",
            "env/s/run/output.log",
            "key",
            1_800_000_000,
        );
        assert!(
            url.starts_with("http://s:8080/v1/AUTH_p/logs/env/s/run/output.log?temp_url_sig="),
            "{url}"
        );
        assert!(url.ends_with("&temp_url_expires=1800000000"), "{url}");
        // The signature of the same input, as Swift's middleware computes it.
        let mut mac = Hmac::<Sha256>::new_from_slice(b"key").unwrap_or_else(|_| unreachable!());
        mac.update(b"GET\n1800000000\n/v1/AUTH_p/logs/env/s/run/output.log");
        assert!(url.contains(&hex::encode(mac.finalize().into_bytes())), "{url}");
    }
}
