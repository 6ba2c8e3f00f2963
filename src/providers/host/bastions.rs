//! One SSH session per bastion, shared by everything that goes through it
//! in this process: the hosts' connections and the HTTP endpoints'
//! tunnels (`providers::tunnel`). Opened on first use; when a channel
//! cannot be opened on it (the session broke), it is opened again once.
//! Without `ssh.bastion_address` the bastion is where the cloud says (its
//! floating IP; its fixed address for the daemon on it), asked each time
//! the session is opened.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use super::ssh::{Connection, Endpoint, SshError, SshSettings};
use crate::providers::locate::{Address, Locate, Which};

/// A bastion's shared session.
pub struct Shared {
    settings: SshSettings,
    endpoint: Endpoint,
    address: Address,
    /// Where the session was last opened.
    reached: Mutex<Option<String>>,
    session: tokio::sync::Mutex<Option<Arc<Connection>>>,
    opened: AtomicUsize,
    channels: AtomicUsize,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("endpoint", &self.endpoint).finish_non_exhaustive()
    }
}

/// The jump host of an environment: how SSH reaches it, its endpoint
/// (whose address, when the cloud gives it, is only its description until
/// the session opens) and its address.
#[derive(Debug, Clone)]
pub struct JumpHost {
    /// User, key, known_hosts.
    pub settings: SshSettings,
    /// Name and port; the address when the repository gives it.
    pub endpoint: Endpoint,
    /// Where it is.
    pub address: Address,
}

/// How SSH reaches `env`'s jump host (its first bastion) as `access` and
/// the applying machine's key and known_hosts say: at `ssh.bastion_address`,
/// else where `locate` says — its floating IP, or its fixed address from
/// the bastion itself (`on_bastion`).
///
/// # Errors
/// No `bastion_address` and nothing to ask: the reason, for messages.
pub fn jump_host(
    env: &crate::model::Environment,
    access: &crate::model::raw::SshAccess,
    key: &std::path::Path,
    known_hosts: &std::path::Path,
    locate: Option<&Arc<dyn Locate>>,
    on_bastion: bool,
) -> Result<JumpHost, String> {
    let name = env
        .host_with_role(crate::model::Role::Bastion)
        .map_or_else(|| "bastion".to_owned(), |h| h.name.clone());
    let address = match (&access.bastion_address, locate) {
        (Some(address), _) => Address::Given(address.clone()),
        (None, Some(locate)) => Address::Cloud {
            server: name.clone(),
            which: if on_bastion { Which::Fixed } else { Which::Floating },
            locate: Arc::clone(locate),
        },
        (None, None) => return Err(format!("`ssh.bastion_address` is not set and the cloud `{}` cannot be asked for the floating IP of {name} (is it in clouds.yaml?)", env.cloud)),
    };
    let endpoint = Endpoint { name, address: address.describe(), port: access.bastion_port };
    let settings = SshSettings {
        user: access.user.clone(),
        key: key.to_owned(),
        known_hosts: known_hosts.to_owned(),
        timeout: std::time::Duration::from_secs(15),
    };
    Ok(JumpHost { settings, endpoint, address })
}

type Registry = Mutex<HashMap<String, Arc<Shared>>>;

fn registry() -> &'static Registry {
    static BASTIONS: OnceLock<Registry> = OnceLock::new();
    BASTIONS.get_or_init(Registry::default)
}

/// What tells one bastion session from another: bastion, user, key and
/// known_hosts (a bastion the cloud places: by its name and environment's
/// cloud, through `endpoint.address`, which describes it).
pub fn key(settings: &SshSettings, endpoint: &Endpoint) -> String {
    format!(
        "{}@{}/{}:{} key={} known_hosts={}",
        settings.user,
        endpoint.name,
        endpoint.address,
        endpoint.port,
        settings.key.display(),
        settings.known_hosts.display()
    )
}

