//! Shared harness for the integration tests: builds desired-state
//! repositories in temporary directories and runs the `apimon` binary.
//!
//! Services (InfluxDB, sshd, git, OpenStack) are started from here too as
//! the providers that need them arrive; each on a free loopback port in a
//! temporary directory, stopped when its guard drops.

#![allow(dead_code)]

pub mod daemon;
pub mod executor;
pub mod git;
pub mod git_http;
pub mod grafana;
pub mod harness;
pub mod health;
pub mod host;
pub mod hostile;
pub mod influxdb;
pub mod netns;
pub mod notify;
pub mod openstack;
pub mod process;
pub mod sshd;
pub mod swift;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A free TCP port on 127.0.0.1 (bound and released; good enough for tests
/// that start a server right away).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Whether missing services must fail the run rather than skip it.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Polls `check` until it answers `Some` (every 20 ms), for at most
/// `timeout`; then fails the test with `what` and what `context` says.
pub fn eventually<T>(
    what: &str,
    timeout: std::time::Duration,
    mut check: impl FnMut() -> Option<T>,
    context: impl Fn() -> String,
) -> T {
    let start = std::time::Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {what}: {}", context());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// [`eventually`] for an async `check` (polled every 50 ms).
pub async fn eventually_async<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    timeout: std::time::Duration,
    mut check: impl FnMut() -> F,
    context: impl Fn() -> String,
) -> T {
    let start = std::time::Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {what}: {}", context());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Waits until something listens on 127.0.0.1:`port`.
pub fn wait_listening(
    what: &str,
    port: u16,
    timeout: std::time::Duration,
    context: impl Fn() -> String,
) {
    let listening = || std::net::TcpStream::connect(("127.0.0.1", port)).ok().map(drop);
    eventually(&format!("{what} to listen on port {port}"), timeout, listening, context);
}

/// Records that the running test skips for `reason`: a failure in CI
/// (`CI=true`), else a `SKIPPED:` line and a line in `$APIMON_SKIP_LOG`,
/// which `scripts/test.sh` counts (libtest shows a skipped test as passed
/// and hides its output).
pub fn skip(reason: &str) {
    assert!(!in_ci(), "{reason}: in CI a missing service is a failure");
    eprintln!("SKIPPED: {reason}");
    if let Some(log) = std::env::var_os("APIMON_SKIP_LOG") {
        let test = std::thread::current().name().unwrap_or("unnamed test").to_owned();
        let line = format!("{test}: {}\n", reason.replace('\n', " "));
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .and_then(|mut file| std::io::Write::write_all(&mut file, line.as_bytes()));
        if let Err(error) = appended {
            eprintln!("cannot record the skip in APIMON_SKIP_LOG: {error}");
        }
    }
}

/// The path of `binary` on PATH (or /usr/sbin, /usr/bin). In CI a missing
/// binary panics; elsewhere the test is skipped with a loud message.
pub fn require_binary(binary: &str, debian_package: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(binary))
        .find(|candidate| candidate.is_file());
    if found.is_none() {
        skip(&format!("{binary} is not installed (Debian package {debian_package}; scripts/test.sh installs it)"));
    }
    found
}

/// An ed25519 key pair made by the real `ssh-keygen` in `dir`, named and
/// commented `name`: (private key file, public key line); `None` (skip)
/// without ssh-keygen.
pub fn ssh_key_pair(dir: &std::path::Path, name: &str) -> Option<(PathBuf, String)> {
    let keygen = require_binary("ssh-keygen", "openssh-client")?;
    let key = dir.join(name);
    let made = std::process::Command::new(keygen)
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&key)
        .status()
        .expect("ssh-keygen");
    assert!(made.success());
    let mut public = key.clone().into_os_string();
    public.push(".pub");
    let public = std::fs::read_to_string(public).expect("public key");
    Some((key, public))
}

/// A small but complete repository with two environments.
pub const APIMON_YAML: &str = r#"project: apimon
defaults:
  max_deletes: 5
