//! Real receivers of the health service's notifications, on 127.0.0.1:
//! a webhook receiver that checks the signature with Python's own `hmac`
//! (an implementation independent of apimon's), aiosmtpd requiring
//! STARTTLS before MAIL, and a matrix-synapse homeserver (both from the
//! pinned virtualenv scripts/test.sh makes under target/notify-venv).

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use super::{free_port, process, require_binary, skip, wait_listening};

/// The notification virtualenv's python; `None` (skip) without it.
fn venv_python() -> Option<PathBuf> {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/notify-venv/bin/python");
    if python.is_file() {
        Some(python)
    } else {
        skip(
            "target/notify-venv is missing (scripts/test.sh installs matrix-synapse and aiosmtpd)",
        );
        None
    }
}

const WEBHOOK: &str = r#"
import hashlib, hmac, http.server, json, sys
key, port, out = sys.argv[1].encode(), int(sys.argv[2]), sys.argv[3]
class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        want = "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()
        ok = hmac.compare_digest(want, self.headers.get("X-Apimon-Signature", ""))
        with open(out, "a") as f:
            f.write(json.dumps({"ok": ok, "delivery": self.headers.get("X-Apimon-Delivery"), "body": body.decode("utf-8", "replace")}) + "\n")
        self.send_response(200 if ok else 401)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", port), Receiver).serve_forever()
"#;

/// A webhook receiver; what it got is in `received()`.
pub struct WebhookReceiver {
    /// Its port.
    pub port: u16,
    key: String,
    out: PathBuf,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    /// The signature checked.
    pub ok: bool,
    /// `X-Apimon-Delivery`.
    pub delivery: String,
    /// The body.
    pub body: serde_json::Value,
}

impl WebhookReceiver {
    /// Started with HMAC key `key`.
    pub fn start(key: &str) -> Option<Self> {
        require_binary("python3", "python3")?;
        let dir = tempfile::tempdir().expect("temp dir");
        let mut receiver = Self {
            port: free_port(),
            key: key.to_owned(),
            out: dir.path().join("received.jsonl"),
            child: None,
            _dir: dir,
        };
        receiver.resume();
        Some(receiver)
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    /// Starts it (again).
    pub fn resume(&mut self) {
        let mut command = Command::new("python3");
        command.args(["-c", WEBHOOK, &self.key, &self.port.to_string()]).arg(&self.out);
        self.child = Some(process::spawn(&mut command, "webhook receiver"));
        wait_listening("webhook receiver", self.port, Duration::from_secs(20), String::new);
    }

    /// Stops it (its port refuses).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            process::stop(&mut child);
        }
    }

    /// What it got, in order.
    pub fn received(&self) -> Vec<Received> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .map(|v| Received {
                ok: v["ok"].as_bool().unwrap_or(false),
                delivery: v["delivery"].as_str().unwrap_or_default().to_owned(),
                body: serde_json::from_str(v["body"].as_str().unwrap_or_default())
                    .unwrap_or(serde_json::Value::Null),
            })
            .collect()
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.stop();
    }
}

const SMTP: &str = r#"
import os, ssl, sys, threading
from aiosmtpd.controller import Controller
cert, key, port, out = sys.argv[1:5]
context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
context.load_cert_chain(cert, key)
class Handler:
    async def handle_DATA(self, server, session, envelope):
        name = os.path.join(out, "%06d.eml" % len(os.listdir(out)))
        with open(name + ".tmp", "wb") as f:
            f.write(("X-Received-Over-TLS: %s\r\n" % (session.ssl is not None)).encode())
            f.write(envelope.original_content)
        os.rename(name + ".tmp", name)
        return "250 OK"
controller = Controller(Handler(), hostname="127.0.0.1", port=int(port), tls_context=context, require_starttls=True)
controller.start()
threading.Event().wait()
"#;

