//! The session with one cloud, through `openstack_sdk`.
//!
//! Authentication comes from `clouds.yaml` (the ecosystem convention: the
//! file named by `--clouds-file`/`OS_CLIENT_CONFIG_FILE`, else
//! `~/.config/openstack/clouds.yaml` or `/etc/openstack/clouds.yaml`, never
//! the current directory); Keystone v3 password and application
//! credentials both work, as the SDK supports them. Tokens are never cached
//! on disk. Every request after authentication goes through
//! [`CountingClient`], so plans can report how many calls they took.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use http::request::Builder as RequestBuilder;
use http::{HeaderMap, Response};
use openstack_sdk::api::{
    ignore, paged, ApiError, AsyncClient, Pageable, Pagination, QueryAsync, RestClient,
    RestEndpoint,
};
use openstack_sdk::config::{CloudConfig, ConfigFile};
use openstack_sdk::types::{ApiVersion, BoxedAsyncRead, ServiceType};
use openstack_sdk::{AsyncOpenStack, MicroVersionStrategy, RestError};
use openstack_sdk_core::catalog::ServiceEndpoint;
use serde::de::DeserializeOwned;
use tokio::sync::OnceCell;

use super::shared_lists;

/// Talking to OpenStack failed. Every variant names the cloud or the resource.
#[derive(Debug, thiserror::Error)]
pub enum OpenstackError {
    /// `clouds.yaml` could not be read.
    #[error("cannot read clouds.yaml{}: {message}", .file.as_ref().map(|f| format!(" ({})", f.display())).unwrap_or_default())]
    Config {
        /// The file given explicitly, if any.
        file: Option<PathBuf>,
        /// What is wrong.
        message: String,
    },
    /// Authentication failed or Keystone was unreachable.
    #[error("cannot authenticate to cloud `{cloud}`: {message}")]
    Connect {
        /// The clouds.yaml entry.
        cloud: String,
        /// The SDK's reason (never a credential).
        message: String,
        /// Keystone was unreachable or failed on its side.
        transient: bool,
    },
    /// An API call failed.
    #[error("{resource}: {action} failed: {message}")]
    Api {
        /// The resource, e.g. `server outside-bastion`.
        resource: String,
        /// What apimon tried, e.g. `create`.
        action: String,
        /// HTTP status, when the cloud answered.
        status: Option<u16>,
        /// The cloud's message.
        message: String,
        /// Unreachable, or a 5xx.
        transient: bool,
    },
    /// The resource reached a state apimon cannot continue from.
    #[error("{resource}: {message}")]
    Failed {
        /// The resource.
        resource: String,
        /// What happened (Nova's fault message for a server in ERROR).
        message: String,
    },
    /// A name the repository uses does not exist in the cloud.
    #[error("{resource}: {what} `{name}` does not exist in the cloud")]
    Missing {
        /// The resource that needs it.
        resource: String,
        /// `flavor`, `image`, `network`, ...
        what: &'static str,
        /// The name.
        name: String,
    },
    /// Waiting for a state took too long.
    #[error("{resource}: still not {state} after {seconds} s")]
    Timeout {
        /// The resource.
        resource: String,
        /// The state waited for.
        state: String,
        /// How long apimon waited.
        seconds: u64,
    },
}

impl OpenstackError {
    /// Worth retrying: unreachable, a 5xx, or a timeout.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Connect { transient, .. } | Self::Api { transient, .. } => *transient,
            Self::Timeout { .. } => true,
            Self::Config { .. } | Self::Failed { .. } | Self::Missing { .. } => false,
        }
    }

    /// The cloud answered 404.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Api { status: Some(404), .. })
    }

    /// The cloud answered 409 (conflict: exists already, or busy).
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Api { status: Some(409), .. })
    }
}

