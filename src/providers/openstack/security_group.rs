//! Neutron security groups and their rules. A rule is immutable in
//! Neutron, so its id in the plan is its content: a changed rule is a new
//! rule, and the old one is deleted. Neutron's default egress rules are
//! not apimon's unless the repository declares one.

use std::collections::BTreeMap;

use openstack_sdk::api::network::v2::security_group::{
    create as group_create, delete as group_delete, list as group_list, set as group_set,
    tag::replace as group_tags,
};
use openstack_sdk::api::network::v2::security_group_rule::{
    create as rule_create, delete as rule_delete,
};
use serde::Deserialize;

use super::client::{built, Cloud, OpenstackError};
use super::common::{known, Created, Named};
use super::kind::{Kind, Wanted};
use super::marks::{is_owned_tags, oldest_first, refuse_foreign, tags_claim, Claims};
use super::observe::Observer;
use super::{id, OpenstackProvider, OpenstackSpec};
use crate::model::{Direction, Environment, Protocol, Remote, Rule};
use crate::plan::Comparison;
use crate::providers::Scope;
use crate::render::Rendered;

/// A Neutron security group.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SecurityGroup {
    /// Description.
    pub description: String,
}

impl Kind for SecurityGroup {
    const LABEL: &'static str = "security group";
    type Listing = Vec<SecurityGroupJson>;

    fn desired(env: &Environment, _: &Rendered) -> Vec<Wanted<Self>> {
        let wanted = |g: &crate::model::SecurityGroup| {
            let spec = SecurityGroup { description: g.description.clone() };
            (id(&env.name, "security_group", &g.name), spec, vec![])
        };
        env.security_groups.iter().map(wanted).collect()
    }

    /// The project's security groups, their rules embedded, oldest first
    /// (so the same group keeps its name from one plan to the next).
    async fn list(cloud: &Cloud, project: &str) -> Result<Self::Listing, OpenstackError> {
        let mut groups =
            list_in_project!(cloud, project, group_list, SecurityGroupJson, "security groups")?;
        oldest_first(&mut groups, |g| (&g.created_at, &g.id));
        Ok(groups)
    }

    async fn observe(
        o: &mut Observer<'_>,
        groups: Self::Listing,
        _: &OpenstackProvider,
        _: &Scope,
    ) -> Result<(), OpenstackError> {
        observe(o, &groups)
    }

    fn compare(&self, have: &Self) -> Comparison {
        compare(&self.description, &have.description)
    }

    fn made_already(index: &super::Index, name: &str) -> bool {
        index.security_groups.contains_key(name)
    }

    async fn create(
        &self,
        p: &OpenstackProvider,
        r: &str,
        name: &str,
    ) -> Result<(), OpenstackError> {
        create(p, r, name, &self.description).await
    }

    async fn update(
        &self,
        _have: &Self,
        p: &OpenstackProvider,
        r: &str,
        name: &str,
    ) -> Result<(), OpenstackError> {
        update(p, r, name, &self.description).await
    }

    async fn delete(
        &self,
        p: &OpenstackProvider,
        r: &str,
        name: &str,
    ) -> Result<(), OpenstackError> {
        delete(p, r, name).await
    }

    async fn adopt(
        &self,
        p: &OpenstackProvider,
        r: &str,
        name: &str,
    ) -> Result<(), OpenstackError> {
        use openstack_sdk::api::network::v2::security_group::tag::set as group_tag;
        let id = known(p, r, |i| i.security_groups.get(name).cloned())?;
        add_tags!(p, r, group_tag, security_group_id, id)
    }
}

/// One rule of a group; its id is its content, since Neutron rules are
/// immutable (a changed rule is another rule).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SecurityGroupRule {
    /// Group name.
    pub group: String,
    /// The rule.
    pub rule: Rule,
}

impl Kind for SecurityGroupRule {
    const LABEL: &'static str = "security group rule";
    listed_by_parent!();

