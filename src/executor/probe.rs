//! Catalog probes: every `interval`, one GET of each catalog endpoint's
//! root (its version document) with the cloud's token, written as an
//! `openstack_api.<service type>` point in openstacksdk's shape with
//! `probe=catalog`, so the dashboards and health rules that read the
//! scenarios' requests see every service, also those no playbook calls.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};

use super::health::Health;
use super::keystone::{CloudAuth, Endpoint, Session};
use super::lineproto::escape_tag;
use super::results::Writer;

/// One monitored cloud's catalog probing, as executor.yaml gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeConfig {
    /// The clouds.yaml entry.
    pub cloud: String,
    /// Between two rounds.
    pub interval: Duration,
    /// `public`, `internal` or `admin`.
    pub interface: String,
    /// Service types left out.
    pub skip: BTreeSet<String>,
    /// Requests at once.
    pub concurrency: usize,
    /// A request without an answer by then counts as failed.
    pub timeout: Duration,
}

/// What one request found.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Outcome {
    endpoint: Endpoint,
    /// The status, when an answer came.
    status: Option<u16>,
    elapsed: Duration,
}

/// Probes `config.cloud` until aborted.
pub fn spawn(
    config: ProbeConfig,
    clouds_file: PathBuf,
    environment: String,
    writer: Writer,
    health: Arc<Health>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let http = reqwest::Client::builder()
            .connect_timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        let mut session: Option<Session> = None;
        let mut tick = tokio::time::interval(config.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if session.is_none() {
                match CloudAuth::load(&clouds_file, &config.cloud) {
                    Ok(auth) => session = Some(Session::new(auth, http.clone())),
                    Err(error) => {
                        health.probe_rounds_failed.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(error = %error, "Catalog probes cannot start.");
                        continue;
                    }
                }
            }
            let Some(current) = session.as_mut() else { continue };
            let outcomes = match round(current, &config, &http).await {
                Ok(outcomes) => outcomes,
                Err(error) => {
                    health.probe_rounds_failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %error, "No token for the catalog probes; this round is skipped.");
                    // Read the clouds file again next round: its password
                    // may have been rotated.
                    session = None;
                    continue;
                }
            };
            let now_ns = super::ingest::now_ns();
            let mut refused = false;
            for outcome in &outcomes {
                health.probes.fetch_add(1, Ordering::Relaxed);
                if outcome.status.is_none() {
                    health.probes_failed.fetch_add(1, Ordering::Relaxed);
                }
                refused |= outcome.status == Some(401);
                writer.write_line(line(outcome, &environment, now_ns));
            }
            if refused {
                // A service refused the token (revoked, or Keystone
                // restarted with new keys): the next round gets a new one.
                if let Some(current) = session.as_mut() {
                    current.invalidate();
                }
            }
            tracing::debug!(cloud = %config.cloud, endpoints = outcomes.len(), "Catalog probed.");
        }
    })
}

/// One round: a token, then every selected endpoint at once (bounded).
async fn round(
    session: &mut Session,
    config: &ProbeConfig,
    http: &reqwest::Client,
) -> Result<Vec<Outcome>, super::keystone::KeystoneError> {
    let region = session.region().map(str::to_owned);
    let token = session.token().await?.clone();
    let targets = select(&token.catalog, config, region.as_deref());
    let limit = Arc::new(Semaphore::new(config.concurrency.max(1)));
    let mut requests = JoinSet::new();
    for endpoint in targets {
        let url = root_url(&endpoint.url, &token.project_id);
        let (http, limit, token) = (http.clone(), Arc::clone(&limit), token.value.clone());
        let timeout = config.timeout;
        requests.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let started = Instant::now();
            let answer = http
                .get(&url)
                .header("X-Auth-Token", token.expose())
                .header("Accept", "application/json")
                .timeout(timeout)
                .send()
                .await;
            let status = answer.ok().map(|r| r.status().as_u16());
            Outcome { endpoint, status, elapsed: started.elapsed() }
        });
    }
    let mut outcomes = Vec::new();
    while let Some(joined) = requests.join_next().await {
        if let Ok(outcome) = joined {
            outcomes.push(outcome);
        }
    }
    outcomes.sort_by(|a, b| a.endpoint.url.cmp(&b.endpoint.url));
    Ok(outcomes)
}

