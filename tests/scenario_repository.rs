//! Scenarios from their own git repository (`scenario_repository:` in
//! apimon.yaml), with real git: discovery and overrides, a pin that does
//! not exist, an unreachable remote; deployed over SSH by the host provider
//! from the suite's smart-HTTP git server (a moved pin adds and removes
//! playbooks on the executor), run by `apimon executor` with the tree's own
//! ansible.cfg; and a daemon following the scenario branch.

use std::time::Duration;

use apimon::model::Runner;
use apimon::reconcile::{self, ReconcileError, Target};
use apimon::source::scenarios::{ScopedAuth, SourceCache};

use crate::support::daemon::{head, World};
use crate::support::executor::{ansible_playbook, start, Config};
use crate::support::git::GitRemote;
use crate::support::git_http::GitHttp;
use crate::support::host::Setup;
use crate::support::TestRepo;

/// A scenario repository in the style of apimon-tests: playbooks/, roles/
/// found through its ansible.cfg, a helper that is not a scenario.
fn scenario_files() -> Vec<(String, String)> {
    let file = |path: &str, text: &str| (path.to_owned(), text.to_owned());
    vec![
        file("ansible.cfg", "[defaults]\nroles_path = ./roles\n"),
        file(
            "roles/marker/tasks/main.yaml",
            "- ansible.builtin.copy:\n    dest: \"{{ marker_dir }}/{{ lookup('env', 'TASK_EXECUTOR_JOB_ID') }}.json\"\n    content: \"{{ {'regions': regions, 'flavor': flavor, 'job': lookup('env', 'TASK_EXECUTOR_JOB_ID')} | to_json }}\"\n",
        ),
        file(
            "playbooks/scenario1_token.yaml",
            "- hosts: localhost\n  gather_facts: false\n  tasks:\n    - ansible.builtin.set_fact:\n        flavor: \"{{ flavor | default('from-fallback') }}\"\n    - ansible.builtin.include_role:\n        name: marker\n",
        ),
        file(
            "playbooks/scenario-List.yaml",
            "- hosts: localhost\n  gather_facts: false\n  tasks:\n    - ansible.builtin.debug:\n        msg: list\n",
        ),
        file("playbooks/helper.yaml", "- hosts: localhost\n  tasks: []\n"),
    ]
}

fn scenario_remote() -> Option<(GitRemote, String)> {
    let remote = GitRemote::new()?;
    remote.write(&scenario_files());
    let commit = remote.commit("scenarios");
    remote.push(false);
    Some((remote, commit))
}

/// apimon.yaml's `scenario_repository:` for `url` at `pin` (`commit: …` or `branch: …`).
fn declaration(url: &str, pin: &str) -> String {
    format!(
        "scenario_repository:\n  url: {url}\n  {pin}\n  overrides:\n    - match: \"*\"\n      timeout: 3m\n    - match: scenario1_token\n      vars:\n        regions: [eu-de, eu-nl]\n"
    )
}

/// The fixture's main repository declaring the scenario repository and
/// scheduling every discovered scenario by pattern.
fn main_repo(repo: &TestRepo, url: &str, pin: &str) {
    let apimon = std::fs::read_to_string(repo.path().join("apimon.yaml")).expect("read");
    repo.write("apimon.yaml", &format!("{apimon}{}", declaration(url, pin)));
    let schedule =
        std::fs::read_to_string(repo.path().join("scenarios/schedule.yaml")).expect("schedule");
    repo.write(
        "scenarios/schedule.yaml",
        &format!("{schedule}  - scenario: \"scenario*\"\n    environments: [outside]\n    cron: \"*/10 * * * *\"\n"),
    );
}

fn cache(dir: &std::path::Path) -> SourceCache {
    SourceCache::new(dir.join("cache"), ScopedAuth::default(), None)
}

fn prepare_offline(
    repo: &TestRepo,
    sources: &SourceCache,
) -> Result<reconcile::Prepared, ReconcileError> {
    reconcile::prepare(
        repo.path(),
        &["outside".to_owned()],
        &apimon::model::Secrets::Redacted,
        Target::Offline,
        sources,
    )
}

