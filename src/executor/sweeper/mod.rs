//! The sweeper: every `interval`, deletes from a monitored cloud's project
//! what scenario runs left behind (a run killed at its timeout never
//! reaches its playbook's cleanup) and that is older than `age`, in
//! dependency order, and writes one `apimon_sweep` point per kind and
//! pass. It never touches what carries apimon's platform marks, and it
//! refuses a project that holds any (the environment's own) unless the
//! repository allows it.

mod api;
pub mod kinds;
pub mod select;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::task::JoinHandle;

use super::health::Health;
use super::ingest::Ingest;
use super::keystone::{CloudAuth, Session};
use super::lineproto::escape_tag;
use api::{Api, ApiError};
use kinds::{Kind, KINDS};
pub use select::Select;

/// One monitored cloud's sweeper, as executor.yaml gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweeperConfig {
    /// The clouds.yaml entry.
    pub cloud: String,
    /// Between two passes.
    pub interval: Duration,
    /// Only what is older is deleted.
    pub age: Duration,
    /// Which leftovers.
    pub select: Select,
    /// Only report what would be deleted.
    pub dry_run: bool,
    /// The project may hold apimon's own platform resources.
    pub platform_project: bool,
}

/// What the sweeper needs from the executor.
pub struct Context {
    /// The executor's clouds.yaml.
    pub clouds_file: PathBuf,
    /// Where run directories (and the sweeper's job ledger) are.
    pub runs_dir: PathBuf,
    /// The executor's environment.
    pub environment: String,
    /// Where points go.
    pub writer: super::results::Writer,
    /// Counters.
    pub health: Arc<Health>,
    /// Which runs are going on (their resources are never swept).
    pub ingest: Arc<Ingest>,
}

/// How often the job ledger is refreshed from the run directories (which
/// are pruned to `keep_runs` per scenario: a job must be seen before).
const LEDGER_REFRESH: Duration = Duration::from_secs(60);
/// How long a job id is remembered.
const LEDGER_DAYS: i64 = 7;
/// How long a deleted server or snapshot may take to go.
const WAIT_GONE: Duration = Duration::from_secs(180);
/// Deletes at once within a kind.
const DELETE_CONCURRENCY: usize = 8;

/// Runs the sweeper of `config.cloud` until aborted.
pub fn spawn(config: SweeperConfig, context: Context) -> JoinHandle<()> {
    tokio::spawn(async move {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        let ledger_path = context.runs_dir.join(format!(".sweeper-jobs-{}", config.cloud));
        let mut ledger = Ledger::load(&ledger_path);
        let mut tick = tokio::time::interval(config.interval.min(LEDGER_REFRESH));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_pass: Option<Instant> = None;
        loop {
            tick.tick().await;
            let running = context.ingest.running_jobs();
            ledger.refresh(&context.runs_dir, &running, Utc::now());
            ledger.save(&ledger_path);
            if last_pass.is_some_and(|at| at.elapsed() < config.interval) {
                continue;
            }
            last_pass = Some(Instant::now());
            let jobs = ledger.jobs(&running);
            let running: BTreeSet<String> = running
                .iter()
                .filter_map(|j| j.get(..select::JOB_PREFIX))
                .map(str::to_ascii_lowercase)
                .collect();
            match CloudAuth::load(&context.clouds_file, &config.cloud) {
                Ok(auth) => {
                    let mut session = Session::new(auth, http.clone());
                    pass(&config, &context, &mut session, &http, (&jobs, &running)).await;
                }
                Err(error) => {
                    context.health.sweeps_failed.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(error = %error, "The sweeper cannot start.");
                }
            }
        }
    })
}

/// Job id prefixes seen in the run directories, with when they were first
/// seen; kept on disk so a restart does not forget them.
#[derive(Debug, Default)]
struct Ledger(BTreeMap<String, i64>);

impl Ledger {
    fn load(path: &std::path::Path) -> Self {
        let text = crate::fsutil::read_text_limited(path, crate::fsutil::MAX_CONFIG_BYTES)
            .unwrap_or_default();
        Self(
            text.lines()
                .filter_map(|l| l.split_once(' '))
                .filter(|(job, _)| job.len() == select::JOB_PREFIX)
                .filter_map(|(job, at)| Some((job.to_owned(), at.trim().parse().ok()?)))
                .collect(),
        )
    }

