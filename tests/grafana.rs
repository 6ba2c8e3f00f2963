//! The Grafana provider: folders, datasources and dashboards, with a REAL
//! InfluxDB for the rest of the environment, against the Grafana API double
//! in `support/grafana.rs` in each of its behaviour modes (10.x, 11.0–11.2,
//! 11.3+ and 12) — no Grafana server can be installed here — and, ignored
//! unless asked for, against a real Grafana: every scenario that needs no
//! failure injection runs there too (module `real_grafana`):
//!
//! ```text
//! GRAFANA_URL=https://grafana.example.net GRAFANA_TOKEN=glsa_… \
//!   cargo test --test tests -- --ignored real_grafana
//! ```
//!
//! On a real Grafana the test objects get a unique suffix and are removed
//! when a test ends (a test that fails midway leaves them, named
//! `apimon-t…`). The token needs the Admin role (datasources).

use std::path::PathBuf;

use apimon::apply::Outcome;
use apimon::model::Secrets;
use apimon::plan::{Op, ProviderKind};
use apimon::reconcile;
use apimon::reconcile::Plan;
use apimon::state::LockedStore;
use serde_json::{json, Value};

use crate::support::grafana::{GrafanaDouble, Version};
use crate::support::harness::{fast, Harness};
use crate::support::influxdb::InfluxServer;
use crate::support::TestRepo;

const TOKEN: &str = "glsa_token";

/// Where a test runs.
#[derive(Debug, Clone)]
enum Target {
    Double(Version),
    Real { url: String, token: String },
}

impl Target {
    fn real() -> Self {
        let (Ok(url), Ok(token)) = (std::env::var("GRAFANA_URL"), std::env::var("GRAFANA_TOKEN"))
        else {
            panic!("set GRAFANA_URL and GRAFANA_TOKEN to run against a real Grafana");
        };
        Self::Real { url, token }
    }
}

struct Setup {
    _influx: InfluxServer,
    double: Option<GrafanaDouble>,
    url: String,
    token: String,
    /// Appended to every uid and title the test makes (real Grafana only).
    suffix: String,
    /// Whether this Grafana keeps one dashboard (and folder) per title.
    unique_titles: bool,
    /// Whether it has nested folders.
    nested: bool,
    repo: TestRepo,
    secrets_file: PathBuf,
    state_dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl Setup {
    async fn new(target: &Target) -> Option<Self> {
        let influx = InfluxServer::start().await?;
        let (double, url, token, suffix) = match target {
            Target::Double(version) => {
                let double = GrafanaDouble::start(TOKEN, *version).await;
                let url = double.url.clone();
                (Some(double), url, TOKEN.to_owned(), String::new())
            }
            Target::Real { url, token } => {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.subsec_nanos());
                let suffix = format!("-t{}{nanos}", std::process::id());
                (None, url.clone(), token.clone(), suffix)
            }
        };
        let (unique_titles, nested) = match (target, &double) {
            (_, Some(double)) => {
                (double.version != Version::V11Late, double.version != Version::V10)
            }
            _ => real_version(&url, &token).await,
        };
        let repo = TestRepo::fixture();
        repo.edit("apimon.yaml", "http://192.168.10.30:8086", &influx.url());
        repo.edit("apimon.yaml", "http://192.168.10.40:3000", &url);
        if !suffix.is_empty() {
            // Never touch the real Grafana's own objects, nor its default datasource.
            let s = &suffix;
            repo.write(
                "inventory/outside/grafana.yaml",
                &format!("folders:\n  - {{uid: apimon{s}, title: API Monitoring{s}}}\ndatasources:\n  - {{name: apimon-outside{s}, database: apimon, user: grafana}}\n  - {{name: apimon-inside{s}, environment: inside, database: apimon, user: grafana}}\n"),
            );
            std::fs::remove_dir_all(repo.path().join("dashboards")).expect("rm");
            repo.write(
                &format!("dashboards/apimon{s}/scenarios.json"),
                &format!("{{\"uid\": \"apimon-scenarios{s}\", \"title\": \"Scenarios{s}\", \"tags\": [\"apimon\"], \"panels\": []}}"),
            );
        }
        let secrets = crate::support::outside_secrets();
        let secrets_file = repo.secrets_file(&secrets, 0o600);
        let setup = Self {
            _influx: influx,
            double,
            url,
            token,
            suffix,
            unique_titles,
            nested,
            repo,
            secrets_file,
            state_dir: tempfile::tempdir().expect("temp dir"),
            http: reqwest::Client::new(),
        };
        if !setup.suffix.is_empty() {
            let token = setup.token.clone();
            setup.set_secret("outside_grafana_token", &token);
        }
        Some(setup)
    }

