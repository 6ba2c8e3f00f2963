//! Validation: raw documents → [`DesiredState`], collecting every problem.
//!
//! Each rule adds a [`Diagnostic`] at the offending value and carries on,
//! so one run reports everything (vector's `compile()`). Pure: no I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::str::FromStr;
use std::time::Duration;

use super::error::{Diagnostic, Diagnostics, Location};
use super::load::{Document, RawInventory, RawRepository};
use super::{raw, Role};
use super::{
    Dashboard, Datasource, DesiredState, Environment, Grafana, Policy, Remote, Rule, Runner,
    Scenario, ScheduledScenario, SecretUse, SecurityGroup, TemplateOverride, DEFAULT_MAX_DELETES,
    DEFAULT_SCENARIO_TIMEOUT,
};

/// Collects diagnostics.
#[derive(Default)]
struct Check {
    problems: Vec<Diagnostic>,
    secret_uses: Vec<SecretUse>,
    /// The environment being checked, recorded with each secret use.
    current_env: Option<String>,
}

impl Check {
    fn error<T>(&mut self, doc: &Document<T>, path: &str, message: impl Into<String>) {
        self.problems.push(Diagnostic::new(doc.at(path), path, message));
    }

    /// Records a secret use; `must_be_secret` rejects an inline value.
    fn secret<T>(
        &mut self,
        doc: &Document<T>,
        path: &str,
        value: &raw::MaybeSecret,
        must_be_secret: bool,
    ) {
        match value {
            raw::MaybeSecret::Secret(name) => {
                if !is_secret_name(name) {
                    self.error(doc, path, format!("invalid secret name `{name}`; expected lowercase letters, digits and `_`"));
                }
                self.secret_uses.push(SecretUse {
                    name: name.clone(),
                    env: self.current_env.clone(),
                    location: doc.at(path),
                    path: path.to_owned(),
                });
            }
            raw::MaybeSecret::Plain(_) if must_be_secret => self.error(
                doc,
                path,
                "a credential must not be written in the repository; expected `{secret: NAME}`",
            ),
            raw::MaybeSecret::Plain(_) => {}
        }
    }

    /// Reports names seen twice in `items` (name, key path).
    fn unique<'a, T>(
        &mut self,
        doc: &Document<T>,
        what: &str,
        items: impl IntoIterator<Item = (&'a str, String)>,
    ) {
        let mut seen: BTreeMap<&str, String> = BTreeMap::new();
        for (name, path) in items {
            if let Some(first) = seen.get(name) {
                let first = doc.at(first);
                self.error(
                    doc,
                    &path,
                    format!("duplicate {what} `{name}`; first declared at {first}"),
                );
            } else {
                seen.insert(name, path);
            }
        }
    }
}

fn is_secret_name(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// DNS-label-like names: hosts, environments, project.
fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// InfluxQL identifiers apimon accepts without quoting surprises.
fn is_influx_identifier(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Grafana uids: at most 40 of `[a-zA-Z0-9_-]`.
fn is_grafana_uid(uid: &str) -> bool {
    !uid.is_empty()
        && uid.len() <= 40
        && uid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `a.b.c.d/n` → (network, prefix length).
pub(crate) fn parse_cidr(cidr: &str) -> Option<(Ipv4Addr, u8)> {
    let (address, prefix) = cidr.split_once('/')?;
    let address = Ipv4Addr::from_str(address).ok()?;
    let prefix: u8 = prefix.parse().ok().filter(|p| *p <= 32)?;
    Some((address, prefix))
}

fn cidr_contains((network, prefix): (Ipv4Addr, u8), address: Ipv4Addr) -> bool {
    let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix)) };
    u32::from(network) & mask == u32::from(address) & mask
}

/// Nanoseconds per InfluxQL duration unit; longer unit names first.
const INFLUX_UNITS: [(&str, u64); 9] = [
    ("ns", 1),
    ("ms", 1_000_000),
    ("µ", 1_000),
    ("u", 1_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
    ("d", 86_400_000_000_000),
    ("w", 604_800_000_000_000),
];

/// Parses an InfluxQL duration literal (`4w`, `1d12h`, `INF`) to
/// nanoseconds; `INF` is 0, as InfluxDB reports it. `None` if invalid.
pub fn influx_duration_ns(text: &str) -> Option<u64> {
    if text.eq_ignore_ascii_case("inf") {
        return Some(0);
    }
    if text.is_empty() {
        return None;
    }
    let mut total: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let value: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, ns) = INFLUX_UNITS.iter().find(|(unit, _)| rest.starts_with(unit))?;
        rest = &rest[unit.len()..];
        total = total.checked_add(value.checked_mul(*ns)?)?;
    }
    Some(total)
}

fn is_influx_duration(text: &str) -> bool {
    influx_duration_ns(text).is_some()
}

/// `30s`, `5m`, `1h` → duration.
pub(crate) fn parse_timeout(text: &str) -> Option<Duration> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let value: u64 = text[..digits].parse().ok()?;
    let seconds = match &text[digits..] {
        "s" => value,
        "m" => value.checked_mul(60)?,
        "h" => value.checked_mul(3600)?,
        _ => return None,
    };
    (seconds > 0).then(|| Duration::from_secs(seconds))
}

/// A standard 5-field cron (minute first) gets a seconds field and its
/// day-of-week translated from crontab's numbering (0 or 7 = Sunday) to the
/// `cron` crate's (1 = Sunday); 6 and 7 fields (seconds first, optional
/// year) are the `cron` crate's own syntax and pass as they are.
pub fn normalize_cron(expression: &str) -> Result<String, String> {
    let fields: Vec<&str> = expression.split_whitespace().collect();
    let normalized = match fields.len() {
        5 => {
            let weekday = crontab_weekdays(fields[4])
                .map_err(|why| format!("invalid cron expression `{expression}`: {why}"))?;
            format!("0 {} {} {} {} {weekday}", fields[0], fields[1], fields[2], fields[3])
        }
        6 | 7 => fields.join(" "),
        n => return Err(format!("invalid cron expression `{expression}`: it has {n} fields; expected 5 (minute hour day month weekday) or 6 (with seconds first)")),
    };
    cron::Schedule::from_str(&normalized)
        .map(|_| normalized)
        .map_err(|error| format!("invalid cron expression `{expression}`: {error}"))
}