/// The clouds.yaml files apimon reads: `file` alone when given, else the
/// first `clouds.yaml` (with the `secure.yaml` beside it) in
/// `$XDG_CONFIG_HOME/openstack`, `~/.config/openstack`, `/etc/openstack`.
/// Never the current directory, unlike other OpenStack clients: it is often
/// a repository checkout, and a clouds.yaml or secure.yaml merged from a
/// pull request could send the credentials elsewhere.
fn clouds_files(file: Option<&Path>) -> Vec<PathBuf> {
    if let Some(file) = file {
        return vec![file.to_path_buf()];
    }
    let mut dirs = Vec::new();
    if let Some(config_home) = std::env::var_os("XDG_CONFIG_HOME") {
        dirs.push(PathBuf::from(config_home).join("openstack"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".config/openstack"));
    }
    dirs.push(PathBuf::from("/etc/openstack"));
    dirs.into_iter()
        .find(|dir| dir.join("clouds.yaml").is_file())
        .map(|dir| {
            let secure = dir.join("secure.yaml");
            let mut files = vec![dir.join("clouds.yaml")];
            if secure.is_file() {
                files.push(secure);
            }
            files
        })
        .unwrap_or_default()
}

/// `cloud`'s entry in clouds.yaml (see [`clouds_files`]), merged with its
/// entry in secure.yaml, as written: all another machine needs to reach
/// that cloud, and no other cloud's credentials. `Ok(None)` when no file
/// has it.
///
/// # Errors
/// A file cannot be read or is not YAML.
pub fn cloud_entry(
    cloud: &str,
    file: Option<&Path>,
) -> Result<Option<yaml_serde::Value>, OpenstackError> {
    let mut entry: Option<yaml_serde::Value> = None;
    for path in clouds_files(file) {
        let config_error =
            |message: String| OpenstackError::Config { file: Some(path.clone()), message };
        let text = crate::fsutil::read_text_limited(&path, crate::fsutil::MAX_CONFIG_BYTES)
            .map_err(|e| config_error(e.to_string()))?;
        let document: yaml_serde::Value =
            yaml_serde::from_str(&text).map_err(|e| config_error(e.to_string()))?;
        if let Some(found) = document.get("clouds").and_then(|clouds| clouds.get(cloud)) {
            entry = Some(match entry {
                Some(mut merged) => {
                    merge_yaml(&mut merged, found.clone());
                    merged
                }
                None => found.clone(),
            });
        }
    }
    Ok(entry)
}

/// `from` over `into`, mappings merged key by key (secure.yaml over clouds.yaml).
fn merge_yaml(into: &mut yaml_serde::Value, from: yaml_serde::Value) {
    match (into, from) {
        (yaml_serde::Value::Mapping(into), yaml_serde::Value::Mapping(from)) => {
            for (key, value) in from {
                match into.get_mut(&key) {
                    Some(existing) => merge_yaml(existing, value),
                    None => {
                        into.insert(key, value);
                    }
                }
            }
        }
        (into, from) => *into = from,
    }
}

/// A request builder failed (a bug, or a value the SDK rejects).
pub(super) fn built(resource: &str, error: impl std::fmt::Display) -> OpenstackError {
    OpenstackError::Failed {
        resource: resource.to_owned(),
        message: format!("cannot build the request: {error}"),
    }
}

/// Finds `cloud` in clouds.yaml (see [`clouds_files`]); `Ok(None)` when no
/// file has it.
///
/// # Errors
/// A file that cannot be read or parsed (never skipped: a broken file must
/// not make apimon fall back to another cloud), or a missing explicit file.
pub fn cloud_config(
    cloud: &str,
    file: Option<&Path>,
) -> Result<Option<CloudConfig>, OpenstackError> {
    let mut builder = ConfigFile::builder();
    for path in clouds_files(file) {
        let config_error =
            |message: String| OpenstackError::Config { file: Some(path.clone()), message };
        if !path.is_file() {
            return Err(config_error("no such file".to_owned()));
        }
        builder = builder.add_source(&path).map_err(|e| config_error(e.to_string()))?;
    }
    let config = builder.build().map_err(|e| OpenstackError::Config {
        file: file.map(Path::to_path_buf),
        message: e.to_string(),
    })?;
    config.get_cloud_config(cloud).map_err(|e| OpenstackError::Config {
        file: file.map(Path::to_path_buf),
        message: e.to_string(),
    })
}

