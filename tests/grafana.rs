//! The Grafana provider: folders, datasources and dashboards, against the
//! Grafana API double in `support/grafana.rs` (no Grafana server can be
//! installed here), with a REAL InfluxDB for the rest of the environment.
//! `real_grafana_when_configured` runs the same provider against a real
//! Grafana (`GRAFANA_URL`, `GRAFANA_TOKEN`, `cargo test -- --ignored real_grafana`).

use std::path::PathBuf;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use apimon::apply::{ApplyOptions, Outcome};
use apimon::model::secret::SecretStore;
use apimon::model::Secrets;
use apimon::plan::{Op, ProviderKind};
use apimon::reconcile;
use apimon::reconcile::Plan;
use apimon::state::{self, LockedStore};
use serde_json::json;

use crate::support::grafana::GrafanaDouble;
use crate::support::influxdb::InfluxServer;
use crate::support::TestRepo;

const TOKEN: &str = "glsa_token";

struct Setup {
    _influx: InfluxServer,
    double: Option<GrafanaDouble>,
    repo: TestRepo,
    secrets_file: PathBuf,
    state_dir: tempfile::TempDir,
}

impl Setup {
    async fn new() -> Option<Self> {
        let influx = InfluxServer::start().await?;
        let double = GrafanaDouble::start(TOKEN).await;
        let setup = Self::with(influx, &double.url);
        Some(Self { double: Some(double), ..setup })
    }

    fn grafana(&self) -> &GrafanaDouble {
        self.double.as_ref().expect("this test runs against the double")
    }

