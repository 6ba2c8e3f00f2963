//! `scenario_repository:` in apimon.yaml: the settings, checked before
//! anything is fetched ([`check_spec`]), and the scenarios discovered in
//! the fetched tree with the overrides applied ([`discover`]).

use std::collections::BTreeMap;

use super::checks::{glob_match, is_variable_name, parse_timeout};
use super::scenarios::playbook_problem;
use super::Check;
use crate::model::error::{Diagnostic, Location};
use crate::model::load::{Document, RawRepository};
use crate::model::{
    raw, Cleanup, Runner, Scenario, ScenarioRepository, DEFAULT_SCENARIO_TIMEOUT,
    SCENARIO_REPOSITORY_DIR,
};

const KEY: &str = "scenario_repository";

/// Longest glob apimon matches: matching costs its length times the path's.
pub(super) const MAX_GLOB_CHARS: usize = 256;
/// Most discovery patterns and overrides (each is matched against every file or name).
const MAX_PATTERNS: usize = 64;
const MAX_OVERRIDES: usize = 1_000;

/// The settings that must hold before apimon contacts the remote: a URL
/// git understands, exactly one of a full commit id or a branch name, and
/// discovery patterns that stay inside the repository.
pub fn check_spec(root: &Document<raw::Root>) -> Vec<Diagnostic> {
    let mut problems = Vec::new();
    let Some(spec) = &root.value.scenario_repository else { return problems };
    let mut error = |path: String, message: String| {
        problems.push(Diagnostic::new(root.at(&path), path, message));
    };
    let schemes = ["https://", "http://", "ssh://", "git://", "file://"];
    let scp_like = spec.url.split_once(':').is_some_and(|(host, _)| host.contains('@'));
    if spec.url.contains(|c: char| c.is_whitespace() || c.is_control())
        || !(schemes.iter().any(|s| spec.url.starts_with(s)) || scp_like)
    {
        error(
            format!("{KEY}.url"),
            format!(
                "invalid URL `{}`; expected https://, ssh://, git://, file:// or user@host:path",
                spec.url
            ),
        );
    }
    match (&spec.commit, &spec.branch) {
        (Some(_), Some(_)) => error(
            format!("{KEY}.branch"),
            "both `commit` and `branch`; expected one: a pinned commit or a followed branch"
                .to_owned(),
        ),
        (None, None) => error(
            KEY.to_owned(),
            "neither `commit` nor `branch`; expected a pinned commit or a followed branch"
                .to_owned(),
        ),
        (Some(commit), None) => {
            let hex = commit.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if !(hex && (commit.len() == 40 || commit.len() == 64)) {
                error(
                    format!("{KEY}.commit"),
                    format!("invalid commit `{commit}`; expected the full commit id (40 lowercase hex digits)"),
                );
            }
        }
        (None, Some(branch)) => {
            if !is_branch_name(branch) {
                error(format!("{KEY}.branch"), format!("invalid branch name `{branch}`"));
            }
        }
    }
    if spec.discover.len() > MAX_PATTERNS {
        error(
            format!("{KEY}.discover"),
            format!("{} patterns; expected at most {MAX_PATTERNS}", spec.discover.len()),
        );
    }
    if spec.overrides.len() > MAX_OVERRIDES {
        error(
            format!("{KEY}.overrides"),
            format!("{} overrides; expected at most {MAX_OVERRIDES}", spec.overrides.len()),
        );
    }
    if spec.discover.is_empty() {
        error(
            format!("{KEY}.discover"),
            "no patterns; expected at least one, like playbooks/scenario*.yaml".to_owned(),
        );
    }
    for (i, pattern) in spec.discover.iter().enumerate() {
        if pattern.len() > MAX_GLOB_CHARS {
            error(
                format!("{KEY}.discover[{i}]"),
                format!(
                    "pattern of {} characters; expected at most {MAX_GLOB_CHARS}",
                    pattern.len()
                ),
            );
        } else if pattern.is_empty()
            || pattern.starts_with('/')
            || pattern.split('/').any(|p| p == "..")
        {
            error(
                format!("{KEY}.discover[{i}]"),
                format!("pattern `{pattern}` leaves the repository; expected a path pattern relative to it"),
            );
        }
    }
    for (i, entry) in spec.overrides.iter().enumerate() {
        if entry.matches.len() > MAX_GLOB_CHARS {
            error(
                format!("{KEY}.overrides[{i}].match"),
                format!("{} characters; expected at most {MAX_GLOB_CHARS}", entry.matches.len()),
            );
        }
        if entry.matches.is_empty() {
            error(
                format!("{KEY}.overrides[{i}].match"),
                "empty; expected a scenario name or a glob like scenario_*".to_owned(),
            );
        }
    }
    problems
}