#[test]
fn discovered_playbooks_become_scenarios_with_overrides_and_pattern_schedules() {
    let Some((remote, commit)) = scenario_remote() else { return };
    let repo = TestRepo::fixture();
    main_repo(&repo, &remote.file_url(), &format!("commit: {commit}"));
    let work = tempfile::tempdir().expect("temp dir");
    let prepared = prepare_offline(&repo, &cache(work.path())).expect("prepare");
    let state = &prepared.state;
    let names: Vec<&str> = state.scenarios.keys().map(String::as_str).collect();
    assert_eq!(names, ["iam_probe", "list_servers", "scenario1_token", "scenario_list"]);
    let token = &state.scenarios["scenario1_token"];
    assert_eq!(token.timeout, Duration::from_secs(180));
    let Runner::Ansible { playbook, base_dir, vars, .. } = &token.runner else {
        panic!("an ansible scenario: {token:?}")
    };
    assert_eq!(playbook, "playbooks/scenario1_token.yaml");
    assert_eq!(base_dir.as_deref(), Some("/etc/apimon/scenario-repository"));
    assert_eq!(vars["regions"], serde_json::json!(["eu-de", "eu-nl"]));
    let scheduled: Vec<&str> =
        state.environments["outside"].schedule.iter().map(|s| s.scenario.as_str()).collect();
    assert_eq!(scheduled, ["iam_probe", "list_servers", "scenario1_token", "scenario_list"]);
    let repository = state.scenario_repository.as_ref().expect("kept");
    assert_eq!(repository.commit, commit);
    assert!(repository.files.contains_key("roles/marker/tasks/main.yaml"));

    // Rendered for the executor: the whole tree, and where it is.
    let executor = prepared.rendered.hosts.get("outside-executor").expect("executor rendered");
    let paths: Vec<&str> = executor.files.iter().map(|f| f.path.as_str()).collect();
    for path in ["ansible.cfg", "playbooks/helper.yaml", "roles/marker/tasks/main.yaml"] {
        assert!(paths.contains(&format!("/etc/apimon/scenario-repository/{path}").as_str()));
    }
    let config = executor.files.iter().find(|f| f.path == "/etc/apimon/executor.yaml");
    let config =
        String::from_utf8(config.expect("executor.yaml").content.expose().clone()).expect("utf-8");
    assert!(config.contains("\"base_dir\":\"/etc/apimon/scenario-repository\""), "{config}");

    // A main-repository scenario of the same name replaces the discovered one.
    repo.write("scenarios/scenario_list.yaml", "http:\n  url: https://iam.example.test/v3\n");
    let prepared = prepare_offline(&repo, &cache(work.path())).expect("prepare");
    assert_eq!(prepared.state.scenarios["scenario_list"].runner.kind(), "http");
}

#[test]
fn bad_pins_and_unreachable_remotes_are_clear_errors() {
    let Some((remote, _)) = scenario_remote() else { return };
    let work = tempfile::tempdir().expect("temp dir");
    let invalid = |pin: &str, url: &str| {
        let repo = TestRepo::fixture();
        main_repo(&repo, url, pin);
        match prepare_offline(&repo, &cache(work.path())) {
            Err(ReconcileError::Invalid(diagnostics)) => diagnostics.to_string(),
            other => panic!("expected invalid for {pin}: {:?}", other.map(|_| ())),
        }
    };
    // A commit the remote does not have: named with its place.
    let missing = "0123456789abcdef0123456789abcdef01234567";
    let text = invalid(&format!("commit: {missing}"), &remote.file_url());
    assert!(text.starts_with("apimon.yaml:"), "{text}");
    assert!(text.contains("scenario_repository.commit"), "{text}");
    assert!(text.contains(&format!("commit {missing} not found")), "{text}");
    // Checked before anything is fetched.
    let text = invalid("commit: HEAD~1", &remote.file_url());
    assert!(text.contains("expected the full commit id"), "{text}");
    let text = invalid("branch: main\n  commit: 0123", &remote.file_url());
    assert!(text.contains("both `commit` and `branch`"), "{text}");
    let text = invalid("branch: nope", &remote.file_url());
    assert!(text.contains("branch nope not found"), "{text}");
    let text = invalid("branch: main", "ftp://example.test/x.git");
    assert!(text.contains("scenario_repository.url"), "{text}");
    // An unreachable remote is not an invalid repository: try again later.
    let repo = TestRepo::fixture();
    let port = crate::support::free_port();
    main_repo(&repo, &format!("http://127.0.0.1:{port}/scenarios.git"), "branch: main");
    match prepare_offline(&repo, &cache(work.path())) {
        Err(ReconcileError::Load(error @ apimon::model::LoadError::Fetch { .. })) => {
            assert!(error.to_string().contains("cannot fetch scenario repository"), "{error}");
        }
        other => panic!("expected a fetch error: {:?}", other.map(|_| ())),
    }
}