/// Translates a crontab day-of-week field (0-7, 0 and 7 = Sunday) to the
/// `cron` crate's numbering (1-7, 1 = Sunday). Names pass unchanged.
fn crontab_weekdays(field: &str) -> Result<String, String> {
    let day = |text: &str| -> Result<Option<u8>, String> {
        if text.bytes().all(|b| b.is_ascii_digit()) && !text.is_empty() {
            match text.parse::<u8>() {
                Ok(n) if n <= 7 => Ok(Some(n % 7 + 1)),
                _ => Err(format!("day of week {text} is out of range; expected 0-7 (0 and 7 = Sunday) or a name like Mon")),
            }
        } else {
            Ok(None)
        }
    };
    let mut items = Vec::new();
    for item in field.split(',') {
        let (base, step) = match item.split_once('/') {
            Some((base, step)) => (base, Some(step)),
            None => (item, None),
        };
        let suffix = step.map(|s| format!("/{s}")).unwrap_or_default();
        let translated = match base.split_once('-') {
            Some((low, high)) => match (day(low)?, day(high)?, high) {
                // `5-7` (Friday to Sunday) wraps in the target numbering.
                (Some(low), Some(1), "7") if low > 1 && step.is_none() => format!("{low}-7,1"),
                (Some(_), Some(1), "7") => {
                    return Err(
                        "a day-of-week range ending in 7 cannot take a step; use 0 for Sunday"
                            .to_owned(),
                    )
                }
                (Some(low), Some(high), _) => format!("{low}-{high}{suffix}"),
                _ => item.to_owned(),
            },
            None => match day(base)? {
                Some(n) => format!("{n}{suffix}"),
                None => item.to_owned(),
            },
        };
        items.push(translated);
    }
    Ok(items.join(","))
}

fn is_public_key(line: &str) -> bool {
    let mut parts = line.split_whitespace();
    let kind_ok = matches!(
        parts.next(),
        Some(
            "ssh-ed25519"
                | "ssh-rsa"
                | "ecdsa-sha2-nistp256"
                | "ecdsa-sha2-nistp384"
                | "ecdsa-sha2-nistp521"
                | "sk-ssh-ed25519@openssh.com"
                | "sk-ecdsa-sha2-nistp256@openssh.com"
        )
    );
    let body_ok = parts.next().is_some_and(|b| {
        b.len() >= 16
            && b.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/' || c == b'=')
    });
    kind_ok && body_ok
}

fn is_http_url(url: &str) -> bool {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
    rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/') && !r.contains(char::is_whitespace))
}

fn names_list<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let names: Vec<&str> = names.into_iter().collect();
    if names.is_empty() {
        "none are declared".to_owned()
    } else {
        format!("expected one of: {}", names.join(", "))
    }
}

/// Turns a parsed repository into a [`DesiredState`], or every problem in it.
///
/// # Errors
/// All diagnostics found, sorted by file and position.
pub fn validate(repo: RawRepository) -> Result<DesiredState, Diagnostics> {
    let mut check = Check::default();
    let root = &repo.root;
    let defaults = &root.value.defaults;

    if !is_dns_label(&root.value.project) {
        check.error(
            root,
            "project",
            format!(
                "invalid project name `{}`; expected lowercase letters, digits and `-`",
                root.value.project
            ),
        );
    }
    if root.value.environments.is_empty() {
        check.error(
            root,
            "environments",
            "no environments; expected at least one `outside` and one `inside` the monitored cloud",
        );
    }
    for placement in [raw::Placement::Outside, raw::Placement::Inside] {
        let count = root.value.environments.values().filter(|e| e.location == placement).count();
        if count == 0 && !root.value.environments.is_empty() {
            let name = if placement == raw::Placement::Outside { "outside" } else { "inside" };
            check.error(root, "environments", format!("no environment with `location: {name}`; the platform needs at least one outside and one inside the monitored cloud, so that an outage never takes the monitoring down with it"));
        }
    }
    for name in repo.inventories.keys() {
        if !root.value.environments.contains_key(name) {
            check.problems.push(Diagnostic::new(
                Location::file(format!("inventory/{name}")),
                "",
                format!(
                    "directory for unknown environment `{name}`; {}",
                    names_list(root.value.environments.keys().map(String::as_str))
                ),
            ));
        }
    }

    // Host names are unique across environments: they are server names in one cloud project.
    let mut all_hosts: BTreeMap<String, Location> = BTreeMap::new();
    let mut environments = BTreeMap::new();
    for (env_name, env) in &root.value.environments {
        let env_path = format!("environments.{env_name}");
        if !is_dns_label(env_name) {
            check.error(root, &env_path, format!("invalid environment name `{env_name}`; expected lowercase letters, digits and `-`"));
        }
        let Some(inventory) = repo.inventories.get(env_name) else {
            check.error(root, &env_path, format!("environment `{env_name}` has no inventory; expected a directory inventory/{env_name}/"));
            continue;
        };
        check.current_env = Some(env_name.clone());
        let environment = check_environment(
            &mut check,
            &repo,
            env_name,
            env,
            inventory,
            defaults,
            &mut all_hosts,
        );
        environments.insert(env_name.clone(), environment);
        check.current_env = None;
    }

    // Datasources may read another environment's InfluxDB: checked once all are known.
    for (env_name, inventory) in &repo.inventories {
        if let Some(environment) = environments.get(env_name) {
            let datasources = check_datasources(
                &mut check,
                inventory,
                environment,
                &environments,
                &root.value.environments,
            );
            if let Some(environment) = environments.get_mut(env_name) {
                environment.grafana.datasources = datasources;
            }
        }
    }

    let scenarios = check_scenarios(&mut check, &repo);
    check_schedule(&mut check, &repo, &scenarios, &mut environments);
    let dashboards = check_dashboards(&mut check, &repo, &environments);

    let templates = repo
        .templates
        .iter()
        .map(|(name, t)| {
            (name.clone(), TemplateOverride { file: t.file.clone(), text: t.text.clone() })
        })
        .collect();

    if check.problems.is_empty() {
        check.secret_uses.sort();
        Ok(DesiredState {
            project: root.value.project.clone(),
            environments,
            scenarios,
            scenario_files: repo.scenario_files,
            dashboards,
            templates,
            secret_uses: check.secret_uses,
        })
    } else {
        Err(Diagnostics::normalized(check.problems))
    }
}

fn effective_policy(defaults: &raw::Policy, own: &raw::Policy) -> Policy {
    Policy {
        max_deletes: own.max_deletes.or(defaults.max_deletes).unwrap_or(DEFAULT_MAX_DELETES),
        prune: own.prune.or(defaults.prune).unwrap_or(true),
        drift: own.drift.or(defaults.drift).unwrap_or(raw::DriftMode::Repair),
        resize_servers: own.resize_servers.or(defaults.resize_servers).unwrap_or(false),
    }
}

