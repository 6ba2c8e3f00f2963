//! How a playbook run is started: its environment (job id, run directory,
//! clouds, the scenario tree's `ansible.cfg`), the callback plugin apimon
//! ships, and openstacksdk's metrics pointed at the executor.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use super::config::RunnerSettings;
use super::ingest::RunTags;
use super::rundir::RunDir;

/// The callback plugin (see docs/metrics.md): one point per task and host,
/// one per playbook.
pub const CALLBACK_PLUGIN: &str = include_str!("apimon_tasks.py");

/// Its file name in [`RunnerSettings::plugins_dir`].
const CALLBACK_FILE: &str = "apimon_tasks.py";

/// The file in a run's directory where openstacksdk's metrics are configured.
const METRICS_FILE: &str = "openstack-metrics.yaml";

/// Writes the callback plugin unless it is there already, unchanged.
///
/// # Errors
/// The directory or file cannot be written.
pub fn ensure_callback_plugin(dir: &Path) -> std::io::Result<()> {
    let path = dir.join(CALLBACK_FILE);
    if std::fs::read_to_string(&path).is_ok_and(|text| text == CALLBACK_PLUGIN) {
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    let temporary = dir.join(format!(".{CALLBACK_FILE}.tmp"));
    std::fs::write(&temporary, CALLBACK_PLUGIN)?;
    std::fs::rename(&temporary, &path)
}

/// The paths an `ansible.cfg` sets for `key` in `[defaults]` (a list split
/// at `separator`), made absolute against its directory (Ansible resolves a
/// config file's relative paths there; passed in the environment or on the
/// command line they would be taken from the run's directory).
pub fn configured_paths(ansible_cfg: &Path, key: &str, separator: char) -> Vec<PathBuf> {
    let wanted = key;
    let Ok(text) = crate::fsutil::read_text_limited(ansible_cfg, crate::fsutil::MAX_CONFIG_BYTES)
    else {
        return Vec::new();
    };
    let base = ansible_cfg.parent().unwrap_or(Path::new("/"));
    let mut in_defaults = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_defaults = line == "[defaults]";
            continue;
        }
        let Some((key, value)) = line.split_once('=') else { continue };
        if in_defaults && key.trim() == wanted {
            return value
                .split(separator)
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
                    match p.strip_prefix("~/") {
                        Some(rest) => home.join(rest),
                        None => base.join(p),
                    }
                })
                .collect();
        }
    }
    Vec::new()
}

/// Ansible's own default callback plugin paths (replaced, not extended,
/// when `ANSIBLE_CALLBACK_PLUGINS` is set).
fn default_callback_paths() -> Vec<PathBuf> {
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
    vec![
        home.join(".ansible/plugins/callback"),
        PathBuf::from("/usr/share/ansible/plugins/callback"),
    ]
}

/// Writes the run's openstacksdk metrics configuration, merged by
/// openstacksdk over the clouds file (`OS_CLIENT_SECURE_FILE`): InfluxDB
/// writes to the executor, the run named in the database.
///
/// # Errors
/// The file cannot be written.
pub fn write_metrics_config(
    run: &RunDir,
    scenario: &str,
    endpoint: SocketAddr,
    token: &str,
) -> std::io::Result<PathBuf> {
    // `measurement` always set: openstacksdk 4.21+ otherwise writes to
    // `None.<service>`. `timeout` at the top level: per-cloud values are
    // turned into strings, which the InfluxDB client then refuses.
    let config = serde_json::json!({
        "clouds": {},
        "metrics": {"influxdb": {
            // The InfluxDB client puts the host into a URL as it is.
            "host": match endpoint.ip() {
                std::net::IpAddr::V6(ip) => format!("[{ip}]"),
                std::net::IpAddr::V4(ip) => ip.to_string(),
            },
            "port": endpoint.port(),
            "use_udp": false,
            "database": RunTags::database(scenario, &run.job_id),
            // The run's own credential: the listener takes no other.
            "username": "apimon-run",
            "password": token,
            "measurement": "openstack_api",
            "timeout": 2,
        }}
    });
    let path = run.path.join(METRICS_FILE);
    // Only the executor's account reads the run's credential.
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
    file.write_all(config.to_string().as_bytes())?;
    Ok(path)
}

/// Writes the run's inventory: `localhost` as Ansible's implicit one is
/// (local connection, the controller's Python), and the scenario's `vars`
/// as `all` group variables — inventory precedence, so a playbook's own
/// vars and `set_fact` win, unlike `-e`.
///
/// # Errors
/// The file cannot be written.
pub fn write_inventory(
    run: &RunDir,
    vars: &BTreeMap<String, serde_json::Value>,
) -> std::io::Result<PathBuf> {
    let inventory = serde_json::json!({"all": {
        "hosts": {"localhost": {
            "ansible_connection": "local",
            "ansible_python_interpreter": "{{ ansible_playbook_python }}",
        }},
        "vars": vars,
    }});
    // JSON is YAML; the `.yaml` suffix picks Ansible's YAML inventory plugin.
    let path = run.path.join("inventory.yaml");
    std::fs::write(&path, inventory.to_string())?;
    Ok(path)
}

