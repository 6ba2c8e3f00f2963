//! `apimon plan --offline`: output format, ordering, exit codes, JSON.

use crate::support::{apimon, text, TestRepo};

fn plan(repo: &TestRepo, extra: &[&str]) -> (Option<i32>, String, String) {
    let repo_path = repo.path().to_string_lossy().into_owned();
    let mut args = vec!["plan", "--offline", "--repo", repo_path.as_str()];
    args.extend_from_slice(extra);
    let output = apimon(&args);
    let (stdout, stderr) = text(&output);
    (output.status.code(), stdout, stderr)
}

fn position(haystack: &str, needle: &str) -> usize {
    haystack.find(needle).unwrap_or_else(|| panic!("{needle:?} not in\n{haystack}"))
}

#[test]
fn offline_plan_exits_2_and_orders_dependencies_first() {
    let repo = TestRepo::fixture();
    let (code, stdout, stderr) = plan(&repo, &[]);
    assert_eq!(code, Some(2), "{stderr}");
    let keypair = position(&stdout, "outside/openstack.keypair/outside-key");
    let group = position(&stdout, "outside/openstack.security_group/outside-ssh");
    let server = position(&stdout, "outside/openstack.server/outside-executor");
    let file = position(&stdout, "outside/host.file/outside-executor:/etc/apimon/executor.yaml");
    let unit = position(&stdout, "outside/host.unit/outside-executor:telegraf");
    let user = position(&stdout, "inside/influxdb.user/grafana");
    let datasource = position(&stdout, "outside/grafana.datasource/apimon-inside");
    assert!(keypair < server && group < server, "{stdout}");
    assert!(server < file && file < unit, "{stdout}");
    assert!(user < datasource, "{stdout}");
    assert!(stdout.trim_end().ends_with("to delete, 0 unchanged."), "{stdout}");
}

#[test]
fn offline_plan_is_stable() {
    let repo = TestRepo::fixture();
    let first = plan(&repo, &[]).1;
    let second = plan(&repo, &[]).1;
    assert_eq!(first, second);
}

#[test]
fn env_selects_one_environment() {
    let repo = TestRepo::fixture();
    let (code, stdout, _) = plan(&repo, &["--env", "inside"]);
    assert_eq!(code, Some(2));
    assert!(stdout.contains("inside/openstack.server/inside-bastion"), "{stdout}");
    assert!(!stdout.contains("outside/"), "{stdout}");
    // Several: repeated or comma-separated.
    for args in [&["--env", "inside", "--env", "outside"][..], &["--env", "inside,outside"]] {
        let (code, stdout, _) = plan(&repo, args);
        assert_eq!(code, Some(2));
        assert!(stdout.contains("inside/openstack.server/inside-bastion"), "{stdout}");
        assert!(stdout.contains("outside/openstack.server/outside-bastion"), "{stdout}");
    }
}

#[test]
fn unknown_env_is_an_error_listing_the_known_ones() {
    let repo = TestRepo::fixture();
    let (code, _, stderr) = plan(&repo, &["--env", "staging"]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("unknown environment `staging`; expected one of: inside, outside"),
        "{stderr}"
    );
}

#[test]
fn json_plan_lists_changes_and_never_secrets() {
    let repo = TestRepo::fixture();
    let (code, stdout, stderr) = plan(&repo, &["--json"]);
    assert_eq!(code, Some(2), "{stderr}");
    let value: serde_json::Value = serde_json::from_str(&stdout).expect("plan --json is JSON");
    let changes = value["changes"].as_array().expect("changes array");
    let user = changes
        .iter()
        .find(|c| {
            c["id"]["kind"] == "user"
                && c["id"]["name"] == "telegraf"
                && c["id"]["env"] == "outside"
        })
        .expect("telegraf user in plan");
    assert_eq!(user["op"], "create");
    assert_eq!(value["summary"]["create"].as_u64(), Some(changes.len() as u64));
    assert!(!stdout.contains("-pw"), "{stdout}");
}

