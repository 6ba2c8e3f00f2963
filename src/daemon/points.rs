//! The daemon's `apimon_reconcile` point: one per environment and pass,
//! written to the environment's results database as its results user (the
//! daemon runs on the bastion, which reaches InfluxDB directly), so the
//! health service's dead-man's switch sees reconciles that keep failing
//! or waiting. A write that fails is logged and counted, never retried:
//! the next pass writes the next point.

use std::sync::Arc;
use std::time::Duration;

use super::metrics::Metrics;
use crate::model::{Environment, Secrets};

/// One pass's outcome in one environment.
#[derive(Debug, Clone)]
pub struct Reconciled<'a> {
    /// `no_changes`, `success`, `partial`, `failed`, `pending`.
    pub outcome: &'a str,
    /// The commit in force.
    pub commit: &'a str,
    /// Changes that failed.
    pub failed: usize,
    /// Changes held back.
    pub pending: usize,
}

/// The line-protocol point.
pub fn line(environment: &str, reconciled: &Reconciled<'_>, now_ns: i64) -> String {
    let text = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    format!(
        "apimon_reconcile,environment={} outcome=\"{}\",commit=\"{}\",failed={}i,pending={}i {now_ns}",
        crate::executor::lineproto::escape_tag(environment),
        text(reconciled.outcome),
        text(reconciled.commit),
        reconciled.failed,
        reconciled.pending
    )
}

/// Writes `line` to `env`'s results database in the background, when
/// this machine reaches it directly (`on_bastion`: the daemon's machine is
/// on the environment's network).
pub fn send(
    env: &Environment,
    secrets: &Secrets,
    on_bastion: bool,
    line: String,
    metrics: &Arc<Metrics>,
) {
    let endpoint = &env.influxdb_endpoint;
    let route = crate::model::route::route(env, &endpoint.url, endpoint.via, on_bastion);
    if route != crate::model::route::Route::Direct {
        tracing::debug!(environment = %env.name, "InfluxDB is not reached directly from here: no apimon_reconcile point.");
        return;
    }
    let password = env
        .influxdb
        .users
        .iter()
        .find(|u| u.name == endpoint.results_user)
        .and_then(|u| secrets.resolve(&u.password));
    let Some(password) = password else {
        tracing::debug!(environment = %env.name, "No results user's password: no apimon_reconcile point.");
        return;
    };
    let url = format!("{}/write", endpoint.url.trim_end_matches('/'));
    let (user, database) = (endpoint.results_user.clone(), endpoint.results_database.clone());
    let (metrics, environment) = (Arc::clone(metrics), env.name.clone());
    let ca =
        endpoint.ca_file.as_deref().and_then(|p| crate::fsutil::read_limited(p, 1024 * 1024).ok());
    tokio::spawn(async move {
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none());
        if let Some(certificate) = ca.and_then(|pem| reqwest::Certificate::from_pem(&pem).ok()) {
            builder = builder.add_root_certificate(certificate);
        }
        let http = builder.build().unwrap_or_default();
        let sent = http
            .post(&url)
            .query(&[("db", database.as_str()), ("precision", "ns")])
            .basic_auth(user, Some(password.expose()))
            .body(line)
            .send()
            .await;
        let failure = match sent {
            Ok(answer) if answer.status().is_success() => None,
            Ok(answer) => Some(format!("HTTP {}", answer.status())),
            Err(error) => Some(crate::error::chain(&error)),
        };
        if let Some(error) = failure {
            metrics.failure("reconcile_point");
            tracing::warn!(%environment, url = %crate::url::redact_url(&url), %error, "Cannot write the apimon_reconcile point.");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_point_names_the_outcome_and_the_commit() {
        let reconciled = Reconciled { outcome: "failed", commit: "abc\"d", failed: 2, pending: 0 };
        let line = line("out side", &reconciled, 7);
        assert_eq!(line, "apimon_reconcile,environment=out\\ side outcome=\"failed\",commit=\"abc\\\"d\",failed=2i,pending=0i 7");
        crate::executor::lineproto::parse(&line).expect("valid line protocol");
    }
}
