//! One SSH session per bastion, shared by everything that goes through it
//! in this process: the hosts' connections and the HTTP endpoints'
//! tunnels (`providers::tunnel`). Opened on first use; when a channel
//! cannot be opened on it (the session broke), it is opened again once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use super::ssh::{Connection, Endpoint, SshError, SshSettings};

/// A bastion's shared session.
pub struct Shared {
    settings: SshSettings,
    endpoint: Endpoint,
    session: tokio::sync::Mutex<Option<Arc<Connection>>>,
    opened: AtomicUsize,
    channels: AtomicUsize,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("endpoint", &self.endpoint).finish_non_exhaustive()
    }
}

/// How SSH reaches `env`'s jump host (its first bastion, at
/// `ssh.bastion_address`) as `access` and the applying machine's key and
/// known_hosts say: the settings and the endpoint.
pub fn jump_host(
    env: &crate::model::Environment,
    access: &crate::model::raw::SshAccess,
    key: &std::path::Path,
    known_hosts: &std::path::Path,
) -> (SshSettings, Endpoint) {
    let name = env
        .host_with_role(crate::model::Role::Bastion)
        .map_or_else(|| "bastion".to_owned(), |h| h.name.clone());
    let endpoint =
        Endpoint { name, address: access.bastion_address.clone(), port: access.bastion_port };
    let settings = SshSettings {
        user: access.user.clone(),
        key: key.to_owned(),
        known_hosts: known_hosts.to_owned(),
        timeout: std::time::Duration::from_secs(15),
    };
    (settings, endpoint)
}

type Registry = Mutex<HashMap<String, Arc<Shared>>>;

fn registry() -> &'static Registry {
    static BASTIONS: OnceLock<Registry> = OnceLock::new();
    BASTIONS.get_or_init(Registry::default)
}

/// What tells one bastion session from another: bastion, user, key and
/// known_hosts.
pub fn key(settings: &SshSettings, endpoint: &Endpoint) -> String {
    format!(
        "{}@{}:{} key={} known_hosts={}",
        settings.user,
        endpoint.address,
        endpoint.port,
        settings.key.display(),
        settings.known_hosts.display()
    )
}

/// The shared session to `endpoint` as `settings` say (one per [`key`] in
/// this process).
pub fn shared(settings: &SshSettings, endpoint: &Endpoint) -> Arc<Shared> {
    let key = key(settings, endpoint);
    let mut all = registry().lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    Arc::clone(all.entry(key).or_insert_with(|| {
        Arc::new(Shared {
            settings: settings.clone(),
            endpoint: endpoint.clone(),
            session: tokio::sync::Mutex::new(None),
            opened: AtomicUsize::new(0),
            channels: AtomicUsize::new(0),
        })
    }))
}

impl Shared {
    /// The bastion, for messages.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
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
        let opened =
            Arc::new(Connection::open(&self.settings, &self.endpoint, &self.endpoint).await?);
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
