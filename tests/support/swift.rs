//! A swift-proxy of the test's own in front of the control plane's Swift
//! account, container and object servers (Debian's swift-proxy, the
//! suite's Keystone): stopping it is an object-store outage no other test
//! sees.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use super::{free_port, process, require_binary, wait_listening};

/// A running (or stopped) per-test proxy.
pub struct SwiftProxy {
    binary: PathBuf,
    conf: PathBuf,
    /// Its port on 127.0.0.1.
    pub port: u16,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl SwiftProxy {
    /// A proxy configured like the control plane's (`$dir/swift/proxy-server.conf`)
    /// on a port of its own.
    pub fn start(os_dir: &std::path::Path) -> Option<Self> {
        let binary = require_binary("swift-proxy-server", "swift-proxy")?;
        let shared = std::fs::read_to_string(os_dir.join("swift/proxy-server.conf"))
            .expect("the control plane's proxy-server.conf");
        let port = free_port();
        assert!(shared.contains("bind_port = 8080"), "{shared}");
        let dir = tempfile::tempdir().expect("temp dir");
        let conf = dir.path().join("proxy-server.conf");
        std::fs::write(&conf, shared.replace("bind_port = 8080", &format!("bind_port = {port}")))
            .expect("proxy conf");
        let mut proxy = Self { binary, conf, port, child: None, _dir: dir };
        proxy.resume();
        Some(proxy)
    }

    /// Starts it again after [`Self::stop`].
    pub fn resume(&mut self) {
        let log = std::fs::File::create(self.conf.with_extension("log")).expect("log");
        let mut command = Command::new(&self.binary);
        command.arg(&self.conf).stdout(log.try_clone().expect("log")).stderr(log);
        self.child = Some(process::spawn(&mut command, "swift-proxy-server"));
        let conf = self.conf.clone();
        wait_listening("swift-proxy-server", self.port, Duration::from_secs(60), || {
            std::fs::read_to_string(conf.with_extension("log")).unwrap_or_default()
        });
    }

    /// What it logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.conf.with_extension("log")).unwrap_or_default()
    }

    /// Stops it (its port refuses).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            process::stop(&mut child);
        }
    }
}

impl Drop for SwiftProxy {
    fn drop(&mut self) {
        self.stop();
    }
}
