//! The InfluxDB provider, apply and the state store against a REAL
//! InfluxDB 1.x started by the harness (see `support/influxdb.rs`).

use std::path::PathBuf;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use apimon::apply::{ApplyOptions, Event, Outcome};
use apimon::model::secret::SecretStore;
use apimon::model::Secrets;
use apimon::plan::Op;
use apimon::reconcile;
use apimon::reconcile::Plan;
use apimon::state::{self, LockedStore};

use crate::support::harness::Harness;
use crate::support::influxdb::InfluxServer;
use crate::support::{apimon, fixture_files_without_grafana, fixture_secrets, text, TestRepo};

const ADMIN: (&str, &str) = ("admin", "outside-admin-pw");

/// A fixture repository whose `outside` InfluxDB is the test server.
struct Setup {
    server: InfluxServer,
    repo: TestRepo,
    secrets_file: PathBuf,
    state_dir: tempfile::TempDir,
}

impl Setup {
    async fn new() -> Option<Self> {
        let server = InfluxServer::start().await?;
        let repo = TestRepo::with_files(fixture_files_without_grafana());
        repo.edit("apimon.yaml", "http://192.168.10.30:8086", &server.url());
        // Only what `outside` needs: its own secrets and the password of the
        // inside InfluxDB user its Grafana datasource logs in with.
        let secrets = crate::support::outside_secrets();
        let secrets_file = repo.secrets_file(&secrets, 0o600);
        Some(Self { server, repo, secrets_file, state_dir: tempfile::tempdir().expect("temp dir") })
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

    /// Plans `outside` against the server: (plan, HTTP requests it took).
    async fn plan(&self) -> (Plan, usize) {
        self.plan_probing(apimon::providers::Probe::default()).await
    }

    /// A plan that also checks the `probe` slice of passwords by logging in.
    async fn plan_probing(&self, probe: apimon::providers::Probe) -> (Plan, usize) {
        let (plan, prepared) = self.harness().plan(probe).await;
        (plan, prepared.live.as_ref().map_or(0, |l| l.requests_of("influxdb")))
    }

    /// Applies `outside`, calling `on_event` per change.
    async fn apply_with(
        &self,
        options: &ApplyOptions,
        on_event: impl FnMut(Event<'_>),
    ) -> (Plan, Outcome) {
        let probe = apimon::providers::Probe::default();
        self.harness().apply(options, probe, || {}, on_event).await
    }

    async fn apply(&self) -> (Plan, Outcome) {
        self.apply_with(&fast(), |_| {}).await
    }

    /// `apimon apply` through the binary.
    fn cli_apply(&self) -> (Option<i32>, String, String) {
        let output = apimon(&[
            "apply",
            "--repo",
            &self.repo.path().to_string_lossy(),
            "--env",
            "outside",
            "--auto-approve",
            "--secrets",
            &self.secrets_file.to_string_lossy(),
            "--state-dir",
            &self.state_dir.path().to_string_lossy(),
            "--backoff-ms",
            "20",
        ]);
        let (stdout, stderr) = text(&output);
        (output.status.code(), stdout, stderr)
    }

    async fn users(&self) -> Vec<String> {
        let (_, body) = self.server.query(Some(ADMIN), "SHOW USERS").await;
        body["results"][0]["series"][0]["values"]
            .as_array()
            .map(|rows| rows.iter().filter_map(|r| r[0].as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    }

    /// `SHOW CONTINUOUS QUERIES` on `apimon`: its [name, query] rows.
    async fn continuous_queries(&self) -> Vec<serde_json::Value> {
        let (_, body) = self.server.query(Some(ADMIN), "SHOW CONTINUOUS QUERIES").await;
        let series = body["results"][0]["series"].as_array().cloned().unwrap_or_default();
        series
            .iter()
            .filter(|s| s["name"] == "apimon")
            .flat_map(|s| s["values"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    /// Writes line protocol into `database` as the administrator.
    async fn write(&self, database: &str, body: &str) {
        let status = self.server.write(ADMIN, database, body).await;
        assert_eq!(status, 204, "write refused");
    }

    async fn grants(&self, user: &str) -> serde_json::Value {
        let (_, body) =
            self.server.query(Some(ADMIN), &format!("SHOW GRANTS FOR \"{user}\"")).await;
        body["results"][0]["series"][0]["values"].clone()
    }
}

fn fast() -> ApplyOptions {
    ApplyOptions {
        parallelism: 4,
        max_attempts: 2,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
    }
}

fn find<'a>(plan: &'a Plan, kind: &str, name: &str) -> &'a Op {
    &plan
        .changes
        .iter()
        .find(|c| c.id.kind == kind && *c.id.name == *name)
        .unwrap_or_else(|| panic!("{kind}/{name} not in plan"))
        .op
}

#[tokio::test]
async fn apply_creates_everything_from_nothing_and_the_second_run_changes_nothing() {
    let Some(setup) = Setup::new().await else { return };
    let (code, stdout, stderr) = setup.cli_apply();
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("Apply: 7 applied, 0 failed, 0 skipped."), "{stdout}");
    // Progress: each finished change counted against the plan's.
    for n in 1..=7 {
        assert!(stdout.contains(&format!("[{n}/7] outside/influxdb.")), "{n}: {stdout}");
    }
    assert!(
        !stdout.contains("-pw") && !stderr.contains("-pw"),
        "a secret was printed:\n{stdout}\n{stderr}"
    );

    let mut users = setup.users().await;
    users.sort();
    assert_eq!(users, ["admin", "grafana", "telegraf"]);
    assert_eq!(setup.grants("grafana").await, serde_json::json!([["apimon", "READ"]]));
    let (_, policies) = setup.server.query(Some(ADMIN), "SHOW RETENTION POLICIES ON apimon").await;
    let rows =
        policies["results"][0]["series"][0]["values"].as_array().cloned().unwrap_or_default();
    assert!(
        rows.iter().any(|r| r[0] == "four_weeks" && r[1] == "672h0m0s" && r[4] == true),
        "{rows:?}"
    );

    let (plan, requests) = setup.plan().await;
    assert!(!plan.summary.has_changes(), "second plan: {:?}", plan.summary);
    assert_eq!(plan.summary.unchanged, 7);
    // SHOW DATABASES+USERS and one batch of RPs+grants; passwords by their
    // fingerprints (no login).
    assert_eq!(requests, 2, "observation must not grow with one request per object");

    let (code, stdout, _) = setup.cli_apply();
    assert_eq!(code, Some(0));
    assert!(stdout.contains("Apply: 0 applied, 0 failed, 0 skipped."), "{stdout}");
    let history = state::read(setup.state_dir.path()).expect("state").history;
    assert_eq!(history.len(), 2);
    assert_eq!(history[1].result, state::RunResult::NoChanges);
}

#[tokio::test]
async fn a_changed_grant_is_updated_in_place() {
    let Some(setup) = Setup::new().await else { return };
    assert!(setup.apply().await.1.is_success());
    setup.repo.edit(
        "inventory/outside/influxdb.yaml",
        "{database: apimon, privilege: WRITE}",
        "{database: apimon, privilege: ALL}",
    );
    let (plan, outcome) = setup.apply().await;
    assert_eq!(
        find(&plan, "grant", "telegraf@apimon"),
        &Op::Update { reason: "PRIVILEGE WRITE → ALL".into() }
    );
    assert_eq!(plan.summary.update, 1);
    assert!(outcome.is_success(), "{outcome:?}");
    assert_eq!(setup.grants("telegraf").await, serde_json::json!([["apimon", "ALL PRIVILEGES"]]));
    assert!(!setup.plan().await.0.summary.has_changes());
}

#[tokio::test]
async fn a_rotated_password_is_set_and_the_old_one_stops_working() {
    let Some(setup) = Setup::new().await else { return };
    assert!(setup.apply().await.1.is_success());
    setup.set_secret("outside_influxdb_telegraf_password", "rotated-pw");
    let (plan, outcome) = setup.apply().await;
    assert_eq!(find(&plan, "user", "telegraf"), &Op::Update { reason: "password changed".into() });
    assert!(outcome.is_success(), "{outcome:?}");
    let (old, _) =
        setup.server.query(Some(("telegraf", "outside-telegraf-pw")), "SHOW DATABASES").await;
    let (new, _) = setup.server.query(Some(("telegraf", "rotated-pw")), "SHOW DATABASES").await;
    assert_eq!((old, new), (401, 200));
    assert!(!setup.plan().await.0.summary.has_changes());
}

#[tokio::test]
async fn a_password_changed_by_hand_is_found_by_a_drift_probe_within_its_rounds() {
    let Some(setup) = Setup::new().await else { return };
    assert!(setup.apply().await.1.is_success());
    let (status, _) =
        setup.server.query(Some(ADMIN), "SET PASSWORD FOR telegraf = 'changed-by-hand'").await;
    assert_eq!(status, 200);
    // A commit's plan trusts the fingerprints: no login, no change seen.
    let (plan, requests) = setup.plan().await;
    assert!(!plan.summary.has_changes());
    assert_eq!(requests, 2);
    // Drift passes with a budget of one login each: three users with a
    // declared password (admin's checked by the overview query itself), so
    // every one is checked within three rounds, and telegraf's drift shows.
    let mut found = false;
    for round in 0..3 {
        let probe = apimon::providers::Probe { round, budget: 1 };
        let (plan, requests) = setup.plan_probing(probe).await;
        assert!(requests <= 3, "at most the budget of logins: {requests}");
        let changes: Vec<_> = plan.actions().map(|c| (c.id.name.clone(), c.op.clone())).collect();
        if changes.iter().any(|(name, op)| {
            &**name == "telegraf" && *op == Op::Update { reason: "password changed".into() }
        }) {
            found = true;
        }
    }
    assert!(found, "no round probed telegraf");
    let prepared = crate::support::prepare_outside(setup.repo.path(), &setup.secrets());
    let store = LockedStore::open(setup.state_dir.path()).expect("lock");
    let probe = apimon::providers::Probe { round: 0, budget: 100 };
    let plan = reconcile::plan_probing(&prepared, &store.load().expect("state"), false, probe)
        .await
        .expect("plan");
    let outcome =
        reconcile::apply(&store, &prepared, &plan, &fast(), |_| {}, &CancellationToken::new())
            .await
            .expect("apply");
    assert!(outcome.is_success(), "{outcome:?}");
    let (restored, _) =
        setup.server.query(Some(("telegraf", "outside-telegraf-pw")), "SHOW DATABASES").await;
    assert_eq!(restored, 200, "the declared password is back");
}

#[tokio::test]
async fn pruning_deletes_owned_users_but_never_ones_made_by_hand() {
    let Some(setup) = Setup::new().await else { return };
    setup.repo.edit("inventory/outside/influxdb.yaml", "users:\n", "users:\n  - name: extra\n    password: {secret: outside_influxdb_telegraf_password}\n    grants:\n      - {database: apimon, privilege: READ}\n");
    assert!(setup.apply().await.1.is_success());
    let (status, _) = setup
        .server
        .query(
            Some(ADMIN),
            "CREATE USER handmade WITH PASSWORD 'x'; GRANT READ ON apimon TO handmade",
        )
        .await;
    assert_eq!(status, 200);
    setup.repo.edit("inventory/outside/influxdb.yaml", "  - name: extra\n    password: {secret: outside_influxdb_telegraf_password}\n    grants:\n      - {database: apimon, privilege: READ}\n", "");

    let (plan, outcome) = setup.apply().await;
    assert_eq!(find(&plan, "user", "extra"), &Op::Delete);
    assert_eq!(find(&plan, "grant", "extra@apimon"), &Op::Delete);
    assert!(
        plan.changes.iter().all(|c| !c.id.name.contains("handmade")),
        "an unowned user was planned"
    );
    assert!(outcome.is_success(), "{outcome:?}");
    let users = setup.users().await;
    assert!(
        !users.contains(&"extra".to_owned()) && users.contains(&"handmade".to_owned()),
        "{users:?}"
    );
    let owned = &state::read(setup.state_dir.path()).expect("state").environments["outside"].owned;
    assert!(owned.iter().all(|id| &*id.name != "extra"), "deleted user still owned");
}

#[tokio::test]
async fn a_wrong_admin_password_is_a_clear_error_and_changes_nothing() {
    let Some(setup) = Setup::new().await else { return };
    assert!(setup.apply().await.1.is_success());
    setup.repo.edit(
        "inventory/outside/influxdb.yaml",
        "databases:\n",
        "databases:\n  - name: newdb\n",
    );
    setup.set_secret("outside_influxdb_admin_password", "wrong-admin-pw");
    let (code, stdout, stderr) = setup.cli_apply();
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains("environment outside: influxdb: cannot observe"), "{stderr}");
    assert!(stderr.contains("rejected the credentials of user `admin` (HTTP 401)"), "{stderr}");
    assert!(!stderr.contains("wrong-admin-pw"), "{stderr}");
    let (_, databases) = setup.server.query(Some(ADMIN), "SHOW DATABASES").await;
    assert!(!databases.to_string().contains("newdb"), "something was changed: {databases}");
}

#[tokio::test]
async fn influxdb_stopped_mid_apply_gives_a_partial_outcome_and_the_next_apply_converges() {
    let Some(mut setup) = Setup::new().await else { return };
    let options = ApplyOptions { parallelism: 1, ..fast() };
    let server = &mut setup.server;
    let mut stopped = false;
    let (plan, outcome) = {
        let stop = |event: Event<'_>| {
            if matches!(event, Event::Applied(..)) && !stopped {
                server.stop();
                stopped = true;
            }
        };
        // Re-borrow the rest of `setup` immutably while `server` is lent out.
        let prepared = crate::support::prepare_outside(
            setup.repo.path(),
            &Secrets::Resolved(
                SecretStore::load(Some(&setup.secrets_file), std::iter::empty()).expect("secrets"),
            ),
        );
        let store = LockedStore::open(setup.state_dir.path()).expect("lock");
        let state = store.load().expect("state");
        let plan = reconcile::plan(&prepared, &state, false).await.expect("plan");
        let outcome =
            reconcile::apply(&store, &prepared, &plan, &options, stop, &CancellationToken::new())
                .await
                .expect("apply");
        (plan, outcome)
    };
    assert_eq!(plan.summary.create, 7);
    assert_eq!(outcome.applied.len(), 1, "{outcome:?}");
    assert!(!outcome.failed.is_empty() && !outcome.skipped.is_empty(), "{outcome:?}");
    assert!(
        outcome
            .failed
            .values()
            .map(ToString::to_string)
            .all(|m| m.contains("cannot reach InfluxDB at") && m.contains("(after 2 attempts)")),
        "{outcome:?}"
    );
    let recorded = state::read(setup.state_dir.path()).expect("state");
    assert_eq!(recorded.history.last().map(|r| r.result), Some(state::RunResult::Partial));
    // Ownership is written ahead of each create: what was applied is
    // recorded, and so may be a create that failed (the next plan finds it
    // missing and forgets it); nothing else is.
    let owned = &recorded.environments["outside"].owned;
    assert!(outcome.applied.iter().all(|id| owned.contains(id)), "{owned:?}");
    assert!(
        owned.iter().all(|id| outcome.applied.contains(id) || outcome.failed.contains_key(id)),
        "{owned:?} {outcome:?}"
    );
    assert_eq!(recorded.environments["outside"].last_applied_at, None);

    setup.server.restart().await;
    let (plan, outcome) = setup.apply().await;
    assert_eq!(plan.summary.create, 6, "{:?}", plan.summary);
    assert!(outcome.is_success(), "{outcome:?}");
    assert!(!setup.plan().await.0.summary.has_changes());
    let recorded = state::read(setup.state_dir.path()).expect("state");
    assert_eq!(recorded.environments["outside"].owned.len(), 7, "{recorded:?}");
}

#[tokio::test]
async fn tls_is_verified_and_a_ca_file_makes_a_private_ca_trusted() {
    let Some(server) = InfluxServer::start_tls().await else { return };
    let ca = server.ca_file().expect("TLS server has a CA").to_string_lossy().into_owned();
    let repo = TestRepo::with_files(fixture_files_without_grafana());
    repo.edit("apimon.yaml", "http://192.168.10.30:8086", &server.url());
    let secrets = Secrets::Resolved(
        SecretStore::load(Some(&repo.secrets_file(&fixture_secrets(), 0o600)), std::iter::empty())
            .expect("secrets"),
    );
    let state = apimon::state::State::default();

    let untrusted = crate::support::prepare_outside(repo.path(), &secrets);
    let error =
        reconcile::plan(&untrusted, &state, false).await.expect_err("unknown CA must be refused");
    let chain = format!("{:#}", anyhow::Error::from(error));
    assert!(chain.contains("cannot reach InfluxDB at https://127.0.0.1"), "{chain}");
    assert!(chain.to_lowercase().contains("certificate"), "{chain}");

    let url = server.url();
    repo.edit(
        "apimon.yaml",
        &format!("      url: {url}\n"),
        &format!("      url: {url}\n      ca_file: {ca}\n"),
    );
    let trusted = crate::support::prepare_outside(repo.path(), &secrets);
    let plan = reconcile::plan(&trusted, &state, false).await.expect("trusted CA");
    assert_eq!(plan.summary.create, 7);
}

#[tokio::test]
async fn a_single_environment_is_a_valid_repository_that_plans_and_applies() {
    let Some(setup) = Setup::new().await else { return };
    // No `inside`, and no `location` either (outside by default).
    let apimon_yaml = std::fs::read_to_string(setup.repo.path().join("apimon.yaml")).expect("read");
    let (outside, _) = apimon_yaml.split_once("  inside:\n").expect("an inside environment");
    setup.repo.write("apimon.yaml", &outside.replace("    location: outside\n", ""));
    std::fs::remove_dir_all(setup.repo.path().join("inventory/inside")).expect("rm");
    let repo = setup.repo.path().to_string_lossy().into_owned();
    let output = apimon(&["validate", "--repo", &repo]);
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("valid (1 environment(s)"), "{stdout}");
    let output = apimon(&["plan", "--offline", "--repo", &repo]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output).1);
    let (code, stdout, stderr) = setup.cli_apply();
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(setup.users().await.contains(&"telegraf".to_owned()));
}

