//! What the operator's secrets file (never the repository) records about
//! a secret — the hosts it may reach, the environments and the kinds of
//! endpoint it is for — checked against each use: where it sends the
//! secret over the network, in which environment, for what. Files a
//! secret is rendered into are checked where they are rendered (`render`).

use super::super::secret::Endpoint;
use super::super::{DesiredState, Diagnostic, Diagnostics, Environment, SecretUse, Secrets};

/// The kind of endpoint `use_` authenticates to, and the URL it sends its
/// secret to over the network, if any.
fn endpoint(state: &DesiredState, use_: &SecretUse) -> (Endpoint, Option<String>) {
    let file = use_.location.file.to_string_lossy();
    let env: Option<&Environment> = use_.env.as_ref().and_then(|e| state.environments.get(e));
    let influxdb = || env.map(|e| e.influxdb_endpoint.url.clone());
    let grafana = || env.and_then(|e| e.grafana_endpoint.as_ref()).map(|g| g.url.clone());
    if file == "apimon.yaml" {
        let rest = use_
            .env
            .as_ref()
            .and_then(|e| use_.path.strip_prefix(&format!("environments.{e}.")))
            .unwrap_or(&use_.path);
        let mut keys = rest.split('.');
        match keys.next() {
            Some("influxdb") => (Endpoint::Influxdb, influxdb()),
            Some("grafana") => (Endpoint::Grafana, grafana()),
            Some("monitored_clouds") => (
                Endpoint::Cloud,
                keys.next()
                    .and_then(|cloud| env?.monitored_clouds.get(cloud))
                    .map(|c| c.auth_url.clone()),
            ),
            Some("daemon") if rest.starts_with("daemon.repository.") => (
                Endpoint::Git,
                env.and_then(|e| e.daemon.as_ref()).map(|d| d.repository.url.clone()),
            ),
            Some("scenario_repository") => {
                (Endpoint::Git, state.scenario_repository.as_ref().map(|r| r.url.clone()))
            }
            _ => (Endpoint::Other, None),
        }
    } else if file.ends_with("/influxdb.yaml") {
        (Endpoint::Other, influxdb())
    } else if file.ends_with("/grafana.yaml") {
        (Endpoint::Other, grafana())
    } else if file == "health.yaml" {
        (Endpoint::Other, health_route_destination(state, &use_.path))
    } else {
        (Endpoint::Other, None)
    }
}

/// Where a health.yaml route sends the secret at `path`: a Matrix token
/// to its homeserver, an SMTP login to its server; a webhook's key signs
/// and goes nowhere.
fn health_route_destination(state: &DesiredState, path: &str) -> Option<String> {
    use crate::model::health::routes::Sink;
    let index: usize = path.strip_prefix("routes[")?.split(']').next()?.parse().ok()?;
    let route = state.health.as_ref()?.routes.get(index)?;
    match &route.sink {
        Sink::Matrix { homeserver, .. } => Some(homeserver.clone()),
        Sink::Email { host, port, .. } => Some(format!("smtp://{host}:{port}")),
        Sink::Webhook { .. } => None,
    }
}

/// The hosts `use_` sends its secret to over the network: the endpoint
/// the setting at its place authenticates to.
fn destinations(state: &DesiredState, use_: &SecretUse) -> Vec<String> {
    let (_, url) = endpoint(state, use_);
    url.map(|url| super::destination(&url).1).filter(|host| !host.is_empty()).into_iter().collect()
}

/// Why the secrets file's record forbids `use_`, if it does: used in an
/// environment, or for a kind of endpoint, the record does not name.
fn out_of_scope(state: &DesiredState, secrets: &Secrets, use_: &SecretUse) -> Option<String> {
    let (kind, _) = endpoint(state, use_);
    if secrets.allows_use(&use_.name, use_.env.as_deref(), kind) {
        return None;
    }
    let Secrets::Resolved(store) = secrets else { return None };
    let scope = store.scope(&use_.name)?;
    let list = |items: Vec<String>| items.join(", ");
    let recorded = [
        scope
            .environments
            .as_ref()
            .map(|e| format!("environments [{}]", list(e.iter().cloned().collect()))),
        scope.endpoints.as_ref().map(|e| {
            format!("endpoints [{}]", list(e.iter().map(|k| k.name().to_owned()).collect()))
        }),
    ];
    let recorded: Vec<String> = recorded.into_iter().flatten().collect();
    let here = match &use_.env {
        Some(env) => format!("environment `{env}`, endpoint `{}`", kind.name()),
        None => format!("a project-wide setting, endpoint `{}`", kind.name()),
    };
    Some(format!(
        "secret `{}` is recorded in the secrets file for {}; this uses it in {here}",
        use_.name,
        recorded.join(" and ")
    ))
}