#[allow(clippy::too_many_lines)]
fn check_environment(
    check: &mut Check,
    repo: &RawRepository,
    env_name: &str,
    env: &raw::Environment,
    inventory: &RawInventory,
    defaults: &raw::Policy,
    all_hosts: &mut BTreeMap<String, Location>,
) -> Environment {
    let root = &repo.root;
    let env_path = format!("environments.{env_name}");

    for (cloud_name, cloud) in &env.monitored_clouds {
        let path = format!("{env_path}.monitored_clouds.{cloud_name}");
        if !is_http_url(&cloud.auth_url) {
            check.error(
                root,
                &format!("{path}.auth_url"),
                format!("invalid URL `{}`; expected http:// or https://", cloud.auth_url),
            );
        }
        check.secret(root, &format!("{path}.username"), &cloud.username, false);
        check.secret(root, &format!("{path}.password"), &cloud.password, true);
    }
    if !is_http_url(&env.influxdb.url) {
        check.error(
            root,
            &format!("{env_path}.influxdb.url"),
            format!("invalid URL `{}`; expected http:// or https://", env.influxdb.url),
        );
    }
    if let Some(grafana) = &env.grafana {
        if !is_http_url(&grafana.url) {
            check.error(
                root,
                &format!("{env_path}.grafana.url"),
                format!("invalid URL `{}`; expected http:// or https://", grafana.url),
            );
        }
        check.secret(root, &format!("{env_path}.grafana.token"), &grafana.token, true);
    }

    if let Some(ssh) = &env.ssh {
        let ssh_path = format!("{env_path}.ssh");
        for (key, command) in
            [("package_check", &ssh.package_check), ("package_install", &ssh.package_install)]
        {
            if !command.contains("{package}") {
                check.error(
                    root,
                    &format!("{ssh_path}.{key}"),
                    "the command must contain `{package}`, replaced by the package name",
                );
            }
        }
        if !ssh.root.starts_with('/') {
            check.error(
                root,
                &format!("{ssh_path}.root"),
                format!("`{}` is not an absolute path", ssh.root),
            );
        }
    }

    // Keypairs.
    let keypairs_doc = &inventory.keypairs;
    let keypairs = &keypairs_doc.value.keypairs;
    check.unique(
        keypairs_doc,
        "keypair",
        keypairs.iter().enumerate().map(|(i, k)| (k.name.as_str(), format!("keypairs[{i}].name"))),
    );
    for (i, keypair) in keypairs.iter().enumerate() {
        if !is_public_key(&keypair.public_key) {
            check.error(keypairs_doc, &format!("keypairs[{i}].public_key"), "invalid public key; expected an OpenSSH public key line like `ssh-ed25519 AAAA... comment`");
        }
    }
    let keypair_names: BTreeSet<&str> = keypairs.iter().map(|k| k.name.as_str()).collect();

    // Networks.
    let networks_doc = &inventory.networks;
    let networks = &networks_doc.value.networks;
    check.unique(
        networks_doc,
        "network",
        networks.iter().enumerate().map(|(i, n)| (n.name.as_str(), format!("networks[{i}].name"))),
    );
    check.unique(
        networks_doc,
        "subnet",
        networks.iter().enumerate().flat_map(|(i, n)| {
            n.subnets
                .iter()
                .enumerate()
                .map(move |(j, s)| (s.name.as_str(), format!("networks[{i}].subnets[{j}].name")))
        }),
    );
    for (i, network) in networks.iter().enumerate() {
        let path = format!("networks[{i}]");
        if network.external && !network.subnets.is_empty() {
            check.error(networks_doc, &format!("{path}.subnets"), "an external network is only referenced; its subnets are not managed, so remove them");
        }
        if !network.external && network.subnets.is_empty() {
            check.error(networks_doc, &path, format!("network `{}` has no subnets; expected at least one (or `external: true` for an existing network)", network.name));
        }
        for (j, subnet) in network.subnets.iter().enumerate() {
            let path = format!("{path}.subnets[{j}]");
            match parse_cidr(&subnet.cidr) {
                None => check.error(
                    networks_doc,
                    &format!("{path}.cidr"),
                    format!(
                        "invalid CIDR `{}`; expected an IPv4 network like 192.168.10.0/24",
                        subnet.cidr
                    ),
                ),
                Some(cidr) => {
                    if let Some(gateway) = &subnet.gateway_ip {
                        match Ipv4Addr::from_str(gateway) {
                            Ok(ip) if cidr_contains(cidr, ip) => {}
                            _ => check.error(
                                networks_doc,
                                &format!("{path}.gateway_ip"),
                                format!("gateway `{gateway}` is not an address in {}", subnet.cidr),
                            ),
                        }
                    }
                }
            }
            for (k, dns) in subnet.dns_nameservers.iter().enumerate() {
                if Ipv4Addr::from_str(dns).is_err() {
                    check.error(
                        networks_doc,
                        &format!("{path}.dns_nameservers[{k}]"),
                        format!("invalid address `{dns}`; expected an IPv4 address"),
                    );
                }
            }
        }
    }
    let network_by_name: BTreeMap<&str, &raw::Network> =
        networks.iter().map(|n| (n.name.as_str(), n)).collect();

    // Security groups.
    let groups_doc = &inventory.security_groups;
    let raw_groups = &groups_doc.value.security_groups;
    check.unique(
        groups_doc,
        "security group",
        raw_groups
            .iter()
            .enumerate()
            .map(|(i, g)| (g.name.as_str(), format!("security_groups[{i}].name"))),
    );
    let group_names: BTreeSet<&str> = raw_groups.iter().map(|g| g.name.as_str()).collect();
    let mut security_groups = Vec::new();
    for (i, group) in raw_groups.iter().enumerate() {
        let mut rules = Vec::new();
        for (j, rule) in group.rules.iter().enumerate() {
            let path = format!("security_groups[{i}].rules[{j}]");
            if let Some(rule) = check_rule(check, groups_doc, &path, rule, &group_names) {
                rules.push(rule);
            }
        }
        security_groups.push(SecurityGroup {
            name: group.name.clone(),
            description: group.description.clone(),
            rules,
        });
    }

    // Hosts.
    let hosts_doc = &inventory.hosts;
    let hosts = &hosts_doc.value.hosts;
    for (i, host) in hosts.iter().enumerate() {
        let path = format!("hosts[{i}]");
        if !is_dns_label(&host.name) {
            check.error(hosts_doc, &format!("{path}.name"), format!("invalid host name `{}`; expected lowercase letters, digits and `-` (at most 63)", host.name));
        }
        let here = hosts_doc.at(&format!("{path}.name"));
        match all_hosts.get(&host.name) {
            Some(first) => check.error(
                hosts_doc,
                &format!("{path}.name"),
                format!("duplicate host `{}`; first declared at {first}", host.name),
            ),
            None => {
                all_hosts.insert(host.name.clone(), here);
            }
        }
        for (field, value) in [("flavor", &host.flavor), ("image", &host.image)] {
            if value.trim().is_empty() {
                check.error(
                    hosts_doc,
                    &format!("{path}.{field}"),
                    format!("empty {field}; expected a {field} name"),
                );
            }
        }
        if !keypair_names.contains(host.keypair.as_str()) {
            check.error(
                hosts_doc,
                &format!("{path}.keypair"),
                format!(
                    "unknown keypair `{}` (inventory/{env_name}/keypairs.yaml); {}",
                    host.keypair,
                    names_list(keypair_names.iter().copied())
                ),
            );
        }
        if host.networks.is_empty() {
            check.error(
                hosts_doc,
                &format!("{path}.networks"),
                "no networks; expected at least one network name",
            );
        }
        let managed_networks = networks.iter().filter(|n| !n.external).map(|n| n.name.as_str());
        for (j, network) in host.networks.iter().enumerate() {
            match network_by_name.get(network.as_str()) {
                None => check.error(hosts_doc, &format!("{path}.networks[{j}]"), format!("unknown network `{network}` (inventory/{env_name}/networks.yaml); {}", names_list(managed_networks.clone()))),
                Some(n) if n.external => check.error(hosts_doc, &format!("{path}.networks[{j}]"), format!("network `{network}` is external; a host's networks must be managed ones, external networks serve floating IPs")),
                Some(_) => {}
            }
        }
        if host.address.is_none()
            && env.ssh.is_some()
            && matches!(host.role, Role::Executor | Role::Influxdb)
        {
            check.error(
                hosts_doc,
                &path,
                format!(
                    "host `{}` needs `address`: apimon reaches it over SSH through the bastion",
                    host.name
                ),
            );
        }
        if let Some(address) = &host.address {
            match Ipv4Addr::from_str(address) {
                Err(_) => check.error(
                    hosts_doc,
                    &format!("{path}.address"),
                    format!("invalid address `{address}`; expected an IPv4 address"),
                ),
                Ok(ip) => {
                    let first = host.networks.first().and_then(|n| network_by_name.get(n.as_str()));
                    if let Some(network) = first {
                        let inside = network
                            .subnets
                            .iter()
                            .filter_map(|s| parse_cidr(&s.cidr))
                            .any(|c| cidr_contains(c, ip));
                        if !inside && !network.external {
                            let cidrs: Vec<&str> =
                                network.subnets.iter().map(|s| s.cidr.as_str()).collect();
                            check.error(hosts_doc, &format!("{path}.address"), format!("address {address} is in no subnet of network `{}`; expected an address in {}", network.name, cidrs.join(", ")));
                        }
                    }
                }
            }
        }
        for (j, group) in host.security_groups.iter().enumerate() {
            if !group_names.contains(group.as_str()) {
                check.error(hosts_doc, &format!("{path}.security_groups[{j}]"), format!("unknown security group `{group}` (inventory/{env_name}/security_groups.yaml); {}", names_list(group_names.iter().copied())));
            }
        }
        for key in host.metadata.keys() {
            if key.starts_with("apimon:") {
                check.error(hosts_doc, &format!("{path}.metadata.{key}"), "metadata keys starting with `apimon:` are reserved for apimon's ownership marks");
            }
        }
        check.unique(
            hosts_doc,
            "volume",
            host.volumes
                .iter()
                .enumerate()
                .map(|(j, v)| (v.name.as_str(), format!("{path}.volumes[{j}].name"))),
        );
        for (j, volume) in host.volumes.iter().enumerate() {
            if volume.size_gb == 0 {
                check.error(
                    hosts_doc,
                    &format!("{path}.volumes[{j}].size_gb"),
                    "size 0; expected at least 1 (GiB)",
                );
            }
            if !is_dns_label(&volume.name) {
                check.error(
                    hosts_doc,
                    &format!("{path}.volumes[{j}].name"),
                    format!(
                        "invalid volume name `{}`; expected lowercase letters, digits and `-`",
                        volume.name
                    ),
                );
            }
        }
        match &host.floating_ip {
            Some(fip) => match network_by_name.get(fip.network.as_str()) {
                Some(n) if n.external => {}
                Some(_) => check.error(hosts_doc, &format!("{path}.floating_ip.network"), format!("network `{}` is not external; floating IPs come from an `external: true` network", fip.network)),
                None => check.error(hosts_doc, &format!("{path}.floating_ip.network"), format!("unknown network `{}`; {}", fip.network, names_list(networks.iter().filter(|n| n.external).map(|n| n.name.as_str())))),
            },
            None if host.role == Role::Bastion => check.error(hosts_doc, &path, "the bastion needs `floating_ip` so the daemon and operators can reach the environment"),
            None => {}
        }
    }
    for (role, name, exactly_one) in [
        (Role::Bastion, "bastion", true),
        (Role::Influxdb, "influxdb", true),
        (Role::Executor, "executor", false),
        (Role::Grafana, "grafana", false),
    ] {
        let count = hosts.iter().filter(|h| h.role == role).count();
        if count > 1 || (exactly_one && count == 0) {
            let want = if exactly_one { "exactly one" } else { "at most one" };
            let path = hosts
                .iter()
                .enumerate()
                .filter(|(_, h)| h.role == role)
                .nth(1)
                .map_or_else(|| "hosts".to_owned(), |(i, _)| format!("hosts[{i}].role"));
            check.error(
                hosts_doc,
                &path,
                format!("environment `{env_name}` has {count} {name} host(s); expected {want}"),
            );
        }
    }

    // InfluxDB.
    let influx_doc = &inventory.influxdb;
    let influx = &influx_doc.value;
    check.unique(
        influx_doc,
        "database",
        influx
            .databases
            .iter()
            .enumerate()
            .map(|(i, d)| (d.name.as_str(), format!("databases[{i}].name"))),
    );
    for (i, database) in influx.databases.iter().enumerate() {
        let path = format!("databases[{i}]");
        if !is_influx_identifier(&database.name) {
            check.error(influx_doc, &format!("{path}.name"), format!("invalid database name `{}`; expected a letter or `_` followed by letters, digits, `_` or `-`", database.name));
        }
        check.unique(
            influx_doc,
            "retention policy",
            database
                .retention_policies
                .iter()
                .enumerate()
                .map(|(j, rp)| (rp.name.as_str(), format!("{path}.retention_policies[{j}].name"))),
        );
        for (j, rp) in database.retention_policies.iter().enumerate() {
            let rp_path = format!("{path}.retention_policies[{j}]");
            if !is_influx_identifier(&rp.name) {
                check.error(
                    influx_doc,
                    &format!("{rp_path}.name"),
                    format!("invalid retention policy name `{}`", rp.name),
                );
            }
            if !is_influx_duration(&rp.duration) {
                check.error(
                    influx_doc,
                    &format!("{rp_path}.duration"),
                    format!(
                        "invalid duration `{}`; expected an InfluxQL duration like 30d, 4w or INF",
                        rp.duration
                    ),
                );
            }
            if let Some(shard) = &rp.shard_duration {
                if !is_influx_duration(shard) || shard.eq_ignore_ascii_case("inf") {
                    check.error(influx_doc, &format!("{rp_path}.shard_duration"), format!("invalid shard duration `{shard}`; expected an InfluxQL duration like 1d"));
                }
            }
            if rp.replication == 0 {
                check.error(
                    influx_doc,
                    &format!("{rp_path}.replication"),
                    "replication 0; expected at least 1",
                );
            }
        }
        let defaults = database.retention_policies.iter().filter(|rp| rp.default).count();
        if !database.retention_policies.is_empty() && defaults != 1 {
            check.error(influx_doc, &format!("{path}.retention_policies"), format!("database `{}` has {defaults} default retention policies; expected exactly one with `default: true`", database.name));
        }
    }
    let database_names: BTreeSet<&str> = influx.databases.iter().map(|d| d.name.as_str()).collect();
    check.unique(
        influx_doc,
        "user",
        influx.users.iter().enumerate().map(|(i, u)| (u.name.as_str(), format!("users[{i}].name"))),
    );
    for (i, user) in influx.users.iter().enumerate() {
        let path = format!("users[{i}]");
        if !is_influx_identifier(&user.name) {
            check.error(
                influx_doc,
                &format!("{path}.name"),
                format!("invalid user name `{}`", user.name),
            );
        }
        check.secret(influx_doc, &format!("{path}.password"), &user.password, true);
        check.unique(
            influx_doc,
            "grant on database",
            user.grants
                .iter()
                .enumerate()
                .map(|(j, g)| (g.database.as_str(), format!("{path}.grants[{j}].database"))),
        );
        for (j, grant) in user.grants.iter().enumerate() {
            if !database_names.contains(grant.database.as_str()) {
                check.error(
                    influx_doc,
                    &format!("{path}.grants[{j}].database"),
                    format!(
                        "unknown database `{}`; {}",
                        grant.database,
                        names_list(database_names.iter().copied())
                    ),
                );
            }
        }
    }
    let endpoint_path = format!("{env_path}.influxdb");
    match influx.users.iter().find(|u| u.name == env.influxdb.admin_user) {
        Some(user) if user.admin => {}
        Some(_) => check.error(root, &format!("{endpoint_path}.admin_user"), format!("user `{}` is not an administrator in inventory/{env_name}/influxdb.yaml; expected `admin: true`", env.influxdb.admin_user)),
        None => check.error(root, &format!("{endpoint_path}.admin_user"), format!("unknown InfluxDB user `{}` (inventory/{env_name}/influxdb.yaml); {}", env.influxdb.admin_user, names_list(influx.users.iter().map(|u| u.name.as_str())))),
    }
    if !database_names.contains(env.influxdb.results_database.as_str()) {
        check.error(
            root,
            &format!("{endpoint_path}.results_database"),
            format!(
                "unknown database `{}` (inventory/{env_name}/influxdb.yaml); {}",
                env.influxdb.results_database,
                names_list(database_names.iter().copied())
            ),
        );
    }
    match influx.users.iter().find(|u| u.name == env.influxdb.results_user) {
        Some(user) => {
            let can_write = user.admin
                || user.grants.iter().any(|g| {
                    g.database == env.influxdb.results_database
                        && matches!(g.privilege, raw::Privilege::Write | raw::Privilege::All)
                });
            if !can_write {
                check.error(
                    root,
                    &format!("{endpoint_path}.results_user"),
                    format!(
                        "user `{}` cannot write to `{}`; expected a WRITE or ALL grant on it",
                        user.name, env.influxdb.results_database
                    ),
                );
            }
        }
        None => check.error(
            root,
            &format!("{endpoint_path}.results_user"),
            format!(
                "unknown InfluxDB user `{}` (inventory/{env_name}/influxdb.yaml); {}",
                env.influxdb.results_user,
                names_list(influx.users.iter().map(|u| u.name.as_str()))
            ),
        ),
    }

    // Grafana folders (datasources are checked once all environments are known).
    let grafana_doc = &inventory.grafana;
    let has_grafana_host = hosts.iter().any(|h| h.role == Role::Grafana);
    check.unique(
        grafana_doc,
        "folder",
        grafana_doc
            .value
            .folders
            .iter()
            .enumerate()
            .map(|(i, f)| (f.uid.as_str(), format!("folders[{i}].uid"))),
    );
    for (i, folder) in grafana_doc.value.folders.iter().enumerate() {
        if !is_grafana_uid(&folder.uid) {
            check.error(
                grafana_doc,
                &format!("folders[{i}].uid"),
                format!(
                    "invalid uid `{}`; expected at most 40 of a-z, A-Z, 0-9, `_`, `-`",
                    folder.uid
                ),
            );
        }
        if folder.title.trim().is_empty() {
            check.error(
                grafana_doc,
                &format!("folders[{i}].title"),
                "empty title; expected the folder's name in Grafana",
            );
        }
    }
    let declares_grafana =
        !grafana_doc.value.folders.is_empty() || !grafana_doc.value.datasources.is_empty();
    if declares_grafana && !has_grafana_host {
        check.error(grafana_doc, "", format!("environment `{env_name}` declares Grafana objects but has no host with `role: grafana`"));
    }
    if has_grafana_host && env.grafana.is_none() {
        check.error(root, &env_path, format!("environment `{env_name}` has a grafana host but no `grafana:` endpoint (url, token)"));
    }

    Environment {
        name: env_name.to_owned(),
        description: env.description.clone(),
        placement: env.location,
        cloud: env.cloud.clone(),
        monitored_clouds: env.monitored_clouds.clone(),
        influxdb_endpoint: env.influxdb.clone(),
        grafana_endpoint: env.grafana.clone(),
        ssh: env.ssh.clone(),
        policy: effective_policy(defaults, &env.policy),
        hosts: hosts.clone(),
        keypairs: keypairs.clone(),
        security_groups,
        networks: networks.clone(),
        influxdb: influx.clone(),
        grafana: Grafana { folders: grafana_doc.value.folders.clone(), datasources: Vec::new() },
        schedule: Vec::new(),
    }
}