/// The shared session to `jump` (one per [`key`] in this process).
pub fn shared(jump: &JumpHost) -> Arc<Shared> {
    let key = key(&jump.settings, &jump.endpoint);
    let mut all = registry().lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    Arc::clone(all.entry(key).or_insert_with(|| {
        Arc::new(Shared {
            settings: jump.settings.clone(),
            endpoint: jump.endpoint.clone(),
            address: jump.address.clone(),
            reached: Mutex::new(None),
            session: tokio::sync::Mutex::new(None),
            opened: AtomicUsize::new(0),
            channels: AtomicUsize::new(0),
        })
    }))
}

/// The bastions this process reached where the cloud put them: name,
/// address, which of its addresses.
pub fn reached_from_cloud() -> Vec<(String, String, Which)> {
    let all = registry().lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut reached: Vec<(String, String, Which)> = all
        .values()
        .filter_map(|shared| match &shared.address {
            Address::Cloud { which, .. } => {
                shared.reached().map(|address| (shared.endpoint.name.clone(), address, *which))
            }
            Address::Given(_) => None,
        })
        .collect();
    reached.sort();
    reached.dedup();
    reached
}

impl Shared {
    /// The bastion, for messages.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The address the session was last opened at (`None` before).
    pub fn reached(&self) -> Option<String> {
        self.reached.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Sessions opened so far (1 while it holds up).
    pub fn sessions_opened(&self) -> usize {
        self.opened.load(Ordering::Relaxed)
    }

    /// Channels opened through it so far.
    pub fn channels(&self) -> usize {
        self.channels.load(Ordering::Relaxed)
    }

    /// The session, opened if there is none.
    ///
    /// # Errors
    /// The bastion cannot be reached or refuses the key.
    pub async fn connection(&self) -> Result<Arc<Connection>, SshError> {
        let mut session = self.session.lock().await;
        if let Some(connection) = session.as_ref() {
            return Ok(Arc::clone(connection));
        }
        let address = self
            .address
            .resolve()
            .await
            .map_err(|source| SshError::Locate { host: self.endpoint.name.clone(), source })?;
        let endpoint = Endpoint { address, ..self.endpoint.clone() };
        let opened = Arc::new(Connection::open(&self.settings, &endpoint, &endpoint).await?);
        if let Address::Cloud { which, .. } = &self.address {
            tracing::info!(bastion = %self.endpoint.name, address = %endpoint.address, "Reaching the bastion at its {} (from the cloud).", which.label());
        }
        *self.reached.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some(endpoint.address);
        self.opened.fetch_add(1, Ordering::Relaxed);
        *session = Some(Arc::clone(&opened));
        Ok(opened)
    }

    /// Drops `stale` (a channel could not be opened on it), unless another
    /// caller replaced it already.
    pub async fn reset(&self, stale: &Arc<Connection>) {
        let mut session = self.session.lock().await;
        if session.as_ref().is_some_and(|s| Arc::ptr_eq(s, stale)) {
            *session = None;
        }
    }

    /// Runs `open` on the session, opening the session again once when
    /// `open` fails on it.
    ///
    /// # Errors
    /// The bastion cannot be reached, or `open` failed on a fresh session.
    pub async fn with_session<T, F, Fut>(&self, open: F) -> Result<T, SshError>
    where
        F: Fn(Arc<Connection>) -> Fut,
        Fut: std::future::Future<Output = Result<T, SshError>>,
    {
        let connection = self.connection().await?;
        match open(Arc::clone(&connection)).await {
            Ok(value) => {
                self.channels.fetch_add(1, Ordering::Relaxed);
                Ok(value)
            }
            // A session that is gone is opened again once; a target that
            // refuses is its own error, and the session stays.
            Err(SshError::Channel { .. }) if connection.is_closed() => {
                self.reset(&connection).await;
                let value = open(self.connection().await?).await?;
                self.channels.fetch_add(1, Ordering::Relaxed);
                Ok(value)
            }
            Err(error) => Err(error),
        }
    }
}
