//! `scenarios/<name>.yaml`: each scenario's timeout and runner (a
//! playbook that exists and is YAML, or an HTTP probe).

use std::collections::BTreeMap;

use super::checks::{is_http_url, is_variable_name, names_list, parse_timeout};
use super::Check;
use crate::model::error::{Diagnostic, Location};
use crate::model::load::{Document, RawRepository};
use crate::model::{raw, Cleanup, Runner, Scenario, DEFAULT_SCENARIO_TIMEOUT};

pub(super) fn check(check: &mut Check, repo: &RawRepository) -> BTreeMap<String, Scenario> {
    let mut scenarios = BTreeMap::new();
    for (name, doc) in &repo.scenarios {
        let raw_scenario = &doc.value;
        if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
            check.error(doc, "", format!("invalid scenario name `{name}` (the file name); expected lowercase letters, digits and `_`"));
        }
        let timeout = check_timeout(check, doc, "timeout", raw_scenario.timeout.as_deref());
        let runner = check_runner(check, repo, doc, raw_scenario);
        if let (Some(timeout), Some(runner)) = (timeout, runner) {
            scenarios.insert(
                name.clone(),
                Scenario {
                    name: name.clone(),
                    description: raw_scenario.description.clone(),
                    timeout,
                    runner,
                },
            );
        }
    }
    scenarios
}

/// A timeout at `key`, default [`DEFAULT_SCENARIO_TIMEOUT`].
fn check_timeout(
    check: &mut Check,
    doc: &Document<raw::Scenario>,
    key: &str,
    text: Option<&str>,
) -> Option<std::time::Duration> {
    let Some(text) = text else { return Some(DEFAULT_SCENARIO_TIMEOUT) };
    let parsed = parse_timeout(text);
    if parsed.is_none() {
        check.error(
            doc,
            key,
            format!("invalid timeout `{text}`; expected a number with s, m or h, like 30s or 5m"),
        );
    }
    parsed
}

/// A playbook must at least be YAML: catch that here, not at 3 a.m. on the executor.
pub(super) fn playbook_problem(bytes: &[u8]) -> Option<crate::model::load::ParseProblem> {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Some(crate::model::load::ParseProblem {
            line: 1,
            column: 1,
            path: String::new(),
            message: "invalid UTF-8; expected a YAML playbook".to_owned(),
        });
    };
    match crate::model::load::parse_yaml::<yaml_serde::Value>(text) {
        Ok(yaml_serde::Value::Sequence(_)) => None,
        Ok(_) => Some(crate::model::load::ParseProblem {
            line: 1,
            column: 1,
            path: String::new(),
            message: "a playbook is a list of plays; expected a YAML sequence".to_owned(),
        }),
        Err(problem) => Some(problem),
    }
}

/// A playbook path (at `key`) that stays in scenarios/, exists and is YAML;
/// returns it without a leading `./`.
fn check_playbook(
    check: &mut Check,
    repo: &RawRepository,
    doc: &Document<raw::Scenario>,
    key: &str,
    written: &str,
) -> String {
    let playbook = written.trim_start_matches("./").to_owned();
    let escapes = playbook.split('/').any(|part| part == "..") || playbook.starts_with('/');
    if escapes {
        check.error(
            doc,
            key,
            format!("playbook path `{written}` leaves scenarios/; expected a path relative to scenarios/"),
        );
    } else if !repo.scenario_files.contains_key(&playbook) {
        let known = repo
            .scenario_files
            .keys()
            .filter(|k| k.ends_with(".yaml") || k.ends_with(".yml"))
            .map(String::as_str);
        check.error(
            doc,
            key,
            format!("playbook `scenarios/{playbook}` does not exist; {}", names_list(known)),
        );
    } else if let Some(problem) =
        repo.scenario_files.get(&playbook).and_then(|bytes| playbook_problem(bytes))
    {
        check.problems.push(Diagnostic::new(
            Location::at(format!("scenarios/{playbook}"), problem.line, problem.column),
            "",
            problem.message,
        ));
    }
    playbook
}

/// How the scenario runs: a playbook that exists and is YAML, or an HTTP probe.
fn check_runner(
    check: &mut Check,
    repo: &RawRepository,
    doc: &Document<raw::Scenario>,
    raw_scenario: &raw::Scenario,
) -> Option<Runner> {
    match (&raw_scenario.ansible, &raw_scenario.http) {
        (Some(ansible), None) => {
            let playbook = check_playbook(check, repo, doc, "ansible.playbook", &ansible.playbook);
            let cleanup = ansible.cleanup.as_ref().and_then(|cleanup| {
                let playbook =
                    check_playbook(check, repo, doc, "ansible.cleanup.playbook", &cleanup.playbook);
                let timeout = check_timeout(
                    check,
                    doc,
                    "ansible.cleanup.timeout",
                    cleanup.timeout.as_deref(),
                );
                Some(Cleanup { playbook, timeout: timeout? })
            });
            for name in ansible.vars.keys() {
                if !is_variable_name(name) {
                    check.error(doc, &format!("ansible.vars.{name}"), format!("invalid variable name `{name}`; expected letters, digits and `_`, not starting with a digit"));
                } else if ansible.extra_vars.contains_key(name) {
                    check.error(doc, &format!("ansible.vars.{name}"), format!("`{name}` is also in extra_vars, which would always win; keep it in one of them"));
                }
            }
            Some(Runner::Ansible {
                playbook,
                base_dir: None,
                cloud: ansible.cloud.clone(),
                extra_vars: ansible.extra_vars.clone(),
                vars: ansible.vars.clone(),
                cleanup,
            })
        }
        (None, Some(http)) => {
            if !is_http_url(&http.url) {
                check.error(
                    doc,
                    "http.url",
                    format!("invalid URL `{}`; expected http:// or https://", http.url),
                );
            }
            const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"];
            if !METHODS.contains(&http.method.as_str()) {
                check.error(
                    doc,
                    "http.method",
                    format!(
                        "unknown method `{}`; expected one of: {}",
                        http.method,
                        METHODS.join(", ")
                    ),
                );
            }
            if !(100..=599).contains(&http.expect_status) {
                check.error(
                    doc,
                    "http.expect_status",
                    format!("invalid status {}; expected 100-599", http.expect_status),
                );
            }
            Some(Runner::Http {
                url: http.url.clone(),
                method: http.method.clone(),
                expect_status: http.expect_status,
            })
        }
        (Some(_), Some(_)) => {
            check.error(doc, "http", "a scenario has either `ansible:` or `http:`, not both");
            None
        }
        (None, None) => {
            check.error(doc, "", "a scenario needs a runner; expected `ansible:` or `http:`");
            None
        }
    }
}