fn check_rule(
    check: &mut Check,
    doc: &Document<raw::SecurityGroupsFile>,
    path: &str,
    rule: &raw::SecurityGroupRule,
    group_names: &BTreeSet<&str>,
) -> Option<Rule> {
    let mut ok = true;
    let ports = match &rule.ports {
        None => None,
        Some(spec) => {
            let parsed = match spec {
                raw::PortSpec::Single(port) => {
                    u16::try_from(*port).ok().filter(|p| *p > 0).map(|p| (p, p))
                }
                raw::PortSpec::Range(text) => text.split_once('-').and_then(|(low, high)| {
                    let low: u16 = low.trim().parse().ok()?;
                    let high: u16 = high.trim().parse().ok()?;
                    (low > 0 && low <= high).then_some((low, high))
                }),
            };
            if parsed.is_none() {
                check.error(
                    doc,
                    &format!("{path}.ports"),
                    "invalid ports; expected a port 1-65535 or a range like \"8000-8100\"",
                );
                ok = false;
            }
            if !matches!(rule.protocol, raw::Protocol::Tcp | raw::Protocol::Udp) {
                check.error(
                    doc,
                    &format!("{path}.ports"),
                    "ports apply to tcp and udp only; remove `ports` or change `protocol`",
                );
                ok = false;
            }
            parsed
        }
    };
    let remote = match (&rule.remote_ip_prefix, &rule.remote_group) {
        (Some(_), Some(_)) => {
            check.error(
                doc,
                path,
                "a rule has either `remote_ip_prefix` or `remote_group`, not both",
            );
            ok = false;
            Remote::Any
        }
        (Some(cidr), None) => {
            if parse_cidr(cidr).is_none() {
                check.error(
                    doc,
                    &format!("{path}.remote_ip_prefix"),
                    format!("invalid CIDR `{cidr}`; expected an IPv4 network like 0.0.0.0/0"),
                );
                ok = false;
            }
            Remote::Cidr(cidr.clone())
        }
        (None, Some(group)) => {
            if !group_names.contains(group.as_str()) {
                check.error(
                    doc,
                    &format!("{path}.remote_group"),
                    format!(
                        "unknown security group `{group}`; {}",
                        names_list(group_names.iter().copied())
                    ),
                );
                ok = false;
            }
            Remote::Group(group.clone())
        }
        (None, None) => Remote::Any,
    };
    ok.then_some(Rule { direction: rule.direction, protocol: rule.protocol, ports, remote })
}

