//! The OpenStack provider against a REAL control plane (Keystone, Nova with
//! the fake driver, Neutron, Glance, Cinder; see `support/openstack.rs`),
//! through the `apimon` binary: create from nothing, no-op second run,
//! in-place metadata, user data replacing a server (its volume and floating
//! IP follow), pruning only what apimon owns, Nova's errors naming the host,
//! application credentials. Each test has an environment of its own, whose
//! InfluxDB is a real influxd (live plans read every provider).

use std::path::PathBuf;
use std::process::Output;

use apimon::machine::Machine;
use apimon::model::secret::SecretStore;
use apimon::model::Secrets;
use apimon::reconcile::{self, Target};
use apimon::state;
use serde_json::Value;

use crate::support::influxdb::InfluxServer;
use crate::support::openstack::{Api, TestCloud};
use crate::support::{apimon, text, TestRepo};

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG7mB9bJ5cXf0cS2qkJ3pQy8nT4uV1wX2yZ3aB4cD5eF apimon@test";

/// One environment `name` of the test cloud, in a repository of its own.
struct Setup {
    name: String,
    cloud: TestCloud,
    api: Api,
    _influx: InfluxServer,
    repo: TestRepo,
    secrets_file: PathBuf,
    state_dir: tempfile::TempDir,
}

fn hosts_yaml(env: &str, net: u8, extra: &str) -> String {
    format!(
        "hosts:
  - name: {env}-bastion
    role: bastion
    flavor: s3.small.1
    image: Ubuntu 24.04
    keypair: {env}-key
    networks: [{env}-net]
    address: 192.168.{net}.10
    security_groups: [{env}-ssh]
    availability_zone: nova
    metadata: {{owner: monitoring-team}}
    floating_ip: {{network: admin_external_net}}
  - name: {env}-influxdb
    role: influxdb
    flavor: s3.medium.2
    image: Ubuntu 24.04
    keypair: {env}-key
    networks: [{env}-net]
    address: 192.168.{net}.30
    security_groups: [{env}-ssh, {env}-influxdb]
    volumes:
      - {{name: data, size_gb: 1}}
{extra}"
    )
}

/// The inventory files of environment `env`.
fn inventory(name: &str, net: u8) -> Vec<(String, String)> {
    let dir = format!("inventory/{name}");
    vec![
        (format!("{dir}/hosts.yaml"), hosts_yaml(name, net, "")),
        (format!("{dir}/keypairs.yaml"), format!("keypairs:\n  - name: {name}-key\n    public_key: {KEY}\n")),
        (
            format!("{dir}/networks.yaml"),
            format!("networks:\n  - name: {name}-net\n    subnets:\n      - {{name: {name}-subnet, cidr: 192.168.{net}.0/24, gateway_ip: 192.168.{net}.1, dns_nameservers: [9.9.9.9]}}\n  - name: admin_external_net\n    external: true\n"),
        ),
        (
            format!("{dir}/security_groups.yaml"),
            format!("security_groups:\n  - name: {name}-ssh\n    description: SSH\n    rules:\n      - {{protocol: tcp, ports: 22, remote_ip_prefix: 0.0.0.0/0}}\n      - {{protocol: icmp}}\n  - name: {name}-influxdb\n    description: InfluxDB from the bastion\n    rules:\n      - {{protocol: tcp, ports: 8086, remote_group: {name}-ssh}}\n"),
        ),
        (
            format!("{dir}/influxdb.yaml"),
            format!("databases:\n  - name: apimon\nusers:\n  - name: admin\n    admin: true\n    password: {{secret: {name}_admin}}\n  - name: telegraf\n    password: {{secret: {name}_telegraf}}\n    grants:\n      - {{database: apimon, privilege: WRITE}}\n"),
        ),
    ]
}

/// Letters unique to this test run: the cloud outlives a run when started by hand.
fn run_suffix() -> String {
    let mut n = std::process::id();
    let mut suffix = String::new();
    while n > 0 {
        suffix.push(char::from(b'a' + (n % 26) as u8));
        n /= 26;
    }
    suffix
}

impl Setup {
    async fn new(base: &str, net: u8) -> Option<Self> {
        let name = &format!("{base}{}", run_suffix());
        let cloud = TestCloud::get()?;
        let influx = InfluxServer::start().await?;
        let api = cloud.api().await;
        // A second, `inside` environment only to make the repository valid: never selected.
        let twin = format!("{name}twin");
        let apimon_yaml = format!(
            "project: apimon\ndefaults:\n  max_deletes: 20\nenvironments:\n  {name}:\n    location: outside\n    cloud: apimon-test\n    influxdb:\n      url: {url}\n      admin_user: admin\n      results_database: apimon\n      results_user: telegraf\n  {twin}:\n    location: inside\n    cloud: apimon-twin\n    influxdb:\n      url: {url}\n      admin_user: admin\n      results_database: apimon\n      results_user: telegraf\n",
            url = influx.url()
        );
        let mut files = vec![("apimon.yaml".to_owned(), apimon_yaml)];
        for (env, net) in [(name.as_str(), net), (twin.as_str(), net + 100)] {
            files.extend(inventory(env, net));
        }
        let repo = TestRepo::with_files(files);
        let secrets_file = repo.secrets_file(
            &format!("{name}_admin: admin-pw\n{name}_telegraf: telegraf-pw\n"),
            0o600,
        );
        Some(Self {
            name: name.to_owned(),
            cloud,
            api,
            _influx: influx,
            repo,
            secrets_file,
            state_dir: tempfile::tempdir().expect("temp dir"),
        })
    }

    /// `apimon <command> --env <name>` with this setup's files.
    fn run(&self, command: &str, extra: &[&str]) -> Output {
        self.run_with_clouds(command, &self.cloud.clouds_file.display().to_string(), extra)
    }

    /// Like [`run`](Self::run) with another clouds.yaml.
    fn run_with_clouds(&self, command: &str, clouds: &str, extra: &[&str]) -> Output {
        let repo = self.repo.path().display().to_string();
        let secrets = self.secrets_file.display().to_string();
        let state = self.state_dir.path().display().to_string();
        let mut args = vec![
            command,
            "--repo",
            &repo,
            "--env",
            &self.name,
            "--secrets",
            &secrets,
            "--state-dir",
            &state,
            "--clouds-file",
            clouds,
        ];
        args.extend_from_slice(extra);
        apimon(&args)
    }

    fn apply(&self) -> (String, String, Option<i32>) {
        let output = self.run("apply", &["--auto-approve"]);
        let (stdout, stderr) = text(&output);
        (stdout, stderr, output.status.code())
    }

    fn apply_ok(&self) -> String {
        let (stdout, stderr, code) = self.apply();
        assert_eq!(code, Some(0), "apply failed:\n{stdout}\n{stderr}");
        assert!(stdout.contains("0 failed, 0 skipped"), "{stdout}");
        stdout
    }