#[test]
fn live_plan_without_secrets_names_each_missing_secret() {
    let repo = TestRepo::fixture();
    let state = tempfile::tempdir().expect("temp dir");
    let output = apimon(&[
        "plan",
        "--repo",
        &repo.path().to_string_lossy(),
        "--state-dir",
        &state.path().to_string_lossy(),
    ]);
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr.contains("inventory/outside/influxdb.yaml:8:15: users[0].password: secret `outside_influxdb_admin_password` (environment outside) is not set"), "{stderr}");
    assert!(stderr.contains("nothing was changed"), "{stderr}");
}

#[test]
fn an_environment_needs_the_secrets_of_datasources_it_reads_from_other_environments() {
    let repo = TestRepo::fixture();
    let state = tempfile::tempdir().expect("temp dir");
    let secrets: String = crate::support::fixture_secrets()
        .lines()
        .filter(|l| !l.starts_with("inside_"))
        .map(|l| format!("{l}\n"))
        .collect();
    let file = repo.secrets_file(&secrets, 0o600);
    let output = apimon(&[
        "plan",
        "--env",
        "outside",
        "--repo",
        &repo.path().to_string_lossy(),
        "--secrets",
        &file.to_string_lossy(),
        "--state-dir",
        &state.path().to_string_lossy(),
    ]);
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr.contains("inventory/outside/grafana.yaml:5:"), "{stderr}");
    assert!(
        stderr
            .contains("datasources[1].user: secret `inside_influxdb_grafana_password` (environment outside) is not set"),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("is not set").count(),
        1,
        "only the secret outside needs is reported: {stderr}"
    );
}

#[test]
fn render_writes_every_host_file_with_secrets_redacted() {
    let repo = TestRepo::fixture();
    let out = tempfile::tempdir().expect("temp dir");
    let output = apimon(&[
        "render",
        "--repo",
        &repo.path().to_string_lossy(),
        "--out",
        &out.path().to_string_lossy(),
    ]);
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let telegraf = std::fs::read_to_string(
        out.path().join("outside/outside-executor/etc/telegraf/telegraf.conf"),
    )
    .expect("telegraf.conf");
    assert!(telegraf.contains("username = \"telegraf\""), "{telegraf}");
    assert!(telegraf.contains("password = \"(sensitive)\""), "{telegraf}");
    let executor = std::fs::read_to_string(
        out.path().join("outside/outside-executor/etc/apimon/executor.yaml"),
    )
    .expect("executor.yaml");
    assert!(executor.contains("\"cron\":\"0 */5 * * * *\""), "{executor}");
    let user_data =
        std::fs::read_to_string(out.path().join("inside/inside-influxdb/user-data.yaml"))
            .expect("user data");
    assert!(user_data.starts_with("#cloud-config"), "{user_data}");
    assert!(user_data.contains("/var/lib/influxdb"), "{user_data}");
    assert!(out
        .path()
        .join("outside/outside-executor/etc/apimon/scenarios/playbooks/list_servers.yaml")
        .is_file());
}

#[test]
fn what_lives_on_a_replaced_server_is_planned_anew_on_it() {
    use apimon::model::Secrets;
    use apimon::providers::openstack::OpenstackSpec;
    use apimon::providers::registry::Observed;
    use apimon::reconcile::{self, Target};

    let repo = TestRepo::fixture();
    let names = ["outside".to_owned()];
    let prepared = reconcile::prepare(
        repo.path(),
        &names,
        &Secrets::Redacted,
        Target::Offline,
        &apimon::model::load::NoFetch,
    )
    .expect("prepare");
    // A converged platform, except that the executor's server booted with
    // other user data: it is replaced.
    let mut observed = Observed::as_applied(&prepared.desired);
    let server = observed
        .openstack
        .iter_mut()
        .find(|(id, _)| id.kind == "server" && &*id.name == "outside-executor")
        .map(|(_, item)| item)
        .expect("executor server");
    if let OpenstackSpec::Server(spec) = &mut server.spec {
        spec.user_data_sha256 = "an older revision".to_owned();
    }
    let changes = prepared.desired.diff(&observed);
    let plan = apimon::plan::assemble(changes, Vec::new(), &prepared.policies, true).expect("plan");
    let op_of = |name: &str| {
        plan.changes.iter().find(|c| *c.id.name == *name).map(|c| c.op.clone()).expect(name)
    };
    assert!(matches!(op_of("outside-executor"), apimon::plan::Op::Replace { .. }));
    assert_eq!(op_of("outside-executor:/etc/telegraf/telegraf.conf"), apimon::plan::Op::Create);
    assert_eq!(op_of("outside-executor:telegraf"), apimon::plan::Op::Create);
    assert_eq!(
        op_of("outside-influxdb:/etc/influxdb/influxdb.conf"),
        apimon::plan::Op::NoOp,
        "another host's files stay as they are"
    );
}

