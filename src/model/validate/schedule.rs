//! `scenarios/schedule.yaml`: which scenario runs in which environment
//! and when (a parsed cron schedule).

use std::collections::BTreeMap;

use super::checks::names_list;
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
    let mut seen: BTreeMap<(String, String), String> = BTreeMap::new();
    for (i, entry) in doc.value.schedule.iter().enumerate() {
        let path = format!("schedule[{i}]");
        let scenario = scenarios.get(&entry.scenario);
        if scenario.is_none() && !repo.scenarios.contains_key(&entry.scenario) {
            check.error(
                doc,
                &format!("{path}.scenario"),
                format!(
                    "unknown scenario `{}`; {}",
                    entry.scenario,
                    names_list(repo.scenarios.keys().map(String::as_str))
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
            if let Some(previous) =
                seen.insert((entry.scenario.clone(), env_name.clone()), env_path.clone())
            {
                check.error(
                    doc,
                    &env_path,
                    format!(
                        "scenario `{}` is already scheduled in `{env_name}` at {}",
                        entry.scenario,
                        doc.at(&previous)
                    ),
                );
            }
            if let Some(Scenario { runner: Runner::Ansible { cloud: Some(cloud), .. }, .. }) =
                scenario
            {
                if !environment.monitored_clouds.contains_key(cloud) {
                    check.error(doc, &env_path, format!("scenario `{}` uses cloud `{cloud}`, which environment `{env_name}` does not declare in monitored_clouds", entry.scenario));
                }
            }
            if let (Some(cron), Some(_)) = (&cron, scenario) {
                environment.schedule.push(ScheduledScenario {
                    scenario: entry.scenario.clone(),
                    cron: cron.clone(),
                });
            }
        }
    }
    for environment in environments.values_mut() {
        environment.schedule.sort_by(|a, b| a.scenario.cmp(&b.scenario));
    }
}