    fn desired(env: &Environment, _: &Rendered) -> Vec<Wanted<Self>> {
        let name = env.name.as_str();
        let mut wanted = Vec::new();
        for group in &env.security_groups {
            for rule in &group.rules {
                let mut depends_on = vec![id(name, "security_group", &group.name)];
                if let Remote::Group(remote) = &rule.remote {
                    depends_on.push(id(name, "security_group", remote));
                }
                let spec = SecurityGroupRule { group: group.name.clone(), rule: rule.clone() };
                wanted.push((
                    id(name, "security_group_rule", rule_name(&group.name, rule)),
                    spec,
                    depends_on,
                ));
            }
        }
        // The daemon's webhook port, opened to the forge's ranges.
        for (group, rule) in env.webhook_rules() {
            let id = id(name, "security_group_rule", rule_name(&group, &rule));
            if wanted.iter().any(|(have, ..)| *have == id) {
                continue; // declared in security_groups.yaml already
            }
            let depends_on = vec![super::id(name, "security_group", &group)];
            wanted.push((id, SecurityGroupRule { group, rule }, depends_on));
        }
        wanted
    }

    fn compare(&self, _have: &Self) -> Comparison {
        Comparison::Same
    }

    async fn create(
        &self,
        p: &OpenstackProvider,
        r: &str,
        _name: &str,
    ) -> Result<(), OpenstackError> {
        create_rule(p, r, &self.group, &self.rule).await
    }