fn check_datasources(
    check: &mut Check,
    inventory: &RawInventory,
    environment: &Environment,
    environments: &BTreeMap<String, Environment>,
    raw_environments: &BTreeMap<String, raw::Environment>,
) -> Vec<Datasource> {
    let doc = &inventory.grafana;
    let raw_list = &doc.value.datasources;
    check.unique(
        doc,
        "datasource",
        raw_list
            .iter()
            .enumerate()
            .map(|(i, d)| (d.name.as_str(), format!("datasources[{i}].name"))),
    );
    let uids: Vec<String> =
        raw_list.iter().map(|d| d.uid.clone().unwrap_or_else(|| d.name.clone())).collect();
    check.unique(
        doc,
        "datasource uid",
        raw_list.iter().enumerate().map(|(i, d)| {
            (
                uids[i].as_str(),
                format!("datasources[{i}].{}", if d.uid.is_some() { "uid" } else { "name" }),
            )
        }),
    );
    let defaults = raw_list.iter().filter(|d| d.default).count();
    if defaults > 1 {
        check.error(
            doc,
            "datasources",
            format!("{defaults} datasources have `default: true`; expected at most one"),
        );
    }
    let mut datasources = Vec::new();
    for (i, raw_ds) in raw_list.iter().enumerate() {
        let path = format!("datasources[{i}]");
        let uid = uids[i].clone();
        if !is_grafana_uid(&uid) {
            check.error(doc, &format!("{path}.uid"), format!("invalid uid `{uid}`; expected at most 40 of a-z, A-Z, 0-9, `_`, `-` (set `uid` when the name has other characters)"));
        }
        let source_env = raw_ds.environment.clone().unwrap_or_else(|| environment.name.clone());
        let Some(source) = environments.get(&source_env) else {
            if !raw_environments.contains_key(&source_env) {
                check.error(
                    doc,
                    &format!("{path}.environment"),
                    format!(
                        "unknown environment `{source_env}`; {}",
                        names_list(raw_environments.keys().map(String::as_str))
                    ),
                );
            }
            continue;
        };
        let influx_file = format!("inventory/{source_env}/influxdb.yaml");
        if !source.influxdb.databases.iter().any(|d| d.name == raw_ds.database) {
            check.error(
                doc,
                &format!("{path}.database"),
                format!(
                    "unknown database `{}` ({influx_file}); {}",
                    raw_ds.database,
                    names_list(source.influxdb.databases.iter().map(|d| d.name.as_str()))
                ),
            );
        }
        let Some(user) = source.influxdb.users.iter().find(|u| u.name == raw_ds.user) else {
            check.error(
                doc,
                &format!("{path}.user"),
                format!(
                    "unknown InfluxDB user `{}` ({influx_file}); {}",
                    raw_ds.user,
                    names_list(source.influxdb.users.iter().map(|u| u.name.as_str()))
                ),
            );
            continue;
        };
        let read_only =
            !user.admin && user.grants.iter().all(|g| g.privilege == raw::Privilege::Read);
        if !read_only {
            check.error(doc, &format!("{path}.user"), format!("user `{}` can write; a datasource must log in with a read-only user (only READ grants, not admin)", user.name));
        }
        if !user.admin && !user.grants.iter().any(|g| g.database == raw_ds.database) {
            check.error(
                doc,
                &format!("{path}.user"),
                format!(
                    "user `{}` has no READ grant on `{}` ({influx_file})",
                    user.name, raw_ds.database
                ),
            );
        }
        let raw::MaybeSecret::Secret(password_secret) = &user.password else { continue };
        // The datasource needs that password where its Grafana is applied,
        // which may be another environment than the user's.
        check.secret_uses.push(SecretUse {
            name: password_secret.clone(),
            env: Some(environment.name.clone()),
            location: doc.at(&format!("{path}.user")),
            path: format!("{path}.user"),
        });
        datasources.push(Datasource {
            name: raw_ds.name.clone(),
            uid,
            environment: source_env,
            url: source.influxdb_endpoint.url.clone(),
            database: raw_ds.database.clone(),
            user: raw_ds.user.clone(),
            password_secret: password_secret.clone(),
            default: raw_ds.default,
        });
    }
    datasources
}