environments:
  outside:
    location: outside
    cloud: apimon-outside
    monitored_clouds:
      production:
        auth_url: https://iam.example.test/v3
        project_name: monitoring
        username: apimon-probe
        password: {secret: outside_probe_password}
    influxdb:
      url: http://192.168.10.30:8086
      admin_user: admin
      results_database: apimon
      results_user: telegraf
    grafana:
      url: http://192.168.10.40:3000
      token: {secret: outside_grafana_token}
  inside:
    location: inside
    cloud: apimon-inside
    influxdb:
      url: http://192.168.20.30:8086
      admin_user: admin
      results_database: apimon
      results_user: telegraf
"#;

/// hosts.yaml for environment `env` with third octet `net`.
pub fn hosts_yaml(env: &str, net: u8) -> String {
    let executor = if env == "outside" {
        format!(
            "  - name: {env}-executor\n    role: executor\n    flavor: s3.medium.2\n    image: Ubuntu 24.04\n    keypair: {env}-key\n    networks: [{env}-net]\n    address: 192.168.{net}.20\n    security_groups: [{env}-ssh]\n  - name: {env}-grafana\n    role: grafana\n    flavor: s3.medium.2\n    image: Ubuntu 24.04\n    keypair: {env}-key\n    networks: [{env}-net]\n    address: 192.168.{net}.40\n"
        )
    } else {
        String::new()
    };
    format!(
        "hosts:\n  - name: {env}-bastion\n    role: bastion\n    flavor: s3.small.1\n    image: Ubuntu 24.04\n    keypair: {env}-key\n    networks: [{env}-net]\n    address: 192.168.{net}.10\n    security_groups: [{env}-ssh]\n    floating_ip: {{network: ext}}\n  - name: {env}-influxdb\n    role: influxdb\n    flavor: s3.large.2\n    image: Ubuntu 24.04\n    keypair: {env}-key\n    networks: [{env}-net]\n    address: 192.168.{net}.30\n    volumes:\n      - {{name: data, size_gb: 50}}\n{executor}"
    )
}

/// The files of the fixture repository: (relative path, content).
pub fn fixture_files() -> Vec<(String, String)> {
    let mut files = vec![("apimon.yaml".to_owned(), APIMON_YAML.to_owned())];
    for (env, net) in [("outside", 10u8), ("inside", 20u8)] {
        let dir = format!("inventory/{env}");
        files.push((format!("{dir}/hosts.yaml"), hosts_yaml(env, net)));
        files.push((
            format!("{dir}/keypairs.yaml"),
            format!("keypairs:\n  - name: {env}-key\n    public_key: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG7mB9bJ5cXf0cS2qkJ3pQy8nT4uV1wX2yZ3aB4cD5eF apimon@{env}\n"),
        ));
        files.push((
            format!("{dir}/security_groups.yaml"),
            format!("security_groups:\n  - name: {env}-ssh\n    description: SSH\n    rules:\n      - {{protocol: tcp, ports: 22, remote_ip_prefix: 0.0.0.0/0}}\n"),
        ));
        files.push((
            format!("{dir}/networks.yaml"),
            format!("networks:\n  - name: {env}-net\n    subnets:\n      - {{name: {env}-subnet, cidr: 192.168.{net}.0/24}}\n  - name: ext\n    external: true\n"),
        ));
        files.push((
            format!("{dir}/influxdb.yaml"),
            format!("databases:\n  - name: apimon\n    retention_policies:\n      - {{name: four_weeks, duration: 4w, default: true}}\nusers:\n  - name: admin\n    admin: true\n    password: {{secret: {env}_influxdb_admin_password}}\n  - name: telegraf\n    password: {{secret: {env}_influxdb_telegraf_password}}\n    grants:\n      - {{database: apimon, privilege: WRITE}}\n  - name: grafana\n    password: {{secret: {env}_influxdb_grafana_password}}\n    grants:\n      - {{database: apimon, privilege: READ}}\n"),
        ));
    }
    files.push((
        "inventory/outside/grafana.yaml".to_owned(),
        "folders:\n  - {uid: apimon, title: API Monitoring}\ndatasources:\n  - {name: apimon-outside, database: apimon, user: grafana, default: true}\n  - {name: apimon-inside, environment: inside, database: apimon, user: grafana}\n".to_owned(),
    ));
    files.push((
        "scenarios/list_servers.yaml".to_owned(),
        "description: list servers\ntimeout: 2m\nansible:\n  playbook: playbooks/list_servers.yaml\n  cloud: production\n".to_owned(),
    ));
    files.push((
        "scenarios/playbooks/list_servers.yaml".to_owned(),
        "- hosts: localhost\n  gather_facts: false\n  tasks:\n    - name: list servers\n      openstack.cloud.server_info:\n      register: servers\n".to_owned(),
    ));
    files.push((
        "scenarios/iam_probe.yaml".to_owned(),
        "http:\n  url: https://iam.example.test/v3\n  expect_status: 200\n".to_owned(),
    ));
    files.push((
        "scenarios/schedule.yaml".to_owned(),
        "schedule:\n  - scenario: list_servers\n    environments: [outside]\n    cron: \"*/5 * * * *\"\n  - scenario: iam_probe\n    environments: [outside]\n    cron: \"* * * * *\"\n".to_owned(),
    ));
    files.push((
        "dashboards/apimon/scenarios.json".to_owned(),
        "{\n  \"uid\": \"apimon-scenarios\",\n  \"title\": \"Scenarios\",\n  \"tags\": [\"apimon\"],\n  \"panels\": []\n}\n".to_owned(),
    ));
    files
}

