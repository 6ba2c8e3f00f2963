//! HTTP APIs on an environment's private network, reached through its SSH
//! bastion (see `model::route`): a listener on this machine's loopback
//! whose every connection becomes a `direct-tcpip` channel of one SSH
//! session to the bastion — one session per bastion, shared by every
//! endpoint and provider of the process, opened on first use and opened
//! again when it broke. An `http://` client is pointed at the listener; an
//! `https://` one uses it as its proxy (`CONNECT host:port`, only to the
//! endpoint it was made for), so TLS still runs end to end with the real
//! host name.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::host::bastions::{shared, JumpHost, Shared};

/// A forwarder to one endpoint through one bastion.
#[derive(Debug, Clone)]
pub struct Forward {
    /// Where it listens on this machine.
    pub local: SocketAddr,
    /// The endpoint's host, as the bastion reaches it.
    pub host: String,
    /// The endpoint's port.
    pub port: u16,
    /// The bastion, for messages (`name (address:port)`).
    pub bastion: String,
    shared: Arc<Shared>,
}

impl Forward {
    /// `direct-tcpip` channels opened so far through this forwarder's
    /// bastion (by everything sharing its session).
    pub fn channels(&self) -> usize {
        self.shared.channels()
    }
}

/// Setting up a forwarder failed.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    /// No local listener.
    #[error("cannot listen on this machine's loopback for the tunnel to {target}: {source}")]
    Listen {
        /// The endpoint.
        target: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The bastion cannot be found.
    #[error("the tunnel to {target} goes through the bastion, and {why}")]
    NoBastion {
        /// The endpoint.
        target: String,
        /// Why.
        why: String,
    },
    /// Not inside the async runtime.
    #[error("the tunnel to {target} needs the async runtime")]
    NoRuntime {
        /// The endpoint.
        target: String,
    },
}

type Forwards = Mutex<HashMap<(String, String, u16), Forward>>;

fn forwards() -> &'static Forwards {
    static FORWARDS: OnceLock<Forwards> = OnceLock::new();
    FORWARDS.get_or_init(Forwards::default)
}

/// The forwarder to `host:port` through `jump` (one per endpoint and
/// bastion in this process, made on first use).
///
/// # Errors
/// No loopback listener, or no async runtime to serve it.
pub fn forward(jump: &JumpHost, host: &str, port: u16) -> Result<Forward, TunnelError> {
    let (settings, bastion) = (&jump.settings, &jump.endpoint);
    let key = super::host::bastions::key(settings, bastion);
    let mut made = forwards().lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(forward) = made.get(&(key.clone(), host.to_owned(), port)) {
        return Ok(forward.clone());
    }
    let target = format!("{host}:{port}");
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|_| TunnelError::NoRuntime { target: target.clone() })?;
    let listen_error = |source| TunnelError::Listen { target: target.clone(), source };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(listen_error)?;
    listener.set_nonblocking(true).map_err(listen_error)?;
    let local = listener.local_addr().map_err(listen_error)?;
    let state = shared(jump);
    let forward = Forward {
        local,
        host: host.to_owned(),
        port,
        bastion: bastion.to_string(),
        shared: Arc::clone(&state),
    };
    let (host_owned, state_for_loop) = (host.to_owned(), state);
    runtime.spawn(async move {
        let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
        while let Ok((client, _)) = listener.accept().await {
            let state = Arc::clone(&state_for_loop);
            let host = host_owned.clone();
            tokio::spawn(serve(client, state, host, port));
        }
    });
    made.insert((key, host.to_owned(), port), forward.clone());
    Ok(forward)
}

