//! `scenarios/schedule.yaml`: which scenario runs in which environment
//! and when (a parsed cron schedule).

use std::collections::BTreeMap;

use super::checks::{glob_match, is_glob, names_list};
use super::Check;
use crate::model::load::RawRepository;
use crate::model::{Environment, Role, Runner, Scenario, ScheduledScenario};

pub(super) fn check(
    check: &mut Check,
    repo: &RawRepository,
    scenarios: &BTreeMap<String, Scenario>,
    environments: &mut BTreeMap<String, Environment>,
) {
    let doc = &repo.schedule;
    // Exact names first: an entry naming a scenario beats any pattern
    // matching it; among patterns the first entry wins.
    let mut order: Vec<usize> = (0..doc.value.schedule.len()).collect();
    order.sort_by_key(|&i| is_glob(&doc.value.schedule[i].scenario));
    let mut seen: BTreeMap<(String, String), (String, bool)> = BTreeMap::new();
    for i in order {
        let entry = &doc.value.schedule[i];
        let path = format!("schedule[{i}]");
        let pattern = is_glob(&entry.scenario);
        if pattern && entry.scenario.len() > super::scenario_repository::MAX_GLOB_CHARS {
            check.error(
                doc,
                &format!("{path}.scenario"),
                format!(
                    "pattern of {} characters; expected at most {}",
                    entry.scenario.len(),
                    super::scenario_repository::MAX_GLOB_CHARS
                ),
            );
            continue;
        }
        let names: Vec<&str> = if pattern {
            scenarios
                .keys()
                .filter(|n| glob_match(&entry.scenario, n))
                .map(String::as_str)
                .collect()
        } else {
            vec![entry.scenario.as_str()]
        };
        if pattern && names.is_empty() {
            check.error(
                doc,
                &format!("{path}.scenario"),
                format!(
                    "pattern `{}` matches no scenario; {}",
                    entry.scenario,
                    names_list(scenarios.keys().map(String::as_str))
                ),
            );
        }
        if !pattern
            && !scenarios.contains_key(&entry.scenario)
            && !repo.scenarios.contains_key(&entry.scenario)
        {
            check.error(
                doc,
                &format!("{path}.scenario"),
                format!(
                    "unknown scenario `{}`; {}",
                    entry.scenario,
                    names_list(scenarios.keys().map(String::as_str))
                ),
            );
        }
        let cron = match crate::cron::Schedule::parse(&entry.cron) {
            Ok(cron) => Some(cron),
            Err(message) => {
                check.error(doc, &format!("{path}.cron"), message);
                None
            }
        };
        if entry.environments.is_empty() {
            check.error(
                doc,
                &format!("{path}.environments"),
                "no environments; expected at least one environment name",
            );
        }
        for (j, env_name) in entry.environments.iter().enumerate() {
            let env_path = format!("{path}.environments[{j}]");
            let Some(environment) = environments.get_mut(env_name) else {
                check.error(
                    doc,
                    &env_path,
                    format!(
                        "unknown environment `{env_name}`; {}",
                        names_list(repo.root.value.environments.keys().map(String::as_str))
                    ),
                );
                continue;
            };
            if environment.host_with_role(Role::Executor).is_none() {
                check.error(doc, &env_path, format!("environment `{env_name}` has no host with `role: executor` to run scenarios"));
            }
            let placement = placement(check, doc, &path, &entry.executors, environment);
            for name in &names {
                let key = ((*name).to_owned(), env_name.clone());
                if let Some((previous, _)) = seen.get(&key) {
                    if !pattern {
                        check.error(
                            doc,
                            &env_path,
                            format!(
                                "scenario `{name}` is already scheduled in `{env_name}` at {}",
                                doc.at(previous)
                            ),
                        );
                    }
                    continue;
                }
                seen.insert(key, (env_path.clone(), pattern));
                let scenario = scenarios.get(*name);
                if let Some(Scenario {
                    runner: Runner::Ansible { cloud: Some(cloud), .. }, ..
                }) = scenario
                {
                    if !environment.monitored_clouds.contains_key(cloud) {
                        check.error(doc, &env_path, format!("scenario `{name}` uses cloud `{cloud}`, which environment `{env_name}` does not declare in monitored_clouds"));
                    }
                }
                if let (Some(cron), Some(_), Some(placement)) = (&cron, scenario, &placement) {
                    environment.schedule.push(ScheduledScenario {
                        scenario: (*name).to_owned(),
                        cron: cron.clone(),
                        executors: placement.pick(name),
                    });
                }
            }
        }
    }
    for environment in environments.values_mut() {
        environment.schedule.sort_by(|a, b| a.scenario.cmp(&b.scenario));
    }
}