/// A real git checkout with the fixture in a subdirectory, committed twice:
/// the second commit adds a dashboard, retitles the folder, removes a
/// dashboard and a scenario. Returns the checkout and the repository directory in it.
fn two_commits() -> Option<(crate::support::git::GitRemote, std::path::PathBuf)> {
    let git = crate::support::git::GitRemote::new()?;
    let files: Vec<(String, String)> = crate::support::fixture_files()
        .into_iter()
        .map(|(path, text)| (format!("desired/{path}"), text))
        .collect();
    git.write(&files);
    git.commit("the platform as it is");
    git.write(&[(
        "desired/dashboards/apimon/latency.json".to_owned(),
        r#"{"uid": "apimon-latency", "title": "Latency", "panels": []}"#.to_owned(),
    )]);
    git.edit(
        "desired/inventory/outside/grafana.yaml",
        "title: API Monitoring",
        "title: API Monitoring (prod)",
    );
    git.edit(
        "desired/scenarios/schedule.yaml",
        "  - scenario: iam_probe\n    environments: [outside]\n    cron: \"* * * * *\"\n",
        "",
    );
    std::fs::remove_file(git.work().join("desired/scenarios/iam_probe.yaml")).expect("rm");
    std::fs::remove_file(git.work().join("desired/dashboards/apimon/scenarios.json")).expect("rm");
    git.commit("a pull request");
    let repo = git.work().join("desired");
    Some((git, repo))
}

#[test]
fn a_pull_request_preview_shows_only_what_the_change_does_without_credentials() {
    let Some((_git, repo)) = two_commits() else { return };
    let repo_arg = repo.to_string_lossy().into_owned();
    let output = crate::support::apimon_command(&[
        "plan",
        "--offline",
        "--base",
        "HEAD~1",
        "--env",
        "outside",
        "--repo",
        &repo_arg,
    ])
    .env_remove("APIMON_SECRETS_FILE")
    .env_remove("OS_CLIENT_CONFIG_FILE")
    .output()
    .expect("apimon");
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(stdout.contains("compared with HEAD~1 ("), "{stdout}");
    let changes: Vec<&str> =
        stdout.lines().filter(|l| l.starts_with("  ") && l.contains("outside/")).collect();
    let has = |symbol: &str, id: &str| {
        changes.iter().any(|l| l.trim_start().starts_with(symbol) && l.contains(id))
    };
    assert!(has("+", "outside/grafana.dashboard/apimon-latency"), "{stdout}");
    assert!(has("~", "outside/grafana.folder/apimon"), "{stdout}");
    assert!(has("-", "outside/grafana.dashboard/apimon-scenarios"), "{stdout}");
    // The executor's configuration no longer lists the probe.
    assert!(has("~", "outside/host.file/outside-executor:/etc/apimon/executor.yaml"), "{stdout}");
    // Nothing that did not change: the servers, networks, InfluxDB.
    assert!(
        !changes.iter().any(|l| l.contains("openstack.") || l.contains("influxdb.")),
        "{stdout}"
    );

    // The same as a pull-request comment.
    let output = apimon(&[
        "plan",
        "--offline",
        "--base",
        "HEAD~1",
        "--env",
        "outside",
        "--format",
        "markdown",
        "--repo",
        &repo_arg,
    ]);
    let (markdown, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(2), "{markdown}\n{stderr}");
    assert!(markdown.starts_with("### apimon plan\n"), "{markdown}");
    assert!(
        markdown.contains("| `+` | `outside/grafana.dashboard/apimon-latency` |"),
        "{markdown}"
    );
    assert!(markdown.contains("| `~` | `outside/grafana.folder/apimon` | title \"API Monitoring\" → \"API Monitoring (prod)\" |"), "{markdown}");

    // Against itself: nothing to do, exit 0.
    let output =
        apimon(&["plan", "--offline", "--base", "HEAD", "--env", "outside", "--repo", &repo_arg]);
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    // A revision that does not exist is a clear error.
    let output = apimon(&["plan", "--offline", "--base", "no-such-branch", "--repo", &repo_arg]);
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot read revision no-such-branch"), "{stderr}");
    assert!(stderr.contains("--base-missing=empty"), "{stderr}");
    // Asked to, it compares with nothing, and the comment says so.
    let output = apimon(&[
        "plan",
        "--offline",
        "--base",
        "no-such-branch",
        "--base-missing",
        "empty",
        "--format",
        "markdown",
        "--repo",
        &repo_arg,
    ]);
    let (markdown, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(2), "{markdown}\n{stderr}");
    assert!(
        markdown.contains("compared with nothing: the base no-such-branch cannot be used"),
        "{markdown}"
    );
    assert!(!markdown.contains("as applied"), "{markdown}");
}