    fn refresh(
        &mut self,
        runs_dir: &std::path::Path,
        running: &BTreeSet<String>,
        now: DateTime<Utc>,
    ) {
        for job in select::finished_jobs(runs_dir, running) {
            self.0.entry(job).or_insert(now.timestamp());
        }
        let horizon = now.timestamp() - LEDGER_DAYS * 86_400;
        self.0.retain(|_, at| *at >= horizon);
    }

    fn save(&self, path: &std::path::Path) {
        let text: String = self.0.iter().map(|(job, at)| format!("{job} {at}\n")).collect();
        if let Err(error) = crate::fsutil::write_private(path, text.as_bytes(), 0o600) {
            tracing::warn!(path = %path.display(), %error, "Cannot keep the sweeper's job ledger.");
        }
    }

    /// The prefixes of jobs that are not running.
    fn jobs(&self, running: &BTreeSet<String>) -> BTreeSet<String> {
        let running: BTreeSet<&str> =
            running.iter().filter_map(|j| j.get(..select::JOB_PREFIX)).collect();
        self.0.keys().filter(|j| !running.contains(j.as_str())).cloned().collect()
    }
}

/// Counts of one kind in one pass.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    found: u64,
    deleted: u64,
    /// Gone before its delete (with its server, say).
    gone: u64,
    failed: u64,
}

/// One pass: list every kind, refuse a platform project, delete in order.
async fn pass(
    config: &SweeperConfig,
    context: &Context,
    session: &mut Session,
    http: &reqwest::Client,
    (jobs, running): (&BTreeSet<String>, &BTreeSet<String>),
) {
    let started = Instant::now();
    let api = match Api::open(session, http.clone()).await {
        Ok(api) => Arc::new(api),
        Err(error) => {
            context.health.sweeps_failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(cloud = %config.cloud, error = %error, "No token for the sweeper; this pass is skipped.");
            return;
        }
    };
    if api.project_id().is_empty() {
        context.health.sweeps_failed.fetch_add(1, Ordering::Relaxed);
        tracing::error!(cloud = %config.cloud, "The token is not scoped to a project; the sweeper does not run unscoped.");
        return;
    }
    let listed = match list_all(&api).await {
        Ok(listed) => listed,
        Err(error) => {
            context.health.sweeps_failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(cloud = %config.cloud, error = %error, "The sweeper cannot list the project; this pass is skipped.");
            return;
        }
    };
    if !config.platform_project {
        if let Some((kind, name)) = platform_resource(&listed) {
            context.health.sweeps_refused.fetch_add(1, Ordering::Relaxed);
            tracing::error!(cloud = %config.cloud, project = %api.project_id(), kind, name = %name, "This project holds apimon's own platform resources; the sweeper does not run here unless the repository sets sweeper.platform_project: true.");
            write_pass(context, config, &BTreeMap::new(), true, started.elapsed());
            return;
        }
    }
    let older_than = Utc::now() - chrono::Duration::from_std(config.age).unwrap_or_default();
    let chosen = choose(&listed, config.select, (jobs, running), older_than, api.project_id());
    let mut tallies = BTreeMap::new();
    for kind in KINDS {
        let items = chosen.get(kind.name).cloned().unwrap_or_default();
        let mut tally = Tally { found: items.len() as u64, ..Tally::default() };
        if !config.dry_run && !items.is_empty() {
            (tally.deleted, tally.gone, tally.failed) =
                delete_kind(&api, kind, &items, &listed, config).await;
        }
        for (_, name) in &items {
            if config.dry_run {
                tracing::info!(cloud = %config.cloud, kind = kind.name, name = %name, "Would delete (dry run).");
            }
        }
        tallies.insert(kind.name, tally);
    }
    write_pass(context, config, &tallies, false, started.elapsed());
    let deleted: u64 = tallies.values().map(|t| t.deleted).sum();
    let failed: u64 = tallies.values().map(|t| t.failed).sum();
    context.health.swept.fetch_add(deleted, Ordering::Relaxed);
    tracing::info!(cloud = %config.cloud, deleted, failed, dry_run = config.dry_run, elapsed_ms = started.elapsed().as_millis() as u64, "Sweeper pass done.");
}

