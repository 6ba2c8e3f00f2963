//! Where apimon's files live on the hosts it manages (and on the bastion
//! its daemon runs on): one definition each, for the templates, the
//! providers, bootstrap and the daemon's and executor's defaults.

/// The apimon account's home and the state directory: the daemon's state
/// store and commit exports, the executor's runs and results buffer.
pub const STATE_DIR: &str = "/var/lib/apimon";
/// The daemon's SSH key for the bastion and the hosts.
pub const SSH_KEY_PATH: &str = "/var/lib/apimon/.ssh/id_ed25519";
/// The executor's run directories.
pub const RUNS_DIR: &str = "/var/lib/apimon/runs";
/// The executor's buffer of results not yet written.
pub const RESULTS_BUFFER_DIR: &str = "/var/lib/apimon/results";
/// The daemon's secrets file.
pub const SECRETS_PATH: &str = "/etc/apimon/secrets.yaml";
/// The executor's configuration (rendered by apimon).
pub const EXECUTOR_CONFIG_PATH: &str = "/etc/apimon/executor.yaml";
/// The executor's availability zone, as Nova put its server (written by
/// apimon when the repository leaves the zone to Nova).
pub const EXECUTOR_ZONE_PATH: &str = "/etc/apimon/zone";
/// What the executor's last syntax check found, by scenario (JSON, in
/// its runs directory): the daemon reads it when it observes the host, so
/// `/status` names the playbooks an executor's runtime cannot load.
pub const UNLOADABLE_REPORT: &str = "/var/lib/apimon/runs/.unloadable.json";
/// Where the health service listens unless configured: loopback.
pub const HEALTH_LISTEN: &str = "127.0.0.1:8190";
/// The daemon's clouds.yaml.
pub const CLOUDS_PATH: &str = "/etc/apimon/clouds.yaml";
/// The daemon's approval token (the bearer token of `POST /approve`): a
/// trust anchor `apimon bootstrap --approval-token` installs, never
/// rendered from the repository.
pub const APPROVAL_TOKEN_PATH: &str = "/etc/apimon/approval_token";
/// The trust store's OpenSSH allowed signers (`apimon bootstrap
/// --allowed-signers`): while present, the daemon takes signed commits only.
pub const ALLOWED_SIGNERS_PATH: &str = "/etc/apimon/allowed_signers";
/// The trust store's allowed signers of scenario commits (`apimon
/// bootstrap --scenario-signers`): while present, the daemon takes signed
/// scenario commits only.
pub const SCENARIO_SIGNERS_PATH: &str = "/etc/apimon/scenario_allowed_signers";
/// The trust store's release key (`apimon bootstrap --release-key`):
/// while present, only releases it signed are installed.
pub const RELEASE_KEY_PATH: &str = "/etc/apimon/release_key.pub";
/// The daemon's known_hosts (hosts and the git server).
pub const KNOWN_HOSTS_PATH: &str = "/etc/apimon/known_hosts";
/// Where scenario runtimes live on the executor.
pub const RUNTIME_BASE: &str = "/opt/apimon/runtime";
/// The `ansible-playbook` of the runtime in service.
pub const ANSIBLE_PLAYBOOK: &str = "/opt/apimon/runtime/current/bin/ansible-playbook";
