//! `dashboards/<folder>/*.json`: a uid and title each, unique uids, and
//! folders declared wherever a Grafana is.

use std::collections::BTreeMap;

use super::checks::is_grafana_uid;
use super::Check;
use crate::model::error::{Diagnostic, Location};
use crate::model::load::RawRepository;
use crate::model::{Dashboard, Environment, Role};

pub(super) fn check(
    check: &mut Check,
    repo: &RawRepository,
    environments: &BTreeMap<String, Environment>,
) -> BTreeMap<String, Dashboard> {
    let mut dashboards: BTreeMap<String, Dashboard> = BTreeMap::new();
    for raw_dashboard in &repo.dashboards {
        let at = |path: &str| -> Location {
            let (line, column) = raw_dashboard.map.position(path);
            Location::at(&raw_dashboard.file, line, column)
        };
        let mut problem = |path: &str, message: String| {
            check.problems.push(Diagnostic::new(at(path), path, message));
        };
        let uid = raw_dashboard.model.get("uid").and_then(|v| v.as_str());
        let title = raw_dashboard.model.get("title").and_then(|v| v.as_str());
        let Some(uid) = uid else {
            problem("uid", "missing or not a string; expected a stable dashboard uid (at most 40 of a-z, A-Z, 0-9, `_`, `-`)".to_owned());
            continue;
        };
        if !is_grafana_uid(uid) {
            problem(
                "uid",
                format!("invalid uid `{uid}`; expected at most 40 of a-z, A-Z, 0-9, `_`, `-`"),
            );
        }
        let Some(title) = title.filter(|t| !t.trim().is_empty()) else {
            problem("title", "missing or empty; expected the dashboard title".to_owned());
            continue;
        };
        for (env_name, environment) in environments {
            let has_grafana = environment.host_with_role(Role::Grafana).is_some();
            if has_grafana
                && !environment.grafana.folders.iter().any(|f| f.uid == raw_dashboard.folder)
            {
                problem("", format!("folder `{}` is not declared in inventory/{env_name}/grafana.yaml; expected a folder with that uid", raw_dashboard.folder));
            }
        }
        if let Some(first) = dashboards.get(uid) {
            problem(
                "uid",
                format!("duplicate dashboard uid `{uid}`; also used by {}", first.file.display()),
            );
            continue;
        }
        dashboards.insert(
            uid.to_owned(),
            Dashboard {
                uid: uid.to_owned(),
                title: title.to_owned(),
                folder: raw_dashboard.folder.clone(),
                file: raw_dashboard.file.clone(),
                model: raw_dashboard.model.clone(),
            },
        );
    }
    dashboards
}
