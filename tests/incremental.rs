//! Incremental observation, on the bootstrapped world (real daemon on the
//! sshd "bastion", the suite's OpenStack control plane, a real InfluxDB):
//! a commit's pass observes only the providers its change touches, counted
//! in `/status` (`last_observation`), and a full pass still repairs what
//! changed by hand elsewhere.

use std::time::Instant;

use serde_json::Value;

use crate::bootstrap::{bootstrapped, converged_at, Setup};

/// Commits `edits` (file, from, to), pushes, and waits until the daemon
/// converged at the commit; its `/status` and the time from the push.
async fn converge_commit(
    setup: &Setup,
    edits: &[(&str, &str, &str)],
    message: &str,
) -> (Value, f64) {
    for (file, from, to) in edits {
        setup.git.edit(file, from, to);
    }
    let commit = setup.git.commit(message);
    let pushed = Instant::now();
    setup.git.push(false);
    let env = setup.env.clone();
    let status = setup
        .wait_status(&format!("{message} converged"), |s| converged_at(s, &env, &commit))
        .await;
    (status, pushed.elapsed().as_secs_f64())
}

fn observed(status: &Value) -> Vec<String> {
    let list = status["last_observation"]["observed"].as_array().cloned().unwrap_or_default();
    list.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_observes_only_what_it_changes_and_a_full_pass_repairs_the_rest() {
    let Some((setup, _)) = bootstrapped().await else { return };
    let env = setup.env.clone();
    let influxdb_yaml = format!("inventory/{env}/influxdb.yaml");

    // One InfluxDB user: no OpenStack request, no SSH command.
    let reader = format!("users:\n  - name: reader\n    password: {{secret: {env}_telegraf}}\n    grants:\n      - {{database: apimon, privilege: READ}}\n");
    let (status, seconds) =
        converge_commit(&setup, &[(&influxdb_yaml, "users:\n", &reader)], "a reader").await;
    println!("push → converged, one InfluxDB user, observing only what the commit changed: {seconds:.2} s");
    let report = &status["last_observation"];
    assert_eq!(observed(&status), vec!["influxdb".to_owned()], "{report}");
    assert_eq!(report["requests"]["openstack"], 0, "{report}");
    assert_eq!(report["requests"]["host"], 0, "{report}");
    assert!(report["cached"].as_array().is_some_and(|c| c.len() >= 2), "{report}");
    let (code, _) = setup.influx.query(Some(("reader", "telegraf-pw")), "SHOW DATABASES").await;
    assert_eq!(code, 200, "the new user logs in");

    // A file changed by hand on a host the next commit does not touch:
    // that commit's pass does not see it; a full pass repairs it.
    let conf = setup.host_file("/etc/influxdb/influxdb.conf");
    let original = std::fs::read_to_string(&conf).expect("influxdb.conf");
    std::fs::write(&conf, format!("{original}# changed by hand\n")).expect("edit by hand");
    let writer = format!("users:\n  - name: writer\n    password: {{secret: {env}_telegraf}}\n    grants:\n      - {{database: apimon, privilege: WRITE}}\n");
    let (status, _) =
        converge_commit(&setup, &[(&influxdb_yaml, "users:\n", &writer)], "a writer").await;
    assert_eq!(observed(&status), vec!["influxdb".to_owned()]);
    let untouched = std::fs::read_to_string(&conf).expect("influxdb.conf");
    assert!(untouched.ends_with("# changed by hand\n"), "the commit's pass looked at the host");
    assert_eq!(status["last_observation"]["trigger"], "poll");
    let full = Instant::now();
    let answer = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/trigger", setup.port))
        .bearer_auth("a-webhook-secret-of-32-characters")
        .send()
        .await
        .expect("trigger");
    assert!(answer.status().is_success(), "{}", answer.status());
    // `last_observation` is written when the pass has observed; the file
    // when it has applied.
    let repaired = |s: &Value| {
        s["last_observation"]["trigger"] == "manual"
            && std::fs::read_to_string(&conf).is_ok_and(|now| now == original)
    };
    let status = setup.wait_status("a full pass that repairs the file", repaired).await;
    println!("a full pass (every provider observed): {:.2} s", full.elapsed().as_secs_f64());
    let report = &status["last_observation"];
    assert!(report["cached"].as_array().is_some_and(Vec::is_empty), "{report}");
    assert!(report["requests"]["openstack"].as_u64().unwrap_or(0) > 0, "{report}");

    // A security group's rule: OpenStack is observed again (the servers
    // that use the group with it).
    let groups = format!("inventory/{env}/security_groups.yaml");
    let rule = "      - {protocol: tcp, ports: 22, remote_ip_prefix: 0.0.0.0/0}\n";
    let more =
        format!("{rule}      - {{protocol: tcp, ports: 8086, remote_ip_prefix: 10.0.0.0/8}}\n");
    let (status, _) = converge_commit(&setup, &[(&groups, rule, &more)], "a rule").await;
    let report = &status["last_observation"];
    assert!(observed(&status).contains(&"openstack".to_owned()), "{report}");
    assert!(report["requests"]["openstack"].as_u64().unwrap_or(0) > 0, "{report}");
}