/// Every kind's list, in [`KINDS`] order.
async fn list_all(api: &Api) -> Result<BTreeMap<&'static str, Vec<Value>>, ApiError> {
    let mut listed = BTreeMap::new();
    for kind in KINDS {
        let root = kinds::root(kind, &api.endpoint(kind.services)?);
        let path = kind.list.replace("{project}", api.project_id());
        let mut items = api.list(&format!("{root}{path}"), kind.key).await?;
        if kind.name == "keypair" {
            // Listed as {"keypair": {…}}, without their creation time.
            items = items.into_iter().filter_map(|i| i.get("keypair").cloned()).collect();
        }
        listed.insert(kind.name, items);
    }
    Ok(listed)
}

/// The first resource that carries apimon's platform marks, if any.
fn platform_resource(
    listed: &BTreeMap<&'static str, Vec<Value>>,
) -> Option<(&'static str, String)> {
    listed.iter().find_map(|(kind, items)| {
        items.iter().find(|i| select::is_platform(i)).map(|i| (*kind, name_of(kind, i)))
    })
}

fn name_of(kind: &str, item: &Value) -> String {
    let text = |key: &str| item.get(key).and_then(Value::as_str).unwrap_or_default().to_owned();
    match kind {
        "floating_ip" if !text("description").is_empty() => text("description"),
        "floating_ip" => text("floating_ip_address"),
        _ => text("name"),
    }
}

fn id_of(kind: &str, item: &Value) -> String {
    let key = if kind == "keypair" { "name" } else { "id" };
    item.get(key).and_then(Value::as_str).unwrap_or_default().to_owned()
}

/// Whether `item` belongs to `project` as far as it says (every list is
/// scoped to it already; an item that names another project is never
/// taken, whatever the list gave).
fn in_project(item: &Value, project: &str) -> bool {
    ["project_id", "tenant_id", "os-vol-tenant-attr:tenant_id", "owner"]
        .iter()
        .filter_map(|key| item.get(*key).and_then(Value::as_str))
        .all(|owner| owner == project)
}

/// The leftovers of each kind: (id, name). Never what carries a running
/// run's job id, whatever the selection.
fn choose(
    listed: &BTreeMap<&'static str, Vec<Value>>,
    select: Select,
    (jobs, running): (&BTreeSet<String>, &BTreeSet<String>),
    older_than: DateTime<Utc>,
    project: &str,
) -> BTreeMap<&'static str, Vec<(String, String)>> {
    let items = |kind: &str| listed.get(kind).map(Vec::as_slice).unwrap_or_default();
    let leftover = |kind: &str, item: &Value| {
        let name = name_of(kind, item);
        in_project(item, project)
            && !select::carries_job(&name, running)
            && select::is_leftover(item, &name, select, jobs, older_than)
    };
    let mut chosen: BTreeMap<&'static str, Vec<(String, String)>> = BTreeMap::new();
    let servers: BTreeSet<String> = items("server")
        .iter()
        .filter(|s| leftover("server", s))
        .map(|s| id_of("server", s))
        .collect();
    // A leftover server's ports (and their floating IPs) are leftovers too,
    // whatever their names; other ports only those a playbook made itself.
    let ports: BTreeSet<String> = items("port")
        .iter()
        .filter(|p| {
            let owner = p.get("device_owner").and_then(Value::as_str).unwrap_or_default();
            let device = p.get("device_id").and_then(Value::as_str).unwrap_or_default();
            let plain = owner.is_empty() || owner.starts_with("compute:");
            // A port of a server that is not a leftover (the platform's own
            // servers' ports carry no marks) is never taken.
            let of_kept_server = !device.is_empty() && !servers.contains(device);
            plain
                && !of_kept_server
                && in_project(p, project)
                && (servers.contains(device) || leftover("port", p))
                && !select::is_platform(p)
        })
        .map(|p| id_of("port", p))
        .collect();
    for kind in KINDS {
        let mut picked = Vec::new();
        for item in items(kind.name) {
            let id = id_of(kind.name, item);
            let take = match kind.name {
                "server" => servers.contains(&id),
                "port" => ports.contains(&id),
                "floating_ip" => {
                    let port = item.get("port_id").and_then(Value::as_str).unwrap_or_default();
                    let of_port = ports.contains(port) && !select::is_platform(item);
                    (of_port && in_project(item, project)) || leftover(kind.name, item)
                }
                "network" => {
                    item.get("router:external").and_then(Value::as_bool) != Some(true)
                        && leftover(kind.name, item)
                }
                "security_group" => {
                    name_of(kind.name, item) != "default" && leftover(kind.name, item)
                }
                "image" => {
                    item.get("protected").and_then(Value::as_bool) != Some(true)
                        && leftover(kind.name, item)
                }
                // Keypairs are the user's, not the project's, and carry no
                // marks: only those named after a finished run, in either
                // selection. Listed without a creation time, which the
                // pass reads for them (see delete_kind).
                "keypair" => {
                    let name = name_of(kind.name, item);
                    select::carries_job(&name, jobs) && !select::carries_job(&name, running)
                }
                _ => leftover(kind.name, item),
            };
            if take && !id.is_empty() {
                picked.push((id, name_of(kind.name, item)));
            }
        }
        chosen.insert(kind.name, picked);
    }
    chosen
}