    /// A plan through the library: (plan text lines that change something, API requests).
    async fn plan(&self) -> (apimon::reconcile::Plan, usize) {
        let secrets = Secrets::Resolved(
            SecretStore::load(Some(&self.secrets_file), std::iter::empty()).expect("secrets"),
        );
        let machine = clouds_only(&self.cloud.clouds_file);
        let prepared = reconcile::prepare(
            self.repo.path(),
            std::slice::from_ref(&self.name),
            &secrets,
            Target::Live(&machine),
            &apimon::model::load::NoFetch,
        )
        .expect("prepare");
        assert!(
            !prepared.not_observed.iter().any(|n| n.starts_with("openstack")),
            "OpenStack left out: {:?}",
            prepared.not_observed
        );
        let state = state::read(self.state_dir.path()).expect("state");
        let plan = reconcile::plan(&prepared, &state, false).await.expect("plan");
        (plan, prepared.live.as_ref().map_or(0, |l| l.requests_of("openstack")))
    }

    fn edit(&self, file: &str, from: &str, to: &str) {
        self.repo.edit(&format!("inventory/{}/{file}", self.name), from, to);
    }
}

/// An applying machine with only a clouds.yaml (no SSH): OpenStack and InfluxDB.
fn clouds_only(clouds: &std::path::Path) -> Machine {
    Machine {
        ssh_key: PathBuf::from("/nonexistent"),
        known_hosts: PathBuf::from("/nonexistent"),
        executor_binary: None,
        clouds_file: Some(clouds.to_path_buf()),
        release_key: None,
        on_bastion: false,
    }
}