/// A branch name git accepts (`git check-ref-format --branch`, in short).
fn is_branch_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(['-', '/', '.'])
        && !name.ends_with(['/', '.'])
        && !name.ends_with(".lock")
        && !name.contains("..")
        && !name.contains("//")
        && !name.contains("@{")
        && !name.chars().any(|c| c.is_whitespace() || c.is_control() || "~^:?*[\\".contains(c))
}

/// The scenario name a discovered playbook gets: its file name without
/// the extension, lowercase, every other character than a letter, digit
/// or `_` turned into `_` (`scenario-1.yaml` → `scenario_1`).
pub(crate) fn scenario_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.strip_suffix(".yaml").or_else(|| file.strip_suffix(".yml")).unwrap_or(file);
    stem.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' })
        .collect()
}

/// One override entry with its values parsed once.
struct Override<'a> {
    raw: &'a raw::ScenarioOverride,
    timeout: Option<std::time::Duration>,
    cleanup: Option<Cleanup>,
}

/// The scenarios of the fetched scenario repository, added to `scenarios`
/// unless the main repository defines one of the same name (which then
/// replaces it whole), and the repository as the model keeps it.
pub(super) fn discover(
    check: &mut Check,
    repo: &RawRepository,
    scenarios: &mut BTreeMap<String, Scenario>,
) -> Option<ScenarioRepository> {
    let (Some(spec), Some(tree)) =
        (&repo.root.value.scenario_repository, &repo.scenario_repository)
    else {
        return None;
    };
    let root = &repo.root;
    let label = format!("{KEY}@{}", &tree.commit[..tree.commit.len().min(12)]);
    let overrides = parse_overrides(check, root, spec, tree, &label);
    let mut found: BTreeMap<String, &str> = BTreeMap::new();
    for (path, bytes) in &tree.files {
        let Some(index) = spec.discover.iter().position(|p| glob_match(p, path)) else { continue };
        let name = scenario_name(path);
        if let Some(first) = found.insert(name.clone(), path) {
            check.error(root, &format!("{KEY}.discover[{index}]"), format!("playbooks `{first}` and `{path}` both give scenario `{name}`; rename one or narrow the pattern"));
            continue;
        }
        if name.trim_matches('_').is_empty() {
            check.error(
                root,
                &format!("{KEY}.discover[{index}]"),
                format!("playbook `{path}` gives no usable scenario name"),
            );
            continue;
        }
        if repo.scenarios.contains_key(&name) {
            continue; // scenarios/<name>.yaml replaces it.
        }
        if let Some(problem) = playbook_problem(bytes) {
            check.problems.push(Diagnostic::new(
                Location::at(format!("{label}/{path}"), problem.line, problem.column),
                "",
                problem.message,
            ));
            continue;
        }
        scenarios.insert(name.clone(), scenario(&name, path, &overrides));
    }
    Some(ScenarioRepository {
        url: spec.url.clone(),
        branch: spec.commit.is_none().then(|| spec.branch.clone()).flatten(),
        commit: tree.commit.clone(),
        files: tree.files.clone(),
    })
}

