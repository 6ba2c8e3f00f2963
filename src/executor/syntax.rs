//! After each rollout (start, and a reload that changes the scenarios or
//! the runner), every scheduled playbook is checked with
//! `ansible-playbook --syntax-check` under the executor's runtime: a
//! playbook it cannot load (an unknown module or collection, bad YAML) is
//! reported at once — in `/metrics` and the health point — instead of
//! showing only as `error` runs.

use std::collections::BTreeMap;
use std::time::Duration;

use super::ansible;
use super::config::{Config, RunnerConfig};
use super::rundir::RunDir;

/// The report's name in the runs directory (`layout::UNLOADABLE_REPORT`
/// on a host apimon set up).
pub const REPORT_FILE: &str = ".unloadable.json";

/// Writes what a check found where the daemon reads it; a failure is
/// logged (the health point and `/metrics` still say it).
pub fn write_report(runs_dir: &std::path::Path, unloadable: &BTreeMap<String, String>) {
    let path = runs_dir.join(REPORT_FILE);
    let json = serde_json::to_vec(unloadable).unwrap_or_else(|_| b"{}".to_vec());
    if let Err(error) = crate::fsutil::write_private(&path, &json, 0o644) {
        tracing::warn!(path = %path.display(), error = %error, "Cannot write the syntax check's report for the daemon.");
    }
}

/// How long one check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(120);
/// Characters of Ansible's complaint kept.
const MESSAGE_CHARS: usize = 300;

/// What a check needs to know: the rollout it checks, down to each
/// playbook file's size and modification time (a playbook written after
/// executor.yaml is checked again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollout {
    scenarios: Vec<(String, RunnerConfig)>,
    runner: std::path::PathBuf,
    scenarios_dir: std::path::PathBuf,
    files: Vec<Option<(u64, std::time::SystemTime)>>,
}

impl Rollout {
    /// The playbooks `config` schedules and the runner they run with.
    pub fn of(config: &Config) -> Self {
        Self {
            scenarios: config
                .scenarios
                .values()
                .filter(|s| matches!(s.runner, RunnerConfig::Ansible { .. }))
                .map(|s| (s.name.clone(), s.runner.clone()))
                .collect(),
            runner: config.runners.ansible_playbook.clone(),
            scenarios_dir: config.runners.scenarios_dir.clone(),
            files: config
                .scenarios
                .values()
                .filter_map(|s| match &s.runner {
                    RunnerConfig::Ansible { playbook, base_dir, .. } => {
                        let tree = base_dir
                            .as_deref()
                            .map_or(config.runners.scenarios_dir.clone(), std::path::PathBuf::from);
                        let meta = std::fs::metadata(tree.join(playbook)).ok();
                        Some(meta.and_then(|m| Some((m.len(), m.modified().ok()?))))
                    }
                    RunnerConfig::Http { .. } => None,
                })
                .collect(),
        }
    }
}

/// The scenarios of `config` whose playbook Ansible cannot load, with the
/// end of its complaint.
pub async fn check(config: &Config) -> BTreeMap<String, String> {
    let mut unloadable = BTreeMap::new();
    let work = config.runners.runs_dir.join(".syntax-check");
    if let Err(error) = std::fs::create_dir_all(&work) {
        tracing::warn!(dir = %work.display(), %error, "Cannot check the playbooks' syntax.");
        return unloadable;
    }
    let run = RunDir { job_id: "syntax-check".to_owned(), path: work };
    for scenario in config.scenarios.values() {
        let RunnerConfig::Ansible { playbook, base_dir, cloud, extra_vars, .. } = &scenario.runner
        else {
            continue;
        };
        let variables = ansible::Variables {
            cloud: cloud.as_deref(),
            extra_vars,
            inventory: None,
            base_dir: base_dir.as_deref().map(std::path::Path::new),
        };
        let mut command =
            ansible::command(&config.runners, &scenario.name, playbook, &variables, &run, None);
        command.arg("--syntax-check");
        let outcome = tokio::time::timeout(CHECK_TIMEOUT, command.output()).await;
        let problem = match outcome {
            Ok(Ok(output)) if output.status.success() => None,
            Ok(Ok(output)) => Some(complaint(&output.stderr, &output.stdout)),
            Ok(Err(error)) => {
                Some(format!("cannot start {}: {error}", config.runners.ansible_playbook.display()))
            }
            Err(_) => Some(format!("no answer within {} s", CHECK_TIMEOUT.as_secs())),
        };
        if let Some(problem) = problem {
            tracing::warn!(scenario = %scenario.name, playbook = %playbook, problem = %problem, "Ansible cannot load this playbook; its runs will be errors.");
            unloadable.insert(scenario.name.clone(), problem);
        }
    }
    unloadable
}

/// Ansible's message from its error line on (`ERROR!` before
/// ansible-core 2.19, `[ERROR]:` since; what follows says which module or
/// line), past the warnings Python and Ansible print before it, at most
/// [`MESSAGE_CHARS`].
fn complaint(stderr: &[u8], stdout: &[u8]) -> String {
    let text = String::from_utf8_lossy(if stderr.is_empty() { stdout } else { stderr });
    let start = ["ERROR!", "[ERROR]:"].iter().filter_map(|m| text.find(m)).min().unwrap_or(0);
    let message: String = text[start..].split_whitespace().collect::<Vec<_>>().join(" ");
    message.chars().take(MESSAGE_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_complaint_starts_at_ansibles_error() {
        let stderr = b"[WARNING]: noise\nERROR! couldn't resolve module/action 'x.y.z'.\n\nThe error appears to be in '/p.yaml': line 5\n";
        assert_eq!(
            complaint(stderr, b""),
            "ERROR! couldn't resolve module/action 'x.y.z'. The error appears to be in '/p.yaml': line 5"
        );
        let stderr = b"/venv/_ssh_agent.py:18: CryptographyDeprecationWarning: DSA is deprecated\n  from cryptography import (\n[ERROR]: couldn't resolve module/action 'no_such.collection.module'.\nOrigin: /p.yaml:4:7\n";
        assert_eq!(
            complaint(stderr, b""),
            "[ERROR]: couldn't resolve module/action 'no_such.collection.module'. Origin: /p.yaml:4:7"
        );
    }
}
