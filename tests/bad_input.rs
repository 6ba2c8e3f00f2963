//! Bad input: one test per rule, each asserting that the error names the
//! file, line and column, and that nothing was written.

use crate::support::{apimon, text, TestRepo};

/// Runs `apimon validate` and returns stderr, asserting exit code 1.
fn invalid(repo: &TestRepo) -> String {
    let output = apimon(&["validate", "--repo", &repo.path().to_string_lossy()]);
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stderr.contains("nothing was changed"), "{stderr}");
    stderr
}

/// One bad input per row: how the fixture is broken, and what stderr must
/// say (each needle in turn). Every row exits 1 and changes nothing.
macro_rules! rejects {
    ($($name:ident: $change:ident($file:expr, $($arg:expr),+) => [$($needle:expr),+ $(,)?];)+) => {
        $(
            #[test]
            fn $name() {
                let repo = TestRepo::fixture();
                rejects!(@change repo, $change, $file, $($arg),+);
                let stderr = invalid(&repo);
                $(assert!(stderr.contains($needle), "missing {:?} in\n{stderr}", $needle);)+
            }
        )+
    };
    (@change $repo:ident, edit, $file:expr, $from:expr, $to:expr) => {
        $repo.edit($file, $from, $to)
    };
    (@change $repo:ident, write, $file:expr, $text:expr) => {
        $repo.write($file, $text)
    };
}