    fn with(influx: InfluxServer, grafana_url: &str) -> Self {
        let repo = TestRepo::fixture();
        repo.edit("apimon.yaml", "http://192.168.10.30:8086", &influx.url());
        repo.edit("apimon.yaml", "http://192.168.10.40:3000", grafana_url);
        let secrets = crate::support::outside_secrets();
        let secrets_file = repo.secrets_file(&secrets, 0o600);
        Self {
            _influx: influx,
            double: None,
            repo,
            secrets_file,
            state_dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    fn secrets(&self) -> Secrets {
        Secrets::Resolved(
            SecretStore::load(Some(&self.secrets_file), std::iter::empty()).expect("secrets"),
        )
    }

    fn set_secret(&self, name: &str, value: &str) {
        let text = std::fs::read_to_string(&self.secrets_file).expect("read");
        let replaced: String = text
            .lines()
            .map(|l| {
                if l.starts_with(&format!("{name}:")) {
                    format!("{name}: {value}\n")
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        assert_ne!(text, replaced);
        std::fs::write(&self.secrets_file, replaced).expect("write");
    }

    async fn plan(&self) -> Plan {
        let prepared = crate::support::prepare_outside(self.repo.path(), &self.secrets());
        let state = state::read(self.state_dir.path()).expect("state");
        reconcile::plan(&prepared, &state, false).await.expect("plan")
    }

    /// Plans, runs `between`, then applies that plan.
    async fn apply_after(&self, between: impl FnOnce()) -> (Plan, Outcome) {
        let prepared = crate::support::prepare_outside(self.repo.path(), &self.secrets());
        let store = LockedStore::open(self.state_dir.path()).expect("lock");
        let plan =
            reconcile::plan(&prepared, &store.load().expect("state"), false).await.expect("plan");
        between();
        let options = ApplyOptions {
            parallelism: 2,
            max_attempts: 3,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(40),
        };
        let outcome =
            reconcile::apply(&store, &prepared, &plan, &options, |_| {}, &CancellationToken::new())
                .await
                .expect("apply");
        (plan, outcome)
    }

    async fn apply(&self) -> (Plan, Outcome) {
        self.apply_after(|| {}).await
    }
}

fn grafana_changes(plan: &Plan) -> Vec<(String, String, Op)> {
    plan.changes
        .iter()
        .filter(|c| c.id.provider == ProviderKind::named("grafana") && c.op != Op::NoOp)
        .map(|c| (c.id.kind.to_string(), c.id.name.clone(), c.op.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_from_nothing_then_a_second_run_changes_nothing() {
    let Some(setup) = Setup::new().await else { return };
    let (plan, outcome) = setup.apply().await;
    assert!(outcome.is_success(), "{outcome:?}");
    assert_eq!(grafana_changes(&plan).len(), 4, "{:?}", grafana_changes(&plan));

    let outside = setup.grafana().datasource("apimon-outside").expect("datasource created");
    assert_eq!(outside.body["type"], "influxdb");
    assert_eq!(outside.body["jsonData"]["dbName"], "apimon");
    assert_eq!(outside.body["user"], "grafana");
    assert_eq!(outside.body["isDefault"], true);
    assert_eq!(outside.body["secureJsonFields"]["password"], true);
    assert_eq!(outside.secure.get("password").map(String::as_str), Some("outside-grafana-pw"));
    let inside = setup.grafana().datasource("apimon-inside").expect("datasource created");
    assert_eq!(inside.body["url"], "http://192.168.20.30:8086");
    assert_eq!(inside.secure.get("password").map(String::as_str), Some("inside-grafana-pw"));
    let dashboard = setup.grafana().dashboard("apimon-scenarios").expect("dashboard created");
    assert_eq!(dashboard.folder_uid, "apimon");
    assert!(
        dashboard.model["tags"].as_array().is_some_and(|t| t.iter().any(|t| t == "apimon")),
        "{:?}",
        dashboard.model
    );

    let before = setup.grafana().requests();
    let plan = setup.plan().await;
    assert!(!plan.summary.has_changes(), "spurious diff: {:?}", grafana_changes(&plan));
    // folders, datasources, 2 datasources by uid (password flag), search, 1 dashboard.
    assert_eq!(setup.grafana().requests() - before, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dashboard_edited_by_hand_in_grafana_is_restored() {
    let Some(setup) = Setup::new().await else { return };
    assert!(setup.apply().await.1.is_success());
    let mut edited = setup.grafana().dashboard("apimon-scenarios").expect("dashboard").model;
    edited["title"] = json!("Edited by hand");
    edited["panels"] = json!([]);
    let saved = reqwest::Client::new()
        .post(format!("{}/api/dashboards/db", setup.grafana().url))
        .bearer_auth(TOKEN)
        .json(&json!({ "dashboard": edited, "folderUid": "apimon", "overwrite": false }))
        .send()
        .await
        .expect("save by hand");
    assert_eq!(saved.status().as_u16(), 200);

    let (plan, outcome) = setup.apply().await;
    assert_eq!(
        grafana_changes(&plan),
        vec![(
            "dashboard".to_owned(),
            "apimon-scenarios".to_owned(),
            Op::Update { reason: "dashboard content changed".into() }
        )]
    );
    assert!(outcome.is_success(), "{outcome:?}");
    let restored = setup.grafana().dashboard("apimon-scenarios").expect("dashboard").model;
    assert_eq!(restored["title"], "Scenarios");
    assert!(!setup.plan().await.summary.has_changes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_datasource_password_is_written_once() {
    let Some(setup) = Setup::new().await else { return };
    assert!(setup.apply().await.1.is_success());
    setup.set_secret("outside_influxdb_grafana_password", "rotated-grafana-pw");
    let (plan, outcome) = setup.apply().await;
    assert_eq!(
        grafana_changes(&plan),
        vec![(
            "datasource".to_owned(),
            "apimon-outside".to_owned(),
            Op::Update { reason: "password changed".into() }
        )]
    );
    assert!(outcome.is_success(), "{outcome:?}");
    assert_eq!(
        setup
            .grafana()
            .datasource("apimon-outside")
            .and_then(|d| d.secure.get("password").cloned())
            .as_deref(),
        Some("rotated-grafana-pw")
    );
    assert!(
        !setup.plan().await.summary.has_changes(),
        "the new password must not show as a change again"
    );
    let state_text =
        std::fs::read_to_string(setup.state_dir.path().join("state.json")).expect("state");
    assert!(!state_text.contains("rotated-grafana-pw"), "a secret reached the state file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_deletes_what_apimon_created_and_nothing_made_by_hand() {
    let Some(setup) = Setup::new().await else { return };
    setup.repo.write(
        "dashboards/apimon/extra.json",
        r#"{"uid": "apimon-extra", "title": "Extra", "panels": []}"#,
    );
    assert!(setup.apply().await.1.is_success());
    assert!(setup.grafana().dashboard("apimon-extra").is_some());
    let by_hand = reqwest::Client::new()
        .post(format!("{}/api/dashboards/db", setup.grafana().url))
        .bearer_auth(TOKEN)
        .json(
            &json!({ "dashboard": { "uid": "handmade", "title": "Mine" }, "folderUid": "apimon" }),
        )
        .send()
        .await
        .expect("save by hand");
    assert_eq!(by_hand.status().as_u16(), 200);

    std::fs::remove_file(setup.repo.path().join("dashboards/apimon/extra.json")).expect("remove");
    setup.repo.edit(
        "inventory/outside/grafana.yaml",
        "  - {name: apimon-inside, environment: inside, database: apimon, user: grafana}\n",
        "",
    );
    let (plan, outcome) = setup.apply().await;
    let mut changes = grafana_changes(&plan);
    changes.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(
        changes,
        vec![
            ("dashboard".to_owned(), "apimon-extra".to_owned(), Op::Delete),
            ("datasource".to_owned(), "apimon-inside".to_owned(), Op::Delete)
        ]
    );
    assert!(outcome.is_success(), "{outcome:?}");
    assert!(
        setup.grafana().dashboard("apimon-extra").is_none()
            && setup.grafana().datasource("apimon-inside").is_none()
    );
    assert!(
        setup.grafana().dashboard("handmade").is_some(),
        "a dashboard made by hand was deleted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5xx_is_retried_and_a_persistent_one_is_reported() {
    let Some(setup) = Setup::new().await else { return };
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
    let failure = outcome
        .failed
        .iter()
        .find(|(id, _)| id.name == "apimon")
        .map(|(_, m)| m.to_string())
        .expect("folder change failed");
    assert!(failure.contains("HTTP 500") && failure.contains("(after 3 attempts)"), "{failure}");
    setup.grafana().fail_next(0);
    let (_, outcome) = setup.apply().await;
    assert!(outcome.is_success(), "{outcome:?}");
}

/// Run with `GRAFANA_URL=… GRAFANA_TOKEN=… cargo test -- --ignored real_grafana`
/// (a service-account token with the Editor or Admin role). Ignored by
/// default, and counted as such, because no Grafana can run on these machines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real Grafana: set GRAFANA_URL and GRAFANA_TOKEN and run with --ignored"]
async fn real_grafana_when_configured() {
    let (Ok(url), Ok(token)) = (std::env::var("GRAFANA_URL"), std::env::var("GRAFANA_TOKEN"))
    else {
        panic!("set GRAFANA_URL and GRAFANA_TOKEN to run this test against a real Grafana");
    };
    let Some(influx) = InfluxServer::start().await else { return };
    let setup = Setup::with(influx, &url);
    setup.set_secret("outside_grafana_token", &token);
    let (_, outcome) = setup.apply().await;
    assert!(outcome.is_success(), "{outcome:?}");
    let plan = setup.plan().await;
    assert!(
        !plan.summary.has_changes(),
        "spurious diff against a real Grafana: {:?}",
        grafana_changes(&plan)
    );
    // Clean up what the test created.
    std::fs::remove_dir_all(setup.repo.path().join("dashboards")).expect("remove dashboards");
    setup.repo.write("inventory/outside/grafana.yaml", "");
    setup.repo.edit("apimon.yaml", "max_deletes: 5", "max_deletes: 50");
    let (_, outcome) = setup.apply().await;
    assert!(outcome.is_success(), "cleanup: {outcome:?}");
}
