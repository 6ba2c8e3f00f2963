//! Real OpenSSH servers for tests (Debian package `openssh-server`): each
//! `sshd -D` on a free loopback port with its own host key, config and
//! authorized_keys in a temporary directory, stopped on drop. Plus a client
//! key, a known_hosts file, and a TCP relay that can drop every connection
//! through it at once (to cut an upload off in the middle).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
        let child = Command::new(sshd)
            .args(["-D", "-e", "-f"])
            .arg(dir.join("sshd_config"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start sshd");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "sshd {name} did not listen; see {}",
                dir.join("sshd.log").display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
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
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Relays TCP from `addresses`:port to 127.0.0.1:`target`, counting
/// connections and able to cut all of them.
pub struct Relay {
    /// The port it listens on (same on every address).
    pub port: u16,
    connections: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
    listeners: Vec<tokio::task::JoinHandle<()>>,
}

impl Relay {
    /// Listens on each of `addresses` (loopback ones) at one free port.
    pub async fn start(addresses: &[&str], target: u16) -> Self {
        let port = free_port();
        let connections = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut listeners = Vec::new();
        for address in addresses {
            let listener =
                tokio::net::TcpListener::bind((*address, port)).await.expect("bind relay");
            let connections = Arc::clone(&connections);
            let accepted = Arc::clone(&accepted);
            listeners.push(tokio::spawn(async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let task = tokio::spawn(async move {
                        if let Ok(mut outbound) =
                            tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                        {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    connections.lock().expect("relay").push(task);
                }
            }));
        }
        Self { port, connections, accepted, listeners }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Drops every open connection, as a network failure would.
    pub fn cut(&self) {
        for task in self.connections.lock().expect("relay").drain(..) {
            task.abort();
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.cut();
        for listener in &self.listeners {
            listener.abort();
        }
    }
}