rejects! {
    a_runtime_interpreter_off_an_absolute_plain_path_is_rejected:
        edit("apimon.yaml", "project: apimon\n", "project: apimon\nruntime:\n  python: [ansible-core==2.17.7]\n  interpreter: python3\n")
        => ["apimon.yaml:4:16: runtime.interpreter: `python3` is not an absolute path"];
    invalid_yaml_is_reported_at_its_line_and_column:
        write("inventory/outside/keypairs.yaml", "keypairs:\n  - name: a\n    public_key: \"unterminated\n")
        => ["inventory/outside/keypairs.yaml:4:1: keypairs[0].public_key: found unexpected end of stream, while scanning a quoted scalar"];
    unknown_key_is_reported_with_path_and_expected_keys:
        edit("inventory/inside/hosts.yaml", "    flavor: s3.large.2", "    flavour: s3.large.2")
        => ["inventory/inside/hosts.yaml:13:5: hosts[1].flavour: unknown field `flavour`, expected one of"];
    wrong_type_is_reported_with_what_was_expected:
        edit("inventory/outside/hosts.yaml", "size_gb: 50", "size_gb: fifty")
        => ["inventory/outside/hosts.yaml:19:", "hosts[1].volumes[0].size_gb: invalid type: string \"fifty\", expected a whole number from 0 to 4294967295"];
    an_unterminated_flow_list_says_so_rather_than_what_serde_expected:
        edit("inventory/outside/hosts.yaml", "role: bastion", "role: [bastion")
        => ["inventory/outside/hosts.yaml:", "a list where one word was expected (is a `[` or `{` left open on this line?)"];
    a_cron_field_out_of_range_names_the_field_and_its_range:
        edit("scenarios/schedule.yaml", "cron: \"* * * * *\"", "cron: \"75 * * * *\"")
        => ["scenarios/schedule.yaml:", "invalid cron expression `75 * * * *`: minute 75 is out of range (0-59)"];
    dangling_reference_names_the_reference_and_the_known_names:
        edit("inventory/outside/hosts.yaml", "security_groups: [outside-ssh]", "security_groups: [outside-web]")
        => ["inventory/outside/hosts.yaml:9:23: hosts[0].security_groups[0]: unknown security group `outside-web` (inventory/outside/security_groups.yaml); expected one of: outside-ssh"];
    duplicate_name_points_at_both_declarations:
        edit("inventory/outside/hosts.yaml", "name: outside-influxdb", "name: inside-influxdb")
        => ["inventory/outside/hosts.yaml:11:11: hosts[1].name: duplicate host `inside-influxdb`; first declared at inventory/inside/hosts.yaml:11:11"];
    bad_cron_is_reported_at_the_expression:
        edit("scenarios/schedule.yaml", "\"* * * * *\"", "\"61 * * * *\"")
        => ["scenarios/schedule.yaml:7:11: schedule[1].cron: invalid cron expression `61 * * * *`"];
    missing_template_variable_names_template_variable_and_host:
        write("templates/influxdb.conf.hbs", "[http]\n  bind-address = {{json influxdb.bind_adress}}\n")
        => ["templates/influxdb.conf.hbs:2:18: template influxdb.conf.hbs for host", "influxdb.bind_adress"];
    a_datasource_with_a_writing_user_is_rejected:
        edit("inventory/outside/grafana.yaml", "database: apimon, user: grafana, default: true", "database: apimon, user: telegraf, default: true")
        => ["inventory/outside/grafana.yaml:4:", "a datasource must log in with a read-only user"];
    a_plain_password_is_rejected:
        edit("inventory/outside/influxdb.yaml", "password: {secret: outside_influxdb_admin_password}", "password: hunter2")
        => ["inventory/outside/influxdb.yaml:8:15: users[0].password: a credential must not be written in the repository"];
    a_continuous_query_fragment_that_would_add_a_clause_is_rejected:
        edit("inventory/outside/influxdb.yaml", "default: true}\n", "default: true}\n    continuous_queries:\n      - {name: q1, from: four_weeks, into: nowhere, interval: 1m, measurements: m, select: \"mean(x) INTO other..m\"}\n      - {name: q2, from: four_weeks, into: autogen, interval: 1m, measurements: m, select: \"mean(x); DROP DATABASE apimon\"}\n")
        => ["inventory/outside/influxdb.yaml:6:", "continuous_queries[0].into: retention policy `nowhere` is not declared for this database; expected one of: autogen, four_weeks",
            "continuous_queries[0].select: invalid InfluxQL fragment `mean(x) INTO other..m`: `INTO` opens a clause apimon writes itself",
            "inventory/outside/influxdb.yaml:7:", "continuous_queries[1].select: invalid InfluxQL fragment `mean(x); DROP DATABASE apimon`: `;` would end the statement"];
    a_catalog_probe_with_a_bad_interval_or_interface_is_rejected:
        edit("apimon.yaml", "        password: {secret: outside_probe_password}\n", "        password: {secret: outside_probe_password}\n        probes:\n          catalog: {interval: 30, interface: private}\n")
        => ["environments.outside.monitored_clouds.production.probes.catalog.interval: invalid duration `30`",
            "environments.outside.monitored_clouds.production.probes.catalog.interface: unknown interface `private`; expected public, internal or admin"];
    a_sweeper_with_an_unknown_selection_is_rejected:
        edit("apimon.yaml", "        password: {secret: outside_probe_password}\n", "        password: {secret: outside_probe_password}\n        sweeper: {select: everything, age: two hours}\n")
        => ["environments.outside.monitored_clouds.production.sweeper.select: unknown selection `everything`",
            "environments.outside.monitored_clouds.production.sweeper.age: invalid duration `two hours`"];
    job_logs_in_an_unknown_cloud_without_a_key_are_rejected:
        edit("apimon.yaml", "        password: {secret: outside_probe_password}\n", "        password: {secret: outside_probe_password}\n    logs: {cloud: elsewhere, container: logs}\n")
        => ["environments.outside.logs.cloud: `elsewhere` is not a monitored cloud of this environment; expected one of: production",
            "environments.outside.logs: no `temp_url_key`"];
    a_job_log_container_whose_name_would_change_its_url_is_rejected:
        edit("apimon.yaml", "        password: {secret: outside_probe_password}\n", "        password: {secret: outside_probe_password}\n    logs: {cloud: production, container: \"logs?x=1#y\", public: true}\n")
        => ["environments.outside.logs.container: invalid container `logs?x=1#y`; expected 1 to 256 characters without `/`, `?`, `#`, `%` or control characters"];
    a_continuous_query_fragment_hiding_a_clause_in_a_comment_is_rejected:
        edit("inventory/outside/influxdb.yaml", "default: true}\n", "default: true}\n    continuous_queries:\n      - {name: q1, from: four_weeks, into: autogen, interval: 1m, measurements: m, select: \"mean(x) AS y /* ' */ INTO a..b GROUP BY time(1m) END; GRANT ALL PRIVILEGES TO u; --\"}\n")
        => ["inventory/outside/influxdb.yaml:6:", "continuous_queries[0].select: invalid InfluxQL fragment", "a comment (`--` or `/*`); expected none"];
    a_sweeper_younger_than_the_longest_run_in_its_cloud_is_rejected:
        edit("apimon.yaml", "        password: {secret: outside_probe_password}\n", "        password: {secret: outside_probe_password}\n        sweeper: {age: 1m}\n")
        => ["environments.outside.monitored_clouds.production.sweeper.age: 60 s is not longer than the longest run in this cloud (120 s with its cleanup)"];
    health_rules_naming_an_unknown_flag_or_placeholder_are_rejected:
        write("health.yaml", "flag_templates:\n  latency:\n    query: 'SELECT mean(\"duration\") FROM /^openstack_api\\./ WHERE \"service_type\" =~ /$servce/ AND $window GROUP BY \"service_type\"'\n    op: gt\n    threshold: 300\nflags:\n  - {name: slow, template: latency, services: [compute], environments: [nowhere]}\nexpressions:\n  - {name: degraded, expression: \"slow || slwo\", weight: 1}\n  - {name: broken, expression: \"(slow\", weight: 3}\n")
        => ["health.yaml:3:12: flag_templates.latency.query: unknown placeholder `$servce`; expected $service, $environment, $window",
            "health.yaml:7:", "flags[0].environments[0]: unknown environment `nowhere`",
            "health.yaml:9:", "expressions[0].expression: unknown flag `slwo`; expected one of: slow",
            "expressions[1].expression: invalid expression `(slow`: `(` is not closed; expected `)` at character 6",
            "expressions[1].weight: 3; expected 0 (ok), 1 (degraded) or 2 (outage)"];
    health_routes_and_windows_that_cannot_work_are_rejected:
        write("health.yaml", "flag_templates:\n  t:\n    query: 'SELECT mean(x) FROM m WHERE $window GROUP BY s'\n    op: gt\n    threshold: 1\nflags:\n  - {name: f, template: t, services: [compute]}\nexpressions:\n  - {name: e, expression: f, weight: 1}\nroutes:\n  - {name: chat, severity: critical, matrix: {homeserver: 'https://m.example.org', room: '#alias:example.org', access_token: plain-token}}\n  - {name: both, webhook: {url: 'https://h.example.org', secret: {secret: k}}, email: {smtp_host: s, from: a@b, to: [c@d]}}\n  - {name: mail, email: {smtp_host: smtp.example.org, from: nobody, to: []}}\nmaintenance_windows:\n  - {name: w, cron: '0 2 * * 0'}\n  - {name: v, start: '2026-12-24T18:00:00Z', end: '2026-12-24T08:00:00Z'}\nhosts:\n  outside: nowhere\npage: {listen: '0.0.0.0:8190'}\n")
        => ["health.yaml:11:", "routes[0].severity: unknown severity `critical`; expected degraded or outage",
            "routes[0].matrix.room: invalid room id `#alias:example.org`; expected the room's id (`!…`), not an alias",
            "routes[0].matrix.access_token:",
            "routes[1]: expected exactly one of webhook, matrix, email",
            "routes[2].email.from: invalid address `nobody`",
            "routes[2].email.to: no recipient; expected at least one address",
            "maintenance_windows[0]: expected cron and duration, or start and end",
            "maintenance_windows[1].end: not after start",
            "hosts.outside: `nowhere` is no host of environment `outside`; expected one of: outside-bastion",
            "page.allow_from: the page listens beyond loopback; expected the networks allowed to connect"];
    a_health_threshold_that_is_no_number_is_rejected:
        write("health.yaml", "flag_templates:\n  latency:\n    query: 'SELECT mean(x) FROM m WHERE $window GROUP BY s'\n    op: gt\n    threshold: high\n")
        => ["health.yaml:5:16: flag_templates.latency.threshold: invalid type: string \"high\""];
    an_invalid_public_key_is_rejected:
        edit("inventory/outside/keypairs.yaml", "AAAAC3NzaC1lZDI1NTE5AAAAIG7mB9bJ5cXf0cS2qkJ3pQy8nT4uV1wX2yZ3aB4cD5eF", "AAAAnotakey")
        => ["inventory/outside/keypairs.yaml:3:17: keypairs[0].public_key: invalid public key"];
    an_invalid_cidr_is_rejected:
        edit("inventory/outside/networks.yaml", "cidr: 192.168.10.0/24", "cidr: 192.168.10.0/33")
        => ["inventory/outside/networks.yaml:4:", "invalid CIDR `192.168.10.0/33`"];
    a_recursive_template_is_rejected_before_it_runs:
        write("templates/influxdb.conf.hbs", "{{#*inline \"x\"}}a{{> x}}{{/inline}}{{> x}}\n")
        => ["templates/influxdb.conf.hbs:1:1: partials and inline templates are not supported"];
    deeply_nested_yaml_is_rejected_at_once:
        write("inventory/outside/keypairs.yaml", &format!("keypairs: {}", "[".repeat(100_000)))
        => ["inventory/outside/keypairs.yaml:1:75: collections nested deeper than 64 levels"];
    a_cron_expression_that_never_fires_is_rejected:
        edit("scenarios/schedule.yaml", "\"* * * * *\"", "\"0 0 30 2 *\"")
        => ["scenarios/schedule.yaml:7:11: schedule[1].cron: cron expression `0 0 30 2 *` never fires"];
    a_file_name_with_a_newline_is_rejected:
        write("scenarios/playbooks/bad\nname.yaml", "- hosts: localhost\n")
        => ["is not printable UTF-8; rename it"];
    an_invalid_retention_duration_is_rejected:
        edit("inventory/outside/influxdb.yaml", "duration: 4w", "duration: 4y")
        => ["inventory/outside/influxdb.yaml:4:", "invalid duration `4y`"];
    a_variable_name_ansible_cannot_use_is_rejected:
        edit("scenarios/list_servers.yaml", "  cloud: production\n", "  cloud: production\n  vars:\n    2fast: [a]\n")
        => ["scenarios/list_servers.yaml:7:", "invalid variable name `2fast`"];
    an_unpinned_runtime_package_is_rejected:
        edit("apimon.yaml", "project: ", "runtime:\n  python: [ansible-core, --index-url=https://evil.test]\nproject: ")
        => ["apimon.yaml:2:", "requirement `ansible-core` is not pinned", "invalid requirement `--index-url=https://evil.test`"];
    a_daemon_with_bad_settings_names_each_place:
        edit("apimon.yaml", "    grafana:\n      url: http://192.168.10.40:3000\n", "    daemon:\n      repository: {url: 'ftp://x', poll_interval_seconds: 0, token: {secret: t}}\n      listen: nowhere\n      drift_cron: '99 * * * *'\n      webhook_secret: in-the-clear\n    grafana:\n      url: http://192.168.10.40:3000\n")
        => [
            "apimon.yaml:20:7: environments.outside.daemon: no `ssh:` section",
            "apimon.yaml:20:25: environments.outside.daemon.repository.url: invalid remote `ftp://x`",
            "environments.outside.daemon.repository.poll_interval_seconds: 0; expected at least 1",
            "environments.outside.daemon.repository.token: a token authenticates to an https:// remote only",
            "apimon.yaml:21:15: environments.outside.daemon.listen: invalid address `nowhere`",
            "apimon.yaml:22:19: environments.outside.daemon.drift_cron: invalid cron expression",
            "apimon.yaml:23:23: environments.outside.daemon.webhook_secret: a credential must not be written",
        ];
    a_pinned_release_needs_a_url_and_a_checksum:
        edit("apimon.yaml", "project: ", "apimon_binary: {url: 'ftp://releases/apimon', sha256: abc}\nproject: ")
        => ["apimon.yaml:1:22: apimon_binary.url: invalid URL `ftp://releases/apimon`", "apimon.yaml:1:55: apimon_binary.sha256: expected the file's sha256: 64 hex digits"];
    a_missing_collection_archive_is_rejected:
        edit("apimon.yaml", "project: ", "runtime:\n  python: [ansible-core==2.19.4]\n  collections: [runtime/x.tar.gz]\nproject: ")
        => ["apimon.yaml:3:", "`runtime/x.tar.gz` does not exist"];
}

