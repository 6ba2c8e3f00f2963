//! A Keystone v3 session of apimon's own, for what it does with a cloud
//! that is not the environment's (the executor's catalog probes, sweeper
//! and log uploads; the daemon's job-log containers): the credentials of
//! one clouds.yaml entry or one monitored cloud, one token per cloud
//! renewed before it expires, and the service catalog that came with it.

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::model::Sensitive;

/// The session could not be had.
#[derive(Debug, thiserror::Error)]
pub enum KeystoneError {
    /// The clouds file or the entry is unusable.
    #[error("cloud `{cloud}` in {file}: {message}")]
    Config {
        /// The clouds.yaml entry.
        cloud: String,
        /// The file.
        file: String,
        /// What is wrong.
        message: String,
    },
    /// Keystone refused or could not be reached.
    #[error("cannot authenticate to cloud `{cloud}` at {url}: {message}")]
    Auth {
        /// The clouds.yaml entry.
        cloud: String,
        /// The token URL.
        url: String,
        /// Why (never a credential).
        message: String,
    },
}

/// The `auth` mapping of a clouds.yaml entry (password or application
/// credential); other keys of the entry are ignored.
#[derive(Debug, Clone, Default, Deserialize)]
struct RawAuth {
    auth_url: Option<String>,
    username: Option<String>,
    user_id: Option<String>,
    password: Option<String>,
    project_name: Option<String>,
    project_id: Option<String>,
    user_domain_name: Option<String>,
    user_domain_id: Option<String>,
    project_domain_name: Option<String>,
    project_domain_id: Option<String>,
    domain_name: Option<String>,
    application_credential_id: Option<String>,
    application_credential_secret: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct RawEntry {
    #[serde(default)]
    auth: RawAuth,
    region_name: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawClouds {
    #[serde(default)]
    clouds: std::collections::BTreeMap<String, RawEntry>,
}

/// One cloud's credentials, read from the executor's clouds file.
#[derive(Clone)]
pub struct CloudAuth {
    /// The entry's name.
    pub cloud: String,
    /// `…/v3/auth/tokens`.
    token_url: String,
    /// The request body (holds the secret).
    body: Sensitive<String>,
    /// `region_name`, when set.
    pub region: Option<String>,
}

impl std::fmt::Debug for CloudAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudAuth").field("cloud", &self.cloud).finish_non_exhaustive()
    }
}

impl CloudAuth {
    /// Entry `cloud` of the clouds file at `file`.
    ///
    /// # Errors
    /// The file cannot be read, is not clouds.yaml, or the entry is missing
    /// or lacks what a token needs.
    pub fn load(file: &Path, cloud: &str) -> Result<Self, KeystoneError> {
        let config = |message: String| KeystoneError::Config {
            cloud: cloud.to_owned(),
            file: file.display().to_string(),
            message,
        };
        let text = crate::fsutil::read_text_limited(file, crate::fsutil::MAX_CONFIG_BYTES)
            .map_err(|e| config(e.to_string()))?;
        let clouds: RawClouds = yaml_serde::from_str(&text).map_err(|e| config(e.to_string()))?;
        let entry = clouds.clouds.get(cloud).ok_or_else(|| config("no such entry".to_owned()))?;
        Self::of(cloud, &entry.auth, entry.region_name.clone()).map_err(config)
    }

    /// A monitored cloud's password credentials, as the repository declares
    /// them (`monitored_clouds.<cloud>`, secrets resolved).
    ///
    /// # Errors
    /// A value a token needs is empty (a secret that is not set).
    pub fn password(cloud: &str, monitored: &MonitoredAuth<'_>) -> Result<Self, String> {
        let domain = Some(monitored.domain_name.to_owned());
        let auth = RawAuth {
            auth_url: Some(monitored.auth_url.to_owned()),
            username: Some(monitored.username.to_owned()).filter(|u| !u.is_empty()),
            password: Some(monitored.password.to_owned()).filter(|p| !p.is_empty()),
            project_name: Some(monitored.project_name.to_owned()),
            user_domain_name: domain.clone(),
            project_domain_name: domain,
            ..RawAuth::default()
        };
        Self::of(cloud, &auth, monitored.region.map(str::to_owned))
    }