/// The fixture without Grafana in `outside` (no grafana host, endpoint or
/// objects): for tests about other providers, so that no Grafana is needed.
pub fn fixture_files_without_grafana() -> Vec<(String, String)> {
    fixture_files()
        .into_iter()
        .filter(|(path, _)| path != "inventory/outside/grafana.yaml")
        .map(|(path, text)| {
            let text = match path.as_str() {
                "apimon.yaml" => text.replace("    grafana:\n      url: http://192.168.10.40:3000\n      token: {secret: outside_grafana_token}\n", ""),
                "inventory/outside/hosts.yaml" => match text.find("  - name: outside-grafana\n") {
                    Some(start) => text[..start].to_owned(),
                    None => text,
                },
                _ => text,
            };
            (path, text)
        })
        .collect()
}

/// Every secret the fixture references, with a value.
pub fn fixture_secrets() -> String {
    let mut text =
        String::from("outside_probe_password: probe-pw\noutside_grafana_token: glsa_token\n");
    for env in ["outside", "inside"] {
        for user in ["admin", "telegraf", "grafana"] {
            text.push_str(&format!("{env}_influxdb_{user}_password: {env}-{user}-pw\n"));
        }
    }
    text
}

/// The secrets `outside` needs when planned alone: its own, and the
/// password of the inside InfluxDB user its Grafana datasource logs in with.
pub fn outside_secrets() -> String {
    fixture_secrets()
        .lines()
        .filter(|l| !l.starts_with("inside_") || l.starts_with("inside_influxdb_grafana_password:"))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// `apimon render --env outside` of `repo` into a temporary directory,
/// expecting success.
pub fn render_outside(repo: &TestRepo) -> tempfile::TempDir {
    let out = tempfile::tempdir().expect("temp dir");
    let output = apimon(&[
        "render",
        "--repo",
        &repo.path().to_string_lossy(),
        "--env",
        "outside",
        "--out",
        &out.path().to_string_lossy(),
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output).1);
    out
}

/// A repository in a temporary directory.
pub struct TestRepo {
    dir: tempfile::TempDir,
}

impl TestRepo {
    /// The fixture repository.
    pub fn fixture() -> Self {
        Self::with_files(fixture_files())
    }

    /// A repository of `files`.
    pub fn with_files(files: Vec<(String, String)>) -> Self {
        let repo = Self { dir: tempfile::tempdir().expect("create temp dir") };
        for (path, content) in files {
            repo.write(&path, &content);
        }
        repo
    }

    /// Root directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes (or replaces) a file.
    pub fn write(&self, rel: &str, content: &str) {
        let path = self.dir.path().join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create dir");
        }
        std::fs::write(path, content).expect("write file");
    }

    /// Replaces `from` with `to` in a file; panics if `from` is absent, so
    /// a test cannot silently edit nothing.
    pub fn edit(&self, rel: &str, from: &str, to: &str) {
        let path = self.dir.path().join(rel);
        let text = std::fs::read_to_string(&path).expect("read file");
        assert!(text.contains(from), "{rel} does not contain {from:?}");
        std::fs::write(path, text.replacen(from, to, 1)).expect("write file");
    }

    /// Writes a secrets file with `mode` and returns its path.
    pub fn secrets_file(&self, text: &str, mode: u32) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self.dir.path().join("secrets.yaml");
        std::fs::write(&path, text).expect("write secrets");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        path
    }
}