fn metadata(server: &Value, key: &str) -> Option<String> {
    server["metadata"][key].as_str().map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_environment_is_created_from_nothing_and_the_second_run_changes_nothing() {
    let Some(setup) = Setup::new("osnew", 41).await else { return };
    let env = setup.name.as_str();

    let plan = setup.run("plan", &[]);
    let (stdout, stderr) = text(&plan);
    assert_eq!(plan.status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(stdout.contains(&format!("+ {env}/openstack.server/{env}-bastion")), "{stdout}");

    let stdout = setup.apply_ok();
    assert!(stdout.contains("Apply:"), "{stdout}");

    // What the cloud now holds.
    let api = &setup.api;
    let bastion = api.server(&format!("{env}-bastion")).await;
    let influxdb = api.server(&format!("{env}-influxdb")).await;
    for server in [&bastion, &influxdb] {
        assert_eq!(server["status"], "ACTIVE");
        assert_eq!(metadata(server, "apimon:managed").as_deref(), Some("true"));
        assert_eq!(metadata(server, "apimon:env").as_deref(), Some(env));
        assert_eq!(metadata(server, "apimon:user_data_sha256").map(|h| h.len()), Some(64));
        assert_eq!(server["key_name"], format!("{env}-key"));
    }
    assert_eq!(metadata(&bastion, "owner").as_deref(), Some("monitoring-team"));
    assert_eq!(bastion["flavor"]["original_name"], "s3.small.1");
    assert_eq!(bastion["OS-EXT-AZ:availability_zone"], "nova");
    let fixed = bastion["addresses"][format!("{env}-net")][0]["addr"].clone();
    assert_eq!(fixed, "192.168.41.10");
    let volume = api.volume(&format!("{env}-influxdb-data")).await;
    assert_eq!(volume["status"], "in-use");
    assert_eq!(volume["attachments"][0]["server_id"], influxdb["id"]);
    assert_eq!(volume["metadata"]["apimon:env"], env);
    let bastion_id = bastion["id"].as_str().expect("id");
    assert_eq!(api.floating_ips_of(bastion_id).await.len(), 1, "one floating IP on the bastion");
    let group = api.security_group(&format!("{env}-influxdb")).await;
    let tags: Vec<&str> =
        group["tags"].as_array().expect("tags").iter().filter_map(Value::as_str).collect();
    assert!(
        tags.contains(&"apimon:managed=true")
            && tags.contains(&format!("apimon:env={env}").as_str()),
        "{tags:?}"
    );
    let ssh = api.security_group(&format!("{env}-ssh")).await;
    let remote_group_rule = group["security_group_rules"]
        .as_array()
        .expect("rules")
        .iter()
        .any(|r| r["remote_group_id"] == ssh["id"] && r["port_range_min"] == 8086);
    assert!(remote_group_rule, "{group}");

    // Nothing left to do, and observing took a handful of list calls.
    let again = setup.run("plan", &[]);
    let (stdout, stderr) = text(&again);
    assert_eq!(again.status.code(), Some(0), "second plan is not a no-op:\n{stdout}\n{stderr}");
    let (plan, requests) = setup.plan().await;
    assert!(!plan.summary.has_changes(), "{:?}", plan.summary);
    assert!(plan.summary.unchanged > 10, "{:?}", plan.summary);
    assert!(
        requests <= 10,
        "a no-op plan took {requests} OpenStack requests; observation must batch"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_changes_in_place_and_new_user_data_replaces_the_server_keeping_its_volume_and_address(
) {
    let Some(setup) = Setup::new("osrep", 42).await else { return };
    let env = setup.name.as_str();
    setup.apply_ok();
    let api = &setup.api;
    let before = api.server(&format!("{env}-influxdb")).await;
    let bastion_before = api.server(&format!("{env}-bastion")).await;

    // Keys the platform puts on a server are not apimon's business.
    let bastion_id = bastion_before["id"].as_str().expect("id");
    api.set_server_metadata_item(bastion_id, "charging_mode", "0").await;
    let plan = setup.run("plan", &[]);
    assert_eq!(plan.status.code(), Some(0), "a platform key made a diff:\n{}", text(&plan).0);

    // Metadata: in place, same server.
    setup.edit(
        "hosts.yaml",
        "metadata: {owner: monitoring-team}",
        "metadata: {owner: platform-team}",
    );
    let plan = setup.run("plan", &[]);
    let (stdout, _) = text(&plan);
    assert_eq!(plan.status.code(), Some(2), "{stdout}");
    assert!(stdout.contains(&format!("~ {env}/openstack.server/{env}-bastion")), "{stdout}");
    assert!(stdout.contains("metadata changed (owner)"), "{stdout}");
    setup.apply_ok();
    let bastion = api.server(&format!("{env}-bastion")).await;
    assert_eq!(bastion["id"], bastion_before["id"], "metadata must not replace the server");
    assert_eq!(metadata(&bastion, "owner").as_deref(), Some("platform-team"));
    assert_eq!(metadata(&bastion, "apimon:managed").as_deref(), Some("true"));
    assert_eq!(
        metadata(&bastion, "charging_mode").as_deref(),
        Some("0"),
        "the platform's key was removed"
    );

    // A key removed from the repository is removed from the server.
    setup.edit("hosts.yaml", "metadata: {owner: platform-team}", "metadata: {}");
    setup.apply_ok();
    let bastion = api.server(&format!("{env}-bastion")).await;
    assert_eq!(metadata(&bastion, "owner"), None);
    assert_eq!(metadata(&bastion, "charging_mode").as_deref(), Some("0"));

    // A changed rule is a new rule; the old one goes.
    setup.edit(
        "security_groups.yaml",
        "{protocol: tcp, ports: 22,",
        "{protocol: tcp, ports: 2222,",
    );
    let plan = setup.run("plan", &[]);
    let (stdout, _) = text(&plan);
    let rule = format!("{env}/openstack.security_group_rule/{env}-ssh:in:tcp");
    assert!(stdout.contains(&format!("+ {rule}:2222:0.0.0.0/0")), "{stdout}");
    assert!(stdout.contains(&format!("- {rule}:22:0.0.0.0/0")), "{stdout}");
    setup.apply_ok();
    let ports: Vec<Value> = api.security_group(&format!("{env}-ssh")).await["security_group_rules"]
        .as_array()
        .expect("rules")
        .iter()
        .map(|r| r["port_range_min"].clone())
        .filter(|p| !p.is_null())
        .collect();
    assert_eq!(ports, vec![Value::from(2222)]);

    // User data: a changed cloud-init template replaces every server.
    let template = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/templates/cloud-init.yaml.hbs"
    ))
    .expect("built-in template");
    setup.repo.write("templates/cloud-init.yaml.hbs", &format!("{template}# revision 2\n"));
    // Replacing destroys: with max_deletes 0 the plan is refused.
    setup.repo.edit("apimon.yaml", "max_deletes: 20", "max_deletes: 0");
    let refused = setup.run("plan", &[]);
    let (_, stderr) = text(&refused);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("refusing to destroy 2 resources"), "{stderr}");
    assert!(stderr.contains("0 to delete, 2 to replace"), "{stderr}");
    setup.repo.edit("apimon.yaml", "max_deletes: 0", "max_deletes: 20");
    let plan = setup.run("plan", &[]);
    let (stdout, _) = text(&plan);
    assert!(
        stdout.contains(&format!(
            "Replaces 2 servers: {env}/{env}-bastion (bastion), {env}/{env}-influxdb (influxdb)."
        )),
        "{stdout}"
    );
    assert!(stdout.contains(&format!("-/+ {env}/openstack.server/{env}-influxdb")), "{stdout}");
    assert!(stdout.contains("user data changed (template cloud-init.yaml.hbs)"), "{stdout}");
    setup.apply_ok();
    let after = api.server(&format!("{env}-influxdb")).await;
    assert_ne!(after["id"], before["id"], "the server was not replaced");
    assert_ne!(
        metadata(&after, "apimon:user_data_sha256"),
        metadata(&before, "apimon:user_data_sha256")
    );
    let volume = api.volume(&format!("{env}-influxdb-data")).await;
    assert_eq!(
        volume["attachments"][0]["server_id"], after["id"],
        "the data volume follows the new server"
    );
    let bastion = api.server(&format!("{env}-bastion")).await;
    let bastion_id = bastion["id"].as_str().expect("id");
    assert_eq!(
        api.floating_ips_of(bastion_id).await.len(),
        1,
        "the floating IP follows the new bastion"
    );

    let again = setup.run("plan", &[]);
    let (stdout, _) = text(&again);
    assert_eq!(again.status.code(), Some(0), "not converged after the replace:\n{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_host_is_deleted_but_an_unmanaged_server_with_its_name_prefix_survives() {
    let Some(setup) = Setup::new("osdel", 43).await else { return };
    let env = setup.name.as_str();
    let executor = format!(
        "  - name: {env}-executor\n    role: executor\n    flavor: m1.small\n    image: Ubuntu 24.04\n    keypair: {env}-key\n    networks: [{env}-net]\n    security_groups: [{env}-ssh]\n"
    );
    setup.edit(
        "hosts.yaml",
        "      - {name: data, size_gb: 1}\n",
        &format!("      - {{name: data, size_gb: 1}}\n{executor}"),
    );
    setup.apply_ok();
    let api = &setup.api;
    let manual =
        api.create_unmanaged_server(&format!("{env}-executor-manual"), &format!("{env}-net")).await;

    setup.edit("hosts.yaml", &executor, "");
    let plan = setup.run("plan", &[]);
    let (stdout, _) = text(&plan);
    assert!(stdout.contains(&format!("- {env}/openstack.server/{env}-executor ")), "{stdout}");
    assert!(
        !stdout.contains("executor-manual"),
        "an unmanaged server must not even be planned:\n{stdout}"
    );
    setup.apply_ok();

    let left: Vec<String> = api
        .servers(&format!("{env}-executor"))
        .await
        .iter()
        .filter_map(|s| s["name"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(left, vec![format!("{env}-executor-manual")]);
    let again = setup.run("plan", &[]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again).0);
    api.delete_server(&manual).await;

    // An owned twin of a group (a create retried after its answer was lost
    // leaves one) is pruned; the group in use stays.
    let group = format!("{env}-ssh");
    let original = api.security_group(&group).await["id"].as_str().expect("id").to_owned();
    let tags = ["apimon:managed=true".to_owned(), format!("apimon:env={env}")];
    let twin = api.create_tagged_security_group(&group, &tags).await;
    let plan = setup.run("plan", &[]);
    let (stdout, _) = text(&plan);
    assert!(
        stdout.contains(&format!("- {env}/openstack.security_group/{group}~{}", &twin[..8])),
        "{stdout}"
    );
    assert!(stdout.contains("1 to delete"), "only the twin goes:\n{stdout}");
    setup.apply_ok();
    assert!(!api.security_group_exists(&twin).await, "the twin survived");
    assert!(api.security_group_exists(&original).await, "the group in use was deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nova_refusing_a_flavor_is_an_error_naming_the_host_and_unrelated_changes_apply() {
    let Some(setup) = Setup::new("osbad", 44).await else { return };
    let env = setup.name.as_str();
    setup.edit("hosts.yaml", "flavor: s3.medium.2", "flavor: x9.impossible");
    let (stdout, stderr, code) = setup.apply();
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    let all = format!("{stdout}\n{stderr}");
    assert!(all.contains(&format!("host {env}-influxdb")), "{all}");
    assert!(
        all.contains("ERROR") && all.contains("No valid host"),
        "Nova's fault must be shown:\n{all}"
    );
    // The bastion does not depend on the failed server.
    assert_eq!(setup.api.server(&format!("{env}-bastion")).await["status"], "ACTIVE");

    // A flavor or image the cloud does not know fails the plan itself:
    // nothing is changed, not even what does not depend on it.
    setup.edit("hosts.yaml", "flavor: x9.impossible", "flavor: no.such.flavor");
    setup.edit("hosts.yaml", "metadata: {owner: monitoring-team}", "metadata: {owner: someone}");
    for command in ["plan", "apply"] {
        let output = setup.run(command, &["--auto-approve"][..usize::from(command == "apply")]);
        let (stdout, stderr) = text(&output);
        assert_eq!(output.status.code(), Some(1), "{command}: {stdout}\n{stderr}");
        assert!(
            stderr.contains(&format!(
                "host {env}-influxdb: flavor `no.such.flavor` does not exist in the cloud"
            )),
            "{command}: {stderr}"
        );
    }
    let bastion = setup.api.server(&format!("{env}-bastion")).await;
    assert_eq!(
        metadata(&bastion, "owner").as_deref(),
        Some("monitoring-team"),
        "the refused plan changed the bastion"
    );
    setup.edit("hosts.yaml", "flavor: no.such.flavor", "flavor: s3.medium.2");
    setup.edit("hosts.yaml", "image: Ubuntu 24.04\n    keypair: {env}-key\n    networks: [{env}-net]\n    address: 192.168.44.30".replace("{env}", env).as_str(), "image: No Such Image\n    keypair: {env}-key\n    networks: [{env}-net]\n    address: 192.168.44.30".replace("{env}", env).as_str());
    let output = setup.run("plan", &[]);
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "host {env}-influxdb: image `No Such Image` does not exist in the cloud"
        )),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_credentials_authenticate_and_bad_ones_are_reported() {
    let Some(setup) = Setup::new("osapp", 45).await else { return };
    let (id, secret) =
        setup.api.application_credential(&format!("apimon-test-{}", setup.name)).await;
    let clouds = |secret: &str| {
        format!(
            "clouds:\n  apimon-test:\n    auth_type: v3applicationcredential\n    auth:\n      auth_url: http://127.0.0.1:5000/v3\n      application_credential_id: {id}\n      application_credential_secret: {secret}\n    region_name: RegionOne\n"
        )
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("clouds.yaml");
    let clouds_arg = file.display().to_string();
    std::fs::write(&file, clouds(&secret)).expect("write clouds.yaml");
    let plan = setup.run_with_clouds("plan", &clouds_arg, &[]);
    let (stdout, stderr) = text(&plan);
    assert_eq!(plan.status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("+ {0}/openstack.server/{0}-bastion", setup.name)),
        "{stdout}"
    );

    std::fs::write(&file, clouds("wrong-secret")).expect("write clouds.yaml");
    let plan = setup.run_with_clouds("plan", &clouds_arg, &[]);
    let (stdout, stderr) = text(&plan);
    assert_eq!(plan.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains("cannot authenticate to cloud `apimon-test`"), "{stderr}");
    assert!(!stderr.contains("wrong-secret"), "the secret leaked: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_flavor_replaces_the_server_unless_resize_is_enabled_then_it_resizes_in_place() {
    let Some(setup) = Setup::new("osrsz", 46).await else { return };
    let env = setup.name.as_str();
    setup.apply_ok();
    let before = setup.api.server(&format!("{env}-influxdb")).await;

    setup.edit("hosts.yaml", "flavor: s3.medium.2", "flavor: s3.large.2");
    let plan = setup.run("plan", &[]);
    let (stdout, _) = text(&plan);
    assert!(stdout.contains(&format!("-/+ {env}/openstack.server/{env}-influxdb")), "{stdout}");
    assert!(stdout.contains("flavor s3.medium.2 → s3.large.2"), "{stdout}");

    setup.repo.edit(
        "apimon.yaml",
        &format!("  {env}:\n    location: outside\n"),
        &format!("  {env}:\n    location: outside\n    policy: {{resize_servers: true}}\n"),
    );
    let plan = setup.run("plan", &[]);
    let (stdout, _) = text(&plan);
    assert!(stdout.contains(&format!("~ {env}/openstack.server/{env}-influxdb")), "{stdout}");
    assert!(stdout.contains("resize s3.medium.2 → s3.large.2"), "{stdout}");
    setup.apply_ok();
    let after = setup.api.server(&format!("{env}-influxdb")).await;
    assert_eq!(after["id"], before["id"], "a resize keeps the server");
    assert_eq!(after["flavor"]["original_name"], "s3.large.2");
    assert_eq!(after["status"], "ACTIVE");
    let again = setup.run("plan", &[]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again).0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_while_servers_build_leaves_them_to_finish_not_to_be_replaced() {
    let Some(setup) = Setup::new("oskill", 45).await else { return };
    let env = setup.name.as_str();
    let repo = setup.repo.path().display().to_string();
    let secrets = setup.secrets_file.display().to_string();
    let state = setup.state_dir.path().display().to_string();
    let clouds = setup.cloud.clouds_file.display().to_string();
    let mut child = crate::support::apimon_command(&[
        "apply",
        "--auto-approve",
        "--repo",
        &repo,
        "--env",
        env,
        "--secrets",
        &secrets,
        "--state-dir",
        &state,
        "--clouds-file",
        &clouds,
    ])
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .spawn()
    .expect("apply");
    // Killed as soon as a server exists, whatever its state.
    let started = std::time::Instant::now();
    let first = loop {
        let servers = setup.api.servers(&format!("{env}-")).await;
        if let Some(server) = servers.into_iter().next() {
            break server;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(300), "no server was created");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    let name = first["name"].as_str().expect("name").to_owned();

    let plan = setup.run("plan", &[]);
    let (stdout, stderr) = text(&plan);
    assert!(!stdout.contains("-/+"), "nothing is replaced after the kill:\n{stdout}\n{stderr}");
    setup.apply_ok();
    let servers = setup.api.servers(&name).await;
    let ids: Vec<&Value> =
        servers.iter().filter(|s| s["name"] == name.as_str()).map(|s| &s["id"]).collect();
    assert_eq!(ids, vec![&first["id"]], "the server the killed apply created is the one kept");
    let again = setup.run("plan", &[]);
    assert_eq!(again.status.code(), Some(0), "not converged:\n{}", text(&again).0);
}

/// The control plane's APIs (Nova, Neutron, Glance, Cinder) behind relays
/// the test can cut, reached through a region of their own in the catalog,
/// and a clouds.yaml selecting that region.
struct CutOff {
    relays: Vec<crate::support::sshd::Relay>,
    clouds: tempfile::NamedTempFile,
    region: String,
}

impl CutOff {
    async fn new(api: &Api, region: &str) -> Self {
        let mut relays = Vec::new();
        let mut ports = [0u16; 4];
        for (i, port) in [8774, 9696, 9292, 8776].into_iter().enumerate() {
            let relay = crate::support::sshd::Relay::start(&["127.0.0.1"], port).await;
            ports[i] = relay.port;
            relays.push(relay);
        }
        api.relay_region(region, ports).await;
        let text = format!(
            "clouds:\n  apimon-test:\n    auth:\n      auth_url: http://127.0.0.1:5000/v3\n      username: apimon\n      password: apimon\n      project_name: apimon\n      user_domain_name: Default\n      project_domain_name: Default\n    region_name: {region}\n    identity_api_version: 3\n"
        );
        // The format comes from the suffix.
        let clouds = tempfile::Builder::new().suffix(".yaml").tempfile().expect("clouds.yaml");
        std::fs::write(clouds.path(), text).expect("write clouds.yaml");
        Self { relays, clouds, region: region.to_owned() }
    }

    /// Every request from now on fails: the connection is dropped.
    fn down(&self) {
        self.relays.iter().for_each(|r| r.cut_after(0));
    }

    fn up(&self) {
        self.relays.iter().for_each(crate::support::sshd::Relay::disarm);
    }

    fn accepted(&self) -> usize {
        self.relays.iter().map(crate::support::sshd::Relay::accepted).sum()
    }

    /// HTTP requests the control plane's APIs got through the relays.
    fn http_requests(&self) -> usize {
        self.relays.iter().map(crate::support::sshd::Relay::http_requests).sum()
    }
}

/// Two environments whose clouds.yaml entries hold the same credentials
/// (one cloud project) share each list of an observation: planning both
/// asks the control plane what planning one asks, counted at its door.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_environments_in_one_project_make_one_list_per_kind() {
    let Some(setup) = Setup::new("osshare", 49).await else { return };
    let env = setup.name.clone();
    let twin = format!("{env}twin");
    let cut = CutOff::new(&setup.api, &format!("Relay-{env}")).await;
    // The twin's entry: the same credentials under its own name.
    let yaml = std::fs::read_to_string(cut.clouds.path()).expect("clouds.yaml");
    let entry = yaml.split_once("  apimon-test:\n").map(|(_, e)| e.to_owned()).expect("entry");
    std::fs::write(cut.clouds.path(), format!("{yaml}  apimon-twin:\n{entry}")).expect("write");
    std::fs::write(
        &setup.secrets_file,
        format!("{env}_admin: admin-pw\n{env}_telegraf: telegraf-pw\n{twin}_admin: admin-pw\n{twin}_telegraf: telegraf-pw\n"),
    )
    .expect("secrets");
    let clouds = cut.clouds.path().display().to_string();
    let plan = |envs: &[&str]| {
        let before = cut.http_requests();
        let mut extra = Vec::new();
        for other in envs.iter().skip(1) {
            extra.extend(["--env", other]);
        }
        let output = setup.run_with_clouds("plan", &clouds, &extra);
        let (stdout, stderr) = text(&output);
        assert_eq!(output.status.code(), Some(2), "{stdout}\n{stderr}");
        for env in envs {
            assert!(
                stdout.contains(&format!("+ {env}/openstack.server/{env}-bastion")),
                "{stdout}"
            );
        }
        cut.http_requests() - before
    };
    let one = plan(&[&env]);
    let both = plan(&[&env, &twin]);
    println!("control-plane requests for a plan: one environment {one}, two in one project {both}");
    assert!(one > 0);
    assert_eq!(both, one, "the second environment listed again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_plane_gone_mid_apply_fails_cleanly_and_the_rerun_converges() {
    let Some(setup) = Setup::new("osdown", 48).await else { return };
    let env = setup.name.clone();
    let cut = CutOff::new(&setup.api, &format!("Relay-{env}")).await;
    let clouds = cut.clouds.path().display().to_string();
    let repo = setup.repo.path().display().to_string();
    let secrets = setup.secrets_file.display().to_string();
    let state = setup.state_dir.path().display().to_string();
    let args = [
        "apply",
        "--auto-approve",
        "--repo",
        &repo,
        "--env",
        &env,
        "--secrets",
        &secrets,
        "--state-dir",
        &state,
        "--clouds-file",
        &clouds,
    ];
    let log = tempfile::NamedTempFile::new().expect("log");
    let mut child = crate::support::apimon_command(&args)
        .stdout(log.reopen().expect("log"))
        .stderr(log.reopen().expect("log"))
        .spawn()
        .expect("apply");
    // Gone as soon as the first server exists.
    let started = std::time::Instant::now();
    let first = loop {
        if let Some(server) = setup.api.servers(&format!("{env}-")).await.into_iter().next() {
            break server;
        }
        if child.try_wait().expect("wait").is_some() {
            panic!(
                "the apply ended first:\n{}",
                std::fs::read_to_string(log.path()).unwrap_or_default()
            );
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(300), "no server was created");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    cut.down();
    let status = child.wait().expect("apply ends");
    let stdout = std::fs::read_to_string(log.path()).unwrap_or_default();
    assert_eq!(status.code(), Some(1), "the apply fails:\n{stdout}");
    assert!(stdout.contains("failed"), "{stdout}");
    assert!(cut.accepted() > 0, "the apply went around the relays");

    // Back: the rerun converges, the server made before the cut is kept
    // (no duplicate), and every server is apimon's.
    cut.up();
    let rerun = setup.run_with_clouds("apply", &clouds, &["--auto-approve"]);
    let (stdout, stderr) = text(&rerun);
    assert_eq!(rerun.status.code(), Some(0), "rerun:\n{stdout}\n{stderr}");
    let name = first["name"].as_str().expect("name");
    let servers = setup.api.servers(&format!("{env}-")).await;
    let same: Vec<&Value> = servers.iter().filter(|s| s["name"] == name).collect();
    assert_eq!(same.len(), 1, "duplicates of {name}: {same:?}");
    assert_eq!(same[0]["id"], first["id"]);
    for server in &servers {
        assert_eq!(metadata(server, "apimon:env").as_deref(), Some(env.as_str()), "{server}");
    }
    let again = setup.run_with_clouds("plan", &clouds, &[]);
    assert_eq!(again.status.code(), Some(0), "not converged:\n{}", text(&again).0);
    setup.api.remove_region(&cut.region).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environments_with_the_same_credentials_authenticate_once() {
    let Some(setup) = Setup::new("osauth", 49).await else { return };
    let twin = format!("{}twin", setup.name);
    let text = std::fs::read_to_string(&setup.secrets_file).expect("secrets");
    std::fs::write(
        &setup.secrets_file,
        format!("{text}{twin}_admin: admin-pw\n{twin}_telegraf: telegraf-pw\n"),
    )
    .expect("secrets");
    // Keystone behind a relay that counts connections: a session is one
    // HTTP client, so its connections to Keystone are what one
    // authentication costs. Counted for one environment, then for two that
    // share a credential under two clouds.yaml names (each with a relay of
    // its own, so no session is reused between the two counts).
    async fn keystone_connections(setup: &Setup, names: Vec<String>) -> usize {
        let keystone = crate::support::sshd::Relay::start(&["127.0.0.1"], 5000).await;
        let entry = |name: &str| {
            format!("  {name}:\n    auth:\n      auth_url: http://127.0.0.1:{}/v3\n      username: apimon\n      password: apimon\n      project_name: apimon\n      user_domain_name: Default\n      project_domain_name: Default\n    region_name: RegionOne\n    identity_api_version: 3\n", keystone.port)
        };
        let clouds = tempfile::Builder::new().suffix(".yaml").tempfile().expect("clouds.yaml");
        std::fs::write(
            clouds.path(),
            format!("clouds:\n{}{}", entry("apimon-test"), entry("apimon-twin")),
        )
        .expect("write");
        let secrets = Secrets::Resolved(
            SecretStore::load(Some(&setup.secrets_file), std::iter::empty()).expect("secrets"),
        );
        let machine = clouds_only(clouds.path());
        let prepared = reconcile::prepare(
            setup.repo.path(),
            &names,
            &secrets,
            Target::Live(&machine),
            &apimon::model::load::NoFetch,
        )
        .expect("prepare");
        let state = state::read(setup.state_dir.path()).expect("state");
        let plan = reconcile::plan(&prepared, &state, false).await.expect("plan");
        assert!(plan.summary.has_changes());
        keystone.accepted()
    }
    let one = keystone_connections(&setup, vec![setup.name.clone()]).await;
    let two = keystone_connections(&setup, vec![setup.name.clone(), twin.clone()]).await;
    assert!(one > 0);
    assert_eq!(two, one, "two environments, one credential: one authentication");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_never_replaces_the_host_it_runs_on() {
    use crate::support::daemon::Daemon;
    let Some(setup) = Setup::new("osself", 50).await else { return };
    let env = setup.name.clone();
    let Some(git) = crate::support::git::GitRemote::new() else { return };
    let copied = std::process::Command::new("cp")
        .arg("-r")
        .arg(format!("{}/.", setup.repo.path().display()))
        .arg(git.work())
        .status()
        .expect("cp");
    assert!(copied.success());
    git.commit("two servers");
    git.push(false);
    let dir = tempfile::tempdir().expect("temp dir");
    let port = crate::support::free_port();
    let config = dir.path().join("daemon.yaml");
    std::fs::write(
        &config,
        format!(
            "repository:\n  url: {}\n  branch: main\n  poll_interval_seconds: 1\nstate_dir: {}\nsecrets_file: {}\nclouds_file: {}\nenvironments: [{env}]\nlisten: 127.0.0.1:{port}\nruns_on: {env}/{env}-bastion\n",
            git.file_url(),
            setup.state_dir.path().display(),
            setup.secrets_file.display(),
            setup.cloud.clouds_file.display(),
        ),
    )
    .expect("daemon.yaml");
    let daemon = Daemon::start(&config, port, dir.path().join("daemon.log")).await;
    let outcome = |s: &serde_json::Value| s["environments"][env.as_str()]["outcome"].clone();
    daemon
        .wait_status("converged", std::time::Duration::from_secs(240), |s| outcome(s) == "success")
        .await;
    let before = setup.api.servers(&format!("{env}-bastion")).await;
    let influxdb_before = setup.api.servers(&format!("{env}-influxdb")).await;

    // A new flavor for every server: the influxdb server is replaced, the
    // daemon's own is held, with the reason, for an operator to apply.
    let hosts = format!("inventory/{env}/hosts.yaml");
    git.edit(&hosts, "flavor: s3.medium.2", "flavor: s3.large.2");
    git.edit(&hosts, "flavor: s3.small.1", "flavor: s3.medium.2");
    git.commit("new flavors");
    git.push(false);
    let bastion_id = format!("{env}/openstack.server/{env}-bastion");
    let status = daemon
        .wait_status("the bastion's replacement held", std::time::Duration::from_secs(240), |s| {
            s["environments"][env.as_str()]["pending"]
                .as_array()
                .is_some_and(|p| p.iter().any(|c| c["id"] == bastion_id.as_str()))
        })
        .await;
    let pending = status["environments"][env.as_str()]["pending"].to_string();
    assert!(pending.contains("the daemon's own host"), "{pending}");
    let after = setup.api.servers(&format!("{env}-bastion")).await;
    assert_eq!(after[0]["id"], before[0]["id"], "the daemon replaced its own host");
    let influxdb_after = setup.api.servers(&format!("{env}-influxdb")).await;
    assert_ne!(influxdb_after[0]["id"], influxdb_before[0]["id"], "the other server was replaced");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_keypair_is_used_by_name_and_never_managed() {
    let Some(setup) = Setup::new("oskey", 51).await else { return };
    let env = setup.name.clone();
    let existing = format!("{env}-existing");
    setup
        .api
        .post(
            "http://127.0.0.1:8774/v2.1/os-keypairs",
            serde_json::json!({"keypair": {"name": existing, "public_key": KEY}}),
        )
        .await;
    setup.repo.write(
        &format!("inventory/{env}/keypairs.yaml"),
        &format!("keypairs:\n  - {{name: {existing}, existing: true}}\n"),
    );
    let hosts =
        std::fs::read_to_string(setup.repo.path().join(format!("inventory/{env}/hosts.yaml")))
            .expect("hosts");
    setup.repo.write(
        &format!("inventory/{env}/hosts.yaml"),
        &hosts.replace(&format!("keypair: {env}-key"), &format!("keypair: {existing}")),
    );
    let stdout = setup.apply_ok();
    assert!(
        !stdout.contains("openstack.keypair/"),
        "an existing keypair is not managed:\n{stdout}"
    );
    let servers = setup.api.servers(&format!("{env}-")).await;
    assert!(!servers.is_empty());
    for server in &servers {
        assert_eq!(server["key_name"], existing.as_str(), "{server}");
    }
    let again = setup.run("plan", &[]);
    assert_eq!(again.status.code(), Some(0), "not converged:\n{}", text(&again).0);
    let keypair =
        setup.api.get(&format!("http://127.0.0.1:8774/v2.1/os-keypairs/{existing}")).await;
    assert_eq!(keypair["keypair"]["name"], existing.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_named_like_fqdns_are_created_and_stay_converged() {
    let Some(setup) = Setup::new("osfqdn", 52).await else { return };
    let env = setup.name.clone();
    let path = format!("inventory/{env}/hosts.yaml");
    let hosts = std::fs::read_to_string(setup.repo.path().join(&path)).expect("hosts");
    setup.repo.write(
        &path,
        &hosts
            .replace(
                &format!("name: {env}-bastion"),
                &format!("name: {env}-bastion.apimon.example.net"),
            )
            .replace(
                &format!("name: {env}-influxdb"),
                &format!("name: {env}-influxdb.apimon.example.net"),
            ),
    );
    setup.apply_ok();
    let names: Vec<String> = setup
        .api
        .servers(&format!("{env}-"))
        .await
        .iter()
        .filter_map(|s| s["name"].as_str().map(str::to_owned))
        .collect();
    assert!(names.contains(&format!("{env}-bastion.apimon.example.net")), "{names:?}");
    assert!(names.contains(&format!("{env}-influxdb.apimon.example.net")), "{names:?}");
    let again = setup.run("plan", &[]);
    assert_eq!(again.status.code(), Some(0), "not converged:\n{}", text(&again).0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_volume_boots_the_server_from_a_volume_of_that_size() {
    let Some(setup) = Setup::new("osroot", 53).await else { return };
    let env = setup.name.clone();
    let path = format!("inventory/{env}/hosts.yaml");
    let hosts = std::fs::read_to_string(setup.repo.path().join(&path)).expect("hosts");
    let influxdb = format!("  - name: {env}-influxdb\n    role: influxdb\n");
    assert!(hosts.contains(&influxdb), "{hosts}");
    setup.repo.write(
        &path,
        &hosts.replace(&influxdb, &format!("{influxdb}    root_volume: {{size_gb: 2}}\n")),
    );
    setup.apply_ok();

    // Booted from a 2 GiB volume made from the image; its data volume as before.
    let server = setup.api.server(&format!("{env}-influxdb")).await;
    assert_eq!(server["image"], "", "not booted from a volume: {server}");
    let server_id = server["id"].as_str().expect("id");
    let volumes = setup
        .api
        .get(&format!("http://127.0.0.1:8776/v3/{}/volumes/detail", setup.api.project_id))
        .await;
    let root: Vec<&Value> = volumes["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .filter(|v| v["bootable"] == "true" && v["attachments"][0]["server_id"] == server_id)
        .collect();
    assert_eq!(root.len(), 1, "{volumes}");
    assert_eq!(root[0]["size"], 2, "{}", root[0]);
    assert_eq!(setup.api.volume(&format!("{env}-influxdb-data")).await["size"], 1);
    let again = setup.run("plan", &[]);
    assert_eq!(again.status.code(), Some(0), "not converged:\n{}", text(&again).0);

    // A new size replaces the server (a volume of the new size).
    setup.repo.edit(&path, "root_volume: {size_gb: 2}", "root_volume: {size_gb: 3}");
    let plan = setup.run("plan", &[]);
    let (stdout, stderr) = text(&plan);
    assert_eq!(plan.status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(stdout.contains("root disk a 2 GiB volume → a 3 GiB volume"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_platform_is_adopted_on_request_then_converged_never_another_environments() {
    let Some(setup) = Setup::new("osadopt", 54).await else { return };
    let env = setup.name.clone();
    // A platform apimon did not build: everything exists (servers with
    // their volume and floating IP, networks, groups, keypair, InfluxDB
    // users and databases) without apimon's marks and state.
    setup.apply_ok();
    setup.api.strip_marks(&env).await;
    let state = setup.state_dir.path();
    for entry in std::fs::read_dir(state).expect("state dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path).expect("remove");
        } else {
            std::fs::remove_file(&path).expect("remove");
        }
    }
    // Never implicit: a plan refuses to touch what apimon does not own.
    let plan = setup.run("plan", &[]);
    let (stdout, stderr) = text(&plan);
    assert_eq!(plan.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains("apimon does not own it"), "{stderr}");

    // A name another environment's marks claim is refused, nothing adopted.
    let group = setup.api.security_group(&format!("{env}-influxdb")).await;
    let group_id = group["id"].as_str().expect("group id").to_owned();
    setup.api.mark_security_group(&group_id, "someone-else").await;
    let refused = setup.run("adopt", &["--yes"]);
    let (stdout, stderr) = text(&refused);
    assert_eq!(refused.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains("taken by environment `someone-else`"), "{stderr}");
    assert!(!stdout.contains("Adopted"), "{stdout}");
    assert_eq!(setup.run("plan", &[]).status.code(), Some(1), "nothing was adopted");
    setup.api.delete(&format!("http://127.0.0.1:9696/v2.0/security-groups/{group_id}/tags")).await;

    // Without a terminal and without --yes: the list, then a refusal.
    let unconfirmed = setup.run("adopt", &[]);
    let (stdout, stderr) = text(&unconfirmed);
    assert_ne!(unconfirmed.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains(&format!("openstack.server/{env}-bastion")), "{stdout}");
    assert!(stderr.contains("pass --yes"), "{stderr}");

    let adopted = setup.run("adopt", &["--yes"]);
    let (stdout, stderr) = text(&adopted);
    assert_eq!(adopted.status.code(), Some(0), "{stdout}\n{stderr}");
    for id in [
        format!("{env}/openstack.server/{env}-bastion"),
        format!("{env}/openstack.server/{env}-influxdb"),
        format!("{env}/openstack.volume/{env}-influxdb-data"),
        format!("{env}/openstack.network/{env}-net"),
        format!("{env}/openstack.security_group/{env}-ssh"),
        format!("{env}/openstack.keypair/{env}-key"),
        format!("{env}/openstack.floating_ip/{env}-bastion"),
        format!("{env}/influxdb.database/apimon"),
        format!("{env}/influxdb.user/telegraf"),
    ] {
        assert!(stdout.contains(&format!("  {id}\n")), "{id} not adopted:\n{stdout}");
    }
    assert!(stdout.contains("0 failed"), "{stdout}");
    // Adopted: converged as is, the marks back on the servers.
    let again = setup.run("plan", &[]);
    assert_eq!(again.status.code(), Some(0), "not converged:\n{}", text(&again).0);
    let bastion = setup.api.server(&format!("{env}-bastion")).await;
    assert_eq!(metadata(&bastion, "apimon:env").as_deref(), Some(env.as_str()));
    let nothing = setup.run("adopt", &["--yes"]);
    assert!(text(&nothing).0.contains("Nothing to adopt"), "{}", text(&nothing).0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swift_containers_are_created_marked_opened_and_pruned_with_their_objects_never_anothers() {
    use reqwest::Method;
    let Some(setup) = Setup::new("osobj", 52).await else { return };
    let env = setup.name.clone();
    let (logs, public, existing, theirs) = (
        format!("{env}-logs"),
        format!("{env}-public"),
        format!("{env}-existing"),
        format!("{env}-theirs"),
    );
    let file = format!("inventory/{env}/object_storage.yaml");
    // Made behind apimon's back: one without marks, one marked for another environment.
    let (status, ..) = setup.api.swift(Method::PUT, &existing, &[], false).await;
    assert_eq!(status, 201);
    let their_marks =
        [("X-Container-Meta-Apimon-Managed", "true"), ("X-Container-Meta-Apimon-Env", "elsewhere")];
    let (status, ..) = setup.api.swift(Method::PUT, &theirs, &their_marks, false).await;
    assert_eq!(status, 201);

    setup.repo.write(
        &file,
        &format!("containers:\n  - name: {logs}\n  - {{name: {public}, public: true}}\n  - name: {existing}\n"),
    );
    let stdout = setup.apply_ok();
    assert!(stdout.contains(&format!("openstack.container/{logs}")), "{stdout}");
    assert!(
        !stdout.contains(&format!("openstack.container/{existing}")),
        "exists already:\n{stdout}"
    );
    let (status, headers, _) = setup.api.swift(Method::HEAD, &logs, &[], false).await;
    assert_eq!(status, 204, "{headers:?}");
    assert_eq!(headers.get("x-container-meta-apimon-managed").map(String::as_str), Some("true"));
    assert_eq!(headers.get("x-container-meta-apimon-env"), Some(&env));
    assert!(!headers.contains_key("x-container-read"), "private by default: {headers:?}");
    let (status, ..) = setup.api.swift(Method::GET, &public, &[], true).await;
    assert!((200..300).contains(&status), "a public container lists without a token: {status}");
    let (status, ..) = setup.api.swift(Method::GET, &logs, &[], true).await;
    assert_eq!(status, 401, "a private one does not");
    let again = setup.run("plan", &[]);
    assert_eq!(again.status.code(), Some(0), "not converged:\n{}", text(&again).0);

    // A log in the container; then it is opened, and `public` is dropped.
    let log = format!("{logs}/job-1/output.log");
    let (status, ..) =
        setup.api.swift_put_body(Method::PUT, &log, &[], false, "PLAY [all]\n").await;
    assert_eq!(status, 201);
    setup.repo.write(
        &file,
        &format!("containers:\n  - {{name: {logs}, public: true}}\n  - name: {existing}\n"),
    );
    let stdout = setup.apply_ok();
    assert!(stdout.contains("made public"), "{stdout}");
    let (status, ..) =
        setup.api.swift(Method::GET, &format!("{logs}/job-1/output.log"), &[], true).await;
    assert_eq!(status, 200, "readable without a token now");
    let (status, ..) = setup.api.swift(Method::HEAD, &public, &[], false).await;
    assert_eq!(status, 404, "pruned");

    // All gone from the repository: apimon's own container goes with its
    // objects; the one it found stays.
    setup.repo.write(&file, "containers: []\n");
    setup.apply_ok();
    let (status, ..) = setup.api.swift(Method::HEAD, &logs, &[], false).await;
    assert_eq!(status, 404, "deleted with its objects");
    let (status, ..) = setup.api.swift(Method::HEAD, &existing, &[], false).await;
    assert_eq!(status, 204, "never apimon's, never deleted");

    // Another environment's container is not taken over.
    setup.repo.write(&file, &format!("containers:\n  - name: {theirs}\n"));
    let (stdout, stderr, code) = setup.apply();
    assert_ne!(code, Some(0), "{stdout}\n{stderr}");
    let said = format!("{stdout}\n{stderr}");
    assert!(
        said.contains(&format!("container {theirs}: the name is taken by environment `elsewhere`")),
        "{said}"
    );
    let (_, headers, _) = setup.api.swift(Method::HEAD, &theirs, &[], false).await;
    assert_eq!(headers.get("x-container-meta-apimon-env").map(String::as_str), Some("elsewhere"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_log_containers_are_made_in_the_monitored_cloud_with_their_key_then_changed_and_pruned()
{
    use reqwest::Method;
    let Some(setup) = Setup::new("oslogs", 54).await else { return };
    let env = setup.name.clone();
    let container = format!("{env}-joblogs");
    let apimon_yaml = setup.repo.path().join("apimon.yaml");
    let base = std::fs::read_to_string(&apimon_yaml).expect("apimon.yaml");
    // The monitored cloud is the suite's Keystone; its user's project holds the container.
    let with_logs = |extra: &str| {
        base.replacen(
            "    cloud: apimon-test\n",
            &format!("    cloud: apimon-test\n    monitored_clouds:\n      probed:\n        auth_url: http://127.0.0.1:5000/v3\n        region: RegionOne\n        project_name: apimon\n        username: apimon\n        password: {{secret: {env}_probe}}\n{extra}"),
            1,
        )
    };
    let logs = |public: bool| {
        format!("    logs:\n      cloud: probed\n      container: {container}\n      public: {public}\n      temp_url_key: {{secret: {env}_key}}\n")
    };
    let secrets = |key: &str| {
        std::fs::write(
            &setup.secrets_file,
            format!("{env}_admin: admin-pw\n{env}_telegraf: telegraf-pw\n{env}_probe: apimon\n{env}_key: {key}\n"),
        )
        .expect("secrets");
    };
    secrets("first-key");
    setup.repo.write("apimon.yaml", &with_logs(&logs(false)));
    let stdout = setup.apply_ok();
    assert!(stdout.contains(&format!("logs.container/probed:{container}")), "{stdout}");
    let (status, headers, _) = setup.api.swift(Method::HEAD, &container, &[], false).await;
    assert_eq!(status, 204, "{headers:?}");
    assert_eq!(headers.get("x-container-meta-apimon-managed").map(String::as_str), Some("true"));
    assert_eq!(headers.get("x-container-meta-apimon-env"), Some(&env));
    assert_eq!(headers.get("x-container-meta-temp-url-key").map(String::as_str), Some("first-key"));
    assert!(!headers.contains_key("x-container-read"), "private: {headers:?}");
    let again = setup.run("plan", &[]);
    assert_eq!(again.status.code(), Some(0), "not converged:\n{}", text(&again).0);
    assert!(!text(&again).0.contains("first-key"), "the key is never shown");

    // A new key: an update that never prints it.
    secrets("second-key");
    let stdout = setup.apply_ok();
    assert!(stdout.contains("temp-URL key changed"), "{stdout}");
    assert!(!stdout.contains("second-key"), "{stdout}");
    let (_, headers, _) = setup.api.swift(Method::HEAD, &container, &[], false).await;
    assert_eq!(
        headers.get("x-container-meta-temp-url-key").map(String::as_str),
        Some("second-key")
    );

    // Public, with a log in it; then no logs at all: pruned with its objects.
    let (status, ..) = setup
        .api
        .swift_put_body(Method::PUT, &format!("{container}/run/output.log"), &[], false, "PLAY\n")
        .await;
    assert_eq!(status, 201);
    setup.repo.write("apimon.yaml", &with_logs(&logs(true)));
    let stdout = setup.apply_ok();
    assert!(stdout.contains("made public"), "{stdout}");
    let (status, ..) =
        setup.api.swift(Method::GET, &format!("{container}/run/output.log"), &[], true).await;
    assert_eq!(status, 200, "readable without a token");
    setup.repo.write("apimon.yaml", &with_logs(""));
    let stdout = setup.apply_ok();
    assert!(stdout.contains(&format!("logs.container/probed:{container}")), "{stdout}");
    let (status, ..) = setup.api.swift(Method::HEAD, &container, &[], false).await;
    assert_eq!(status, 404, "pruned with its log");
}