/// The fixture's `apimon` database with a one-second tier and a
/// continuous query that downsamples `probe.*` into it, recomputing the
/// last ten seconds at each run (a point that lands just after the run for
/// its second is still counted).
const TIERED: &str = "      - {name: four_weeks, duration: 4w, default: true}\n      - {name: coarse, duration: 1d}\n    continuous_queries:\n      - name: probe_1s\n        from: four_weeks\n        into: coarse\n        interval: 1s\n        for: 10s\n        group_by: [method]\n        measurements: /^probe\\./\n        select: mean(\"elapsed\") AS \"elapsed\", count(elapsed) AS \"count\"\n";

#[tokio::test]
async fn continuous_queries_are_created_changed_and_dropped_and_their_tier_fills() {
    let Some(setup) = Setup::new().await else { return };
    let rp_line = "      - {name: four_weeks, duration: 4w, default: true}\n";
    setup.repo.edit("inventory/outside/influxdb.yaml", rp_line, TIERED);
    let (plan, outcome) = setup.apply().await;
    assert_eq!(find(&plan, "continuous_query", "apimon.probe_1s"), &Op::Create);
    assert!(outcome.is_success(), "{outcome:?}");
    let stored = setup.continuous_queries().await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    // InfluxDB stores its own spelling; the plan reads it as the same query.
    let (plan, _) = setup.plan().await;
    assert!(!plan.summary.has_changes(), "{:?}", plan.changes);

    // Points written now are downsampled into the coarse tier within a
    // few of the query's one-second runs.
    let body = (0..5)
        .map(|i| format!("probe.compute,method=GET elapsed={}", 10 + i))
        .collect::<Vec<_>>()
        .join("\n");
    setup.write("apimon", &body).await;
    let filled = wait_for(Duration::from_secs(30), || async {
        let (_, answer) = setup
            .server
            .query_in(
                Some(ADMIN),
                "apimon",
                "SELECT sum(\"count\") FROM \"coarse\".\"probe.compute\"",
            )
            .await;
        answer["results"][0]["series"][0]["values"][0][1].as_f64().is_some_and(|n| n >= 1.0)
    })
    .await;
    assert!(filled, "the coarse tier stayed empty");

    // A changed field list replaces the query (InfluxDB has no ALTER).
    setup.repo.edit("inventory/outside/influxdb.yaml", "AS \"count\"", "AS \"n\"");
    let (plan, outcome) = setup.apply().await;
    assert_eq!(
        find(&plan, "continuous_query", "apimon.probe_1s"),
        &Op::Replace { reason: "query changed".into() }
    );
    assert!(outcome.is_success(), "{outcome:?}");
    let stored = setup.continuous_queries().await;
    assert!(stored[0][1].as_str().is_some_and(|q| q.contains("AS n")), "{stored:?}");
    assert!(!setup.plan().await.0.summary.has_changes());

    // Removed from the repository: dropped (apimon created it).
    setup.repo.edit("inventory/outside/influxdb.yaml", TIERED.replace("AS \"count\"", "AS \"n\"").as_str(), "      - {name: four_weeks, duration: 4w, default: true}\n      - {name: coarse, duration: 1d}\n");
    let (plan, outcome) = setup.apply().await;
    assert_eq!(find(&plan, "continuous_query", "apimon.probe_1s"), &Op::Delete);
    assert!(outcome.is_success(), "{outcome:?}");
    assert!(setup.continuous_queries().await.is_empty());
}