/// An [`AsyncOpenStack`] session (shared by the environments using the
/// same credentials) that counts the requests this provider sent through it.
pub struct CountingClient {
    inner: Arc<AsyncOpenStack>,
    requests: AtomicUsize,
}

impl RestClient for CountingClient {
    type Error = RestError;

    fn get_current_project(&self) -> Option<openstack_sdk_auth_core::types::Project> {
        self.inner.get_current_project()
    }

    fn microversion_strategy(&self) -> MicroVersionStrategy {
        self.inner.microversion_strategy()
    }
}

#[async_trait]
impl AsyncClient for CountingClient {
    async fn rest_async(
        &self,
        request: RequestBuilder,
        body: Vec<u8>,
    ) -> Result<Response<Bytes>, ApiError<Self::Error>> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.inner.rest_async(request, body).await
    }

    async fn rest_read_body_async(
        &self,
        request: RequestBuilder,
        body: BoxedAsyncRead,
    ) -> Result<Response<Bytes>, ApiError<Self::Error>> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.inner.rest_read_body_async(request, body).await
    }

    async fn download_async(
        &self,
        request: RequestBuilder,
        body: Vec<u8>,
    ) -> Result<(HeaderMap, BoxedAsyncRead), ApiError<Self::Error>> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.inner.download_async(request, body).await
    }

    async fn get_service_endpoint(
        &self,
        service_type: &ServiceType,
        version: Option<&ApiVersion>,
    ) -> Result<ServiceEndpoint, ApiError<Self::Error>> {
        AsyncClient::get_service_endpoint(&*self.inner, service_type, version).await
    }
}

/// An authenticated session, shared by every environment whose clouds.yaml
/// entry holds the same credentials (one token, one service discovery).
type SharedSession = Arc<OnceCell<Arc<AsyncOpenStack>>>;

/// How long a session is handed to new users: a token outlives it.
const SHARE_FOR: std::time::Duration = std::time::Duration::from_secs(30 * 60);

/// A session handed out, and since when.
type Shared = (std::sync::Weak<OnceCell<Arc<AsyncOpenStack>>>, std::time::Instant);

/// The sessions alive in this process, by a hash of their cloud config.
fn shared_session(config: &CloudConfig) -> SharedSession {
    static SESSIONS: std::sync::LazyLock<std::sync::Mutex<HashMap<String, Shared>>> =
        std::sync::LazyLock::new(Default::default);
    let key = session_key(config);
    let Ok(mut sessions) = SESSIONS.lock() else { return Arc::default() };
    sessions.retain(|_, (weak, since)| weak.strong_count() > 0 && since.elapsed() < SHARE_FOR);
    if let Some(shared) = sessions.get(&key).and_then(|(weak, _)| weak.upgrade()) {
        return shared;
    }
    let shared: SharedSession = Arc::default();
    sessions.insert(key, (Arc::downgrade(&shared), std::time::Instant::now()));
    shared
}

/// What makes two clouds.yaml entries one session: the credentials and
/// every setting that changes the session, not the entry's name. Hashed: the
/// credentials never stay in the key.
fn session_key(config: &CloudConfig) -> String {
    let auth = config.auth.as_ref().and_then(|a| serde_json::to_string(a).ok()).unwrap_or_default();
    let options: std::collections::BTreeMap<&String, String> =
        config.options.iter().map(|(k, v)| (k, format!("{v:?}"))).collect();
    let text = format!(
        "{auth}\0{:?}\0{:?}\0{:?}\0{:?}\0{:?}\0{:?}\0{options:?}",
        config.auth_type,
        config.auth_methods,
        config.region_name,
        config.interface,
        config.cacert,
        config.verify,
    );
    crate::digest::sha256_hex(text.as_bytes())
}

/// One cloud, connected on first use.
pub struct Cloud {
    name: String,
    config: CloudConfig,
    shared: SharedSession,
    session: OnceCell<CountingClient>,
    /// The observation in progress (0: none).
    pass: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Cloud {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The config holds credentials: never print it.
        f.debug_struct("Cloud").field("name", &self.name).finish_non_exhaustive()
    }
}