#[test]
fn the_fixture_is_valid() {
    let repo = TestRepo::fixture();
    let output = apimon(&["validate", "--repo", &repo.path().to_string_lossy()]);
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stdout.contains("valid (2 environment(s), 6 host(s), 2 scenario(s), 1 dashboard(s))"),
        "{stdout}"
    );
}

#[test]
fn missing_secret_is_reported_where_it_is_referenced() {
    let repo = TestRepo::fixture();
    let secrets = crate::support::fixture_secrets()
        .replace("inside_influxdb_grafana_password: inside-grafana-pw\n", "");
    let file = repo.secrets_file(&secrets, 0o600);
    let output = apimon(&[
        "validate",
        "--repo",
        &repo.path().to_string_lossy(),
        "--secrets",
        &file.to_string_lossy(),
    ]);
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("inventory/inside/influxdb.yaml:14:15: users[2].password: secret `inside_influxdb_grafana_password` (environment inside) is not set; expected it in the secrets file or in $APIMON_SECRET_INSIDE_INFLUXDB_GRAFANA_PASSWORD"),
        "{stderr}"
    );
}

#[test]
fn validate_with_env_checks_only_that_environments_secrets() {
    let repo = TestRepo::fixture();
    let file = repo.secrets_file(&crate::support::outside_secrets(), 0o600);
    let run = |env: Option<&str>| {
        let mut args = vec![
            "validate".to_owned(),
            "--repo".to_owned(),
            repo.path().to_string_lossy().into_owned(),
            "--secrets".to_owned(),
            file.to_string_lossy().into_owned(),
        ];
        if let Some(env) = env {
            args.extend(["--env".to_owned(), env.to_owned()]);
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        apimon(&refs)
    };
    let output = run(Some("outside"));
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stdout.contains("valid (1 environment(s)"), "{stdout}");
    // All environments: the other one's secrets are missing, and named so.
    let output = run(None);
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("(environment inside) is not set"), "{stderr}");
    assert!(!stderr.contains("(environment outside)"), "{stderr}");
    let output = run(Some("nowhere"));
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("unknown environment `nowhere`; expected one of: inside, outside"),
        "{stderr}"
    );
}