/// The longest CONNECT request head read.
const MAX_HEAD: usize = 8 * 1024;
/// How long a client may take to send its first bytes or its CONNECT head.
const HEAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// One client connection: a plain stream to the endpoint, or, when it
/// starts with `CONNECT host:port` (an `https://` client's proxy request),
/// the same after the proxy's answer — only to the endpoint it serves.
async fn serve(mut client: tokio::net::TcpStream, bastion: Arc<Shared>, host: String, port: u16) {
    let mut head = Vec::new();
    let mut first = [0u8; 8];
    // A client that sends nothing in time is dropped.
    let peeked = tokio::time::timeout(HEAD_TIMEOUT, client.peek(&mut first)).await;
    let Ok(Ok(n)) = peeked else { return };
    let connect = first[..n].starts_with(b"CONNECT ");
    if connect {
        let read_head = async {
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if head.len() >= MAX_HEAD || !matches!(client.read(&mut byte).await, Ok(1)) {
                    return false;
                }
                head.push(byte[0]);
            }
            true
        };
        if !matches!(tokio::time::timeout(HEAD_TIMEOUT, read_head).await, Ok(true)) {
            return;
        }
        let asked = String::from_utf8_lossy(&head);
        let target = asked.split_whitespace().nth(1).unwrap_or_default().to_ascii_lowercase();
        // An IPv6 address is bracketed in a CONNECT target.
        let ours = if host.contains(':') { format!("[{host}]") } else { host.clone() };
        if target != format!("{}:{port}", ours.to_ascii_lowercase()) {
            let _ = client.write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n").await;
            return;
        }
    }
    let opened = bastion
        .with_session(|session| {
            let host = host.clone();
            async move { session.open_tunnel(&host, port).await }
        })
        .await;
    let mut upstream = match opened {
        Ok(stream) => stream,
        Err(error) => {
            tracing::warn!(endpoint = %format!("{host}:{port}"), bastion = %bastion.endpoint(), error = %crate::error::chain(&error), "Cannot reach the endpoint through the bastion.");
            if connect {
                let _ = client
                    .write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                    .await;
            }
            return;
        }
    };
    if connect && client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await.is_err() {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}

/// The host and port `url` names (the scheme's port when it names none).
fn host_port(url: &str) -> Option<(String, u16)> {
    let authority = crate::url::authority(url)?;
    let https = url.to_ascii_lowercase().starts_with("https://");
    let port = authority.port.unwrap_or(if https { 443 } else { 80 });
    Some((authority.host.to_owned(), port))
}

/// The forwarder `url` of `env` needs from this machine, when
/// `model::route` sends it through the environment's bastion.
///
/// # Errors
/// The forwarder cannot be set up.
pub fn for_endpoint(
    env: &crate::model::Environment,
    context: &super::Context<'_>,
    url: &str,
    via: crate::model::raw::Via,
) -> Result<Option<Forward>, TunnelError> {
    use crate::model::route::{route, Route};
    let (machine, locate) = (context.machine, context.locators.get(&env.name));
    let (Route::Bastion, Some(access), Some((host, port))) =
        (route(env, url, via, machine.on_bastion), env.ssh.as_ref(), host_port(url))
    else {
        return Ok(None);
    };
    let jump = super::host::bastions::jump_host(
        env,
        access,
        &machine.ssh_key,
        &machine.known_hosts,
        locate,
        machine.on_bastion,
    )
    .map_err(|why| TunnelError::NoBastion { target: format!("{host}:{port}"), why })?;
    forward(&jump, &host, port).map(Some)
}

/// `builder` and the base URL to send requests to, for `url` reached
/// through `forward` (if any): `http://` at the forwarder itself,
/// `https://` with the forwarder as its proxy.
///
/// # Errors
/// The proxy setting is refused.
pub fn configure(
    builder: reqwest::ClientBuilder,
    url: &str,
    forward: Option<&Forward>,
) -> Result<(reqwest::ClientBuilder, String), String> {
    let base = url.trim_end_matches('/').to_owned();
    let Some(forward) = forward else { return Ok((builder, base)) };
    if base.to_ascii_lowercase().starts_with("https://") {
        let proxy = reqwest::Proxy::https(format!("http://{}", forward.local))
            .map_err(|e| e.to_string())?;
        return Ok((builder.no_proxy().proxy(proxy), base));
    }
    let rest = base.split_once("://").map_or(base.as_str(), |(_, rest)| rest);
    let path = rest.find('/').map_or("", |i| &rest[i..]);
    Ok((builder.no_proxy(), format!("http://{}{path}", forward.local)))
}