    /// `name` as this test's object is called.
    fn uid(&self, name: &str) -> String {
        format!("{name}{}", self.suffix)
    }

    fn grafana(&self) -> &GrafanaDouble {
        self.double.as_ref().expect("this test runs against the double")
    }

    fn harness(&self) -> Harness {
        Harness::outside(self.repo.path(), &self.secrets_file, self.state_dir.path())
    }

    fn secrets(&self) -> Secrets {
        self.harness().secrets()
    }

    fn set_secret(&self, name: &str, value: &str) {
        self.harness().set_secret(name, value);
    }

    async fn try_plan(&self) -> Result<Plan, reconcile::ReconcileError> {
        Ok(self.harness().try_plan(apimon::providers::Probe::default()).await?.0)
    }

    async fn plan(&self) -> Plan {
        self.try_plan().await.expect("plan")
    }

    /// Plans, runs `between`, then applies that plan.
    async fn apply_after(&self, between: impl FnOnce()) -> (Plan, Outcome) {
        self.apply_probing(apimon::providers::Probe::default(), between).await
    }

    /// As [`apply_after`](Self::apply_after), planning as a drift pass
    /// whose `probe` re-reads what the state store would vouch for.
    async fn apply_probing(
        &self,
        probe: apimon::providers::Probe,
        between: impl FnOnce(),
    ) -> (Plan, Outcome) {
        self.harness().apply(&fast(), probe, between, |_| {}).await
    }

    async fn apply(&self) -> (Plan, Outcome) {
        self.apply_after(|| {}).await
    }

    /// A request to Grafana as an operator would send it by hand.
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request =
            self.http.request(method, format!("{}{path}", self.url)).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("grafana");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Dashboard `uid` as Grafana shows it: model and folder uid.
    async fn dashboard(&self, uid: &str) -> Option<(Value, String)> {
        let (status, body) =
            self.call(reqwest::Method::GET, &format!("/api/dashboards/uid/{uid}"), None).await;
        (status == 200).then(|| {
            let folder = body["meta"]["folderUid"].as_str().unwrap_or_default().to_owned();
            (body["dashboard"].clone(), folder)
        })
    }

    async fn datasource(&self, uid: &str) -> Option<Value> {
        let (status, body) =
            self.call(reqwest::Method::GET, &format!("/api/datasources/uid/{uid}"), None).await;
        (status == 200).then_some(body)
    }

    async fn folder_exists(&self, uid: &str) -> bool {
        self.call(reqwest::Method::GET, &format!("/api/folders/{uid}"), None).await.0 == 200
    }

    /// On a real Grafana: removes what the test made (apimon's objects by
    /// pruning, then the ones made by hand).
    async fn finish(self, by_hand: &[&str]) {
        if self.suffix.is_empty() {
            return;
        }
        std::fs::remove_dir_all(self.repo.path().join("dashboards")).expect("remove dashboards");
        self.repo.write("inventory/outside/grafana.yaml", "");
        self.repo.edit("apimon.yaml", "max_deletes: 5", "max_deletes: 50");
        let (_, outcome) = self.apply().await;
        for path in by_hand {
            let _ = self.call(reqwest::Method::DELETE, path, None).await;
        }
        assert!(outcome.is_success(), "cleanup: {outcome:?}");
    }
}

/// (titles unique, nested folders) of a real Grafana, from its version.
async fn real_version(url: &str, token: &str) -> (bool, bool) {
    let health: Value = reqwest::Client::new()
        .get(format!("{url}/api/health"))
        .bearer_auth(token)
        .send()
        .await
        .expect("health")
        .json()
        .await
        .expect("health JSON");
    let version = health["version"].as_str().unwrap_or("12.0.0");
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(12), parts.next().unwrap_or(0));
    ((major, minor) < (11, 3), major >= 11)
}

