//! The shipped examples-repo: it must validate, and its offline plan must
//! create every declared resource.

use std::path::PathBuf;

use crate::support::{apimon, text};

fn examples_repo() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples-repo").to_string_lossy().into_owned()
}

#[test]
fn examples_repo_validates() {
    let output = apimon(&["validate", "--repo", &examples_repo()]);
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stdout.contains("valid (2 environment(s), 8 host(s)"), "{stdout}");
}

#[test]
fn examples_repo_offline_plan_creates_everything() {
    let output = apimon(&["plan", "--offline", "--repo", &examples_repo()]);
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    for expected in [
        "+ outside/openstack.server/outside-executor",
        "+ inside/openstack.server/inside-bastion",
        "+ outside/openstack.floating_ip/outside-bastion",
        "+ outside/influxdb.user/grafana",
        "+ outside/grafana.datasource/apimon-outside",
        "+ outside/host.file/outside-executor:/etc/telegraf/telegraf.conf",
        "+ outside/host.runtime/outside-executor",
        "+ inside/host.account/inside-executor:apimon",
        "+ outside/host.file/outside-bastion:/etc/apimon/daemon.yaml",
        "+ inside/host.unit/inside-bastion:apimon",
    ] {
        assert!(stdout.contains(expected), "missing {expected:?} in\n{stdout}");
    }
    assert!(stdout.contains("to update, 0 to replace, 0 to delete, 0 unchanged."), "{stdout}");
    assert!(
        !stdout.contains(" ~ ") && !stdout.contains(" - "),
        "offline plan only creates:\n{stdout}"
    );
}
