//! Real OpenSSH servers for tests (Debian package `openssh-server`): each
//! `sshd -D` on a free loopback port with its own host key, config and
//! authorized_keys in a temporary directory, stopped on drop. Plus a client
//! key, a known_hosts file, and a TCP relay that can drop every connection
//! through it at once (to cut an upload off in the middle).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::{free_port, require_binary};

fn keygen(path: &Path, comment: &str) {
    let keygen = require_binary("ssh-keygen", "openssh-client").expect("ssh-keygen");
    let status = Command::new(keygen)
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen");
    assert!(status.success(), "ssh-keygen failed");
}

/// The user the tests log in as (the one running them).
pub fn current_user() -> String {
    let output = Command::new("id").arg("-un").output().expect("id -un");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// A client identity and the servers' keys.
pub struct SshWorld {
    /// Temporary directory with keys and configs.
    pub dir: tempfile::TempDir,
}

impl SshWorld {
    /// A client key pair; `None` (skip) outside CI without sshd.
    pub fn new() -> Option<Self> {
        require_binary("sshd", "openssh-server")?;
        let dir = tempfile::tempdir().expect("temp dir");
        keygen(&dir.path().join("client_key"), "apimon-test-client");
        // sshd refuses to start without its privilege-separation directory.
        std::fs::create_dir_all("/run/sshd").expect("create /run/sshd");
        Some(Self { dir })
    }

    /// The client's private key.
    pub fn client_key(&self) -> PathBuf {
        self.dir.path().join("client_key")
    }

    /// Starts a server named `name`.
    pub fn server(&self, name: &str) -> SshServer {
        SshServer::start(self, name)
    }

    /// Writes a known_hosts file with `entries` (host pattern, server).
    pub fn known_hosts(&self, entries: &[(String, &SshServer)]) -> PathBuf {
        let path = self.dir.path().join("known_hosts");
        let text: String = entries
            .iter()
            .map(|(pattern, server)| format!("{pattern} {}\n", server.public_key()))
            .collect();
        std::fs::write(&path, text).expect("known_hosts");
        path
    }
}

/// A running sshd.
pub struct SshServer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: PathBuf,
    child: Child,
}

impl SshServer {
    fn start(world: &SshWorld, name: &str) -> Self {
        let sshd = require_binary("sshd", "openssh-server").expect("sshd");
        let dir = world.dir.path().join(name);
        std::fs::create_dir_all(&dir).expect("server dir");
        keygen(&dir.join("host_key"), name);
        let client_public = std::fs::read_to_string(world.client_key().with_extension("pub"))
            .expect("client public key");
        std::fs::write(dir.join("authorized_keys"), client_public).expect("authorized_keys");
        let port = free_port();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\nAuthorizedKeysFile {d}/authorized_keys\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\nPermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\nAllowTcpForwarding yes\nMaxSessions 50\nLogLevel ERROR\n",
            d = dir.display()
        );
        std::fs::write(dir.join("sshd_config"), config).expect("sshd_config");
        let log = std::fs::File::create(dir.join("sshd.log")).expect("log");
        let child = super::process::spawn(
            Command::new(sshd)
                .args(["-D", "-e", "-f"])
                .arg(dir.join("sshd_config"))
                .stdout(Stdio::null())
                .stderr(log),
            "sshd",
        );
        super::wait_listening(&format!("sshd {name}"), port, Duration::from_secs(10), || {
            format!("see {}", dir.join("sshd.log").display())
        });
        Self { port, dir, child }
    }

    /// `ssh-ed25519 AAAA…` of its host key.
    pub fn public_key(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("host_key.pub")).expect("host key");
        text.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
    }
}

impl Drop for SshServer {
    fn drop(&mut self) {
        super::process::stop(&mut self.child);
    }
}