/// Deletes `items` of `kind`, at most [`DELETE_CONCURRENCY`] at once;
/// (deleted, already gone, failed).
async fn delete_kind(
    api: &Arc<Api>,
    kind: &'static Kind,
    items: &[(String, String)],
    listed: &BTreeMap<&'static str, Vec<Value>>,
    config: &SweeperConfig,
) -> (u64, u64, u64) {
    let Ok(endpoint) = api.endpoint(kind.services) else { return (0, 0, items.len() as u64) };
    let root = kinds::root(kind, &endpoint);
    let limit = Arc::new(tokio::sync::Semaphore::new(DELETE_CONCURRENCY));
    let older_than = Utc::now() - chrono::Duration::from_std(config.age).unwrap_or_default();
    let mut tasks = tokio::task::JoinSet::new();
    for (id, name) in items.iter().cloned() {
        let (api, limit, root) = (Arc::clone(api), Arc::clone(&limit), root.clone());
        let interfaces = router_interfaces(listed, &id, kind);
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let url = format!("{root}{}", kind.item.replace("{id}", &id));
            if kind.name == "keypair" {
                // Only now is its age known.
                let young = match api.get(&url).await {
                    Ok(answer) => answer
                        .get("keypair")
                        .and_then(select::created)
                        .is_none_or(|at| at > older_than),
                    Err(_) => true,
                };
                if young {
                    return (name, None);
                }
            }
            for port in interfaces {
                let body = serde_json::json!({ "port_id": port });
                if let Err(error) = api.put(&format!("{url}/remove_router_interface"), body).await {
                    return (name, Some(Err(error)));
                }
            }
            let mut result = api.delete(&url).await;
            if matches!(result, Ok(true)) && kind.wait && !api.wait_gone(&url, WAIT_GONE).await {
                result = Err(ApiError::Call {
                    method: "DELETE",
                    url,
                    message: format!("still there after {} s", WAIT_GONE.as_secs()),
                });
            }
            (name, Some(result))
        });
    }
    let (mut deleted, mut gone, mut failed) = (0, 0, 0);
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((name, Some(Ok(true)))) => {
                deleted += 1;
                tracing::info!(cloud = %config.cloud, kind = kind.name, name = %name, "Deleted a leftover.");
            }
            Ok((_, Some(Ok(false)))) => gone += 1,
            Ok((name, Some(Err(error)))) => {
                failed += 1;
                tracing::warn!(cloud = %config.cloud, kind = kind.name, name = %name, error = %error, "Cannot delete a leftover.");
            }
            Ok((_, None)) => {}
            Err(_) => failed += 1,
        }
    }
    (deleted, gone, failed)
}

/// The interface ports of router `id` (removed before the router).
fn router_interfaces(
    listed: &BTreeMap<&'static str, Vec<Value>>,
    id: &str,
    kind: &Kind,
) -> Vec<String> {
    if kind.name != "router" {
        return Vec::new();
    }
    listed
        .get("port")
        .into_iter()
        .flatten()
        .filter(|p| p.get("device_id").and_then(Value::as_str) == Some(id))
        .filter(|p| {
            p.get("device_owner")
                .and_then(Value::as_str)
                .is_some_and(|o| o.starts_with("network:router_interface"))
        })
        .filter_map(|p| p.get("id").and_then(Value::as_str).map(str::to_owned))
        .collect()
}