/// The apimon binary with `args`, without inheriting APIMON_* variables.
pub fn apimon_command(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_apimon"));
    command.args(args);
    for (key, _) in std::env::vars() {
        if key.starts_with("APIMON_") {
            command.env_remove(key);
        }
    }
    command
}

/// Runs the apimon binary with `args`, without inheriting APIMON_* variables.
pub fn apimon(args: &[&str]) -> Output {
    apimon_command(args).output().expect("run apimon")
}

/// stdout and stderr as text.
pub fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The lines a child process writes, read as they come (a thread per stream).
pub struct LogLines {
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl LogLines {
    /// Reads `stream` line by line in the background.
    pub fn follow(stream: impl std::io::Read + Send + 'static) -> Self {
        use std::io::BufRead;
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = std::sync::Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stream).lines().map_while(Result::ok) {
                if let Ok(mut lines) = sink.lock() {
                    lines.push(line);
                }
            }
        });
        Self { lines }
    }

    /// Everything so far, one string.
    pub fn text(&self) -> String {
        self.lines.lock().map(|l| l.join("\n")).unwrap_or_default()
    }

    /// Waits until a line contains `needle`; returns everything so far.
    pub fn wait_for(&self, needle: &str, timeout: std::time::Duration) -> String {
        let start = std::time::Instant::now();
        loop {
            let text = self.text();
            if text.contains(needle) {
                return text;
            }
            assert!(start.elapsed() < timeout, "no line with {needle:?} yet:\n{text}");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// `outside` of the repository at `repo`, prepared for a live plan with
/// this machine's defaults.
pub fn prepare_outside(
    repo: &Path,
    secrets: &apimon::model::Secrets,
) -> apimon::reconcile::Prepared {
    let machine = apimon::machine::Machine::from_env();
    let target = apimon::reconcile::Target::Live(&machine);
    apimon::reconcile::prepare(
        repo,
        &["outside".to_owned()],
        secrets,
        target,
        &apimon::model::load::NoFetch,
    )
    .expect("prepare")
}

/// `python3 -m http.server` serving `dir` on a free loopback port; stopped on drop.
pub struct FileServer {
    child: std::process::Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl FileServer {
    /// Serves `dir`; `None` (skip) outside CI without python3.
    pub fn start(dir: &Path) -> Option<Self> {
        let python = require_binary("python3", "python3")?;
        let port = free_port();
        let child = process::spawn(
            std::process::Command::new(python)
                .args([
                    "-m",
                    "http.server",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--directory",
                ])
                .arg(dir)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null()),
            "http.server",
        );
        wait_listening("http.server", port, std::time::Duration::from_secs(20), String::new);
        Some(Self { child, port })
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        process::stop(&mut self.child);
    }
}

/// `systemd-analyze verify` of the unit file at `path` (named `unit`):
/// panics with its findings about this unit. Findings about other units
/// installed on this machine ("keystone.service: …") do not count: ours
/// name our file by path, or our unit by name.
pub fn systemd_verify(analyze: &Path, path: &Path, unit: &str) {
    let output = std::process::Command::new(analyze)
        .args(["verify", "--man=no"])
        .arg(path)
        .output()
        .expect("systemd-analyze");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let other_unit = |line: &&str| {
        let first = line.split(':').next().unwrap_or_default();
        !first.contains('/')
            && first != unit
            && [".service", ".target", ".socket", ".mount"].iter().any(|s| first.ends_with(s))
    };
    let ours: Vec<&str> = stderr.lines().filter(|line| !other_unit(line)).collect();
    assert!(output.status.success() && ours.is_empty(), "{unit}: {stderr}");
}