#[tokio::test]
async fn a_continuous_query_made_by_hand_is_reported_and_kept() {
    let Some(setup) = Setup::new().await else { return };
    assert!(setup.apply().await.1.is_success());
    let made = "CREATE CONTINUOUS QUERY by_hand ON apimon BEGIN SELECT max(x) INTO apimon.four_weeks.hand FROM apimon.four_weeks.m GROUP BY time(1h) END";
    let (status, body) = setup.server.query(Some(ADMIN), made).await;
    assert_eq!(status, 200, "{body}");
    let (plan, outcome) = setup.apply().await;
    assert!(outcome.is_success(), "{outcome:?}");
    assert!(!plan.changes.iter().any(|c| c.id.kind == "continuous_query"), "{:?}", plan.changes);
    assert_eq!(
        setup.continuous_queries().await.len(),
        1,
        "a query apimon did not make was dropped"
    );
}

/// Polls `check` until it holds or `limit` passes.
async fn wait_for<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

#[tokio::test]
async fn the_example_repositorys_tiers_are_accepted_by_influxdb_and_read_back_unchanged() {
    let Some(setup) = Setup::new().await else { return };
    let example = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples-repo/inventory/outside/influxdb.yaml"),
    )
    .expect("example influxdb.yaml");
    setup.repo.write("inventory/outside/influxdb.yaml", &example);
    let (plan, outcome) = setup.apply().await;
    assert!(outcome.is_success(), "{outcome:?}");
    let declared = plan.changes.iter().filter(|c| c.id.kind == "continuous_query").count();
    assert_eq!(declared, 9, "three tiers of three measurement groups");
    assert_eq!(setup.continuous_queries().await.len(), 9);
    let (plan, _) = setup.plan().await;
    assert!(!plan.summary.has_changes(), "{:?}", plan.changes);
}