    async fn delete(
        &self,
        p: &OpenstackProvider,
        r: &str,
        name: &str,
    ) -> Result<(), OpenstackError> {
        delete_rule(p, r, name).await
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct SecurityGroupJson {
    pub id: String,
    #[serde(default)]
    pub created_at: String,
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    security_group_rules: Vec<RuleJson>,
}

#[derive(Debug, Deserialize)]
struct RuleJson {
    id: String,
    direction: String,
    #[serde(default)]
    ethertype: Option<String>,
    #[serde(default)]
    protocol: Option<String>,
    #[serde(default)]
    port_range_min: Option<u16>,
    #[serde(default)]
    port_range_max: Option<u16>,
    #[serde(default)]
    remote_ip_prefix: Option<String>,
    #[serde(default)]
    remote_group_id: Option<String>,
}

/// Only the description changes in place.
pub(super) fn compare(want: &str, have: &str) -> Comparison {
    if want == have {
        Comparison::Same
    } else {
        Comparison::Update(vec!["description changed".to_owned()])
    }
}

/// A readable, unique name for a rule: its content.
pub fn rule_name(group: &str, rule: &Rule) -> String {
    let direction = match rule.direction {
        crate::model::Direction::Ingress => "in",
        crate::model::Direction::Egress => "out",
    };
    let protocol = serde_json::to_value(rule.protocol)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let ports = match rule.ports {
        None => "all".to_owned(),
        Some((low, high)) if low == high => low.to_string(),
        Some((low, high)) => format!("{low}-{high}"),
    };
    let remote = match &rule.remote {
        Remote::Any => "any".to_owned(),
        Remote::Cidr(cidr) => cidr.to_string(),
        Remote::Group(group) => format!("group:{group}"),
    };
    format!("{group}:{direction}:{protocol}:{ports}:{remote}")
}

/// Security groups, then their rules (a rule may name another group).
fn observe(o: &mut Observer<'_>, groups: &[SecurityGroupJson]) -> Result<(), OpenstackError> {
    let group_names: BTreeMap<&str, &str> =
        groups.iter().map(|g| (g.id.as_str(), g.name.as_str())).collect();
    let mut claims = Claims::default();
    for group in groups {
        let owned = is_owned_tags(&group.tags, o.env);
        let name = claims.name(&group.name, &group.id, owned);
        if !owned && !o.wants("security_group", &name) {
            continue;
        }
        if !owned {
            refuse_foreign("security group", &name, o.env, tags_claim(&group.tags))?;
        }
        let group_id = id(o.env, "security_group", &name);
        let spec =
            OpenstackSpec::SecurityGroup(SecurityGroup { description: group.description.clone() });
        if o.insert(group_id.clone(), spec, owned, vec![]) {
            o.index.security_groups.insert(name.clone(), group.id.clone());
        }
        if name != group.name {
            // A twin about to be pruned: its rules go with it.
            continue;
        }
        observe_rules(o, group, &group_names, owned);
    }
    Ok(())
}

fn observe_rules(
    o: &mut Observer<'_>,
    group: &SecurityGroupJson,
    group_names: &BTreeMap<&str, &str>,
    owned: bool,
) {
    let group_id = id(o.env, "security_group", &group.name);
    for raw in &group.security_group_rules {
        let Some(rule) = rule_of(raw, group_names) else { continue };
        let name = rule_name(&group.name, &rule);
        let declared = o.wants("security_group_rule", &name);
        // Neutron gives every new group "egress to anywhere" rules (IPv4
        // and IPv6); they are not apimon's unless the repository declares one.
        if !declared && is_default_egress(&rule) {
            continue;
        }
        let rule_id = id(o.env, "security_group_rule", &name);
        if o.set.contains_key(&rule_id) {
            continue;
        }
        o.index.rules.insert(name, raw.id.clone());
        let mut depends_on = vec![group_id.clone()];
        if let Remote::Group(remote) = &rule.remote {
            depends_on.push(id(o.env, "security_group", remote));
        }
        let spec =
            OpenstackSpec::SecurityGroupRule(SecurityGroupRule { group: group.name.clone(), rule });
        o.insert(rule_id, spec, owned, depends_on);
    }
}

/// A Neutron rule in the repository's terms; `None` for what the repository
/// cannot express (other protocols, address groups), which apimon leaves alone.
fn rule_of(raw: &RuleJson, group_names: &BTreeMap<&str, &str>) -> Option<Rule> {
    let direction = match raw.direction.as_str() {
        "ingress" => Direction::Ingress,
        "egress" => Direction::Egress,
        _ => return None,
    };
    let protocol = match raw.protocol.as_deref() {
        None | Some("any") => Protocol::Any,
        Some("tcp" | "6") => Protocol::Tcp,
        Some("udp" | "17") => Protocol::Udp,
        Some("icmp" | "1") => Protocol::Icmp,
        Some(_) => return None,
    };
    let ports = match (raw.port_range_min, raw.port_range_max) {
        (Some(low), Some(high)) if protocol != Protocol::Icmp => Some((low, high)),
        (Some(low), None) if protocol != Protocol::Icmp => Some((low, low)),
        (None, _) => None,
        _ => return None,
    };
    let remote = match (&raw.remote_group_id, &raw.remote_ip_prefix) {
        (Some(group), _) => Remote::Group(
            group_names
                .get(group.as_str())
                .map_or_else(|| format!("id:{group}"), |n| (*n).to_owned()),
        ),
        // A prefix that does not parse is not one the repository can declare.
        (None, Some(cidr)) => Remote::Cidr(cidr.parse::<ipnet::IpNet>().ok()?.trunc()),
        (None, None) => Remote::Any,
    };
    // IPv6 twins of "anywhere" rules come from Neutron's defaults.
    if raw.ethertype.as_deref() == Some("IPv6")
        && remote == Remote::Any
        && direction == Direction::Egress
    {
        return None;
    }
    Some(Rule { direction, protocol, ports, remote })
}

fn is_default_egress(rule: &Rule) -> bool {
    rule.direction == Direction::Egress
        && rule.protocol == Protocol::Any
        && rule.ports.is_none()
        && rule.remote == Remote::Any
}

pub(super) async fn create(
    p: &OpenstackProvider,
    r: &str,
    name: &str,
    description: &str,
) -> Result<(), OpenstackError> {
    let body = group_create::SecurityGroupBuilder::default()
        .name(name)
        .description(description)
        .build()
        .map_err(|e| built(r, e))?;
    let request =
        group_create::Request::builder().security_group(body).build().map_err(|e| built(r, e))?;
    let created: Created = p.cloud.query(r, "create", request).await?;
    tag_or_undo!(p, r, group_tags, security_group_id, group_delete, created.id.as_str())?;
    p.with_index(|i| i.security_groups.insert(name.to_owned(), created.id));
    Ok(())
}

pub(super) async fn update(
    p: &OpenstackProvider,
    r: &str,
    name: &str,
    description: &str,
) -> Result<(), OpenstackError> {
    let id = group_id(p, r, name).await?;
    let body = group_set::SecurityGroupBuilder::default()
        .description(description)
        .build()
        .map_err(|e| built(r, e))?;
    let request = group_set::Request::builder()
        .id(id.as_str())
        .security_group(body)
        .build()
        .map_err(|e| built(r, e))?;
    p.cloud.execute(r, "update", request).await
}

pub(super) async fn delete(
    p: &OpenstackProvider,
    r: &str,
    name: &str,
) -> Result<(), OpenstackError> {
    let id = group_id(p, r, name).await?;
    delete_by_id!(p, r, group_delete, id.as_str())?;
    p.with_index(|i| i.security_groups.remove(name));
    Ok(())
}

pub(super) async fn create_rule(
    p: &OpenstackProvider,
    r: &str,
    group: &str,
    rule: &Rule,
) -> Result<(), OpenstackError> {
    let group_id = group_id(p, r, group).await?;
    let mut body = rule_create::SecurityGroupRuleBuilder::default();
    body.security_group_id(group_id.as_str()).direction(match rule.direction {
        Direction::Ingress => rule_create::Direction::Ingress,
        Direction::Egress => rule_create::Direction::Egress,
    });
    match rule.protocol {
        Protocol::Tcp => {
            body.protocol("tcp");
        }
        Protocol::Udp => {
            body.protocol("udp");
        }
        Protocol::Icmp => {
            body.protocol("icmp");
        }
        Protocol::Any => {}
    }
    if let Some((low, high)) = rule.ports {
        body.port_range_min(Some(i32::from(low))).port_range_max(Some(i32::from(high)));
    }
    let mut ipv6 = false;
    let remote_group;
    let prefix;
    match &rule.remote {
        Remote::Any => {}
        Remote::Cidr(cidr) => {
            ipv6 = matches!(cidr, ipnet::IpNet::V6(_));
            prefix = cidr.to_string();
            body.remote_ip_prefix(prefix.as_str());
        }
        Remote::Group(name) => {
            remote_group = self::group_id(p, r, name).await?;
            body.remote_group_id(remote_group.as_str());
        }
    }
    body.ethertype(if ipv6 { rule_create::Ethertype::Ipv6 } else { rule_create::Ethertype::Ipv4 });
    let body = body.build().map_err(|e| built(r, e))?;
    let request = rule_create::Request::builder()
        .security_group_rule(body)
        .build()
        .map_err(|e| built(r, e))?;
    match p.cloud.query::<Created, _>(r, "create", request).await {
        Ok(created) => {
            p.with_index(|i| i.rules.insert(rule_name(group, rule), created.id));
            Ok(())
        }
        // Neutron refuses a duplicate rule: it is there already (a retry).
        Err(error) if error.is_conflict() => Ok(()),
        Err(error) => Err(error),
    }
}

pub(super) async fn delete_rule(
    p: &OpenstackProvider,
    r: &str,
    name: &str,
) -> Result<(), OpenstackError> {
    let id = known(p, r, |i| i.rules.get(name).cloned())?;
    delete_by_id!(p, r, rule_delete, id.as_str())
}

pub(super) async fn group_id(
    p: &OpenstackProvider,
    r: &str,
    name: &str,
) -> Result<String, OpenstackError> {
    if let Some(id) = p.with_index(|i| i.security_groups.get(name).cloned()) {
        return Ok(id);
    }
    let project = p.cloud.project_id().await?;
    let request = group_list::Request::builder()
        .name(name)
        .tenant_id(project.as_str())
        .build()
        .map_err(|e| built(r, e))?;
    let found: Vec<Named> = p.cloud.list(r, request).await?;
    let id = found.into_iter().next().map(|g| g.id).ok_or_else(|| OpenstackError::Missing {
        resource: r.to_owned(),
        what: "security group",
        name: name.to_owned(),
    })?;
    p.with_index(|i| i.security_groups.insert(name.to_owned(), id.clone()));
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(direction: &str, ethertype: &str, protocol: Option<&str>) -> RuleJson {
        RuleJson {
            id: "r".into(),
            direction: direction.into(),
            ethertype: Some(ethertype.into()),
            protocol: protocol.map(Into::into),
            port_range_min: None,
            port_range_max: None,
            remote_ip_prefix: None,
            remote_group_id: None,
        }
    }

    #[test]
    fn the_daemons_webhook_opens_its_port_to_the_forges_ranges_on_the_bastions_group() {
        let repo = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples-repo");
        let mut state = crate::model::load_repository(&repo).expect("the example loads");
        let env = state.environments.get_mut("outside").expect("outside");
        let daemon = env.daemon.as_mut().expect("a daemon");
        daemon.webhook = Some(crate::model::daemon::Webhook {
            listen: "0.0.0.0:9111".into(),
            allow_from: vec!["140.82.112.0/20".parse().expect("cidr")],
        });
        let bastion = env.daemon_host().expect("bastion");
        let group = bastion.security_groups[0].clone();
        let wanted = SecurityGroupRule::desired(env, &Rendered::default());
        let webhook: Vec<_> =
            wanted.iter().filter(|(_, spec, _)| spec.rule.ports == Some((9111, 9111))).collect();
        assert_eq!(webhook.len(), 1, "{wanted:?}");
        let (_, spec, depends_on) = webhook[0];
        assert_eq!(spec.group, group);
        assert_eq!(spec.rule.remote, Remote::Cidr("140.82.112.0/20".parse().expect("cidr")));
        assert_eq!(depends_on, &vec![super::super::id("outside", "security_group", &group)]);
        // Behind the operator's proxy (loopback): no rule.
        let daemon = env.daemon.as_mut().expect("a daemon");
        daemon.webhook.as_mut().expect("webhook").listen = "127.0.0.1:9111".into();
        let wanted = SecurityGroupRule::desired(env, &Rendered::default());
        assert!(wanted.iter().all(|(_, spec, _)| spec.rule.ports != Some((9111, 9111))));
    }

    #[test]
    fn neutron_rules_read_back_as_the_repository_writes_them() {
        let groups = BTreeMap::from([("g1", "outside-ssh")]);
        let mut ssh = raw("ingress", "IPv4", Some("tcp"));
        ssh.port_range_min = Some(22);
        ssh.port_range_max = Some(22);
        ssh.remote_ip_prefix = Some("0.0.0.0/0".into());
        assert_eq!(
            rule_of(&ssh, &groups),
            Some(Rule {
                direction: Direction::Ingress,
                protocol: Protocol::Tcp,
                ports: Some((22, 22)),
                remote: Remote::Cidr("0.0.0.0/0".parse().expect("cidr")),
            })
        );
        let mut from_group = raw("ingress", "IPv4", Some("icmp"));
        from_group.remote_group_id = Some("g1".into());
        assert_eq!(
            rule_of(&from_group, &groups).map(|r| r.remote),
            Some(Remote::Group("outside-ssh".into()))
        );
        // Numeric protocols are the same protocols.
        assert_eq!(
            rule_of(&raw("egress", "IPv4", Some("17")), &groups).map(|r| r.protocol),
            Some(Protocol::Udp)
        );
        // What the repository cannot express is left alone.
        assert_eq!(rule_of(&raw("ingress", "IPv4", Some("gre")), &groups), None);
    }

    #[test]
    fn default_egress_rules_are_recognised_in_both_address_families() {
        let groups = BTreeMap::new();
        let v4 = rule_of(&raw("egress", "IPv4", None), &groups).expect("IPv4 rule");
        assert!(is_default_egress(&v4));
        assert_eq!(rule_of(&raw("egress", "IPv6", None), &groups), None);
        let ingress = rule_of(&raw("ingress", "IPv4", None), &groups).expect("rule");
        assert!(!is_default_egress(&ingress));
    }
}
