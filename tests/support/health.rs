//! `apimon health` running in the test's runtime, reading and writing a
//! real InfluxDB's `apimon` database; its state directory outlives a
//! restart.

use tokio::sync::mpsc;

use super::free_port;
use super::influxdb::InfluxServer;

/// A running health service.
pub struct Service {
    /// Its listener's port on 127.0.0.1.
    pub port: u16,
    controls: mpsc::UnboundedSender<apimon::health::Control>,
    task: tokio::task::JoinHandle<Result<(), apimon::health::HealthError>>,
    config: std::path::PathBuf,
    dir: tempfile::TempDir,
}

impl Service {
    /// Started on `rules` with nothing else configured.
    pub fn start(server: &InfluxServer, rules: &str) -> Self {
        Self::start_with(server, rules, "", "")
    }

    /// Started on `rules`, with `secrets` (the secrets file's lines) and
    /// `extra` lines of configuration.
    pub fn start_with(server: &InfluxServer, rules: &str, secrets: &str, extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let rules_file = dir.path().join("rules.yaml");
        std::fs::write(&rules_file, rules).expect("rules");
        let secrets_file = dir.path().join("secrets.yaml");
        std::fs::write(&secrets_file, secrets).expect("secrets");
        std::fs::set_permissions(
            &secrets_file,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .expect("mode");
        let port = free_port();
        let config = dir.path().join("health.yaml");
        std::fs::write(
            &config,
            format!(
                "environments: [outside]\ninfluxdb: {{url: '{}', database: apimon, username: admin, password: admin-pw}}\nlisten: 127.0.0.1:{port}\nrules_file: {}\nstate_dir: {}\nsecrets_file: {}\n{extra}",
                server.url(),
                rules_file.display(),
                dir.path().join("state").display(),
                secrets_file.display(),
            ),
        )
        .expect("config");
        let (controls, task) = Self::spawn(&config);
        let service = Self { port, controls, task, config, dir };
        service.ready();
        service
    }

    /// Waits until it listens; a service that stopped says why.
    fn ready(&self) {
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if self.task.is_finished() {
                let error = apimon::health::config::load(&self.config).err();
                panic!("the health service stopped at start: {error:?}");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("the health service does not listen on {}", self.port);
    }

    fn spawn(
        config: &std::path::Path,
    ) -> (
        mpsc::UnboundedSender<apimon::health::Control>,
        tokio::task::JoinHandle<Result<(), apimon::health::HealthError>>,
    ) {
        let (controls, receiver) = mpsc::unbounded_channel();
        (controls, tokio::spawn(apimon::health::run(config.to_owned(), receiver)))
    }

    /// Its state directory (incidents, outbox).
    pub fn state_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("state")
    }

    /// Stopped and started again on the same files.
    pub async fn restart(mut self) -> Self {
        self.controls.send(apimon::health::Control::Shutdown).expect("running");
        (&mut self.task).await.expect("join").expect("health service");
        // The listener goes with the service's runtime task: wait for the port.
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let (controls, task) = Self::spawn(&self.config);
        Self { controls, task, ..self }
    }

    /// Stops it.
    pub async fn stop(self) {
        self.controls.send(apimon::health::Control::Shutdown).expect("running");
        self.task.await.expect("join").expect("health service");
    }

    /// `GET path` as JSON.
    pub async fn get(&self, path: &str) -> serde_json::Value {
        match reqwest::get(format!("http://127.0.0.1:{}{path}", self.port)).await {
            Ok(answer) => answer.json().await.unwrap_or_default(),
            Err(_) => serde_json::Value::Null,
        }
    }
}