    fn of(cloud: &str, auth: &RawAuth, region: Option<String>) -> Result<Self, String> {
        let auth_url = auth.auth_url.as_deref().ok_or("no auth.auth_url")?;
        let base = auth_url.trim_end_matches('/');
        let base = base.strip_suffix("/v3").unwrap_or(base);
        let body = token_body(auth)?;
        Ok(Self {
            cloud: cloud.to_owned(),
            token_url: format!("{base}/v3/auth/tokens"),
            body: Sensitive::new(body.to_string()),
            region,
        })
    }
}

/// A monitored cloud's password credentials, resolved.
#[derive(Clone, Copy)]
pub struct MonitoredAuth<'a> {
    /// Keystone URL.
    pub auth_url: &'a str,
    /// Region, when set.
    pub region: Option<&'a str>,
    /// Project name.
    pub project_name: &'a str,
    /// Domain of the user and the project.
    pub domain_name: &'a str,
    /// User name.
    pub username: &'a str,
    /// Password.
    pub password: &'a str,
}

/// The `POST /v3/auth/tokens` body for `auth`.
fn token_body(auth: &RawAuth) -> Result<serde_json::Value, String> {
    use serde_json::json;
    if let (Some(id), Some(secret)) =
        (&auth.application_credential_id, &auth.application_credential_secret)
    {
        return Ok(json!({"auth": {"identity": {"methods": ["application_credential"],
            "application_credential": {"id": id, "secret": secret}}}}));
    }
    let password = auth.password.as_deref().ok_or("no auth.password")?;
    let domain = |id: &Option<String>, name: &Option<String>| match (id, name, &auth.domain_name) {
        (Some(id), ..) => json!({"id": id}),
        (None, Some(name), _) | (None, None, Some(name)) => json!({"name": name}),
        (None, None, None) => json!({"id": "default"}),
    };
    let user = match (&auth.user_id, &auth.username) {
        (Some(id), _) => json!({"id": id, "password": password}),
        (None, Some(name)) => json!({"name": name, "password": password,
            "domain": domain(&auth.user_domain_id, &auth.user_domain_name)}),
        (None, None) => return Err("no auth.username or auth.user_id".to_owned()),
    };
    let project = match (&auth.project_id, &auth.project_name) {
        (Some(id), _) => json!({"id": id}),
        (None, Some(name)) => json!({"name": name,
            "domain": domain(&auth.project_domain_id, &auth.project_domain_name)}),
        (None, None) => return Err("no auth.project_name or auth.project_id".to_owned()),
    };
    Ok(json!({"auth": {"identity": {"methods": ["password"], "password": {"user": user}},
        "scope": {"project": project}}}))
}

/// One endpoint of the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Service type (`compute`, `network`, …).
    pub service_type: String,
    /// `public`, `internal` or `admin`.
    pub interface: String,
    /// Region, when the catalog names one.
    pub region: Option<String>,
    /// URL.
    pub url: String,
}

/// A token and what came with it (its value prints redacted).
#[derive(Debug, Clone)]
pub struct Token {
    /// `X-Subject-Token`.
    pub value: Sensitive<String>,
    /// When Keystone lets it lapse.
    pub expires_at: DateTime<Utc>,
    /// The project it is scoped to.
    pub project_id: String,
    /// The service catalog.
    pub catalog: Vec<Endpoint>,
}

#[derive(Deserialize)]
struct TokenAnswer {
    token: TokenBody,
}

#[derive(Deserialize)]
struct TokenBody {
    expires_at: DateTime<Utc>,
    #[serde(default)]
    project: Option<IdOnly>,
    #[serde(default)]
    catalog: Vec<CatalogService>,
}

#[derive(Deserialize)]
struct IdOnly {
    id: String,
}

#[derive(Deserialize)]
struct CatalogService {
    #[serde(rename = "type")]
    service_type: String,
    #[serde(default)]
    endpoints: Vec<CatalogEndpoint>,
}

#[derive(Deserialize)]
struct CatalogEndpoint {
    interface: String,
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    region_id: Option<String>,
    url: String,
}

/// The object-store endpoint of `token`'s catalog (public, in `region`
/// when one is named), without a trailing `/`.
pub fn object_store(token: &Token, region: Option<&str>) -> Option<String> {
    token
        .catalog
        .iter()
        .filter(|e| e.service_type == "object-store" && e.interface == "public")
        .find(|e| region.is_none_or(|r| e.region.as_deref() == Some(r)))
        .map(|e| e.url.trim_end_matches('/').to_owned())
}

/// Most bytes of a token answer read (catalogs are large, not that large).
const MAX_TOKEN_ANSWER: usize = 4 * 1024 * 1024;