/// Every use of a secret in `environments` that would travel in clear:
/// over http:// (or git://) to a host off the environment's private
/// network and not through its bastion (`model::route::protected`). The
/// git remotes' credentials are checked where daemon.yaml is read.
///
/// # Errors
/// One diagnostic per such use, at its place.
pub fn check_transport(
    state: &DesiredState,
    environments: &[&Environment],
) -> Result<(), Diagnostics> {
    let problems: Vec<Diagnostic> = state
        .secret_uses
        .iter()
        .filter_map(|use_| {
            let env = environments.iter().find(|e| Some(&e.name) == use_.env.as_ref())?;
            let (kind, url) = endpoint(state, use_);
            let url = url.filter(|_| kind != Endpoint::Git)?;
            if crate::model::route::protected(env, &url) {
                return None;
            }
            let shown = crate::url::redact_url(&url);
            Some(Diagnostic::new(
                use_.location.clone(),
                use_.path.clone(),
                format!(
                    "secret `{}` would go in clear to {shown}, off the environment's private network; use https://",
                    use_.name
                ),
            ))
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Diagnostics::normalized(problems))
    }
}

/// Every use of a pinned secret in `environments` (all when `None`) that
/// would send it to a host its pin does not name.
///
/// # Errors
/// One diagnostic per such use, at its place.
pub fn check_pins(
    state: &DesiredState,
    secrets: &Secrets,
    environments: Option<&[&Environment]>,
) -> Result<(), Diagnostics> {
    let selected = |use_: &&SecretUse| match (environments, &use_.env) {
        (None, _) | (_, None) => true,
        (Some(selected), Some(env)) => selected.iter().any(|e| &e.name == env),
    };
    let mut problems: Vec<Diagnostic> = state
        .secret_uses
        .iter()
        .filter(selected)
        .filter_map(|use_| {
            let why = out_of_scope(state, secrets, use_)?;
            Some(Diagnostic::new(use_.location.clone(), use_.path.clone(), why))
        })
        .collect();
    problems.extend(state
        .secret_uses
        .iter()
        .filter(selected)
        .flat_map(|use_| {
            destinations(state, use_)
                .into_iter()
                .filter(|host| !secrets.allows(&use_.name, host))
                .map(move |host| {
                    Diagnostic::new(
                        use_.location.clone(),
                        use_.path.clone(),
                        format!(
                            "secret `{}` is pinned to other hosts in the secrets file; this sends it to {host}",
                            use_.name
                        ),
                    )
                })
        }));
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Diagnostics::normalized(problems))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::model::secret::SecretStore;

    pub(crate) fn example() -> DesiredState {
        let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples-repo");
        crate::model::load_repository(&repo).expect("the example loads")
    }

    /// Every secret the example uses, `pinned` ones pinned to their hosts.
    pub(crate) fn secrets(state: &DesiredState, pinned: &[(&str, &[&str])]) -> Secrets {
        let scoped: Vec<(&str, String)> = pinned
            .iter()
            .map(|(name, hosts)| (*name, format!("hosts: [{}]", hosts.join(", "))))
            .collect();
        let scoped: Vec<(&str, &str)> = scoped.iter().map(|(n, s)| (*n, s.as_str())).collect();
        scoped_secrets(state, &scoped)
    }

    /// Every secret the example uses, `scoped` ones with their record
    /// (`hosts: [...]`, `environments: [...]`, `endpoints: [...]`).
    pub(crate) fn scoped_secrets(state: &DesiredState, scoped: &[(&str, &str)]) -> Secrets {
        use std::os::unix::fs::PermissionsExt;
        let mut text = String::new();
        let names: std::collections::BTreeSet<&str> =
            state.secret_uses.iter().map(|u| u.name.as_str()).collect();
        for name in names {
            match scoped.iter().find(|(n, _)| *n == name) {
                Some((_, record)) => {
                    text.push_str(&format!("{name}: {{value: value-of-{name}, {record}}}\n"));
                }
                None => text.push_str(&format!("{name}: value-of-{name}\n")),
            }
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("secrets.yaml");
        std::fs::write(&path, text).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        Secrets::Resolved(SecretStore::load(Some(&path), []).expect("secrets"))
    }

    #[test]
    fn a_pinned_secret_goes_to_its_hosts_only() {
        let state = example();
        let admin = "outside_influxdb_admin_password";
        // The InfluxDB endpoint of `outside` is 192.168.10.30.
        let allowed = secrets(&state, &[(admin, &["192.168.10.30", "outside-bastion"])]);
        assert!(check_pins(&state, &allowed, None).is_ok());
        let elsewhere = secrets(&state, &[(admin, &["192.168.10.99"])]);
        let problems = check_pins(&state, &elsewhere, None).expect_err("pinned elsewhere");
        let text = problems.to_string();
        assert!(text.contains("inventory/outside/influxdb.yaml:"), "{text}");
        assert!(text.contains(&format!("secret `{admin}` is pinned to other hosts in the secrets file; this sends it to 192.168.10.30")), "{text}");
    }

    #[test]
    fn a_secret_recorded_for_one_environment_and_endpoint_is_refused_elsewhere() {
        let state = example();
        let token = "outside_grafana_token";
        let own =
            scoped_secrets(&state, &[(token, "environments: [outside], endpoints: [grafana]")]);
        assert!(check_pins(&state, &own, None).is_ok());
        let other = scoped_secrets(&state, &[(token, "environments: [inside]")]);
        let text = check_pins(&state, &other, None).expect_err("other environment").to_string();
        assert!(text.contains("apimon.yaml:"), "{text}");
        assert!(
            text.contains(&format!("secret `{token}` is recorded in the secrets file for environments [inside]; this uses it in environment `outside`, endpoint `grafana`")),
            "{text}"
        );
        let influx = scoped_secrets(&state, &[(token, "endpoints: [influxdb, cloud]")]);
        let text = check_pins(&state, &influx, None).expect_err("other endpoint").to_string();
        assert!(text.contains("for endpoints [influxdb, cloud]; this uses it in environment `outside`, endpoint `grafana`"), "{text}");
        // Checking only `inside` leaves `outside`'s uses alone.
        let inside: Vec<&Environment> = vec![&state.environments["inside"]];
        assert!(check_pins(&state, &other, Some(&inside)).is_ok());
    }

    /// Files are checked where they are rendered, whichever template put
    /// the value there.
    #[test]
    fn a_pinned_secret_is_rendered_for_its_hosts_only() {
        let state = example();
        let telegraf = "outside_influxdb_telegraf_password";
        let templates = crate::render::Templates::new(&state.templates).expect("templates");
        let environments = state.select_many(&["outside".to_owned()]).expect("outside");
        // The executor's telegraf writes with it: pinned to InfluxDB alone, refused.
        let narrow = secrets(&state, &[(telegraf, &["192.168.10.30", "outside-influxdb"])]);
        let error = crate::render::render_all(&state, &environments, &templates, &narrow)
            .expect_err("pinned elsewhere")
            .to_string();
        assert!(
            error.contains(&format!(
                "would hold secret `{telegraf}`, which the secrets file pins to other hosts"
            )),
            "{error}"
        );
        assert!(error.starts_with("host outside-"), "{error}");
        // With the executors named, it renders.
        let hosts: Vec<String> = environments[0].hosts.iter().map(|h| h.name.clone()).collect();
        let hosts: Vec<&str> = hosts.iter().map(String::as_str).chain(["192.168.10.30"]).collect();
        let wide = secrets(&state, &[(telegraf, &hosts)]);
        assert!(crate::render::render_all(&state, &environments, &templates, &wide).is_ok());
    }
}