/// The services apimon uses; their versions are discovered once per session.
const SERVICES: [ServiceType; 4] =
    [ServiceType::Compute, ServiceType::Network, ServiceType::BlockStorage, ServiceType::Image];

impl Cloud {
    /// A cloud from its clouds.yaml entry (no network traffic yet); it
    /// shares its session with the other clouds of the same credentials.
    pub fn new(name: &str, config: CloudConfig) -> Self {
        let shared = shared_session(&config);
        let pass = std::sync::atomic::AtomicU64::new(0);
        Self { name: name.to_owned(), config, shared, session: OnceCell::new(), pass }
    }

    /// Requests sent after authentication so far.
    pub fn requests(&self) -> usize {
        self.session.get().map_or(0, |s| s.requests.load(Ordering::Relaxed))
    }

    /// The authenticated session.
    ///
    /// # Errors
    /// Keystone refused or could not be reached.
    pub async fn session(&self) -> Result<&CountingClient, OpenstackError> {
        // Auth plugins register themselves at link time; the SDK's own anchor
        // for application credentials is missing from its published build, so
        // without this reference the linker drops the plugin.
        std::hint::black_box(&openstack_sdk_auth_applicationcredential::ANCHOR);
        self.session
            .get_or_try_init(|| async {
                let inner = self
                    .shared
                    .get_or_try_init(|| async {
                        let connect_error = |error: openstack_sdk::OpenStackError| {
                            let message = error.to_string();
                            let transient = match &error {
                                openstack_sdk::OpenStackError::Communication { .. } => true,
                                openstack_sdk::OpenStackError::Http { status } => {
                                    status.is_server_error()
                                }
                                _ => false,
                            };
                            OpenstackError::Connect { cloud: self.name.clone(), message, transient }
                        };
                        // A hung API must fail the call (and be retried), not stall the apply.
                        let session = AsyncOpenStack::builder(&self.config)
                            .disable_auth_cache(true)
                            .http_connect_timeout(std::time::Duration::from_secs(10))
                            .http_timeout(std::time::Duration::from_secs(120))
                            .connect()
                            .await
                            .map_err(connect_error)?;
                        for service in &SERVICES {
                            session
                                .discover_service_endpoint(service)
                                .await
                                .map_err(connect_error)?;
                        }
                        Ok::<_, OpenstackError>(Arc::new(session))
                    })
                    .await?;
                Ok(CountingClient { inner: Arc::clone(inner), requests: AtomicUsize::new(0) })
            })
            .await
    }

    /// The project the session is scoped to.
    ///
    /// # Errors
    /// Not connected, or the token has no project scope.
    pub async fn project_id(&self) -> Result<String, OpenstackError> {
        let session = self.session().await?;
        session.get_current_project().and_then(|p| p.id).ok_or_else(|| OpenstackError::Connect {
            cloud: self.name.clone(),
            message: "the token is not scoped to a project (set project_name or project_id in clouds.yaml)"
                .to_owned(),
            transient: false,
        })
    }

    /// Sends `endpoint` and decodes the answer.
    ///
    /// # Errors
    /// The call failed; the error names `resource` and `action`.
    pub async fn query<T, E>(
        &self,
        resource: &str,
        action: &str,
        endpoint: E,
    ) -> Result<T, OpenstackError>
    where
        T: DeserializeOwned + Send + 'static,
        E: RestEndpoint + Sync + Send,
    {
        let session = self.session().await?;
        endpoint.query_async(session).await.map_err(|e| api_error(resource, action, e))
    }

    /// Sends `endpoint`, ignoring the answer's body.
    ///
    /// # Errors
    /// The call failed; the error names `resource` and `action`.
    pub async fn execute<E>(
        &self,
        resource: &str,
        action: &str,
        endpoint: E,
    ) -> Result<(), OpenstackError>
    where
        E: RestEndpoint + Sync + Send,
    {
        let session = self.session().await?;
        ignore(endpoint).query_async(session).await.map_err(|e| api_error(resource, action, e))
    }