/// aiosmtpd on 127.0.0.1 with a certificate of its own, STARTTLS required.
pub struct SmtpServer {
    /// Its port.
    pub port: u16,
    /// The CA file that signs its certificate (it is self-signed).
    pub ca_file: PathBuf,
    out: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

impl SmtpServer {
    /// Started; `None` (skip) without the virtualenv or openssl.
    pub fn start() -> Option<Self> {
        let python = venv_python()?;
        let openssl = require_binary("openssl", "openssl")?;
        let dir = tempfile::tempdir().expect("temp dir");
        // A CA of the test's own and the server's certificate it signs.
        let path = |name: &str| dir.path().join(name).display().to_string();
        let (ca, ca_key, cert, key) =
            (path("ca.pem"), path("ca.key"), path("cert.pem"), path("key.pem"));
        std::fs::write(
            dir.path().join("leaf.ext"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
        )
        .expect("extensions");
        let steps: [Vec<String>; 3] = [
            [
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=apimon test CA",
                "-keyout",
                &ca_key,
                "-out",
                &ca,
            ]
            .map(String::from)
            .to_vec(),
            [
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=127.0.0.1",
                "-keyout",
                &key,
                "-out",
                &path("leaf.csr"),
            ]
            .map(String::from)
            .to_vec(),
            [
                "x509",
                "-req",
                "-in",
                &path("leaf.csr"),
                "-CA",
                &ca,
                "-CAkey",
                &ca_key,
                "-CAcreateserial",
                "-days",
                "1",
                "-extfile",
                &path("leaf.ext"),
                "-out",
                &cert,
            ]
            .map(String::from)
            .to_vec(),
        ];
        for step in steps {
            let made = Command::new(&openssl).args(&step).output().expect("openssl");
            assert!(made.status.success(), "{step:?}: {}", String::from_utf8_lossy(&made.stderr));
        }
        let (cert, key, ca) = (PathBuf::from(cert), PathBuf::from(key), PathBuf::from(ca));
        let out = dir.path().join("mail");
        std::fs::create_dir(&out).expect("mail dir");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("smtp.log")).expect("log");
        let mut command = Command::new(python);
        command
            .args(["-c", SMTP])
            .arg(&cert)
            .arg(&key)
            .arg(port.to_string())
            .arg(&out)
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        let child = process::spawn(&mut command, "aiosmtpd");
        let log_path = dir.path().join("smtp.log");
        wait_listening("aiosmtpd", port, Duration::from_secs(30), || {
            std::fs::read_to_string(&log_path).unwrap_or_default()
        });
        Some(Self { port, ca_file: ca, out, child, _dir: dir })
    }

    /// The mails it took, oldest first.
    pub fn mails(&self) -> Vec<String> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(&self.out)
            .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default();
        names.retain(|p| p.extension().is_some_and(|e| e == "eml"));
        names.sort();
        names.iter().filter_map(|p| std::fs::read_to_string(p).ok()).collect()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        process::stop(&mut self.child);
    }
}

/// A matrix-synapse homeserver with a user and a room.
pub struct Homeserver {
    /// Its base URL.
    pub url: String,
    /// The user's access token.
    pub token: String,
    /// The room's id.
    pub room: String,
    child: Child,
    dir: tempfile::TempDir,
}