#[test]
fn all_secrets_set_validates_and_values_never_print() {
    let repo = TestRepo::fixture();
    let file = repo.secrets_file(&crate::support::fixture_secrets(), 0o600);
    let output = apimon(&[
        "validate",
        "--repo",
        &repo.path().to_string_lossy(),
        "--secrets",
        &file.to_string_lossy(),
    ]);
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(!stdout.contains("-pw") && !stderr.contains("-pw"));
}

#[test]
fn secrets_file_readable_by_others_is_refused() {
    let repo = TestRepo::fixture();
    let file = repo.secrets_file(&crate::support::fixture_secrets(), 0o644);
    let output = apimon(&[
        "validate",
        "--repo",
        &repo.path().to_string_lossy(),
        "--secrets",
        &file.to_string_lossy(),
    ]);
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("has mode 0644; it must be 0600 or stricter"), "{stderr}");
    assert!(!stderr.contains("-pw"), "{stderr}");
}

#[test]
fn template_syntax_error_names_the_override_file_line_and_column() {
    let repo = TestRepo::fixture();
    repo.write("templates/telegraf.conf.hbs", "[agent]\n{{#if host.name}}\nunclosed\n");
    let stderr = invalid(&repo);
    assert!(stderr.contains("templates/telegraf.conf.hbs:"), "{stderr}");
    assert!(stderr.contains("template syntax error"), "{stderr}");
    let location = stderr.split("templates/telegraf.conf.hbs:").nth(1).unwrap_or_default();
    let mut parts = location.split(':');
    assert!(parts.next().is_some_and(|l| l.parse::<usize>().is_ok()), "line in {stderr}");
    assert!(parts.next().is_some_and(|c| c.parse::<usize>().is_ok()), "column in {stderr}");
}