/// The catalog's endpoints of the configured interface (and the entry's
/// region, when it names one), skip list applied, each once per service
/// type (aliases such as `volumev3` and `block-storage` share a URL and
/// each get their points).
fn select(catalog: &[Endpoint], config: &ProbeConfig, region: Option<&str>) -> Vec<Endpoint> {
    let mut seen = BTreeSet::new();
    catalog
        .iter()
        .filter(|e| e.interface == config.interface)
        .filter(|e| region.is_none_or(|r| e.region.as_deref() == Some(r)))
        .filter(|e| !config.skip.contains(&e.service_type))
        .filter(|e| seen.insert((e.service_type.clone(), e.url.clone())))
        .cloned()
        .collect()
}

/// The endpoint's root: its URL without a trailing project id segment
/// (`…/v2.1/<project>` → `…/v2.1`), which is the version document.
fn root_url(url: &str, project_id: &str) -> String {
    let trimmed = url.trim_end_matches('/');
    match trimmed.rsplit_once('/') {
        Some((base, last)) if !project_id.is_empty() && last == project_id => base.to_owned(),
        _ => trimmed.to_owned(),
    }
}

/// The point of `outcome`, as openstacksdk writes a request's.
fn line(outcome: &Outcome, environment: &str, now_ns: i64) -> String {
    let endpoint = &outcome.endpoint;
    let service = escape_tag(&endpoint.service_type);
    let mut tags = vec![
        ("environment", escape_tag(environment)),
        ("interface", escape_tag(&endpoint.interface)),
        ("method", "GET".to_owned()),
        ("name", "root".to_owned()),
        ("probe", "catalog".to_owned()),
        ("service_type", service.clone()),
    ];
    if let Some(region) = &endpoint.region {
        tags.push(("region", escape_tag(region)));
    }
    let duration = u64::try_from(outcome.elapsed.as_millis()).unwrap_or(u64::MAX);
    let fields = match outcome.status {
        Some(status) => {
            tags.push(("status_code", status.to_string()));
            format!("GET.{status}=1i,{status}=1i,attempted=1i,duration={duration}i,status_code_val={status}i")
        }
        None => format!("attempted=1i,duration={duration}i,failed=1i"),
    };
    tags.sort_by_key(|(key, _)| *key);
    let tags: String = tags.iter().map(|(k, v)| format!(",{k}={v}")).collect();
    format!("openstack_api.{service}{tags} {fields} {now_ns}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(service: &str, interface: &str, url: &str) -> Endpoint {
        Endpoint {
            service_type: service.into(),
            interface: interface.into(),
            region: Some("RegionOne".into()),
            url: url.into(),
        }
    }

    fn config() -> ProbeConfig {
        ProbeConfig {
            cloud: "c".into(),
            interval: Duration::from_secs(30),
            interface: "public".into(),
            skip: ["object-store".to_owned()].into(),
            concurrency: 4,
            timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn the_interface_region_and_skip_list_choose_the_endpoints() {
        let catalog = [
            endpoint("compute", "public", "http://a/v2.1"),
            endpoint("compute", "internal", "http://b/v2.1"),
            endpoint("object-store", "public", "http://c/v1"),
            endpoint("network", "public", "http://d"),
            endpoint("network", "public", "http://d"),
        ];
        let chosen: Vec<String> =
            select(&catalog, &config(), Some("RegionOne")).into_iter().map(|e| e.url).collect();
        assert_eq!(chosen, ["http://a/v2.1", "http://d"], "one per service type and URL");
        assert!(select(&catalog, &config(), Some("RegionTwo")).is_empty());
    }

    #[test]
    fn a_trailing_project_segment_is_left_off() {
        assert_eq!(root_url("http://n:8774/v2.1/abc", "abc"), "http://n:8774/v2.1");
        assert_eq!(root_url("http://s:8080/v1/AUTH_abc", "abc"), "http://s:8080/v1/AUTH_abc");
        assert_eq!(root_url("http://k:5000/v3/", "abc"), "http://k:5000/v3");
    }

    #[test]
    fn points_are_openstacksdks_shape_with_the_probe_tag() {
        let answered = Outcome {
            endpoint: endpoint("compute", "public", "http://a"),
            status: Some(200),
            elapsed: Duration::from_millis(12),
        };
        assert_eq!(
            line(&answered, "outside", 5),
            "openstack_api.compute,environment=outside,interface=public,method=GET,name=root,probe=catalog,region=RegionOne,service_type=compute,status_code=200 GET.200=1i,200=1i,attempted=1i,duration=12i,status_code_val=200i 5"
        );
        let silent = Outcome { status: None, ..answered };
        let text = line(&silent, "outside", 5);
        assert!(text.ends_with(" attempted=1i,duration=12i,failed=1i 5"), "{text}");
        assert!(!text.contains("status_code"), "{text}");
        crate::executor::lineproto::parse(&text).expect("valid line protocol");
    }
}