/// Relays TCP from `addresses`:port to 127.0.0.1:`target`, counting
/// connections, and cutting the connection through which an armed number
/// of bytes has gone towards the target (a network failure in the middle
/// of an upload, at a place the test chooses).
pub struct Relay {
    /// The port it listens on (same on every address).
    pub port: u16,
    accepted: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    budget: Arc<AtomicU64>,
    cut: Arc<tokio::sync::Notify>,
    listeners: Vec<tokio::task::JoinHandle<()>>,
}

impl Relay {
    /// Listens on each of `addresses` (loopback ones) at one free port.
    pub async fn start(addresses: &[&str], target: u16) -> Self {
        let port = free_port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let budget = Arc::new(AtomicU64::new(u64::MAX));
        let cut = Arc::new(tokio::sync::Notify::new());
        let mut listeners = Vec::new();
        for address in addresses {
            let listener =
                tokio::net::TcpListener::bind((*address, port)).await.expect("bind relay");
            let (accepted, requests, budget, cut) = (
                Arc::clone(&accepted),
                Arc::clone(&requests),
                Arc::clone(&budget),
                Arc::clone(&cut),
            );
            listeners.push(tokio::spawn(async move {
                while let Ok((inbound, _)) = listener.accept().await {
                    accepted.fetch_add(1, Ordering::SeqCst);
                    let (requests, budget, cut) =
                        (Arc::clone(&requests), Arc::clone(&budget), Arc::clone(&cut));
                    tokio::spawn(async move {
                        let Ok(outbound) =
                            tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                        else {
                            return;
                        };
                        relay(inbound, outbound, requests, budget, cut).await;
                    });
                }
            }));
        }
        Self { port, accepted, requests, budget, cut, listeners }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// HTTP/1.1 requests relayed so far (request lines seen towards the
    /// target): what an HTTP service behind the relay was asked.
    pub fn http_requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Cuts every connection once `bytes` more have gone towards the target.
    pub fn cut_after(&self, bytes: u64) {
        self.budget.store(bytes, Ordering::SeqCst);
    }

    /// Stops cutting.
    pub fn disarm(&self) {
        self.budget.store(u64::MAX, Ordering::SeqCst);
    }
}

async fn relay(
    inbound: tokio::net::TcpStream,
    outbound: tokio::net::TcpStream,
    requests: Arc<AtomicUsize>,
    budget: Arc<AtomicU64>,
    cut: Arc<tokio::sync::Notify>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut in_read, mut in_write) = inbound.into_split();
    let (mut out_read, mut out_write) = outbound.into_split();
    let upstream = async {
        let mut buffer = vec![0u8; 16 * 1024];
        // The end of the previous read: a request line split across reads.
        let mut tail: Vec<u8> = Vec::new();
        const LINE_END: &[u8] = b" HTTP/1.1\r\n";
        loop {
            let n = match in_read.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            tail.extend_from_slice(&buffer[..n]);
            let seen = tail.windows(LINE_END.len()).filter(|w| *w == LINE_END).count();
            if std::env::var_os("APIMON_TEST_RELAY_LOG").is_some() {
                for (i, _) in
                    tail.windows(LINE_END.len()).enumerate().filter(|(_, w)| *w == LINE_END)
                {
                    let start = tail[..i].iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
                    eprintln!("relay: {}", String::from_utf8_lossy(&tail[start..i]));
                }
            }
            requests.fetch_add(seen, Ordering::SeqCst);
            let keep = tail.len().saturating_sub(LINE_END.len() - 1);
            tail.drain(..keep);
            let spent = n as u64;
            let left = budget
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| {
                    (b != u64::MAX).then(|| b.saturating_sub(spent))
                })
                .unwrap_or(u64::MAX);
            if left != u64::MAX && left <= spent {
                return;
            }
            if out_write.write_all(&buffer[..n]).await.is_err() {
                return;
            }
        }
    };
    let downstream = async {
        let _ = tokio::io::copy(&mut out_read, &mut in_write).await;
    };
    // Either direction ending (or the relay going away) ends both.
    tokio::select! {
        () = upstream => {}
        () = downstream => {}
        () = cut.notified() => {}
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.cut.notify_waiters();
        for listener in &self.listeners {
            listener.abort();
        }
    }
}