fn check_scenarios(check: &mut Check, repo: &RawRepository) -> BTreeMap<String, Scenario> {
    let mut scenarios = BTreeMap::new();
    for (name, doc) in &repo.scenarios {
        let raw_scenario = &doc.value;
        if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
            check.error(doc, "", format!("invalid scenario name `{name}` (the file name); expected lowercase letters, digits and `_`"));
        }
        let timeout = match &raw_scenario.timeout {
            None => Some(DEFAULT_SCENARIO_TIMEOUT),
            Some(text) => {
                let parsed = parse_timeout(text);
                if parsed.is_none() {
                    check.error(doc, "timeout", format!("invalid timeout `{text}`; expected a number with s, m or h, like 30s or 5m"));
                }
                parsed
            }
        };
        let runner = match (&raw_scenario.ansible, &raw_scenario.http) {
            (Some(ansible), None) => {
                let playbook = ansible.playbook.trim_start_matches("./").to_owned();
                let escapes =
                    playbook.split('/').any(|part| part == "..") || playbook.starts_with('/');
                if escapes {
                    check.error(doc, "ansible.playbook", format!("playbook path `{}` leaves scenarios/; expected a path relative to scenarios/", ansible.playbook));
                } else if !repo.scenario_files.contains_key(&playbook) {
                    let known = repo
                        .scenario_files
                        .keys()
                        .filter(|k| k.ends_with(".yaml") || k.ends_with(".yml"))
                        .map(String::as_str);
                    check.error(
                        doc,
                        "ansible.playbook",
                        format!(
                            "playbook `scenarios/{playbook}` does not exist; {}",
                            names_list(known)
                        ),
                    );
                } else if let Some(problem) =
                    repo.scenario_files.get(&playbook).and_then(|bytes| playbook_problem(bytes))
                {
                    check.problems.push(Diagnostic::new(
                        Location::at(format!("scenarios/{playbook}"), problem.line, problem.column),
                        "",
                        problem.message,
                    ));
                }
                Some(Runner::Ansible {
                    playbook,
                    cloud: ansible.cloud.clone(),
                    extra_vars: ansible.extra_vars.clone(),
                })
            }
            (None, Some(http)) => {
                if !is_http_url(&http.url) {
                    check.error(
                        doc,
                        "http.url",
                        format!("invalid URL `{}`; expected http:// or https://", http.url),
                    );
                }
                const METHODS: [&str; 7] =
                    ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"];
                if !METHODS.contains(&http.method.as_str()) {
                    check.error(
                        doc,
                        "http.method",
                        format!(
                            "unknown method `{}`; expected one of: {}",
                            http.method,
                            METHODS.join(", ")
                        ),
                    );
                }
                if !(100..=599).contains(&http.expect_status) {
                    check.error(
                        doc,
                        "http.expect_status",
                        format!("invalid status {}; expected 100-599", http.expect_status),
                    );
                }
                Some(Runner::Http {
                    url: http.url.clone(),
                    method: http.method.clone(),
                    expect_status: http.expect_status,
                })
            }
            (Some(_), Some(_)) => {
                check.error(doc, "http", "a scenario has either `ansible:` or `http:`, not both");
                None
            }
            (None, None) => {
                check.error(doc, "", "a scenario needs a runner; expected `ansible:` or `http:`");
                None
            }
        };
        if let (Some(timeout), Some(runner)) = (timeout, runner) {
            scenarios.insert(
                name.clone(),
                Scenario {
                    name: name.clone(),
                    description: raw_scenario.description.clone(),
                    timeout,
                    runner,
                },
            );
        }
    }
    scenarios
}