#[test]
fn nothing_is_written_when_validation_fails() {
    let repo = TestRepo::fixture();
    repo.edit("scenarios/schedule.yaml", "\"* * * * *\"", "\"not cron\"");
    let out = tempfile::tempdir().expect("temp dir");
    let target = out.path().join("rendered");
    let output = apimon(&[
        "render",
        "--repo",
        &repo.path().to_string_lossy(),
        "--out",
        &target.to_string_lossy(),
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(!target.exists(), "render wrote output for an invalid repository");
}

#[test]
fn every_problem_is_reported_in_one_run() {
    let repo = TestRepo::fixture();
    repo.edit("inventory/outside/hosts.yaml", "keypair: outside-key", "keypair: nope");
    repo.edit(
        "inventory/inside/influxdb.yaml",
        "database: apimon, privilege: READ",
        "database: nodb, privilege: READ",
    );
    let stderr = invalid(&repo);
    assert!(stderr.contains("unknown keypair `nope`"), "{stderr}");
    assert!(stderr.contains("unknown database `nodb`"), "{stderr}");
    // The broken grant also leaves the outside datasource without read access.
    assert!(
        stderr.contains(
            "user `grafana` has no READ grant on `apimon` (inventory/inside/influxdb.yaml)"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("(3 problem(s))"), "{stderr}");
}

#[test]
fn a_plain_password_is_never_echoed() {
    let repo = TestRepo::fixture();
    repo.edit(
        "inventory/outside/influxdb.yaml",
        "password: {secret: outside_influxdb_admin_password}",
        "password: hunter2",
    );
    assert!(!invalid(&repo).contains("hunter2"));
}

#[test]
fn a_symlink_out_of_the_repository_is_refused_and_nothing_is_rendered() {
    let repo = TestRepo::fixture();
    let secrets = repo.secrets_file(&crate::support::fixture_secrets(), 0o600);
    let outside = tempfile::tempdir().expect("temp dir");
    let leaked = outside.path().join("secrets.yaml");
    std::fs::copy(&secrets, &leaked).expect("copy");
    std::os::unix::fs::symlink(&leaked, repo.path().join("scenarios/playbooks/leak.yaml"))
        .expect("symlink");
    let stderr = invalid(&repo);
    assert!(
        stderr.contains("scenarios/playbooks/leak.yaml: is a symbolic link to")
            && stderr.contains("outside the repository"),
        "{stderr}"
    );
    assert!(!stderr.contains("-pw"), "{stderr}");
    let out = tempfile::tempdir().expect("temp dir");
    let output = apimon(&[
        "render",
        "--repo",
        &repo.path().to_string_lossy(),
        "--out",
        &out.path().join("r").to_string_lossy(),
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(!out.path().join("r").exists());
}

#[test]
fn a_symlink_inside_the_repository_is_followed() {
    let repo = TestRepo::fixture();
    std::os::unix::fs::symlink(
        "list_servers.yaml",
        repo.path().join("scenarios/playbooks/alias.yaml"),
    )
    .expect("symlink");
    let output = apimon(&["validate", "--repo", &repo.path().to_string_lossy()]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output).1);
}

#[test]
fn devices_fifos_and_huge_files_are_refused_without_reading_them() {
    let repo = TestRepo::fixture();
    std::fs::remove_file(repo.path().join("inventory/outside/grafana.yaml")).expect("rm");
    nix::unistd::mkfifo(
        &repo.path().join("inventory/outside/grafana.yaml"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .expect("fifo");
    repo.write("scenarios/playbooks/huge.yaml", &"#".repeat(9 * 1024 * 1024));
    let stderr = invalid(&repo);
    assert!(
        stderr.contains("inventory/outside/grafana.yaml: is a fifo, not a regular file"),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "scenarios/playbooks/huge.yaml: is 9437184 bytes; the limit is 8388608 bytes"
        ),
        "{stderr}"
    );
    assert!(stderr.len() < 10_000, "error output must stay small: {} bytes", stderr.len());
}

#[test]
fn a_state_file_that_is_a_fifo_is_an_error_not_a_hang() {
    let repo = TestRepo::fixture();
    let state = tempfile::tempdir().expect("temp dir");
    nix::unistd::mkfifo(
        &state.path().join("state.json"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .expect("fifo");
    let secrets = repo.secrets_file(&crate::support::fixture_secrets(), 0o600);
    let output = apimon(&[
        "plan",
        "--repo",
        &repo.path().to_string_lossy(),
        "--secrets",
        &secrets.to_string_lossy(),
        "--state-dir",
        &state.path().to_string_lossy(),
    ]);
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("is a fifo, not a regular file"), "{stderr}");
}

#[test]
fn a_command_line_that_does_not_parse_exits_64_never_the_plans_2() {
    for args in [&["plan", "--no-such-flag"][..], &["no-such-command"], &["approve"]] {
        let output = apimon(args);
        let (_, stderr) = text(&output);
        assert_eq!(output.status.code(), Some(64), "{args:?}: {stderr}");
        assert!(stderr.contains("error:") || stderr.contains("Usage"), "{stderr}");
    }
    let output = apimon(&["--help"]);
    assert_eq!(output.status.code(), Some(0));
}

#[test]
fn the_version_names_the_commit_and_the_date_it_is_built_from() {
    let output = apimon(&["--version"]);
    let (stdout, _) = text(&output);
    assert_eq!(output.status.code(), Some(0));
    assert!(
        stdout.starts_with(&format!("apimon {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{stdout}"
    );
    // `, built YYYY-MM-DD)`
    let date = stdout.split(", built ").nth(1).and_then(|rest| rest.strip_suffix(")\n"));
    let date = date.unwrap_or_else(|| panic!("no build date: {stdout}"));
    let parts: Vec<&str> = date.split('-').collect();
    assert!(
        parts.len() == 3 && parts.iter().all(|p| p.chars().all(|c| c.is_ascii_digit())),
        "{stdout}"
    );
    assert!(date[..4].parse::<u32>().is_ok_and(|year| year >= 2025), "{stdout}");
}

#[test]
fn a_missing_apimon_yaml_names_the_directory_it_was_looked_for_in() {
    let dir = tempfile::tempdir().expect("dir");
    let output = apimon(&["validate", "--repo", &dir.path().to_string_lossy()]);
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("apimon.yaml: file is missing in {}", dir.path().display())),
        "{stderr}"
    );
}

/// Without `ssh.bastion_address` the jump host is the first bastion's
/// floating IP: valid with a bastion (and no host addresses), an error
/// at the `ssh:` section without one.
#[test]
fn without_a_bastion_address_the_first_bastion_is_the_jump_host_and_one_is_needed() {
    let repo = TestRepo::fixture();
    let ssh = "    location: outside\n    ssh: {user: ubuntu}\n";
    repo.edit("apimon.yaml", "    location: outside\n", ssh);
    for octet in ["10", "30"] {
        let line = format!("    address: 192.168.10.{octet}\n");
        repo.edit("inventory/outside/hosts.yaml", &line, "");
    }
    let output = apimon(&["validate", "--repo", &repo.path().to_string_lossy()]);
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    repo.edit("inventory/outside/hosts.yaml", "role: bastion", "role: executor");
    let stderr = invalid(&repo);
    let needle = "environments.outside.ssh: no `bastion_address` and no host with `role: bastion`";
    assert!(stderr.contains("apimon.yaml:") && stderr.contains(needle), "{stderr}");
}