fn parse_overrides<'a>(
    check: &mut Check,
    root: &Document<raw::Root>,
    spec: &'a raw::ScenarioRepository,
    tree: &crate::model::load::RawScenarioTree,
    label: &str,
) -> Vec<Override<'a>> {
    let mut parsed = Vec::new();
    for (index, entry) in spec.overrides.iter().enumerate() {
        let at = format!("{KEY}.overrides[{index}]");
        let timeout = entry.timeout.as_deref().and_then(|text| {
            let parsed = parse_timeout(text);
            if parsed.is_none() {
                check.error(root, &format!("{at}.timeout"), format!("invalid timeout `{text}`; expected a number with s, m or h, like 30s or 5m"));
            }
            parsed
        });
        let cleanup = entry.cleanup.as_ref().and_then(|cleanup| {
            let playbook = cleanup.playbook.trim_start_matches("./").to_owned();
            match tree.files.get(&playbook) {
                None => {
                    check.error(
                        root,
                        &format!("{at}.cleanup.playbook"),
                        format!(
                            "playbook `{playbook}` is not in the scenario repository at {label}"
                        ),
                    );
                    return None;
                }
                Some(bytes) => {
                    if let Some(problem) = playbook_problem(bytes) {
                        check.problems.push(Diagnostic::new(
                            Location::at(
                                format!("{label}/{playbook}"),
                                problem.line,
                                problem.column,
                            ),
                            "",
                            problem.message,
                        ));
                    }
                }
            }
            let timeout = match cleanup.timeout.as_deref() {
                None => DEFAULT_SCENARIO_TIMEOUT,
                Some(text) => {
                    let Some(timeout) = parse_timeout(text) else {
                        check.error(
                            root,
                            &format!("{at}.cleanup.timeout"),
                            format!("invalid timeout `{text}`; expected a number with s, m or h"),
                        );
                        return None;
                    };
                    timeout
                }
            };
            Some(Cleanup { playbook, timeout })
        });
        for name in entry.vars.keys() {
            if !is_variable_name(name) {
                check.error(root, &format!("{at}.vars.{name}"), format!("invalid variable name `{name}`; expected letters, digits and `_`, not starting with a digit"));
            }
        }
        parsed.push(Override { raw: entry, timeout, cleanup });
    }
    parsed
}

/// A discovered scenario: the defaults, then every matching override in order.
fn scenario(name: &str, playbook: &str, overrides: &[Override<'_>]) -> Scenario {
    let mut description = String::new();
    let mut timeout = DEFAULT_SCENARIO_TIMEOUT;
    let mut cloud = None;
    let mut extra_vars = BTreeMap::new();
    let mut vars = BTreeMap::new();
    let mut cleanup = None;
    for entry in overrides.iter().filter(|o| glob_match(&o.raw.matches, name)) {
        if let Some(text) = &entry.raw.description {
            description.clone_from(text);
        }
        timeout = entry.timeout.unwrap_or(timeout);
        if entry.raw.cloud.is_some() {
            cloud.clone_from(&entry.raw.cloud);
        }
        extra_vars.extend(entry.raw.extra_vars.iter().map(|(k, v)| (k.clone(), v.clone())));
        vars.extend(entry.raw.vars.iter().map(|(k, v)| (k.clone(), v.clone())));
        if entry.cleanup.is_some() {
            cleanup.clone_from(&entry.cleanup);
        }
    }
    // `-e` always wins: a name in both would make the inventory value dead.
    vars.retain(|k, _| !extra_vars.contains_key(k));
    Scenario {
        name: name.to_owned(),
        description,
        timeout,
        runner: Runner::Ansible {
            playbook: playbook.to_owned(),
            base_dir: Some(SCENARIO_REPOSITORY_DIR.to_owned()),
            cloud,
            extra_vars,
            vars,
            cleanup,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn playbook_file_names_become_scenario_names() {
        assert_eq!(scenario_name("playbooks/scenario1_token.yaml"), "scenario1_token");
        assert_eq!(scenario_name("playbooks/scenario-Nova.Boot.yml"), "scenario_nova_boot");
        assert_eq!(scenario_name("x.yaml"), "x");
    }

    #[test]
    fn branch_names_follow_git_rules() {
        for good in ["main", "release/2026.12", "feature-x"] {
            assert!(is_branch_name(good), "{good}");
        }
        for bad in ["", "-x", "a..b", "a b", "a:b", "x.lock", "a/", "/a", "a~1", "a@{1}"] {
            assert!(!is_branch_name(bad), "{bad}");
        }
    }
}