/// A token renewed this long before it lapses, or at a tenth of its life
/// when that is shorter.
const RENEW_MARGIN: Duration = Duration::from_secs(300);

/// One cloud's session: a token, renewed when it nears its end or when a
/// service refused it.
#[derive(Debug)]
pub struct Session {
    auth: CloudAuth,
    http: reqwest::Client,
    token: Option<(Token, DateTime<Utc>)>,
}

impl Session {
    /// A session for `auth` (no request yet).
    pub fn new(auth: CloudAuth, http: reqwest::Client) -> Self {
        Self { auth, http, token: None }
    }

    /// The cloud's name.
    pub fn cloud(&self) -> &str {
        &self.auth.cloud
    }

    /// The region of the clouds.yaml entry, when it names one.
    pub fn region(&self) -> Option<&str> {
        self.auth.region.as_deref()
    }

    /// Forgets the token (a service answered 401): the next call gets one.
    pub fn invalidate(&mut self) {
        self.token = None;
    }

    /// A valid token, fetched when there is none or it nears its end.
    ///
    /// # Errors
    /// Keystone refused or could not be reached.
    pub async fn token(&mut self) -> Result<&Token, KeystoneError> {
        let now = Utc::now();
        let fresh = self.token.as_ref().is_some_and(|(token, got)| {
            let life = (token.expires_at - *got).to_std().unwrap_or_default();
            let margin = RENEW_MARGIN.min(life / 10);
            now + chrono::Duration::from_std(margin).unwrap_or_default() < token.expires_at
        });
        if !fresh {
            let token = self.fetch().await?;
            self.token = Some((token, now));
        }
        match &self.token {
            Some((token, _)) => Ok(token),
            None => Err(self.error("no token".to_owned())),
        }
    }

    fn error(&self, message: String) -> KeystoneError {
        KeystoneError::Auth {
            cloud: self.auth.cloud.clone(),
            url: self.auth.token_url.clone(),
            message,
        }
    }

    async fn fetch(&self) -> Result<Token, KeystoneError> {
        let response = self
            .http
            .post(&self.auth.token_url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(self.auth.body.expose().clone())
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| self.error(crate::error::chain(&e)))?;
        let status = response.status();
        let value = response
            .headers()
            .get("x-subject-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = crate::httpbody::read_limited(response, MAX_TOKEN_ANSWER)
            .await
            .map_err(|e| self.error(e))?;
        if !status.is_success() {
            return Err(self.error(format!("HTTP {status}")));
        }
        let value = value.ok_or_else(|| self.error("no X-Subject-Token header".to_owned()))?;
        let answer: TokenAnswer = serde_json::from_slice(&body)
            .map_err(|e| self.error(format!("not a token answer: {e}")))?;
        let catalog = answer
            .token
            .catalog
            .into_iter()
            .flat_map(|service| {
                let service_type = service.service_type;
                service.endpoints.into_iter().map(move |e| Endpoint {
                    service_type: service_type.clone(),
                    interface: e.interface,
                    region: e.region.or(e.region_id),
                    url: e.url,
                })
            })
            .collect();
        Ok(Token {
            value: Sensitive::new(value),
            expires_at: answer.token.expires_at,
            project_id: answer.token.project.map(|p| p.id).unwrap_or_default(),
            catalog,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(text: &str) -> RawAuth {
        yaml_serde::from_str(text).unwrap_or_default()
    }

    #[test]
    fn a_password_entry_scopes_to_its_project_in_its_domain() {
        let body = token_body(&auth(
            "{auth_url: x, username: u, password: p, project_name: pr, user_domain_name: Default, project_domain_name: Default}",
        ))
        .unwrap_or_default();
        assert_eq!(body["auth"]["identity"]["password"]["user"]["name"], "u");
        assert_eq!(body["auth"]["identity"]["password"]["user"]["domain"]["name"], "Default");
        assert_eq!(body["auth"]["scope"]["project"]["name"], "pr");
    }

    #[test]
    fn an_application_credential_needs_no_scope() {
        let body =
            token_body(&auth("{application_credential_id: i, application_credential_secret: s}"))
                .unwrap_or_default();
        assert_eq!(body["auth"]["identity"]["methods"][0], "application_credential");
        assert!(body["auth"].get("scope").is_none());
    }

    #[test]
    fn an_entry_without_a_password_says_so() {
        assert_eq!(
            token_body(&auth("{username: u, project_name: p}")).err().as_deref(),
            Some("no auth.password")
        );
    }
}
