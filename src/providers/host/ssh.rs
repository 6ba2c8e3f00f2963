//! SSH to a host through the bastion: a russh session to the bastion, a
//! `direct-tcpip` channel from it to the host, and a second session over
//! that channel. Both host keys are checked against a known_hosts file; an
//! unknown or changed key is refused, never learned.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client::{self, Handle};
use russh::keys::{HashAlg, PrivateKeyWithHashAlg};
use russh::ChannelMsg;

use crate::known_hosts::Verdict;

pub use super::ssh_error::SshError;

/// Where and as whom to connect.
#[derive(Debug, Clone)]
pub struct SshSettings {
    /// Remote user on the bastion and the hosts.
    pub user: String,
    /// Private key file.
    pub key: PathBuf,
    /// known_hosts file with the bastion's and every host's key.
    pub known_hosts: PathBuf,
    /// Connect and authentication timeout.
    pub timeout: Duration,
}

/// An SSH endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Host name (for messages and known_hosts).
    pub name: String,
    /// Address to connect to.
    pub address: String,
    /// Port.
    pub port: u16,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}:{})", self.name, self.address, self.port)
    }
}

/// Checks server keys against known_hosts and remembers why it refused.
struct Verifier {
    endpoint: Endpoint,
    known_hosts: PathBuf,
    refusal: Arc<Mutex<Option<String>>>,
}

impl client::Handler for Verifier {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } = server_key else {
            if let Ok(mut refusal) = self.refusal.lock() {
                *refusal = Some(
                    "it presented a certificate; apimon checks plain host keys against known_hosts"
                        .to_owned(),
                );
            }
            return Ok(false);
        };
        let mut verdict = Err(format!(
            "no entry for {} or {} in {}; add its key (ssh-keyscan) after checking it out of band",
            self.endpoint.name,
            self.endpoint.address,
            self.known_hosts.display()
        ));
        for host in [&self.endpoint.address, &self.endpoint.name] {
            let path = &self.known_hosts;
            match crate::known_hosts::check(path, host, self.endpoint.port, key) {
                Ok(Verdict::Known) => {
                    verdict = Ok(());
                    break;
                }
                Ok(Verdict::Unknown) => {}
                Ok(Verdict::Changed { line }) => {
                    verdict = Err(format!("it does not match the key recorded at {}:{line} (possible man-in-the-middle, or the host was rebuilt)", path.display()));
                    break;
                }
                Ok(Verdict::Revoked { line }) => {
                    verdict = Err(format!("the key is revoked at {}:{line}", path.display()));
                    break;
                }
                Err(error) => {
                    verdict = Err(crate::error::chain(&error));
                    break;
                }
            }
        }
        match verdict {
            Ok(()) => Ok(true),
            Err(message) => {
                if let Ok(mut refusal) = self.refusal.lock() {
                    *refusal = Some(message);
                }
                Ok(false)
            }
        }
    }
}

/// An authenticated session to one host.
pub struct Connection {
    host: String,
    session: Handle<Verifier>,
    // Keeps the bastion session (and so the tunnel) alive.
    bastion: Option<Handle<Verifier>>,
    // Or the shared bastion connection it goes through.
    _via: Option<Arc<Connection>>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").field("host", &self.host).finish_non_exhaustive()
    }
}

/// What a command did.
#[derive(Debug, Clone)]
pub struct Output {
    /// Exit status (`None` if the channel closed without one).
    pub status: Option<u32>,
    /// Standard output.
    pub stdout: Vec<u8>,
    /// Standard error.
    pub stderr: Vec<u8>,
}

fn load_key(settings: &SshSettings) -> Result<Arc<russh::keys::PrivateKey>, SshError> {
    russh::keys::load_secret_key(&settings.key, None)
        .map(Arc::new)
        .map_err(|e| SshError::Key { path: settings.key.clone(), message: e.to_string() })
}