/// A playbook must at least be YAML: catch that here, not at 3 a.m. on the executor.
fn playbook_problem(bytes: &[u8]) -> Option<super::load::ParseProblem> {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Some(super::load::ParseProblem {
            line: 1,
            column: 1,
            path: String::new(),
            message: "invalid UTF-8; expected a YAML playbook".to_owned(),
        });
    };
    match super::load::parse_yaml::<yaml_serde::Value>(text) {
        Ok(yaml_serde::Value::Sequence(_)) => None,
        Ok(_) => Some(super::load::ParseProblem {
            line: 1,
            column: 1,
            path: String::new(),
            message: "a playbook is a list of plays; expected a YAML sequence".to_owned(),
        }),
        Err(problem) => Some(problem),
    }
}

fn check_schedule(
    check: &mut Check,
    repo: &RawRepository,
    scenarios: &BTreeMap<String, Scenario>,
    environments: &mut BTreeMap<String, Environment>,
) {
    let doc = &repo.schedule;
    let mut seen: BTreeMap<(String, String), String> = BTreeMap::new();
    for (i, entry) in doc.value.schedule.iter().enumerate() {
        let path = format!("schedule[{i}]");
        let scenario = scenarios.get(&entry.scenario);
        if scenario.is_none() && !repo.scenarios.contains_key(&entry.scenario) {
            check.error(
                doc,
                &format!("{path}.scenario"),
                format!(
                    "unknown scenario `{}`; {}",
                    entry.scenario,
                    names_list(repo.scenarios.keys().map(String::as_str))
                ),
            );
        }
        let cron = match normalize_cron(&entry.cron) {
            Ok(cron) => Some(cron),
            Err(message) => {
                check.error(doc, &format!("{path}.cron"), message);
                None
            }
        };
        if entry.environments.is_empty() {
            check.error(
                doc,
                &format!("{path}.environments"),
                "no environments; expected at least one environment name",
            );
        }
        for (j, env_name) in entry.environments.iter().enumerate() {
            let env_path = format!("{path}.environments[{j}]");
            let Some(environment) = environments.get_mut(env_name) else {
                check.error(
                    doc,
                    &env_path,
                    format!(
                        "unknown environment `{env_name}`; {}",
                        names_list(repo.root.value.environments.keys().map(String::as_str))
                    ),
                );
                continue;
            };
            if environment.host_with_role(Role::Executor).is_none() {
                check.error(doc, &env_path, format!("environment `{env_name}` has no host with `role: executor` to run scenarios"));
            }
            if let Some(previous) =
                seen.insert((entry.scenario.clone(), env_name.clone()), env_path.clone())
            {
                check.error(
                    doc,
                    &env_path,
                    format!(
                        "scenario `{}` is already scheduled in `{env_name}` at {}",
                        entry.scenario,
                        doc.at(&previous)
                    ),
                );
            }
            if let Some(Scenario { runner: Runner::Ansible { cloud: Some(cloud), .. }, .. }) =
                scenario
            {
                if !environment.monitored_clouds.contains_key(cloud) {
                    check.error(doc, &env_path, format!("scenario `{}` uses cloud `{cloud}`, which environment `{env_name}` does not declare in monitored_clouds", entry.scenario));
                }
            }
            if let (Some(cron), Some(_)) = (&cron, scenario) {
                environment.schedule.push(ScheduledScenario {
                    scenario: entry.scenario.clone(),
                    cron: cron.clone(),
                });
            }
        }
    }
    for environment in environments.values_mut() {
        environment.schedule.sort_by(|a, b| a.scenario.cmp(&b.scenario));
    }
}