#[test]
fn a_volume_is_mounted_where_it_says_on_any_role() {
    let repo = TestRepo::fixture();
    repo.edit(
        "inventory/outside/hosts.yaml",
        "    address: 192.168.10.20\n",
        "    address: 192.168.10.20\n    volumes:\n      - {name: runs, size_gb: 5, mount_path: /var/lib/apimon}\n",
    );
    let out = crate::support::render_outside(&repo);
    let user_data =
        std::fs::read_to_string(out.path().join("outside/outside-executor/user-data.yaml"))
            .expect("user data");
    assert!(user_data.contains("\"/var/lib/apimon\""), "{user_data}");
    // A path that is not an absolute directory is refused with its place.
    repo.edit("inventory/outside/hosts.yaml", "mount_path: /var/lib/apimon", "mount_path: ../etc");
    let (code, _, stderr) = plan(&repo, &[]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("inventory/outside/hosts.yaml:"), "{stderr}");
    assert!(stderr.contains("invalid mount path `../etc`"), "{stderr}");
}

/// The scenario names in a rendered executor.yaml.
fn rendered_scenarios(out: &std::path::Path, host: &str) -> Vec<String> {
    let text =
        std::fs::read_to_string(out.join(format!("outside/{host}/etc/apimon/executor.yaml")))
            .expect("executor.yaml");
    let config: serde_json::Value = yaml_serde::from_str(&text).expect("yaml");
    let mut names: Vec<String> = config["scenarios"]
        .as_array()
        .expect("scenarios")
        .iter()
        .filter_map(|s| s["name"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    names
}

#[test]
fn two_executors_each_get_exactly_the_scenarios_placed_on_them() {
    let repo = TestRepo::fixture();
    let hosts =
        std::fs::read_to_string(repo.path().join("inventory/outside/hosts.yaml")).expect("hosts");
    repo.write(
        "inventory/outside/hosts.yaml",
        &format!("{hosts}  - name: outside-executor-2\n    role: executor\n    flavor: s3.medium.2\n    image: Ubuntu 24.04\n    keypair: outside-key\n    networks: [outside-net]\n    address: 192.168.10.21\n    availability_zone: az2\n    security_groups: [outside-ssh]\n"),
    );
    repo.edit(
        "scenarios/schedule.yaml",
        "  - scenario: list_servers\n    environments: [outside]\n",
        "  - scenario: list_servers\n    environments: [outside]\n    executors: [outside-executor-2]\n",
    );
    let out = crate::support::render_outside(&repo);
    assert_eq!(rendered_scenarios(out.path(), "outside-executor"), ["iam_probe"]);
    assert_eq!(rendered_scenarios(out.path(), "outside-executor-2"), ["iam_probe", "list_servers"]);

    // Moved: the other executor runs it now, the first no longer.
    repo.edit(
        "scenarios/schedule.yaml",
        "executors: [outside-executor-2]",
        "executors: [outside-executor]",
    );
    let out = crate::support::render_outside(&repo);
    assert_eq!(rendered_scenarios(out.path(), "outside-executor"), ["iam_probe", "list_servers"]);
    assert_eq!(rendered_scenarios(out.path(), "outside-executor-2"), ["iam_probe"]);

    // By availability zone, and spread: each scenario on exactly one.
    repo.edit(
        "scenarios/schedule.yaml",
        "executors: [outside-executor]",
        "executors: {availability_zone: az2}",
    );
    let out = crate::support::render_outside(&repo);
    assert_eq!(rendered_scenarios(out.path(), "outside-executor-2"), ["iam_probe", "list_servers"]);
    repo.edit(
        "scenarios/schedule.yaml",
        "executors: {availability_zone: az2}",
        "executors: spread",
    );
    let out = crate::support::render_outside(&repo);
    let first = rendered_scenarios(out.path(), "outside-executor");
    let second = rendered_scenarios(out.path(), "outside-executor-2");
    let spread_on = usize::from(first.contains(&"list_servers".to_owned()))
        + usize::from(second.contains(&"list_servers".to_owned()));
    assert_eq!(spread_on, 1, "{first:?} {second:?}");

    // A name that is not an executor there is an error at its place.
    repo.edit("scenarios/schedule.yaml", "executors: spread", "executors: [outside-bastion]");
    let (code, _, stderr) = plan(&repo, &["--env", "outside"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("scenarios/schedule.yaml:"), "{stderr}");
    assert!(
        stderr.contains("`outside-bastion` is not an executor of environment `outside`"),
        "{stderr}"
    );
}

#[test]
fn any_number_of_hosts_per_role_each_configured_for_its_role() {
    let repo = TestRepo::fixture();
    let hosts =
        std::fs::read_to_string(repo.path().join("inventory/outside/hosts.yaml")).expect("hosts");
    let more: String = [("bastion-2", "bastion", 11), ("influxdb-2", "influxdb", 31), ("grafana-2", "grafana", 41)]
        .iter()
        .map(|(name, role, octet)| {
            let fip = if *role == "bastion" { "    floating_ip: {network: ext}\n" } else { "" };
            format!("  - name: outside-{name}\n    role: {role}\n    flavor: s3.medium.2\n    image: Ubuntu 24.04\n    keypair: outside-key\n    networks: [outside-net]\n    address: 192.168.10.{octet}\n{fip}")
        })
        .collect();
    repo.write("inventory/outside/hosts.yaml", &format!("{hosts}{more}"));
    let out = crate::support::render_outside(&repo);
    for (host, file) in [
        ("outside-influxdb", "etc/influxdb/influxdb.conf"),
        ("outside-influxdb-2", "etc/influxdb/influxdb.conf"),
        ("outside-grafana", "etc/grafana/grafana.ini"),
        ("outside-grafana-2", "etc/grafana/grafana.ini"),
    ] {
        assert!(out.path().join("outside").join(host).join(file).is_file(), "{host}: {file}");
    }
    let (code, stdout, stderr) = plan(&repo, &["--env", "outside", "--format", "json"]);
    assert_eq!(code, Some(2), "{stderr}");
    for server in ["outside-bastion-2", "outside-influxdb-2", "outside-grafana-2"] {
        assert!(
            stdout.contains(&format!("\"kind\": \"server\",\n        \"name\": \"{server}\"")),
            "{server}: {stdout}"
        );
    }

    // No InfluxDB host at all: the endpoint is an InfluxDB apimon does not
    // run; its objects are still planned.
    let inside =
        std::fs::read_to_string(repo.path().join("inventory/inside/hosts.yaml")).expect("hosts");
    let start = inside.find("  - name: inside-influxdb\n").expect("inside-influxdb");
    let end = inside[start + 1..].find("\n  - name:").map_or(inside.len(), |e| start + 1 + e + 1);
    repo.write("inventory/inside/hosts.yaml", &format!("{}{}", &inside[..start], &inside[end..]));
    let (code, stdout, stderr) = plan(&repo, &["--env", "inside", "--format", "json"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(!stdout.contains("\"name\": \"inside-influxdb\""), "{stdout}");
    assert!(
        stdout.contains("\"provider\": \"influxdb\",\n        \"kind\": \"database\""),
        "{stdout}"
    );
}

/// `outside` of the fixture with SSH access and a daemon on its bastion.
fn with_daemon(repo: &TestRepo, daemon: &str) {
    repo.edit(
        "apimon.yaml",
        "    grafana:\n      url: http://192.168.10.40:3000\n",
        &format!("    ssh: {{user: ubuntu, bastion_address: 203.0.113.10}}\n    daemon:\n{daemon}    grafana:\n      url: http://192.168.10.40:3000\n"),
    );
}

#[test]
fn a_declared_daemon_gets_its_files_on_the_first_bastion_in_a_configuration_it_accepts() {
    let repo = TestRepo::fixture();
    with_daemon(
        &repo,
        "      repository: {url: 'https://git.example.net/desired.git', token: {secret: outside_git_token}, poll_interval_seconds: 30}\n      webhook_secret: {secret: outside_webhook}\n      drift_cron: '*/15 * * * *'\n      maintenance_windows: [{cron: '0 22 * * Mon-Fri', duration_minutes: 120}]\n",
    );
    let out = crate::support::render_outside(&repo);
    let host = out.path().join("outside/outside-bastion");
    let config = apimon::daemon::config::Config::load(&host.join("etc/apimon/daemon.yaml"))
        .expect("the daemon accepts the daemon.yaml rendered for it");
    assert_eq!(config.raw.runs_on.as_deref(), Some("outside/outside-bastion"));
    assert_eq!(config.raw.environments, ["outside"]);
    assert_eq!(config.raw.repository.url, "https://git.example.net/desired.git");
    assert_eq!(config.poll_interval, std::time::Duration::from_secs(30));
    assert_eq!(config.windows.len(), 1);
    assert!(config.drift.is_some());
    assert_eq!(
        config.raw.repository.token_file.as_deref(),
        Some(std::path::Path::new("/etc/apimon/git_token"))
    );
    let unit =
        std::fs::read_to_string(host.join("etc/systemd/system/apimon.service")).expect("the unit");
    assert!(unit.contains("RestartForceExitStatus=75"), "{unit}");
    for secret in ["etc/apimon/git_token", "etc/apimon/webhook_secret"] {
        let text = std::fs::read_to_string(host.join(secret)).expect("secret file");
        assert_eq!(text.trim(), "(sensitive)", "{secret}");
    }
    // The offline plan: the account, the binary, the files, the unit.
    let (code, stdout, stderr) = plan(&repo, &["--env", "outside"]);
    assert_eq!(code, Some(2), "{stderr}");
    for id in [
        "outside/host.account/outside-bastion:apimon",
        "outside/host.file/outside-bastion:/usr/local/bin/apimon",
        "outside/host.file/outside-bastion:/etc/apimon/daemon.yaml",
        "outside/host.unit/outside-bastion:apimon",
    ] {
        assert!(stdout.contains(id), "{id} missing from\n{stdout}");
    }
    assert!(!stdout.contains("outside-influxdb:/etc/apimon/daemon.yaml"), "{stdout}");
}

#[test]
fn a_daemon_yaml_the_daemon_would_refuse_is_an_error_before_anything_changes() {
    let repo = TestRepo::fixture();
    with_daemon(
        &repo,
        "      repository: {url: 'http://git.example.net/d.git', token: {secret: t}}\n      maintenance_windows: [{cron: '0 22 * * *', duration_minutes: 999999999}]\n",
    );
    let output = apimon(&["validate", "--repo", &repo.path().to_string_lossy()]);
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr
            .contains("daemon.repository.token: a token authenticates to an https:// remote only"),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "daemon.maintenance_windows[0].duration_minutes: 999999999; expected 1 to 527040"
        ),
        "{stderr}"
    );
    // A template override that gives the daemon a file it would refuse.
    let repo = TestRepo::fixture();
    with_daemon(&repo, "      repository: {url: 'https://git.example.net/d.git'}\n");
    repo.write("templates/daemon.yaml.hbs", "repository: {url: x}\npoll: 1\n");
    let output = apimon(&["validate", "--repo", &repo.path().to_string_lossy()]);
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("host outside-bastion: the daemon would refuse /etc/apimon/daemon.yaml"),
        "{stderr}"
    );
    assert!(stderr.contains("unknown field `poll`"), "{stderr}");

    // One that loads, but drops the trust store's signers and lets the
    // daemon delete without limit: refused, naming `apimon bootstrap`.
    let daemon = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("templates/daemon.yaml.hbs"),
    )
    .expect("template");
    let dropped = daemon.replace("allowed_signers_file: \"/etc/apimon/allowed_signers\"\n", "")
        + "allow_deletes: true\n";
    repo.write("templates/daemon.yaml.hbs", &dropped);
    let output = apimon(&["validate", "--repo", &repo.path().to_string_lossy()]);
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("a commit may not change what the daemon trusts"), "{stderr}");
    assert!(
        stderr.contains("`allowed_signers_file` must be /etc/apimon/allowed_signers"),
        "{stderr}"
    );
    assert!(stderr.contains("`allow_deletes` must be false"), "{stderr}");
    assert!(stderr.contains("takes `apimon bootstrap`"), "{stderr}");
}