async fn handshake<S>(
    stream: S,
    endpoint: &Endpoint,
    via: &str,
    settings: &SshSettings,
    key: &Arc<russh::keys::PrivateKey>,
) -> Result<Handle<Verifier>, SshError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let refusal = Arc::new(Mutex::new(None));
    let verifier = Verifier {
        endpoint: endpoint.clone(),
        known_hosts: settings.known_hosts.clone(),
        refusal: Arc::clone(&refusal),
    };
    let config = Arc::new(client::Config {
        inactivity_timeout: Some(Duration::from_secs(300)),
        keepalive_interval: Some(Duration::from_secs(30)),
        ..client::Config::default()
    });
    let connected =
        tokio::time::timeout(settings.timeout, client::connect_stream(config, stream, verifier))
            .await;
    let mut session = match connected {
        Ok(Ok(session)) => session,
        Ok(Err(error)) => {
            if let Some(message) = refusal.lock().ok().and_then(|mut r| r.take()) {
                return Err(SshError::HostKey { endpoint: endpoint.to_string(), message });
            }
            return Err(SshError::Connect {
                endpoint: endpoint.to_string(),
                via: via.to_owned(),
                message: error.to_string(),
            });
        }
        Err(_) => {
            return Err(SshError::Connect {
                endpoint: endpoint.to_string(),
                via: via.to_owned(),
                message: format!("no SSH handshake within {:?}", settings.timeout),
            })
        }
    };
    let hash =
        session.best_supported_rsa_hash().await.ok().flatten().flatten().or(Some(HashAlg::Sha256));
    let auth = session
        .authenticate_publickey(&settings.user, PrivateKeyWithHashAlg::new(Arc::clone(key), hash))
        .await
        .map_err(|e| SshError::Connect {
            endpoint: endpoint.to_string(),
            via: via.to_owned(),
            message: e.to_string(),
        })?;
    if !auth.success() {
        return Err(SshError::Auth { endpoint: endpoint.to_string(), user: settings.user.clone() });
    }
    Ok(session)
}