    /// Every item of a list endpoint, following pagination; during an
    /// observation (`observing`), the list the pass already read with
    /// these credentials, if any (`shared_lists`).
    ///
    /// # Errors
    /// A page could not be read.
    pub async fn list<T, E>(&self, what: &str, endpoint: E) -> Result<Vec<T>, OpenstackError>
    where
        T: DeserializeOwned + Send + 'static,
        E: RestEndpoint + Pageable + Sync + Send,
    {
        let session = self.session().await?;
        let key = shared_lists::request_key(&endpoint);
        self.shared(what, key, || async {
            paged(endpoint, Pagination::All)
                .query_async(session)
                .await
                .map_err(|e| api_error(what, "list", e))
        })
        .await
    }

    /// A list endpoint that does not page (Nova's keypairs), shared in an
    /// observation as [`Self::list`].
    ///
    /// # Errors
    /// The call failed.
    pub async fn list_unpaged<T, E>(
        &self,
        what: &str,
        endpoint: E,
    ) -> Result<Vec<T>, OpenstackError>
    where
        T: DeserializeOwned + Send + 'static,
        E: RestEndpoint + Sync + Send,
    {
        let session = self.session().await?;
        let key = shared_lists::request_key(&endpoint);
        self.shared(what, key, || async {
            endpoint.query_async(session).await.map_err(|e| api_error(what, "list", e))
        })
        .await
    }

    /// The items `fetch` gets, or, during an observation, those it got for
    /// the pass's first environment of these credentials (`key`: the request).
    async fn shared<T, F, Fut>(
        &self,
        what: &str,
        key: String,
        fetch: F,
    ) -> Result<Vec<T>, OpenstackError>
    where
        T: DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Vec<serde_json::Value>, OpenstackError>>,
    {
        let pass = self.pass.load(Ordering::Relaxed);
        let key = format!("{}\0{key}", session_key(&self.config));
        let cell = if pass == 0 { None } else { shared_lists::cell(pass, key) };
        let items = match cell {
            Some(cell) => {
                Arc::clone(cell.get_or_try_init(|| async { fetch().await.map(Arc::new) }).await?)
            }
            None => Arc::new(fetch().await?),
        };
        items
            .iter()
            .map(|item| serde_json::from_value(item.clone()))
            .collect::<Result<Vec<T>, _>>()
            .map_err(|e| OpenstackError::Failed {
                resource: what.to_owned(),
                message: format!("unexpected list item: {e}"),
            })
    }

    /// Lists of observation `pass` are shared with the other environments
    /// of these credentials until [`Self::observed`].
    pub fn observing(&self, pass: u64) {
        self.pass.store(pass, Ordering::Relaxed);
    }

    /// The observation ended: lists go to the cloud again.
    pub fn observed(&self) {
        self.pass.store(0, Ordering::Relaxed);
    }
}

/// An SDK error as ours: the status and the cloud's own message.
fn api_error(resource: &str, action: &str, error: ApiError<RestError>) -> OpenstackError {
    let (status, message) = match &error {
        ApiError::OpenStack { status, msg, .. } => (Some(status.as_u16()), msg.clone()),
        ApiError::OpenStackService { status, data, .. } => {
            (Some(status.as_u16()), data.chars().take(300).collect())
        }
        ApiError::OpenStackUnrecognized { status, obj, .. } => {
            (Some(status.as_u16()), obj.to_string().chars().take(300).collect())
        }
        other => (None, other.to_string()),
    };
    let transient = error.is_transient() || matches!(error, ApiError::Client { .. });
    OpenstackError::Api {
        resource: resource.to_owned(),
        action: action.to_owned(),
        status,
        message: message.trim().to_owned(),
        transient,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_session_per_credential_whatever_the_entry_is_called() {
        let config = |name: &str, password: &str| {
            let auth = openstack_sdk::config::Auth {
                auth_url: Some("https://iam.example/v3".to_owned()),
                username: Some("apimon".to_owned()),
                password: Some(password.to_owned().into()),
                ..Default::default()
            };
            CloudConfig { name: Some(name.to_owned()), auth: Some(auth), ..CloudConfig::default() }
        };
        assert_eq!(session_key(&config("a", "pw")), session_key(&config("b", "pw")));
        assert_ne!(session_key(&config("a", "pw")), session_key(&config("a", "other")));
    }
}