fn grafana_changes(plan: &Plan) -> Vec<(String, String, Op)> {
    plan.changes
        .iter()
        .filter(|c| c.id.provider == ProviderKind::named("grafana") && c.op != Op::NoOp)
        .map(|c| (c.id.kind.to_string(), c.id.name.to_string(), c.op.clone()))
        .collect()
}

fn failure(outcome: &Outcome, name: &str) -> String {
    outcome
        .failed
        .iter()
        .find(|(id, _)| *id.name == *name)
        .map(|(_, m)| m.to_string())
        .unwrap_or_else(|| panic!("{name} did not fail: {outcome:?}"))
}

/// Every Grafana scenario, for each mode of the double and (ignored) a real Grafana.
macro_rules! every_grafana {
    ($($name:ident),* $(,)?) => {
        mod grafana_10 { $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(super::Target::Double(super::Version::V10)).await } )* }
        mod grafana_11_0 { $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(super::Target::Double(super::Version::V11Early)).await } )* }
        mod grafana_11_3 { $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(super::Target::Double(super::Version::V11Late)).await } )* }
        mod real_grafana { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[ignore = "needs a real Grafana: set GRAFANA_URL and GRAFANA_TOKEN and run with --ignored"]
            async fn $name() { super::$name(super::Target::real()).await }
        )* }
    };
}

/// Scenarios that need the double's failure injection or provisioning.
macro_rules! every_double {
    ($($name:ident),* $(,)?) => {
        mod double_only { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                for version in super::Version::ALL {
                    super::$name(super::Target::Double(version)).await;
                }
            }
        )* }
    };
}

every_grafana! {
    create_from_nothing_then_a_second_run_changes_nothing,
    a_dashboard_edited_by_hand_in_grafana_is_restored,
    a_changed_datasource_password_is_written_once,
    pruning_deletes_what_apimon_created_and_nothing_made_by_hand,
    a_dashboard_of_the_same_title_is_never_taken_over,
    a_folder_title_clash_is_reported_with_grafanas_message,
    a_declared_folder_below_another_folder_is_found_by_uid,
    an_owned_folder_holding_foreign_content_at_any_depth_is_kept,
    a_wrong_base_url_is_an_error_not_an_empty_grafana,
    whole_numbers_written_as_floats_are_no_change,
    objects_made_by_hand_are_adopted_on_request_then_pruned_like_apimons,
}

every_double! {
    a_5xx_is_retried_and_a_persistent_one_is_reported,
    a_folder_made_by_a_lost_earlier_try_gets_its_title,
    the_declared_default_datasource_is_the_only_default,
    provisioned_objects_are_reported_as_read_only,
    the_admin_password_logs_in_without_a_token,
}

async fn create_from_nothing_then_a_second_run_changes_nothing(target: Target) {
    let Some(setup) = Setup::new(&target).await else { return };
    let (plan, outcome) = setup.apply().await;
    assert!(outcome.is_success(), "{outcome:?}");
    assert_eq!(grafana_changes(&plan).len(), 4, "{:?}", grafana_changes(&plan));

    let outside = setup.datasource(&setup.uid("apimon-outside")).await.expect("created");
    assert_eq!(outside["type"], "influxdb");
    assert_eq!(outside["jsonData"]["dbName"], "apimon");
    assert_eq!(outside["user"], "grafana");
    assert_eq!(outside["isDefault"], setup.suffix.is_empty());
    assert_eq!(outside["secureJsonFields"]["password"], true);
    let inside = setup.datasource(&setup.uid("apimon-inside")).await.expect("created");
    assert_eq!(inside["url"], "http://192.168.20.30:8086");
    if let Some(double) = &setup.double {
        let secure =
            |uid: &str| double.datasource(uid).and_then(|d| d.secure.get("password").cloned());
        assert_eq!(secure("apimon-outside").as_deref(), Some("outside-grafana-pw"));
        assert_eq!(secure("apimon-inside").as_deref(), Some("inside-grafana-pw"));
    }
    let (model, folder) = setup.dashboard(&setup.uid("apimon-scenarios")).await.expect("created");
    assert_eq!(folder, setup.uid("apimon"));
    assert!(model["tags"].as_array().is_some_and(|t| t.iter().any(|t| t == "apimon")), "{model}");

    let before = setup.double.as_ref().map(GrafanaDouble::requests);
    let plan = setup.plan().await;
    assert!(!plan.summary.has_changes(), "spurious diff: {:?}", grafana_changes(&plan));
    if let (Some(double), Some(before)) = (&setup.double, before) {
        // folders, datasources, 2 datasources by uid (password flag), search;
        // the dashboard is taken as recorded (its content hash in the state store).
        assert_eq!(double.requests() - before, 5);
    }
    setup.finish(&[]).await;
}