/// One `apimon_sweep` point per kind, and one for the pass (`kind=all`).
fn write_pass(
    context: &Context,
    config: &SweeperConfig,
    tallies: &BTreeMap<&'static str, Tally>,
    refused: bool,
    elapsed: Duration,
) {
    let now_ns = super::ingest::now_ns();
    let tags = format!(
        "cloud={},dry_run={},environment={}",
        escape_tag(&config.cloud),
        config.dry_run,
        escape_tag(&context.environment)
    );
    let mut total = Tally::default();
    for (kind, tally) in tallies {
        total.found += tally.found;
        total.deleted += tally.deleted;
        total.failed += tally.failed;
        total.gone += tally.gone;
        context.writer.write_line(format!(
            "apimon_sweep,{tags},kind={kind} deleted={}i,failed={}i,found={}i,gone={}i {now_ns}",
            tally.deleted, tally.failed, tally.found, tally.gone
        ));
    }
    context.writer.write_line(format!(
        "apimon_sweep,{tags},kind=all deleted={}i,duration_ms={}i,failed={}i,found={}i,gone={}i,refused={}i {now_ns}",
        total.deleted,
        elapsed.as_millis(),
        total.failed,
        total.found,
        total.gone,
        u8::from(refused)
    ));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const OLD: &str = "2026-01-01T00:00:00Z";

    fn listed() -> BTreeMap<&'static str, Vec<Value>> {
        let mut listed: BTreeMap<&'static str, Vec<Value>> = BTreeMap::new();
        listed.insert("server", vec![
            json!({"id": "s-left", "name": "run-5f0c2d9e8a7b-vm", "created": OLD, "tenant_id": "p"}),
            // The platform's own server: marked; its port is not.
            json!({"id": "s-platform", "name": "outside-executor", "created": OLD, "tenant_id": "p", "metadata": {"apimon:managed": "true", "apimon:env": "outside"}}),
        ]);
        listed.insert("port", vec![
            json!({"id": "p-left", "name": "", "device_id": "s-left", "device_owner": "compute:nova", "created_at": OLD, "project_id": "p"}),
            json!({"id": "p-platform", "name": "", "device_id": "s-platform", "device_owner": "compute:nova", "created_at": OLD, "project_id": "p"}),
            json!({"id": "p-other", "name": "x-5f0c2d9e8a7b", "device_id": "", "device_owner": "", "created_at": OLD, "project_id": "elsewhere"}),
        ]);
        listed.insert(
            "keypair",
            vec![
                json!({"name": "outside-key"}),
                json!({"name": "run-5f0c2d9e8a7b-key"}),
                json!({"name": "run-77777777aaaa-key"}),
            ],
        );
        listed.insert("network", vec![
            json!({"id": "n-running", "name": "run-77777777aaaa-net", "created_at": OLD, "project_id": "p"}),
        ]);
        listed
    }

    fn chosen(select: Select) -> BTreeMap<&'static str, Vec<String>> {
        let jobs: BTreeSet<String> = ["5f0c2d9e".to_owned()].into();
        let running: BTreeSet<String> = ["77777777".to_owned()].into();
        let older_than = Utc::now();
        choose(&listed(), select, (&jobs, &running), older_than, "p")
            .into_iter()
            .map(|(kind, items)| (kind, items.into_iter().map(|(id, _)| id).collect()))
            .collect()
    }

    #[test]
    fn a_leftover_servers_port_goes_and_a_kept_servers_port_stays_in_either_selection() {
        for select in [Select::JobIds, Select::Project] {
            let chosen = chosen(select);
            assert!(chosen["port"].contains(&"p-left".to_owned()), "{select:?}: {chosen:?}");
            assert!(!chosen["port"].contains(&"p-platform".to_owned()), "{select:?}: {chosen:?}");
            assert!(
                !chosen["port"].contains(&"p-other".to_owned()),
                "another project's: {chosen:?}"
            );
        }
        assert_eq!(chosen(Select::Project)["server"], ["s-left"], "never a marked server");
    }

    #[test]
    fn keypairs_go_only_when_named_after_a_finished_run_and_nothing_of_a_running_one() {
        for select in [Select::JobIds, Select::Project] {
            let chosen = chosen(select);
            assert_eq!(chosen["keypair"], ["run-5f0c2d9e8a7b-key"], "{select:?}");
            assert!(chosen["network"].is_empty(), "a running run's network: {select:?}");
        }
    }
}