/// Where an entry's scenarios run in one environment.
enum Placement {
    /// On each of these executors.
    Each(Vec<String>),
    /// On one of these, chosen by the scenario's name (stable).
    Spread(Vec<String>),
}

impl Placement {
    fn pick(&self, scenario: &str) -> Vec<String> {
        match self {
            Self::Each(hosts) => hosts.clone(),
            Self::Spread(hosts) if hosts.is_empty() => Vec::new(),
            Self::Spread(hosts) => {
                let digest = crate::digest::sha256_hex(scenario.as_bytes());
                let n = u64::from_str_radix(&digest[..8], 16).unwrap_or(0);
                let index = usize::try_from(n % hosts.len() as u64).unwrap_or(0);
                vec![hosts[index].clone()]
            }
        }
    }
}

/// The executors of `environment` that `executors` selects (sorted by
/// name); `None` after an error naming the entry's key.
fn placement(
    check: &mut Check,
    doc: &crate::model::load::Document<crate::model::raw::ScheduleFile>,
    path: &str,
    executors: &crate::model::raw::Executors,
    environment: &Environment,
) -> Option<Placement> {
    use crate::model::raw::Executors;
    let mut all: Vec<&crate::model::Host> =
        environment.hosts.iter().filter(|h| h.role == Role::Executor).collect();
    all.sort_by(|a, b| a.name.cmp(&b.name));
    let names = |hosts: &[&crate::model::Host]| hosts.iter().map(|h| h.name.clone()).collect();
    let key = format!("{path}.executors");
    let env_name = &environment.name;
    match executors {
        Executors::All => Some(Placement::Each(names(&all))),
        Executors::Keyword(word) if word == "all" => Some(Placement::Each(names(&all))),
        Executors::Keyword(word) if word == "spread" => Some(Placement::Spread(names(&all))),
        Executors::Keyword(word) => {
            check.error(doc, &key, format!("unknown placement `{word}`; expected all, spread, a list of executor names or {{availability_zone: NAME}}"));
            None
        }
        Executors::Named(wanted) => {
            let mut chosen = Vec::new();
            for (i, name) in wanted.iter().enumerate() {
                if all.iter().any(|h| h.name == *name) {
                    chosen.push(name.clone());
                } else {
                    let known = all.iter().map(|h| h.name.as_str());
                    check.error(
                        doc,
                        &format!("{key}[{i}]"),
                        format!(
                            "`{name}` is not an executor of environment `{env_name}`; {}",
                            names_list(known)
                        ),
                    );
                }
            }
            (!wanted.is_empty() && chosen.len() == wanted.len()).then_some(Placement::Each(chosen))
        }
        Executors::Zone { availability_zone } => {
            let in_zone: Vec<&crate::model::Host> = all
                .iter()
                .copied()
                .filter(|h| h.availability_zone.as_deref() == Some(availability_zone.as_str()))
                .collect();
            if in_zone.is_empty() {
                check.error(doc, &key, format!("no executor of environment `{env_name}` is in availability zone `{availability_zone}`"));
                return None;
            }
            Some(Placement::Each(names(&in_zone)))
        }
    }
}
