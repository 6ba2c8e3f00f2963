//! A private network for a test: a network namespace with only its own
//! loopback (nothing in it routes anywhere, off the machine least of all),
//! services listening inside it on 127.x addresses, and an sshd bastion in
//! it that the test reaches from outside. The bastion is sshd in inetd mode
//! (`sshd -i`, one per connection, run inside the namespace) behind a
//! listener on this machine's loopback: the one way in, as a real
//! environment's bastion is.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::require_binary;

/// A network namespace, deleted on drop (its processes are stopped by
/// their own handles first).
pub struct NetNs {
    /// Its name (`/run/netns/<name>`).
    pub name: String,
}

impl NetNs {
    /// A fresh namespace with its loopback up; `None` (skip) without `ip`.
    pub fn new() -> Option<Self> {
        require_binary("ip", "iproute2")?;
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let name =
            format!("apimon-{}-{}", std::process::id(), COUNT.fetch_add(1, Ordering::Relaxed));
        let ok = |args: &[&str]| Command::new("ip").args(args).status().is_ok_and(|s| s.success());
        assert!(ok(&["netns", "add", &name]), "ip netns add {name} (needs root)");
        assert!(ok(&["-n", &name, "link", "set", "lo", "up"]), "lo up in {name}");
        Some(Self { name })
    }

    /// `program` to run inside the namespace.
    pub fn command(&self, program: &Path) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).arg(program);
        command
    }

    /// A listener on `address` inside the namespace (made by a thread
    /// that entered it; the socket stays there).
    pub fn listen(&self, address: &str) -> TcpListener {
        let (name, address) = (self.name.clone(), address.to_owned());
        std::thread::spawn(move || {
            let file = std::fs::File::open(format!("/run/netns/{name}")).expect("netns file");
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            TcpListener::bind(&address).unwrap_or_else(|e| panic!("bind {address} in {name}: {e}"))
        })
        .join()
        .expect("listener thread")
    }

    /// Whether `address` answers a TCP connection inside the namespace.
    pub fn answers(&self, address: &str) -> bool {
        let (name, address) = (self.name.clone(), address.to_owned());
        std::thread::spawn(move || {
            let Ok(file) = std::fs::File::open(format!("/run/netns/{name}")) else { return false };
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).is_ok()
                && std::net::TcpStream::connect(&address).is_ok()
        })
        .join()
        .unwrap_or(false)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "delete", &self.name]).status();
    }
}

/// sshd in inetd mode inside a namespace: every connection a listener
/// accepts gets its own `sshd -i`. Its log shows the channels it opened.
pub struct InetdSshd {
    dir: PathBuf,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl InetdSshd {
    /// A server with its own host key, letting in the key whose public half
    /// is `authorized` (a file); logs at DEBUG1 to its log file.
    pub fn new(dir: &Path, authorized: &Path) -> Option<Self> {
        require_binary("sshd", "openssh-server")?;
        let keygen = require_binary("ssh-keygen", "openssh-client")?;
        std::fs::create_dir_all(dir).expect("sshd dir");
        std::fs::create_dir_all("/run/sshd").expect("/run/sshd");
        let key = dir.join("host_key");
        let made = Command::new(keygen)
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "inetd-sshd", "-f"])
            .arg(&key)
            .status()
            .expect("ssh-keygen");
        assert!(made.success());
        std::fs::copy(authorized, dir.join("authorized_keys")).expect("authorized_keys");
        let config = format!(
            "HostKey {d}/host_key\nAuthorizedKeysFile {d}/authorized_keys\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\nPermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\nAllowTcpForwarding yes\nMaxSessions 50\nLogLevel DEBUG1\n",
            d = dir.display()
        );
        std::fs::write(dir.join("sshd_config"), config).expect("sshd_config");
        Some(Self { dir: dir.to_owned(), tasks: Vec::new() })
    }

    /// `ssh-ed25519 AAAA…` of its host key.
    pub fn public_key(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("host_key.pub")).expect("host key");
        text.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
    }

    /// What every `sshd -i` logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
    }

    /// Serves `listener`'s connections with `sshd -i` inside `ns`.
    pub fn serve(&mut self, listener: TcpListener, ns: &NetNs) {
        let sshd = require_binary("sshd", "openssh-server").expect("sshd");
        let (config, log) = (self.dir.join("sshd_config"), self.dir.join("sshd.log"));
        let ns = ns.name.clone();
        listener.set_nonblocking(true).expect("nonblocking");
        let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
        self.tasks.push(tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let Ok(stream) = stream.into_std() else { continue };
                let _ = stream.set_nonblocking(false);
                let Ok(output) = stream.try_clone() else { continue };
                let mut command = Command::new("ip");
                command
                    .args(["netns", "exec", &ns])
                    .arg(&sshd)
                    .args(["-i", "-f"])
                    .arg(&config)
                    .arg("-E")
                    .arg(&log)
                    .stdin(Stdio::from(std::os::fd::OwnedFd::from(stream)))
                    .stdout(Stdio::from(std::os::fd::OwnedFd::from(output)))
                    .stderr(Stdio::null());
                let mut child = super::process::spawn(&mut command, "sshd -i");
                // Reaped when the connection ends.
                tokio::task::spawn_blocking(move || {
                    let _ = child.wait();
                });
            }
        }));
    }
}

impl Drop for InetdSshd {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