/// Bridges a `direct-tcpip` channel to an in-memory stream for the inner
/// SSH session. When the bastion closes the channel (the host's side of the
/// tunnel broke), both ends of the stream are dropped at once, so the inner
/// session fails fast instead of waiting for window space that will never
/// come.
fn tunnel(channel: russh::Channel<client::Msg>) -> tokio::io::DuplexStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (ours, theirs) = tokio::io::duplex(256 * 1024);
    let (mut from_inner, mut to_inner) = tokio::io::split(ours);
    let (mut read_half, write_half) = channel.split();
    let writer = tokio::spawn(async move {
        let mut buffer = vec![0u8; 32 * 1024];
        loop {
            match from_inner.read(&mut buffer).await {
                Ok(0) | Err(_) => {
                    let _ = write_half.eof().await;
                    return;
                }
                Ok(n) => {
                    if write_half.data(&buffer[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    tokio::spawn(async move {
        while let Some(message) = read_half.wait().await {
            let delivered = match message {
                ChannelMsg::Data { data } => to_inner.write_all(&data).await.is_ok(),
                ChannelMsg::Eof | ChannelMsg::Close => false,
                _ => true,
            };
            if !delivered {
                break;
            }
        }
        // Dropping both halves ends the inner session's stream.
        writer.abort();
    });
    theirs
}

impl Connection {
    /// Connects to `target` through `bastion` (or directly when they are the same host).
    ///
    /// # Errors
    /// The bastion or the host is unreachable, a host key is unknown or
    /// changed, or authentication fails; each names the endpoint.
    pub async fn open(
        settings: &SshSettings,
        bastion: &Endpoint,
        target: &Endpoint,
    ) -> Result<Self, SshError> {
        let key = load_key(settings)?;
        let tcp = tokio::time::timeout(
            settings.timeout,
            tokio::net::TcpStream::connect((bastion.address.as_str(), bastion.port)),
        )
        .await
        .map_err(|_| SshError::Connect {
            endpoint: format!("bastion {bastion}"),
            via: String::new(),
            message: format!("no TCP connection within {:?}", settings.timeout),
        })?
        .map_err(|e| SshError::Connect {
            endpoint: format!("bastion {bastion}"),
            via: String::new(),
            message: e.to_string(),
        })?;
        let bastion_session =
            handshake(tcp, bastion, "", settings, &key).await.map_err(|e| match e {
                SshError::Connect { endpoint, via, message }
                    if !endpoint.starts_with("bastion") =>
                {
                    SshError::Connect { endpoint: format!("bastion {endpoint}"), via, message }
                }
                other => other,
            })?;
        if target == bastion {
            return Ok(Self {
                host: target.name.clone(),
                session: bastion_session,
                bastion: None,
                _via: None,
            });
        }
        let via = format!(" through the bastion {bastion}");
        let channel = bastion_session
            .channel_open_direct_tcpip(
                target.address.clone(),
                u32::from(target.port),
                "127.0.0.1",
                0,
            )
            .await
            .map_err(|e| SshError::Connect {
                endpoint: target.to_string(),
                via: via.clone(),
                message: e.to_string(),
            })?;
        let session = handshake(tunnel(channel), target, &via, settings, &key).await?;
        Ok(Self { host: target.name.clone(), session, bastion: Some(bastion_session), _via: None })
    }

    /// Connects to `target` through `bastion`, a connection shared with
    /// other hosts and endpoints (it stays alive as long as this one).
    ///
    /// # Errors
    /// The bastion refused the channel (its session may be gone: the
    /// caller opens it again), or the host's handshake failed.
    pub async fn open_through(
        settings: &SshSettings,
        bastion: &Arc<Connection>,
        target: &Endpoint,
    ) -> Result<Self, SshError> {
        let key = load_key(settings)?;
        let via = format!(" through the bastion {}", bastion.host);
        let channel = bastion
            .session
            .channel_open_direct_tcpip(
                target.address.clone(),
                u32::from(target.port),
                "127.0.0.1",
                0,
            )
            .await
            .map_err(|e| SshError::Channel {
                host: bastion.host.clone(),
                message: format!("cannot open a channel to {target}: {e}"),
            })?;
        let session = handshake(tunnel(channel), target, &via, settings, &key).await?;
        Ok(Self {
            host: target.name.clone(),
            session,
            bastion: None,
            _via: Some(Arc::clone(bastion)),
        })
    }

    /// Whether the session is gone (the bastion or the network dropped it).
    pub fn is_closed(&self) -> bool {
        self.session.is_closed()
    }

    /// Runs `command` with `stdin`, collecting its output.
    ///
    /// # Errors
    /// The channel could not be opened or broke before an exit status.
    pub async fn exec(&self, command: &str, stdin: Option<&[u8]>) -> Result<Output, SshError> {
        let broken = |message: String| SshError::Channel { host: self.host.clone(), message };
        let mut channel = self
            .session
            .channel_open_session()
            .await
            .map_err(|e| broken(format!("cannot open a channel: {e}")))?;
        channel
            .exec(true, command.as_bytes())
            .await
            .map_err(|e| broken(format!("cannot start a command: {e}")))?;
        if let Some(bytes) = stdin {
            // Sending waits for window space; if the connection dies meanwhile
            // that wait may never end, so watch the session while sending.
            let send = channel.data(bytes);
            tokio::pin!(send);
            loop {
                tokio::select! {
                    sent = &mut send => {
                        sent.map_err(|e| broken(format!("connection lost while sending data: {e}")))?;
                        break;
                    }
                    () = tokio::time::sleep(Duration::from_millis(200)) => {
                        if self.session.is_closed() || self.bastion.as_ref().is_some_and(Handle::is_closed) {
                            return Err(broken("connection lost while sending data".to_owned()));
                        }
                    }
                }
            }
        }
        channel.eof().await.map_err(|e| broken(format!("connection lost: {e}")))?;
        let mut output = Output { status: None, stdout: Vec::new(), stderr: Vec::new() };
        while let Some(message) = channel.wait().await {
            match message {
                ChannelMsg::Data { data } => output.stdout.extend_from_slice(&data),
                ChannelMsg::ExtendedData { data, .. } => output.stderr.extend_from_slice(&data),
                ChannelMsg::ExitStatus { exit_status } => output.status = Some(exit_status),
                _ => {}
            }
        }
        if output.status.is_none() {
            return Err(broken("the connection closed before the command finished".to_owned()));
        }
        Ok(output)
    }
}

impl Connection {
    /// A stream to `address:port` as this host sees it, through a
    /// `direct-tcpip` channel of this session.
    ///
    /// # Errors
    /// The bastion refused the channel (forwarding off, nothing listens).
    pub async fn open_tunnel(
        &self,
        address: &str,
        port: u16,
    ) -> Result<tokio::io::DuplexStream, SshError> {
        let channel = self
            .session
            .channel_open_direct_tcpip(address.to_owned(), u32::from(port), "127.0.0.1", 0)
            .await
            .map_err(|e| SshError::Channel {
                host: self.host.clone(),
                message: format!("cannot open a tunnel to {address}:{port}: {e}"),
            })?;
        Ok(tunnel(channel))
    }
}

/// At most this much of an HTTP answer through a tunnel is read.
const MAX_TUNNELLED_RESPONSE: usize = 4 << 20;

impl Connection {
    /// `GET path` from `address:port` as the host sees it (its loopback:
    /// the daemon's HTTP endpoint), through a `direct-tcpip` channel of
    /// this session: nothing listens on this machine. The status and the
    /// body, within `timeout`.
    ///
    /// # Errors
    /// The channel cannot be opened (forwarding refused, nothing listens),
    /// or the answer is not HTTP, too large or too late.
    pub async fn http_get(
        &self,
        address: &str,
        port: u16,
        path: &str,
        timeout: Duration,
    ) -> Result<(u16, Vec<u8>), SshError> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let broken = |message: String| SshError::Channel {
            host: self.host.clone(),
            message: format!("GET http://{address}:{port}{path} through SSH: {message}"),
        };
        let exchange = async {
            let channel = self
                .session
                .channel_open_direct_tcpip(address.to_owned(), u32::from(port), "127.0.0.1", 0)
                .await
                .map_err(|e| broken(format!("cannot open a tunnel: {e}")))?;
            let mut stream = tunnel(channel);
            let request = format!(
                "GET {path} HTTP/1.1\r\nHost: {address}:{port}\r\nConnection: close\r\n\r\n"
            );
            stream.write_all(request.as_bytes()).await.map_err(|e| broken(e.to_string()))?;
            let mut response = Vec::new();
            let mut limited = (&mut stream).take(MAX_TUNNELLED_RESPONSE as u64 + 1);
            limited.read_to_end(&mut response).await.map_err(|e| broken(e.to_string()))?;
            if response.len() > MAX_TUNNELLED_RESPONSE {
                return Err(broken(format!("the answer exceeds {MAX_TUNNELLED_RESPONSE} bytes")));
            }
            parse_http_response(&response).ok_or_else(|| broken("no HTTP answer".to_owned()))
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| broken(format!("no answer within {timeout:?}")))?
    }
}

/// The status and body of an HTTP/1.x response without chunked encoding
/// (or with it: the chunks are joined).
fn parse_http_response(response: &[u8]) -> Option<(u16, Vec<u8>)> {
    let end = response.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&response[..end]).ok()?;
    let status = head.lines().next()?.split_whitespace().nth(1)?.parse().ok()?;
    let body = &response[end + 4..];
    let chunked = head.lines().any(|line| {
        line.to_ascii_lowercase().starts_with("transfer-encoding:") && line.contains("chunked")
    });
    if !chunked {
        return Some((status, body.to_vec()));
    }
    let mut joined = Vec::new();
    let mut rest = body;
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&rest[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Some((status, joined));
        }
        joined.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size + 2..)?;
    }
}

/// `'text'` for a POSIX shell.
pub fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// The path of `path` under `root` (`/` leaves it as it is).
pub fn rooted(root: &Path, path: &str) -> String {
    let root = root.to_string_lossy();
    if root == "/" || root.is_empty() {
        path.to_owned()
    } else {
        format!("{}/{}", root.trim_end_matches('/'), path.trim_start_matches('/'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quoting_survives_single_quotes() {
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote("/etc/a b"), "'/etc/a b'");
    }

    #[test]
    fn http_answers_are_read_plain_or_chunked() {
        let plain = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(parse_http_response(plain), Some((200, b"{}".to_vec())));
        let chunked = b"HTTP/1.1 503 Service Unavailable\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_http_response(chunked), Some((503, b"abcde".to_vec())));
        assert_eq!(parse_http_response(b"SSH-2.0-OpenSSH\r\n"), None);
    }

    #[test]
    fn paths_are_placed_under_the_root() {
        assert_eq!(rooted(Path::new("/"), "/etc/x"), "/etc/x");
        assert_eq!(rooted(Path::new("/tmp/t/"), "/etc/x"), "/tmp/t/etc/x");
    }
}