#[test]
fn a_broken_discovered_playbook_is_named_in_the_scenario_repository() {
    let Some((remote, _)) = scenario_remote() else { return };
    remote.write(&[("playbooks/scenario_bad.yaml".to_owned(), "hosts: [\n".to_owned())]);
    let commit = remote.commit("broken");
    remote.push(false);
    let repo = TestRepo::fixture();
    main_repo(&repo, &remote.file_url(), &format!("commit: {commit}"));
    let work = tempfile::tempdir().expect("temp dir");
    let Err(ReconcileError::Invalid(diagnostics)) = prepare_offline(&repo, &cache(work.path()))
    else {
        panic!("a broken playbook is an invalid commit")
    };
    let text = diagnostics.to_string();
    let label = format!("scenario_repository@{}/playbooks/scenario_bad.yaml:", &commit[..12]);
    assert!(text.starts_with(&label), "{text}");
}

/// The executor.yaml the host provider wrote, as JSON scenarios.
fn deployed_scenarios(setup: &Setup) -> Vec<String> {
    let text = std::fs::read_to_string(setup.file("/etc/apimon/executor.yaml")).expect("read");
    let config: serde_json::Value = yaml_serde::from_str(&text).expect("yaml");
    config["scenarios"]
        .as_array()
        .expect("scenarios")
        .iter()
        .map(|s| s["name"].as_str().expect("name").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_scenario_repository_is_deployed_exactly_and_runs_with_its_ansible_cfg() {
    let Some(ansible) = ansible_playbook() else { return };
    let Some((remote, first)) = scenario_remote() else { return };
    let Some(setup) = Setup::new().await else { return };
    let server =
        GitHttp::start(remote.origin_path().parent().expect("parent").to_owned(), None).await;
    let url = format!("{}/origin.git", server.url);
    main_repo(&setup.repo, &url, &format!("commit: {first}"));

    let (_, outcome) = setup.apply().await;
    assert!(outcome.is_success(), "{outcome:#?}");
    let tree = setup.file("/etc/apimon/scenario-repository");
    assert!(tree.join("playbooks/scenario-List.yaml").is_file());
    assert!(tree.join("roles/marker/tasks/main.yaml").is_file());
    let mut scheduled = deployed_scenarios(&setup);
    scheduled.sort();
    assert_eq!(scheduled, ["iam_probe", "list_servers", "scenario1_token", "scenario_list"]);

    // The pin moves: a new playbook is scheduled, a removed one is gone
    // from the executor, nothing else is left behind.
    std::fs::remove_file(remote.work().join("playbooks/scenario-List.yaml")).expect("rm");
    remote.write(&[(
        "playbooks/scenario2_network.yaml".to_owned(),
        "- hosts: localhost\n  gather_facts: false\n  tasks: []\n".to_owned(),
    )]);
    let second = remote.commit("replace a scenario");
    remote.push(false);
    setup.repo.edit("apimon.yaml", &first, &second);
    let (_, outcome) = setup.apply().await;
    assert!(outcome.is_success(), "{outcome:#?}");
    assert!(!tree.join("playbooks/scenario-List.yaml").exists(), "a removed playbook stays");
    assert!(tree.join("playbooks/scenario2_network.yaml").is_file());
    let mut scheduled = deployed_scenarios(&setup);
    scheduled.sort();
    assert_eq!(scheduled, ["iam_probe", "list_servers", "scenario1_token", "scenario2_network"]);
    let host_plan = crate::support::host::host_changes(&setup.plan().await.expect("plan"));
    assert!(host_plan.is_empty(), "converged: {host_plan:?}");

    // The deployed tree runs as its authors expect: roles through its own
    // ansible.cfg, the list variable at inventory precedence, the
    // playbook's own fallback untouched, the job id in the environment.
    let config = Config::new();
    let markers = config.dir.path().join("markers");
    std::fs::create_dir_all(&markers).expect("mkdir");
    let server_influx = crate::support::executor::influx().await.expect("influxd");
    let mut scenario = serde_json::json!({
        "name": "scenario1_token", "cron": "*/1 * * * * *", "timeout_seconds": 120,
        "runner": "ansible", "playbook": "playbooks/scenario1_token.yaml",
        "base_dir": tree, "vars": {"regions": ["eu-de", "eu-nl"], "marker_dir": markers},
    });
    scenario["cloud"] = serde_json::Value::Null;
    config.write(&server_influx.url(), &ansible, &[scenario]);
    let mut running = start(&config);
    running
        .until("one finished run", |records| {
            records.iter().any(|r| r.result != apimon::executor::results::RunResult::Skipped)
        })
        .await;
    let (_, records) = running.stop().await;
    let record = records
        .iter()
        .find(|r| r.result != apimon::executor::results::RunResult::Skipped)
        .expect("a run");
    assert_eq!(record.result, apimon::executor::results::RunResult::Passed, "{record:#?}");
    let job = record.job_id.as_deref().expect("job id");
    let marker: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(markers.join(format!("{job}.json"))).expect("the role ran"),
    )
    .expect("json");
    assert_eq!(marker["regions"], serde_json::json!(["eu-de", "eu-nl"]));
    assert_eq!(marker["flavor"], "from-fallback");
    assert_eq!(marker["job"].as_str(), Some(job));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_follows_the_scenario_branch_and_keeps_the_last_good_one() {
    let Some((remote, first)) = scenario_remote() else { return };
    let Some(world) = World::new().await else { return };
    let apimon = std::fs::read_to_string(world.git.work().join("apimon.yaml")).expect("read");
    world.git.write(&[(
        "apimon.yaml".to_owned(),
        format!("{apimon}{}", declaration(&remote.file_url(), "branch: main")),
    )]);
    world.git.commit("follow the scenario repository");
    world.git.push(false);
    let daemon = world.converged_daemon(1, "").await;
    let status = daemon.status().await;
    assert_eq!(status["scenario_repository_commit"], first.as_str());

    // A new scenario commit is taken in without a commit to the main repository.
    remote.write(&[(
        "playbooks/scenario3_more.yaml".to_owned(),
        "- hosts: localhost\n  tasks: []\n".to_owned(),
    )]);
    let second = remote.commit("more");
    remote.push(false);
    daemon
        .wait_status("the new scenario commit in force", Duration::from_secs(60), |s| {
            s["scenario_repository_commit"] == second.as_str()
        })
        .await;

    // A broken one is refused; the last good scenario commit stays in force.
    remote.write(&[("playbooks/scenario4_bad.yaml".to_owned(), "{not: a list}\n".to_owned())]);
    let third = remote.commit("broken");
    remote.push(false);
    let status = daemon
        .wait_status("the broken scenario commit refused", Duration::from_secs(60), |s| {
            s["rejected"]["scenario_commit"] == third.as_str()
        })
        .await;
    assert_eq!(status["scenario_repository_commit"], second.as_str());
    assert_eq!(status["last_good_commit"], head(&world).as_str());
    let errors = status["rejected"]["errors"].to_string();
    assert!(errors.contains("playbooks/scenario4_bad.yaml"), "{errors}");
}

#[test]
fn links_inside_the_scenario_repository_are_followed_and_others_never() {
    let Some(remote) = GitRemote::new() else { return };
    remote.write(&scenario_files());
    // As apimon-tests does: playbooks/callback_plugins -> ../library/callback_plugins/
    remote.write(&[(
        "library/callback_plugins/report.py".to_owned(),
        "# a callback plugin\n".to_owned(),
    )]);
    let work = remote.work();
    std::os::unix::fs::symlink(
        "../library/callback_plugins/",
        work.join("playbooks/callback_plugins"),
    )
    .expect("link");
    std::os::unix::fs::symlink("../ansible.cfg", work.join("playbooks/ansible.cfg")).expect("link");
    std::os::unix::fs::symlink("/etc/passwd", work.join("playbooks/leak")).expect("link");
    std::os::unix::fs::symlink("../../outside", work.join("playbooks/escape")).expect("link");
    let commit = remote.commit("links");
    remote.push(false);
    let repo = TestRepo::fixture();
    main_repo(&repo, &remote.file_url(), &format!("commit: {commit}"));
    let dir = tempfile::tempdir().expect("temp dir");
    let prepared = prepare_offline(&repo, &cache(dir.path())).expect("prepare");
    let files = &prepared.state.scenario_repository.as_ref().expect("fetched").files;
    let text = |path: &str| String::from_utf8(files[path].clone()).expect("utf-8");
    assert_eq!(text("playbooks/callback_plugins/report.py"), "# a callback plugin\n");
    assert_eq!(text("playbooks/ansible.cfg"), text("ansible.cfg"));
    // Never followed out of the tree: the link's target as text.
    assert_eq!(text("playbooks/leak"), "/etc/passwd");
    assert_eq!(text("playbooks/escape"), "../../outside");
}

#[test]
fn hostile_patterns_are_refused_before_anything_is_matched_or_fetched() {
    let repo = TestRepo::fixture();
    let huge = "*a".repeat(5_000);
    let apimon = std::fs::read_to_string(repo.path().join("apimon.yaml")).expect("read");
    repo.write(
        "apimon.yaml",
        &format!("{apimon}scenario_repository:\n  url: http://127.0.0.1:1/none.git\n  branch: main\n  discover: [\"{huge}\"]\n"),
    );
    let work = tempfile::tempdir().expect("temp dir");
    let Err(ReconcileError::Invalid(diagnostics)) = prepare_offline(&repo, &cache(work.path()))
    else {
        panic!("a 10,000-character pattern is refused")
    };
    let text = diagnostics.to_string();
    assert!(
        text.contains(
            "scenario_repository.discover[0]: pattern of 10000 characters; expected at most 256"
        ),
        "{text}"
    );

    // In the schedule too.
    let repo = TestRepo::fixture();
    let schedule =
        std::fs::read_to_string(repo.path().join("scenarios/schedule.yaml")).expect("read");
    repo.write(
        "scenarios/schedule.yaml",
        &format!("{schedule}  - scenario: \"{huge}\"\n    environments: [outside]\n    cron: \"* * * * *\"\n"),
    );
    let Err(ReconcileError::Invalid(diagnostics)) = prepare_offline(&repo, &cache(work.path()))
    else {
        panic!("a 10,000-character schedule pattern is refused")
    };
    assert!(diagnostics.to_string().contains("pattern of 10000 characters"), "{diagnostics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_scenario_signers_installed_only_signed_scenario_commits_are_taken_and_a_new_url_waits(
) {
    let Some((remote, first)) = scenario_remote() else { return };
    let Some(world) = World::new().await else { return };
    let Some((key, public)) = crate::support::ssh_key_pair(world.dir.path(), "qa@example.test")
    else {
        return;
    };
    let apimon = std::fs::read_to_string(world.git.work().join("apimon.yaml")).expect("read");
    world.git.write(&[(
        "apimon.yaml".to_owned(),
        format!("{apimon}{}", declaration(&remote.file_url(), "branch: main")),
    )]);
    world.git.commit("follow the scenario repository");
    world.git.push(false);
    let anchor = world.dir.path().join("scenario_allowed_signers");
    let extra = format!("scenario_allowed_signers_file: {}\n", anchor.display());
    // Not installed yet: the unsigned first commit is taken.
    let daemon = world.converged_daemon(1, &extra).await;
    assert_eq!(daemon.status().await["scenario_repository_commit"], first.as_str());

    // Installed (bootstrap --scenario-signers writes this file): an
    // unsigned scenario commit is refused, the signed one after it taken.
    std::fs::write(&anchor, format!("qa@example.test {public}")).expect("signers");
    remote.write(&[(
        "playbooks/scenario3_more.yaml".to_owned(),
        "- hosts: localhost\n  tasks: []\n".to_owned(),
    )]);
    let unsigned = remote.commit("unsigned");
    remote.push(false);
    let status = daemon
        .wait_status("the unsigned scenario commit refused", Duration::from_secs(60), |s| {
            s["rejected"]["scenario_commit"] == unsigned.as_str()
        })
        .await;
    assert_eq!(status["scenario_repository_commit"], first.as_str());
    let errors = status["rejected"]["errors"].to_string();
    assert!(errors.contains("signature") || errors.contains("sign"), "{errors}");
    remote.write(&[(
        "playbooks/scenario4_signed.yaml".to_owned(),
        "- hosts: localhost\n  tasks: []\n".to_owned(),
    )]);
    let signed = remote.commit_signed("signed", &key);
    remote.push(false);
    daemon
        .wait_status("the signed scenario commit in force", Duration::from_secs(60), |s| {
            s["scenario_repository_commit"] == signed.as_str()
        })
        .await;

    // Another repository, even on the same host and signed: held for an operator.
    let other = GitRemote::new().expect("git");
    other.write(&scenario_files());
    other.commit_signed("elsewhere", &key);
    other.push(false);
    let apimon = std::fs::read_to_string(world.git.work().join("apimon.yaml")).expect("read");
    world.git.write(&[(
        "apimon.yaml".to_owned(),
        apimon.replace(&remote.file_url(), &other.file_url()),
    )]);
    let moved = world.git.commit("another scenario repository");
    world.git.push(false);
    let status = daemon
        .wait_status("the new scenario URL held", Duration::from_secs(60), |s| {
            s["held"]["commit"] == moved.as_str()
        })
        .await;
    let widenings = status["held"].to_string();
    assert!(widenings.contains("scenario_repository.url"), "{widenings}");
    assert_eq!(status["scenario_repository_commit"], signed.as_str());
}
