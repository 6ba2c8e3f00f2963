//! A real InfluxDB 1.x (Debian package `influxdb`) for tests: started on a
//! free loopback port with authentication on, in a temporary directory,
//! stopped on drop. Without `influxd` the test skips loudly, except in CI
//! (`CI=true`), where that is a failure.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, require_binary};

/// A running influxd.
pub struct InfluxServer {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
    /// PEM of the CA that signed the server certificate, when serving TLS.
    ca_file: Option<PathBuf>,
}

impl InfluxServer {
    /// Starts a fresh server with no users, or `None` (skip) outside CI
    /// when influxd is not installed.
    pub async fn start() -> Option<Self> {
        Self::start_with(false).await
    }

    /// Like [`start`](Self::start), serving HTTPS with a certificate for
    /// 127.0.0.1 signed by a throw-away CA (made with the openssl CLI).
    pub async fn start_tls() -> Option<Self> {
        Self::start_with(true).await
    }

    async fn start_with(tls: bool) -> Option<Self> {
        let binary = require_binary("influxd", "influxdb")?;
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let rpc_port = free_port();
        let root = dir.path().display().to_string();
        let mut https = String::new();
        let mut ca_file = None;
        if tls {
            let openssl = require_binary("openssl", "openssl")?;
            ca_file = Some(make_certificates(&openssl, dir.path()));
            https = format!("  https-enabled = true\n  https-certificate = \"{root}/server.pem\"\n  https-private-key = \"{root}/server.key\"\n");
        }
        let config = format!(
            "reporting-disabled = true\nbind-address = \"127.0.0.1:{rpc_port}\"\n[meta]\n  dir = \"{root}/meta\"\n[data]\n  dir = \"{root}/data\"\n  wal-dir = \"{root}/wal\"\n  query-log-enabled = false\n[http]\n  bind-address = \"127.0.0.1:{port}\"\n  auth-enabled = true\n  log-enabled = false\n{https}[monitor]\n  store-enabled = false\n"
        );
        std::fs::write(dir.path().join("influxdb.conf"), config).expect("write config");
        let mut server = Self { dir, port, child: None, ca_file };
        server.spawn(&binary).await;
        Some(server)
    }

    /// The CA to trust for a TLS server.
    pub fn ca_file(&self) -> Option<&PathBuf> {
        self.ca_file.as_ref()
    }

    async fn spawn(&mut self, binary: &PathBuf) {
        let log = std::fs::File::create(self.dir.path().join("influxd.log")).expect("log file");
        let child = super::process::spawn(
            Command::new(binary)
                .arg("-config")
                .arg(self.dir.path().join("influxdb.conf"))
                .stdout(Stdio::null())
                .stderr(log),
            "influxd",
        );
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = self.http_client();
        loop {
            if let Ok(response) = client.get(format!("{}/ping", self.url())).send().await {
                if response.status().as_u16() == 204 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "influxd did not answer /ping within 30 s; see {}",
                self.dir.path().join("influxd.log").display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Base URL.
    pub fn url(&self) -> String {
        let scheme = if self.ca_file.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// A client that trusts this server.
    fn http_client(&self) -> reqwest::Client {
        let mut builder = reqwest::Client::builder();
        if let Some(ca) = &self.ca_file {
            let pem = std::fs::read(ca).expect("read CA");
            builder =
                builder.add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("CA PEM"));
        }
        builder.build().expect("client")
    }

    /// Stops the server, keeping its data.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            super::process::stop(&mut child);
        }
    }

    /// Freezes the server (SIGSTOP): requests hang, as on an overloaded host.
    pub fn pause(&self) {
        self.signal(nix::sys::signal::Signal::SIGSTOP);
    }

    /// Waits until a request to it sits unread in its socket: while it is
    /// paused, that is a client blocked on it (read from /proc/net/tcp, the
    /// server side's receive queue).
    pub async fn wait_request_pending(&self, timeout: std::time::Duration) {
        let start = std::time::Instant::now();
        let port = format!(":{:04X}", self.port);
        loop {
            let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
            let pending = table.lines().skip(1).any(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let queued = fields.get(4).and_then(|q| q.split_once(':')).map(|(_, rx)| rx);
                fields.get(1).is_some_and(|local| local.ends_with(&port))
                    && queued.is_some_and(|rx| u64::from_str_radix(rx, 16).unwrap_or(0) > 0)
            });
            if pending {
                return;
            }
            assert!(start.elapsed() < timeout, "no request reached the paused InfluxDB");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Thaws it (SIGCONT).
    pub fn resume(&self) {
        self.signal(nix::sys::signal::Signal::SIGCONT);
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        if let Some(child) = &self.child {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
            nix::sys::signal::kill(pid, signal).expect("signal influxd");
        }
    }

    /// Starts it again on the same port with the same data.
    pub async fn restart(&mut self) {
        self.stop();
        let binary = require_binary("influxd", "influxdb").expect("influxd was there a moment ago");
        self.spawn(&binary).await;
    }

    /// Runs `q` as `user`/`password` (or unauthenticated); returns the
    /// HTTP status and the JSON body.
    pub async fn query(
        &self,
        credentials: Option<(&str, &str)>,
        q: &str,
    ) -> (u16, serde_json::Value) {
        self.query_in(credentials, "", q).await
    }

    /// Writes line protocol into `db` as `user`/`password`; the HTTP status.
    pub async fn write(&self, (user, password): (&str, &str), db: &str, body: &str) -> u16 {
        let response = self
            .http_client()
            .post(format!("{}/write", self.url()))
            .query(&[("db", db)])
            .basic_auth(user, Some(password))
            .body(body.to_owned())
            .send()
            .await
            .expect("influxd reachable");
        response.status().as_u16()
    }

    /// Like [`query`](Self::query), with `db` as the default database.
    pub async fn query_in(
        &self,
        credentials: Option<(&str, &str)>,
        db: &str,
        q: &str,
    ) -> (u16, serde_json::Value) {
        let mut request =
            self.http_client().post(format!("{}/query", self.url())).form(&[("q", q), ("db", db)]);
        if let Some((user, password)) = credentials {
            request = request.basic_auth(user, Some(password));
        }
        let response = request.send().await.expect("influxd reachable");
        let status = response.status().as_u16();
        (status, response.json().await.expect("json answer"))
    }
}

/// Writes ca.pem, server.pem and server.key (for IP 127.0.0.1) into `dir`.
fn make_certificates(openssl: &PathBuf, dir: &std::path::Path) -> PathBuf {
    let run = |args: &[&str]| {
        let output =
            Command::new(openssl).args(args).current_dir(dir).output().expect("run openssl");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=apimon test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(dir.join("server.ext"), "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n").expect("write ext");
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
    dir.join("ca.pem")
}

impl Drop for InfluxServer {
    fn drop(&mut self) {
        self.stop();
    }
}
