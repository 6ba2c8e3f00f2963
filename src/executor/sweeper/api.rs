//! The few REST calls the sweeper makes, with the executor's own token:
//! lists (following each service's next links), deletes, and waiting for
//! a deleted server to be gone.

use std::time::Duration;

use serde_json::Value;

use crate::providers::keystone::{Endpoint, KeystoneError, Session, Token};

/// Most bytes of one list answer.
const MAX_PAGE: usize = 32 * 1024 * 1024;
/// Most pages of one list (a server that keeps linking on is not followed).
const MAX_PAGES: usize = 200;
/// Most bytes of one list over all its pages, and most items.
const MAX_LIST_BYTES: usize = 64 * 1024 * 1024;
const MAX_LIST_ITEMS: usize = 50_000;
/// One request's limit.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A call failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No token.
    #[error(transparent)]
    Auth(#[from] KeystoneError),
    /// The catalog has no endpoint for a service the sweeper needs.
    #[error("the catalog has no {interface} endpoint of service type {service}")]
    NoEndpoint {
        /// Service type.
        service: String,
        /// Interface.
        interface: String,
    },
    /// The request failed or the answer was not what the API documents.
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

/// One cloud's APIs for a pass: a token and the endpoints it came with.
pub struct Api {
    http: reqwest::Client,
    token: Token,
    region: Option<String>,
    interface: String,
}

impl Api {
    /// The APIs of `session`'s cloud for one pass.
    ///
    /// # Errors
    /// No token.
    pub async fn open(session: &mut Session, http: reqwest::Client) -> Result<Self, ApiError> {
        let region = session.region().map(str::to_owned);
        let token = session.token().await?.clone();
        Ok(Self { http, token, region, interface: "public".to_owned() })
    }

    /// The project the token is scoped to.
    pub fn project_id(&self) -> &str {
        &self.token.project_id
    }

    /// The base URL of the first of `types` the catalog has (aliases:
    /// `block-storage`, `volumev3`), without a trailing slash.
    ///
    /// # Errors
    /// None of them is in the catalog.
    pub fn endpoint(&self, types: &[&str]) -> Result<String, ApiError> {
        let chosen = |e: &&Endpoint| {
            e.interface == self.interface
                && self.region.as_ref().is_none_or(|r| e.region.as_ref() == Some(r))
        };
        types
            .iter()
            .find_map(|t| self.token.catalog.iter().filter(chosen).find(|e| e.service_type == *t))
            .map(|e| e.url.trim_end_matches('/').to_owned())
            .ok_or_else(|| ApiError::NoEndpoint {
                service: types.join("|"),
                interface: self.interface.clone(),
            })
    }

    fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, url)
            .header("X-Auth-Token", self.token.value.expose())
            .header("Accept", "application/json")
            .timeout(REQUEST_TIMEOUT)
    }

    /// Every item under `key` of the list at `url`, following next links.
    ///
    /// # Errors
    /// A page failed or is not a list of objects under `key`.
    pub async fn list(&self, url: &str, key: &str) -> Result<Vec<Value>, ApiError> {
        let mut items = Vec::new();
        let mut next = Some(url.to_owned());
        let (mut pages, mut bytes) = (0, 0);
        while let Some(page_url) = next.take() {
            pages += 1;
            if pages > MAX_PAGES || bytes > MAX_LIST_BYTES || items.len() > MAX_LIST_ITEMS {
                return Err(call("GET", url, format!("larger than {MAX_PAGES} pages, {MAX_LIST_ITEMS} items or {MAX_LIST_BYTES} bytes; not read further")));
            }
            let (page, size) = self.get_sized(&page_url).await?;
            bytes += size;
            let Some(found) = page.get(key).and_then(Value::as_array) else {
                return Err(call("GET", &page_url, format!("no `{key}` list in the answer")));
            };
            items.extend(found.iter().cloned());
            next = next_link(&page, key, &page_url).filter(|n| *n != page_url && !found.is_empty());
            // The token goes with every page: never to another server.
            if let Some(link) = next.as_deref().filter(|link| !same_origin(link, url)) {
                return Err(call(
                    "GET",
                    &page_url,
                    format!(
                        "the next page is on another server ({}); not followed",
                        crate::url::redact_url(link)
                    ),
                ));
            }
        }
        Ok(items)
    }

    /// GET `url` as JSON.
    ///
    /// # Errors
    /// The request failed, the status is not 2xx, or the body is not JSON.
    pub async fn get(&self, url: &str) -> Result<Value, ApiError> {
        self.get_sized(url).await.map(|(value, _)| value)
    }

    /// GET `url` as JSON, with the size of the answer.
    async fn get_sized(&self, url: &str) -> Result<(Value, usize), ApiError> {
        let response = self
            .request(reqwest::Method::GET, url)
            .send()
            .await
            .map_err(|e| call("GET", url, crate::error::chain(&e)))?;
        let status = response.status();
        let body = crate::httpbody::read_limited(response, MAX_PAGE)
            .await
            .map_err(|e| call("GET", url, e))?;
        if !status.is_success() {
            return Err(call("GET", url, format!("HTTP {status}")));
        }
        let value = serde_json::from_slice(&body)
            .map_err(|e| call("GET", url, format!("not JSON: {e}")))?;
        Ok((value, body.len()))
    }

    /// DELETE `url`: whether it was there (a 404 is no failure: already gone).
    ///
    /// # Errors
    /// The request failed or was refused.
    pub async fn delete(&self, url: &str) -> Result<bool, ApiError> {
        self.send(reqwest::Method::DELETE, url, None).await
    }

    /// PUT `body` to `url`; a 404 is success (already gone).
    ///
    /// # Errors
    /// The request failed or was refused.
    pub async fn put(&self, url: &str, body: Value) -> Result<(), ApiError> {
        self.send(reqwest::Method::PUT, url, Some(body)).await.map(drop)
    }

    async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<Value>,
    ) -> Result<bool, ApiError> {
        let name = if method == reqwest::Method::PUT { "PUT" } else { "DELETE" };
        let mut request = self.request(method, url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response =
            request.send().await.map_err(|e| call(name, url, crate::error::chain(&e)))?;
        let status = response.status();
        if status.is_success() || status == reqwest::StatusCode::NOT_FOUND {
            return Ok(status != reqwest::StatusCode::NOT_FOUND);
        }
        let text = crate::httpbody::read_limited(response, 4096).await.unwrap_or_default();
        Err(call(name, url, format!("HTTP {status}: {}", String::from_utf8_lossy(&text).trim())))
    }

    /// Waits until GET `url` answers 404, polling, at most `limit`.
    /// Whether it is gone.
    pub async fn wait_gone(&self, url: &str, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let gone = matches!(
                self.request(reqwest::Method::GET, url).send().await,
                Ok(r) if r.status() == reqwest::StatusCode::NOT_FOUND
            );
            if gone || tokio::time::Instant::now() >= deadline {
                return gone;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// Whether `a` and `b` have the same scheme, host and port.
fn same_origin(a: &str, b: &str) -> bool {
    match (reqwest::Url::parse(a), reqwest::Url::parse(b)) {
        (Ok(a), Ok(b)) => a.origin() == b.origin(),
        _ => false,
    }
}

fn call(method: &'static str, url: &str, message: String) -> ApiError {
    ApiError::Call { method, url: crate::url::redact_url(url), message }
}

/// The next page: Nova, Cinder and Neutron's `<key>_links` with
/// `rel: next`, or Glance's `next` (a path on the same host).
fn next_link(page: &Value, key: &str, url: &str) -> Option<String> {
    if let Some(links) = page.get(format!("{key}_links")).and_then(Value::as_array) {
        return links
            .iter()
            .find(|l| l.get("rel").and_then(Value::as_str) == Some("next"))
            .and_then(|l| l.get("href").and_then(Value::as_str))
            .map(str::to_owned);
    }
    let path = page.get("next").and_then(Value::as_str)?;
    let base = reqwest::Url::parse(url).ok()?;
    base.join(path).ok().map(|u| u.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_links_follow_each_services_convention() {
        let nova = serde_json::json!({"servers": [], "servers_links": [{"rel": "next", "href": "http://n/servers?marker=a"}]});
        assert_eq!(
            next_link(&nova, "servers", "http://n/servers").as_deref(),
            Some("http://n/servers?marker=a")
        );
        let glance = serde_json::json!({"images": [], "next": "/v2/images?marker=b"});
        assert_eq!(
            next_link(&glance, "images", "http://g:9292/v2/images").as_deref(),
            Some("http://g:9292/v2/images?marker=b")
        );
        assert_eq!(next_link(&serde_json::json!({"networks": []}), "networks", "http://x"), None);
        assert!(same_origin("http://g:9292/v2/images?marker=b", "http://g:9292/v2/images"));
        assert!(!same_origin("http://elsewhere:9292/v2/images", "http://g:9292/v2/images"));
    }
}