#[test]
fn a_pull_request_that_sends_credentials_elsewhere_is_marked_needs_approval() {
    let Some(git) = crate::support::git::GitRemote::new() else { return };
    git.write(&crate::support::fixture_files());
    git.commit("the platform as it is");
    git.edit("apimon.yaml", "url: http://192.168.10.30:8086", "url: https://203.0.113.9:8086");
    git.commit("InfluxDB elsewhere");
    let repo = git.work().to_string_lossy().into_owned();
    let plan = |format: &str| {
        let output = apimon(&[
            "plan",
            "--offline",
            "--base",
            "HEAD~1",
            "--env",
            "outside",
            "--format",
            format,
            "--repo",
            &repo,
        ]);
        let (stdout, stderr) = text(&output);
        assert_eq!(output.status.code(), Some(2), "{stdout}\n{stderr}");
        stdout
    };
    let widened = "environments.outside.influxdb.url: http://192.168.10.30 → https://203.0.113.9";
    let shown = plan("text");
    assert!(shown.contains(&format!("needs approval: {widened}")), "{shown}");
    let json: serde_json::Value = serde_json::from_str(&plan("json")).expect("JSON");
    assert_eq!(json["needs_approval"], serde_json::json!([widened]), "{json:#}");
    let markdown = plan("markdown");
    assert!(markdown.contains("> **Needs approval** (widens apimon's authority):"), "{markdown}");
    assert!(
        markdown.contains(
            "> - `environments.outside.influxdb.url`: http://192.168.10.30 → https://203.0.113.9"
        ),
        "{markdown}"
    );
    // A commit compared with itself widens nothing.
    let output =
        apimon(&["plan", "--offline", "--base", "HEAD", "--env", "outside", "--repo", &repo]);
    let (stdout, _) = text(&output);
    assert!(!stdout.contains("needs approval"), "{stdout}");

    // Over http:// to a host off the private network, the admin's
    // password would travel in clear: refused at its place.
    git.edit("apimon.yaml", "url: https://203.0.113.9:8086", "url: http://203.0.113.9:8086");
    let output = apimon(&["validate", "--env", "outside", "--repo", &repo]);
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("inventory/outside/influxdb.yaml:")
            && stderr.contains("secret `outside_influxdb_admin_password` would go in clear to http://203.0.113.9:8086, off the environment's private network"),
        "{stderr}"
    );
}