/// What a run passes to its playbook besides the environment.
#[derive(Debug, Clone, Copy)]
pub struct Variables<'a> {
    /// `OS_CLOUD`.
    pub cloud: Option<&'a str>,
    /// `-e` variables.
    pub extra_vars: &'a BTreeMap<String, String>,
    /// The run's inventory ([`write_inventory`]), when the scenario has vars.
    pub inventory: Option<&'a Path>,
    /// The playbook's tree (where its `ansible.cfg` is), when it is not
    /// the executor's `scenarios_dir`.
    pub base_dir: Option<&'a Path>,
}

/// The `ansible-playbook` command of one run of `playbook` (the run's own
/// or its cleanup), in its own process group.
pub fn command(
    settings: &RunnerSettings,
    scenario: &str,
    playbook: &str,
    variables: &Variables<'_>,
    run: &RunDir,
    metrics_config: Option<&Path>,
) -> tokio::process::Command {
    let tree = variables.base_dir.unwrap_or(&settings.scenarios_dir);
    let mut command = tokio::process::Command::new(&settings.ansible_playbook);
    command
        .arg(tree.join(playbook))
        .current_dir(&run.path)
        .env("PWD", &run.path)
        .env("TASK_EXECUTOR_JOB_ID", &run.job_id)
        .env("APIMON_JOB_ID", &run.job_id)
        .env("APIMON_SCENARIO", scenario)
        .env("APIMON_RUN_DIR", &run.path)
        .env("OS_CLIENT_CONFIG_FILE", &settings.clouds_file)
        .env("ANSIBLE_NOCOLOR", "1")
        .env("ANSIBLE_RETRY_FILES_ENABLED", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(cloud) = variables.cloud {
        command.env("OS_CLOUD", cloud);
    }
    if let Some(path) = metrics_config {
        command.env("OS_CLIENT_SECURE_FILE", path);
    }
    if !variables.extra_vars.is_empty() {
        command.arg("-e").arg(serde_json::to_string(variables.extra_vars).unwrap_or_default());
    }
    // The scenario tree's own settings (roles_path, library, callbacks,
    // inventory), its relative paths taken from the file's directory.
    let ansible_cfg = tree.join("ansible.cfg");
    let mut callback_paths = vec![settings.plugins_dir()];
    let has_cfg = ansible_cfg.is_file();
    if has_cfg {
        command.env("ANSIBLE_CONFIG", &ansible_cfg);
        callback_paths.extend(configured_paths(&ansible_cfg, "callback_plugins", ':'));
    }
    if let Some(inventory) = variables.inventory {
        // `-i` replaces the configured inventory: keep the tree's own first.
        if has_cfg {
            for configured in configured_paths(&ansible_cfg, "inventory", ',') {
                command.arg("-i").arg(configured);
            }
        }
        command.arg("-i").arg(inventory);
    }
    callback_paths.extend(default_callback_paths());
    if let Ok(joined) = std::env::join_paths(callback_paths) {
        command.env("ANSIBLE_CALLBACK_PLUGINS", joined);
    }
    command
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trees_callback_plugins_are_kept_and_made_absolute() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cfg = dir.path().join("ansible.cfg");
        std::fs::write(
            &cfg,
            "[ssh_connection]\ncallback_plugins = nope\n[defaults]\nroles_path = roles\ncallback_plugins = plugins/callback:/opt/cb\n",
        )
        .expect("write");
        assert_eq!(
            configured_paths(&cfg, "callback_plugins", ':'),
            vec![dir.path().join("plugins/callback"), PathBuf::from("/opt/cb")]
        );
        std::fs::write(&cfg, "[defaults]\nroles_path = roles\ninventory = inventory/, hosts.ini\n")
            .expect("write");
        assert!(configured_paths(&cfg, "callback_plugins", ':').is_empty());
        assert_eq!(
            configured_paths(&cfg, "inventory", ','),
            vec![dir.path().join("inventory/"), dir.path().join("hosts.ini")]
        );
    }

    #[test]
    fn the_plugin_is_written_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        ensure_callback_plugin(dir.path()).expect("write");
        let path = dir.path().join(CALLBACK_FILE);
        assert_eq!(std::fs::read_to_string(&path).expect("read"), CALLBACK_PLUGIN);
        let before = std::fs::metadata(&path).and_then(|m| m.modified()).expect("mtime");
        ensure_callback_plugin(dir.path()).expect("again");
        assert_eq!(std::fs::metadata(&path).and_then(|m| m.modified()).expect("mtime"), before);
    }
}