async fn a_dashboard_edited_by_hand_in_grafana_is_restored(target: Target) {
    let Some(setup) = Setup::new(&target).await else { return };
    assert!(setup.apply().await.1.is_success());
    let uid = setup.uid("apimon-scenarios");
    let (mut edited, folder) = setup.dashboard(&uid).await.expect("dashboard");
    edited["title"] = json!("Edited by hand");
    edited["panels"] = json!([]);
    let body = json!({ "dashboard": edited, "folderUid": folder, "overwrite": false });
    let (status, _) = setup.call(reqwest::Method::POST, "/api/dashboards/db", Some(body)).await;
    assert_eq!(status, 200);

    // A commit's plan takes the dashboard as apimon last wrote it (unread);
    // the drift pass whose probe selects it reads it and restores it.
    assert!(!setup.plan().await.summary.has_changes());
    let probe = apimon::providers::Probe { round: 0, budget: 100 };
    let (plan, outcome) = setup.apply_probing(probe, || {}).await;
    assert_eq!(
        grafana_changes(&plan),
        vec![(
            "dashboard".to_owned(),
            uid.clone(),
            Op::Update { reason: "dashboard content changed".into() }
        )]
    );
    assert!(outcome.is_success(), "{outcome:?}");
    let (restored, _) = setup.dashboard(&uid).await.expect("dashboard");
    assert_eq!(restored["title"], setup.uid("Scenarios"));
    assert!(!setup.plan().await.summary.has_changes());
    setup.finish(&[]).await;
}

async fn a_changed_datasource_password_is_written_once(target: Target) {
    let Some(setup) = Setup::new(&target).await else { return };
    assert!(setup.apply().await.1.is_success());
    setup.set_secret("outside_influxdb_grafana_password", "rotated-grafana-pw");
    let (plan, outcome) = setup.apply().await;
    assert_eq!(
        grafana_changes(&plan),
        vec![(
            "datasource".to_owned(),
            setup.uid("apimon-outside"),
            Op::Update { reason: "password changed".into() }
        )]
    );
    assert!(outcome.is_success(), "{outcome:?}");
    if let Some(double) = &setup.double {
        let written =
            double.datasource("apimon-outside").and_then(|d| d.secure.get("password").cloned());
        assert_eq!(written.as_deref(), Some("rotated-grafana-pw"));
    }
    assert!(
        !setup.plan().await.summary.has_changes(),
        "the new password must not show as a change again"
    );
    let state_text =
        std::fs::read_to_string(setup.state_dir.path().join("state.json")).expect("state");
    assert!(!state_text.contains("rotated-grafana-pw"), "a secret reached the state file");
    setup.finish(&[]).await;
}