impl Homeserver {
    /// Started with user `apimon` and one room; `None` (skip) without the
    /// virtualenv.
    pub async fn start() -> Option<Self> {
        let python = venv_python()?;
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        let port = free_port();
        let config = root.join("homeserver.yaml");
        let unlimited = "{per_second: 10000, burst_count: 10000}";
        std::fs::write(
            root.join("log.yaml"),
            format!("version: 1\nformatters: {{precise: {{format: '%(asctime)s %(levelname)s %(name)s %(message)s'}}}}\nhandlers: {{file: {{class: logging.FileHandler, filename: {}, formatter: precise}}}}\nroot: {{level: WARNING, handlers: [file]}}\ndisable_existing_loggers: false\n", root.join("homeserver.log").display()),
        )
        .expect("log config");
        std::fs::write(
            &config,
            format!(
                "server_name: localhost\npid_file: {r}/homeserver.pid\nlisteners:\n  - {{port: {port}, bind_addresses: ['127.0.0.1'], type: http, tls: false, x_forwarded: false, resources: [{{names: [client], compress: false}}]}}\ndatabase: {{name: sqlite3, args: {{database: {r}/homeserver.db}}}}\nlog_config: {r}/log.yaml\nmedia_store_path: {r}/media\nsigning_key_path: {r}/signing.key\nregistration_shared_secret: apimon-test-registration\nmacaroon_secret_key: apimon-test-macaroon\nform_secret: apimon-test-form\nreport_stats: false\ntrusted_key_servers: []\nsuppress_key_server_warning: true\nfederation_domain_whitelist: []\nenable_metrics: false\nrc_message: {unlimited}\nrc_registration: {unlimited}\nrc_login: {{address: {unlimited}, account: {unlimited}, failed_attempts: {unlimited}}}\nrc_joins: {{local: {unlimited}, remote: {unlimited}}}\nrc_room_creation: {unlimited}\n",
                r = root.display()
            ),
        )
        .expect("homeserver.yaml");
        let keys = Command::new(&python)
            .args(["-m", "synapse.app.homeserver", "--generate-keys", "-c"])
            .arg(&config)
            .output()
            .expect("synapse keys");
        assert!(keys.status.success(), "{}", String::from_utf8_lossy(&keys.stderr));
        let log = std::fs::File::create(root.join("stdout.log")).expect("log");
        let mut command = Command::new(&python);
        command
            .args(["-m", "synapse.app.homeserver", "-c"])
            .arg(&config)
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        let child = process::spawn(&mut command, "synapse");
        let logs = root.to_owned();
        wait_listening("synapse", port, Duration::from_secs(120), || {
            std::fs::read_to_string(logs.join("homeserver.log")).unwrap_or_default()
                + &std::fs::read_to_string(logs.join("stdout.log")).unwrap_or_default()
        });
        let url = format!("http://127.0.0.1:{port}");
        let register = python.with_file_name("register_new_matrix_user");
        let registered = Command::new(register)
            .args(["-u", "apimon", "-p", "apimon-test-password", "--no-admin", "-c"])
            .arg(&config)
            .arg(&url)
            .output()
            .expect("register_new_matrix_user");
        assert!(registered.status.success(), "{}", String::from_utf8_lossy(&registered.stderr));
        let http = reqwest::Client::new();
        let login: serde_json::Value = http
            .post(format!("{url}/_matrix/client/v3/login"))
            .json(&serde_json::json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "apimon"}, "password": "apimon-test-password"}))
            .send()
            .await
            .expect("login")
            .json()
            .await
            .expect("login answer");
        let token = login["access_token"].as_str().expect("token").to_owned();
        let room: serde_json::Value = http
            .post(format!("{url}/_matrix/client/v3/createRoom"))
            .bearer_auth(&token)
            .json(&serde_json::json!({"name": "apimon alerts"}))
            .send()
            .await
            .expect("createRoom")
            .json()
            .await
            .expect("room");
        let room = room["room_id"].as_str().expect("room id").to_owned();
        Some(Self { url, token, room, child, dir })
    }

    /// The text messages in the room, oldest first, read through the
    /// client-server API.
    pub async fn messages(&self) -> Vec<String> {
        let answer: serde_json::Value = reqwest::Client::new()
            .get(format!("{}/_matrix/client/v3/rooms/{}/messages", self.url, self.room))
            .query(&[("dir", "b"), ("limit", "100")])
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("messages")
            .json()
            .await
            .unwrap_or_default();
        let mut texts: Vec<String> = answer["chunk"]
            .as_array()
            .map(|events| {
                events
                    .iter()
                    .filter(|e| e["type"] == "m.room.message")
                    .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        texts.reverse();
        texts
    }

    /// Its log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("homeserver.log")).unwrap_or_default()
    }
}

impl Drop for Homeserver {
    fn drop(&mut self) {
        process::stop(&mut self.child);
    }
}