fn check_dashboards(
    check: &mut Check,
    repo: &RawRepository,
    environments: &BTreeMap<String, Environment>,
) -> BTreeMap<String, Dashboard> {
    let mut dashboards: BTreeMap<String, Dashboard> = BTreeMap::new();
    for raw_dashboard in &repo.dashboards {
        let at = |path: &str| -> Location {
            let (line, column) = raw_dashboard.map.position(path);
            Location::at(&raw_dashboard.file, line, column)
        };
        let mut problem = |path: &str, message: String| {
            check.problems.push(Diagnostic::new(at(path), path, message));
        };
        let uid = raw_dashboard.model.get("uid").and_then(|v| v.as_str());
        let title = raw_dashboard.model.get("title").and_then(|v| v.as_str());
        let Some(uid) = uid else {
            problem("uid", "missing or not a string; expected a stable dashboard uid (at most 40 of a-z, A-Z, 0-9, `_`, `-`)".to_owned());
            continue;
        };
        if !is_grafana_uid(uid) {
            problem(
                "uid",
                format!("invalid uid `{uid}`; expected at most 40 of a-z, A-Z, 0-9, `_`, `-`"),
            );
        }
        let Some(title) = title.filter(|t| !t.trim().is_empty()) else {
            problem("title", "missing or empty; expected the dashboard title".to_owned());
            continue;
        };
        for (env_name, environment) in environments {
            let has_grafana = environment.host_with_role(Role::Grafana).is_some();
            if has_grafana
                && !environment.grafana.folders.iter().any(|f| f.uid == raw_dashboard.folder)
            {
                problem("", format!("folder `{}` is not declared in inventory/{env_name}/grafana.yaml; expected a folder with that uid", raw_dashboard.folder));
            }
        }
        if let Some(first) = dashboards.get(uid) {
            problem(
                "uid",
                format!("duplicate dashboard uid `{uid}`; also used by {}", first.file.display()),
            );
            continue;
        }
        dashboards.insert(
            uid.to_owned(),
            Dashboard {
                uid: uid.to_owned(),
                title: title.to_owned(),
                folder: raw_dashboard.folder.clone(),
                file: raw_dashboard.file.clone(),
                model: raw_dashboard.model.clone(),
            },
        );
    }
    dashboards
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_field_cron_gets_a_seconds_field() {
        assert_eq!(normalize_cron("*/5 * * * *").as_deref(), Ok("0 */5 * * * *"));
        assert!(normalize_cron("61 * * * *").is_err());
        assert!(normalize_cron("* * *").expect_err("3 fields").contains("3 fields"));
    }

    #[test]
    fn crontab_weekdays_keep_their_meaning() {
        use chrono::{Datelike, Weekday};
        let first_day = |expression: &str| {
            let normalized = normalize_cron(expression).expect("valid");
            let schedule = cron::Schedule::from_str(&normalized).expect("parses");
            schedule.upcoming(chrono::Utc).next().expect("upcoming").weekday()
        };
        assert_eq!(first_day("0 9 * * 1"), Weekday::Mon);
        assert_eq!(first_day("0 9 * * 0"), Weekday::Sun);
        assert_eq!(first_day("0 9 * * 7"), Weekday::Sun);
        assert_eq!(first_day("0 9 * * 6"), Weekday::Sat);
        assert_eq!(first_day("0 9 * * Wed"), Weekday::Wed);
        assert_eq!(normalize_cron("0 9 * * 1-5").as_deref(), Ok("0 0 9 * * 2-6"));
        assert_eq!(normalize_cron("0 9 * * 5-7").as_deref(), Ok("0 0 9 * * 6-7,1"));
        assert!(normalize_cron("0 9 * * 8").expect_err("out of range").contains("0-7"));
    }

    #[test]
    fn influx_durations_follow_influxql() {
        for good in ["4w", "30d", "1d12h", "INF", "inf", "500ms"] {
            assert!(is_influx_duration(good), "{good}");
        }
        for bad in ["", "4", "w", "4y", "1d 2h"] {
            assert!(!is_influx_duration(bad), "{bad}");
        }
    }

    #[test]
    fn influx_durations_parse_to_nanoseconds() {
        assert_eq!(influx_duration_ns("4w"), Some(4 * 604_800_000_000_000));
        assert_eq!(influx_duration_ns("1d12h"), Some(36 * 3_600_000_000_000));
        assert_eq!(influx_duration_ns("INF"), Some(0));
    }

    #[test]
    fn timeouts_take_seconds_minutes_hours() {
        assert_eq!(parse_timeout("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_timeout("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_timeout("0s"), None);
        assert_eq!(parse_timeout("5 m"), None);
    }

    #[test]
    fn addresses_are_checked_against_cidrs() {
        let cidr = parse_cidr("192.168.10.0/24").expect("cidr");
        assert!(cidr_contains(cidr, Ipv4Addr::new(192, 168, 10, 7)));
        assert!(!cidr_contains(cidr, Ipv4Addr::new(192, 168, 11, 7)));
        assert!(cidr_contains(parse_cidr("0.0.0.0/0").expect("any"), Ipv4Addr::new(8, 8, 8, 8)));
        assert!(parse_cidr("192.168.10.0/33").is_none());
    }

    #[test]
    fn public_keys_need_a_known_type_and_a_base64_body() {
        assert!(is_public_key("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBx apimon@bastion"));
        assert!(!is_public_key("ssh-ed25519"));
        assert!(!is_public_key("ssh-dss AAAAB3NzaC1kc3MAAACBAP"));
    }
}