async fn pruning_deletes_what_apimon_created_and_nothing_made_by_hand(target: Target) {
    let Some(setup) = Setup::new(&target).await else { return };
    let folder = setup.uid("apimon");
    let extra = setup.uid("apimon-extra");
    setup.repo.write(
        &format!("dashboards/{folder}/extra.json"),
        &format!(r#"{{"uid": "{extra}", "title": "Extra{}", "panels": []}}"#, setup.suffix),
    );
    assert!(setup.apply().await.1.is_success());
    assert!(setup.dashboard(&extra).await.is_some());
    let handmade = setup.uid("handmade");
    let body = json!({ "dashboard": { "uid": handmade, "title": setup.uid("Mine") }, "folderUid": folder });
    assert_eq!(setup.call(reqwest::Method::POST, "/api/dashboards/db", Some(body)).await.0, 200);

    std::fs::remove_file(setup.repo.path().join(format!("dashboards/{folder}/extra.json")))
        .expect("remove");
    let inside_line =
        std::fs::read_to_string(setup.repo.path().join("inventory/outside/grafana.yaml"))
            .expect("read")
            .lines()
            .find(|l| l.contains("environment: inside"))
            .map(|l| format!("{l}\n"))
            .expect("inside datasource");
    setup.repo.edit("inventory/outside/grafana.yaml", &inside_line, "");
    let (plan, outcome) = setup.apply().await;
    let mut changes = grafana_changes(&plan);
    changes.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(
        changes,
        vec![
            ("dashboard".to_owned(), extra.clone(), Op::Delete),
            ("datasource".to_owned(), setup.uid("apimon-inside"), Op::Delete)
        ]
    );
    assert!(outcome.is_success(), "{outcome:?}");
    assert!(setup.dashboard(&extra).await.is_none());
    assert!(setup.datasource(&setup.uid("apimon-inside")).await.is_none());
    assert!(setup.dashboard(&handmade).await.is_some(), "a dashboard made by hand was deleted");
    setup.finish(&[&format!("/api/dashboards/uid/{handmade}")]).await;
}

async fn a_dashboard_of_the_same_title_is_never_taken_over(target: Target) {
    let Some(setup) = Setup::new(&target).await else { return };
    assert!(setup.apply().await.1.is_success());
    // Someone keeps a dashboard titled like the one the next commit adds.
    let folder = setup.uid("apimon");
    let title = setup.uid("Latency");
    let handmade = setup.uid("handmade");
    let body = json!({ "dashboard": { "uid": handmade, "title": title, "panels": [{"title": "mine"}] }, "folderUid": folder });
    assert_eq!(setup.call(reqwest::Method::POST, "/api/dashboards/db", Some(body)).await.0, 200);
    let ours = setup.uid("apimon-latency");
    setup.repo.write(
        &format!("dashboards/{folder}/latency.json"),
        &format!(r#"{{"uid": "{ours}", "title": "{title}", "panels": []}}"#),
    );
    let (_, outcome) = setup.apply().await;
    let (theirs, _) = setup.dashboard(&handmade).await.expect("theirs is still there");
    assert_eq!(theirs["panels"][0]["title"], "mine", "someone else's dashboard was overwritten");
    if setup.unique_titles {
        let message = failure(&outcome, &ours);
        assert!(message.contains(&format!("would take over dashboard {handmade}")), "{message}");
        assert!(setup.dashboard(&ours).await.is_none());
    } else {
        assert!(outcome.is_success(), "{outcome:?}");
        assert!(setup.dashboard(&ours).await.is_some());
        assert!(!setup.plan().await.summary.has_changes());
    }
    setup.finish(&[&format!("/api/dashboards/uid/{handmade}")]).await;
}

async fn a_folder_title_clash_is_reported_with_grafanas_message(target: Target) {
    let Some(setup) = Setup::new(&target).await else { return };
    let other = setup.uid("other");
    let body = json!({ "uid": other, "title": setup.uid("API Monitoring") });
    assert_eq!(setup.call(reqwest::Method::POST, "/api/folders", Some(body)).await.0, 200);
    let (_, outcome) = setup.apply().await;
    if setup.unique_titles {
        let message = failure(&outcome, &setup.uid("apimon"));
        assert!(
            message.contains("HTTP 409") && message.contains("same name already exists"),
            "{message}"
        );
        assert!(!setup.folder_exists(&setup.uid("apimon")).await);
    } else {
        assert!(outcome.is_success(), "{outcome:?}");
        assert!(setup.folder_exists(&setup.uid("apimon")).await);
    }
    assert!(setup.folder_exists(&other).await);
    setup.finish(&[&format!("/api/folders/{other}")]).await;
}

async fn a_declared_folder_below_another_folder_is_found_by_uid(target: Target) {
    let Some(setup) = Setup::new(&target).await else { return };
    // Made by hand below a team folder (nested folders; older Grafana
    // ignores `parentUid` and makes it at the root).
    let team = setup.uid("team");
    let body = json!({ "uid": team, "title": setup.uid("Team") });
    assert_eq!(setup.call(reqwest::Method::POST, "/api/folders", Some(body)).await.0, 200);
    let folder = setup.uid("apimon");
    let body = json!({ "uid": folder, "title": setup.uid("API Monitoring"), "parentUid": team });
    assert_eq!(setup.call(reqwest::Method::POST, "/api/folders", Some(body)).await.0, 200);
    let (_, listed) = setup.call(reqwest::Method::GET, "/api/folders", None).await;
    let at_root = listed.as_array().is_some_and(|l| l.iter().any(|f| f["uid"] == folder.as_str()));
    assert_eq!(at_root, !setup.nested, "{listed}");
    let plan = setup.plan().await;
    assert!(
        !grafana_changes(&plan).iter().any(|(kind, ..)| kind == "folder"),
        "the folder is planned again: {:?}",
        grafana_changes(&plan)
    );
    assert!(setup.apply().await.1.is_success());
    setup.finish(&[&format!("/api/folders/{folder}"), &format!("/api/folders/{team}")]).await;
}

async fn an_owned_folder_holding_foreign_content_at_any_depth_is_kept(target: Target) {
    let Some(setup) = Setup::new(&target).await else { return };
    assert!(setup.apply().await.1.is_success());
    let folder = setup.uid("apimon");
    // Nested Grafana: a subfolder with a dashboard; else a dashboard.
    let (inside, cleanup) = if setup.nested {
        let sub = setup.uid("sub");
        let body = json!({ "uid": sub, "title": setup.uid("Sub"), "parentUid": folder });
        assert_eq!(setup.call(reqwest::Method::POST, "/api/folders", Some(body)).await.0, 200);
        let body = json!({ "dashboard": { "uid": setup.uid("deep"), "title": setup.uid("Deep") }, "folderUid": sub });
        assert_eq!(
            setup.call(reqwest::Method::POST, "/api/dashboards/db", Some(body)).await.0,
            200
        );
        (format!("folder {sub}"), format!("/api/folders/{sub}"))
    } else {
        let mine = setup.uid("mine");
        let body = json!({ "dashboard": { "uid": mine, "title": setup.uid("Mine") }, "folderUid": folder });
        assert_eq!(
            setup.call(reqwest::Method::POST, "/api/dashboards/db", Some(body)).await.0,
            200
        );
        (format!("dashboard {mine}"), format!("/api/dashboards/uid/{mine}"))
    };
    std::fs::remove_dir_all(setup.repo.path().join("dashboards")).expect("rm");
    let grafana_yaml = setup.repo.path().join("inventory/outside/grafana.yaml");
    let text = std::fs::read_to_string(&grafana_yaml).expect("read");
    let folders_line = text.lines().find(|l| l.contains("uid: apimon")).expect("folder line");
    setup.repo.edit("inventory/outside/grafana.yaml", &format!("{folders_line}\n"), "");
    setup.repo.edit("inventory/outside/grafana.yaml", "folders:\n", "folders: []\n");
    let (_, outcome) = setup.apply().await;
    let message = failure(&outcome, &folder);
    assert!(message.contains(&format!("refusing to delete folder {folder}")), "{message}");
    assert!(message.contains(&inside), "{message}");
    assert!(setup.folder_exists(&folder).await);
    if setup.nested {
        assert!(setup.dashboard(&setup.uid("deep")).await.is_some());
    }
    setup.finish(&[&cleanup, &format!("/api/folders/{folder}")]).await;
}

async fn a_wrong_base_url_is_an_error_not_an_empty_grafana(target: Target) {
    let Some(setup) = Setup::new(&target).await else { return };
    // A missing (here: an extra) sub-path: the lists answer 404.
    let wrong = format!("{}/nothing-here", setup.url);
    setup.repo.edit("apimon.yaml", &setup.url, &wrong);
    let error = setup.try_plan().await.expect_err("404 on a list is not an empty Grafana");
    let text = apimon::error::chain(&error);
    assert!(text.contains("answered HTTP 404"), "{text}");
    assert!(text.contains("is the URL right"), "{text}");
    setup.repo.edit("apimon.yaml", &wrong, &setup.url);
    setup.finish(&[]).await;
}

async fn whole_numbers_written_as_floats_are_no_change(target: Target) {
    let Some(setup) = Setup::new(&target).await else { return };
    let folder = setup.uid("apimon");
    setup.repo.write(
        &format!("dashboards/{folder}/grid.json"),
        &format!(
            r#"{{"uid": "{}", "title": "Grid{}", "panels": [{{"gridPos": {{"h": 8.0, "w": 12, "x": 0.0, "y": 0}}, "fillOpacity": 0.5}}]}}"#,
            setup.uid("apimon-grid"),
            setup.suffix
        ),
    );
    assert!(setup.apply().await.1.is_success());
    let plan = setup.plan().await;
    assert!(!plan.summary.has_changes(), "spurious diff: {:?}", grafana_changes(&plan));
    setup.finish(&[]).await;
}

async fn a_5xx_is_retried_and_a_persistent_one_is_reported(target: Target) {
    let Some(setup) = Setup::new(&target).await else { return };
    // One 500 on the first change: retried, then applied.
    let (_, outcome) = setup.apply_after(|| setup.grafana().fail_next(1)).await;
    assert!(outcome.is_success(), "{outcome:?}");

    setup.repo.edit(
        "inventory/outside/grafana.yaml",
        "title: API Monitoring",
        "title: API Monitoring (prod)",
    );
    let (plan, outcome) = setup.apply_after(|| setup.grafana().fail_next(1000)).await;
    assert_eq!(grafana_changes(&plan).len(), 1);
    let message = failure(&outcome, "apimon");
    assert!(message.contains("HTTP 500") && message.contains("(after 3 attempts)"), "{message}");
    setup.grafana().fail_next(0);
    let (_, outcome) = setup.apply().await;
    assert!(outcome.is_success(), "{outcome:?}");
}

async fn provisioned_objects_are_reported_as_read_only(target: Target) {
    let Some(setup) = Setup::new(&target).await else { return };
    assert!(setup.apply().await.1.is_success());
    setup.grafana().provision_datasource("apimon-outside");
    setup.grafana().provision_dashboard("apimon-scenarios");
    setup.set_secret("outside_influxdb_grafana_password", "rotated-grafana-pw");
    setup.repo.edit("dashboards/apimon/scenarios.json", "\"Scenarios\"", "\"Scenarios (new)\"");
    let (_, outcome) = setup.apply().await;
    for (name, what) in [("apimon-outside", "datasource"), ("apimon-scenarios", "dashboard")] {
        let message = failure(&outcome, name);
        assert!(
            message.contains(&format!("{what} {name} is provisioned (read-only)")),
            "{message}"
        );
        assert!(!message.contains("token"), "not the token's fault: {message}");
    }
    // Pruning one is refused by Grafana: its own message is the error.
    std::fs::remove_file(setup.repo.path().join("dashboards/apimon/scenarios.json")).expect("rm");
    let (_, outcome) = setup.apply().await;
    let message = failure(&outcome, "apimon-scenarios");
    assert!(message.contains("HTTP 400: provisioned dashboard cannot be deleted"), "{message}");
    assert!(setup.grafana().dashboard("apimon-scenarios").is_some());
}

async fn the_admin_password_logs_in_without_a_token(target: Target) {
    let Some(setup) = Setup::new(&target).await else { return };
    // The double takes `admin:<token>` as the admin user's basic auth.
    setup.repo.edit(
        "apimon.yaml",
        "      token: {secret: outside_grafana_token}\n",
        "      admin_password: {secret: outside_grafana_token}\n",
    );
    let (_, outcome) = setup.apply().await;
    assert!(outcome.is_success(), "{outcome:?}");
    assert!(setup.grafana().dashboard("apimon-scenarios").is_some());
    setup.set_secret("outside_grafana_token", "wrong");
    let error = setup.try_plan().await.expect_err("a wrong password is refused");
    let text = apimon::error::chain(&error);
    assert!(text.contains("rejected the credentials (HTTP 401: Unauthorized)"), "{text}");
}

async fn a_folder_made_by_a_lost_earlier_try_gets_its_title(target: Target) {
    let Some(setup) = Setup::new(&target).await else { return };
    // Between plan and apply the folder appears (an earlier try whose
    // answer was lost): 409 before 11.3, 412 after; either way it is
    // recognised by its uid and given the declared title.
    let (_, outcome) = setup
        .apply_after(|| {
            let mut store = setup.grafana().store.lock().expect("store");
            store.folders.insert(
                "apimon".to_owned(),
                crate::support::grafana::Folder {
                    id: 999,
                    title: "Half made".to_owned(),
                    version: 1,
                    parent: String::new(),
                },
            );
        })
        .await;
    assert!(outcome.is_success(), "{outcome:?}");
    assert_eq!(setup.grafana().folder("apimon").expect("folder").title, "API Monitoring");
}

async fn the_declared_default_datasource_is_the_only_default(target: Target) {
    let Some(setup) = Setup::new(&target).await else { return };
    let body = json!({ "name": "theirs", "uid": "theirs", "type": "influxdb", "url": "http://x:8086", "isDefault": true });
    assert_eq!(setup.call(reqwest::Method::POST, "/api/datasources", Some(body)).await.0, 200);
    assert!(setup.apply().await.1.is_success());
    // Grafana keeps one default: the declared one took it over.
    assert_eq!(setup.datasource("apimon-outside").await.expect("ours")["isDefault"], true);
    assert_eq!(setup.datasource("theirs").await.expect("theirs")["isDefault"], false);
    let plan = setup.plan().await;
    assert!(!plan.summary.has_changes(), "spurious diff: {:?}", grafana_changes(&plan));
}

async fn objects_made_by_hand_are_adopted_on_request_then_pruned_like_apimons(target: Target) {
    let Some(setup) = Setup::new(&target).await else { return };
    let folder = setup.uid("apimon");
    // A folder and a dashboard made by hand, under the uids the repository
    // declares.
    let body = json!({ "uid": folder, "title": setup.uid("API Monitoring") });
    assert_eq!(setup.call(reqwest::Method::POST, "/api/folders", Some(body)).await.0, 200);
    let handmade = setup.uid("handmade-latency");
    let dashboard = json!({ "uid": handmade, "title": setup.uid("Latency"), "panels": [] });
    let body = json!({ "dashboard": dashboard, "folderUid": folder });
    assert_eq!(setup.call(reqwest::Method::POST, "/api/dashboards/db", Some(body)).await.0, 200);
    setup.repo.write(&format!("dashboards/{folder}/latency.json"), &dashboard.to_string());

    let prepared = crate::support::prepare_outside(setup.repo.path(), &setup.secrets());
    let store = LockedStore::open(setup.state_dir.path()).expect("lock");
    let adoption =
        reconcile::plan_adoption(&prepared, &store.load().expect("state")).await.expect("plan");
    let names: Vec<String> = adoption
        .adopt
        .iter()
        .filter(|id| id.provider == ProviderKind::named("grafana"))
        .map(|id| format!("{}/{}", id.kind, id.name))
        .collect();
    assert_eq!(names, [format!("dashboard/{handmade}"), format!("folder/{folder}")]);
    let failed = reconcile::adopt(&store, &prepared, &adoption).await.expect("adopt");
    assert!(failed.is_empty(), "{failed:?}");
    drop(store);

    // Adopted: the rest is created, then the adopted dashboard is apimon's
    // to delete when the repository drops it.
    assert!(setup.apply().await.1.is_success());
    std::fs::remove_file(setup.repo.path().join(format!("dashboards/{folder}/latency.json")))
        .expect("remove");
    let (plan, outcome) = setup.apply().await;
    assert!(outcome.is_success(), "{outcome:?}");
    assert_eq!(grafana_changes(&plan), [("dashboard".to_owned(), handmade.clone(), Op::Delete)]);
    assert!(setup.dashboard(&handmade).await.is_none());
    setup.finish(&[]).await;
}
