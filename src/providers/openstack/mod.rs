//! OpenStack: keypairs, security groups and rules, networks and subnets,
//! servers, volumes and their attachments, floating IPs.
//!
//! This module owns the pure part: what the repository asks for, and how a
//! declared resource compares with an existing one (what changes in place,
//! what forces a replacement and why). [`client`] holds the session (through
//! `openstack_sdk`), [`observe`](observe::observe) the batched reads and
//! [`apply`](apply::apply) one change at a time.
//!
//! Ownership: servers and volumes carry metadata, Neutron resources tags,
//! `apimon:managed=true` and `apimon:env=<env>`; keypairs can carry neither,
//! so the state store records the ones apimon created. Only owned resources
//! are ever deleted or replaced.

pub mod apply;
pub mod client;
pub mod observe;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

use crate::model::{Environment, Remote, Rule};
use crate::plan::{
    Comparison, DesiredItem, DesiredSet, ItemChange, ObservedSet, Planned, ProviderKind,
    ResourceId, Spec,
};
use crate::providers::{
    failure_kind, Availability, Context, FailureKind, Model, Ownership, Provider, Scope,
};
use crate::render::Rendered;

use self::client::{Cloud, OpenstackError};
use super::changed;

/// Server metadata key marking resources apimon owns.
pub const MANAGED_KEY: &str = "apimon:managed";
/// Server metadata key naming the environment.
pub const ENV_KEY: &str = "apimon:env";
/// Server metadata key holding the image name the server was booted with:
/// what a plan compares, so a cloud that renames or retires an image (image
/// rotation) does not make every server look replaced.
pub const IMAGE_KEY: &str = "apimon:image";
/// Server metadata key listing the operator's keys apimon set (comma
/// separated): only those are compared and removed, so keys the platform
/// adds to servers never show up as a diff.
pub const METADATA_KEYS_KEY: &str = "apimon:metadata_keys";
/// Server metadata key holding the sha256 of the user data (Nova cannot
/// return user data, so a change is detected through this hash).
pub const USER_DATA_KEY: &str = "apimon:user_data_sha256";

/// A server as apimon manages it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServerSpec {
    /// Flavor name.
    pub flavor: String,
    /// Image name.
    pub image: String,
    /// Keypair name.
    pub keypair: String,
    /// Availability zone; `None` leaves the choice to Nova.
    pub availability_zone: Option<String>,
    /// Network names in order.
    pub networks: Vec<String>,
    /// Fixed address on the first network.
    pub address: Option<String>,
    /// Security group names.
    pub security_groups: BTreeSet<String>,
    /// Metadata set by the operator (without apimon's own keys).
    pub metadata: BTreeMap<String, String>,
    /// sha256 of the rendered cloud-init user data.
    pub user_data_sha256: String,
    /// The user data itself; only sent on create.
    #[serde(skip)]
    pub user_data: String,
    /// Observed only: the server is in ERROR, with Nova's fault message.
    pub error: Option<String>,
    /// Desired only: a new flavor resizes in place (policy `resize_servers`).
    #[serde(skip)]
    pub resize: bool,
    /// Observed only: a resize waits for its confirmation (VERIFY_RESIZE).
    #[serde(skip)]
    pub resize_pending: bool,
}

/// One OpenStack resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OpenstackSpec {
    /// Nova keypair.
    Keypair {
        /// OpenSSH public key line.
        public_key: String,
    },
    /// Neutron security group.
    SecurityGroup {
        /// Description.
        description: String,
    },
    /// One rule of a group; its id is its content, since Neutron rules are immutable.
    SecurityGroupRule {
        /// Group name.
        group: String,
        /// The rule.
        rule: Rule,
    },
    /// Neutron network.
    Network,
    /// Neutron subnet.
    Subnet {
        /// Network name.
        network: String,
        /// CIDR.
        cidr: String,
        /// Gateway; `None` for Neutron's default.
        gateway_ip: Option<String>,
        /// DNS servers.
        dns_nameservers: Vec<String>,
    },
    /// Nova server.
    Server(ServerSpec),
    /// Cinder volume.
    Volume {
        /// Size in GiB.
        size_gb: u32,
        /// Volume type.
        volume_type: Option<String>,
        /// Observed only: Cinder's error status (creating or extending failed).
        error: Option<String>,
    },
    /// A volume attached to a server.
    VolumeAttachment {
        /// Server name.
        server: String,
        /// Volume name.
        volume: String,
        /// Device hint.
        device: Option<String>,
    },
    /// The router that connects the environment's subnets to the external
    /// network its floating IPs come from (Neutron needs one, or it refuses
    /// to associate a floating IP).
    Router {
        /// External network of the gateway.
        external_network: String,
        /// Subnets with an interface on it.
        subnets: BTreeSet<String>,
    },
    /// A floating IP associated with a server.
    FloatingIp {
        /// External network.
        network: String,
        /// Server name.
        server: String,
    },
}

impl Spec for OpenstackSpec {
    fn compare(&self, observed: &Self) -> Comparison {
        use OpenstackSpec as S;
        match (self, observed) {
            (S::Keypair { public_key: want }, S::Keypair { public_key: have }) => {
                if want == have {
                    Comparison::Same
                } else {
                    Comparison::Replace(
                        "public key changed (keypairs cannot change in place)".to_owned(),
                    )
                }
            }
            (S::SecurityGroup { description: want }, S::SecurityGroup { description: have }) => {
                if want == have {
                    Comparison::Same
                } else {
                    Comparison::Update(vec!["description changed".to_owned()])
                }
            }
            (
                S::Subnet {
                    network: want_net,
                    cidr: want_cidr,
                    gateway_ip: want_gw,
                    dns_nameservers: want_dns,
                },
                S::Subnet {
                    network: have_net,
                    cidr: have_cidr,
                    gateway_ip: have_gw,
                    dns_nameservers: have_dns,
                },
            ) => {
                if want_net != have_net {
                    return Comparison::Replace(format!("network {have_net} → {want_net}"));
                }
                if want_cidr != have_cidr {
                    return Comparison::Replace(format!("cidr {have_cidr} → {want_cidr}"));
                }
                let mut reasons = Vec::new();
                if want_gw.is_some() && want_gw != have_gw {
                    reasons.push("gateway changed".to_owned());
                }
                if want_dns != have_dns {
                    reasons.push("dns nameservers changed".to_owned());
                }
                if reasons.is_empty() {
                    Comparison::Same
                } else {
                    Comparison::Update(reasons)
                }
            }
            (S::Server(want), S::Server(have)) => compare_servers(want, have),
            (
                S::Volume { size_gb: want_size, volume_type: want_type, .. },
                S::Volume { size_gb: have_size, volume_type: have_type, error },
            ) => {
                if let Some(status) = error {
                    Comparison::Replace(format!("volume is in {status}"))
                } else if want_type.is_some() && want_type != have_type {
                    Comparison::Replace(format!(
                        "volume type {} → {}",
                        have_type.as_deref().unwrap_or("default"),
                        want_type.as_deref().unwrap_or("default")
                    ))
                } else if want_size < have_size {
                    Comparison::Replace(format!(
                        "size {have_size} → {want_size} GiB (volumes cannot shrink)"
                    ))
                } else if want_size > have_size {
                    Comparison::Update(vec![format!("extend {have_size} → {want_size} GiB")])
                } else {
                    Comparison::Same
                }
            }
            (
                S::VolumeAttachment { server: want_server, volume: want_volume, .. },
                S::VolumeAttachment { server: have_server, volume: have_volume, .. },
            ) => {
                // The device is a hint hypervisors may ignore: never a reason to re-attach.
                if want_server == have_server && want_volume == have_volume {
                    Comparison::Same
                } else {
                    Comparison::Replace(format!(
                        "attached to {have_server}, wanted on {want_server}"
                    ))
                }
            }
            (
                S::Router { external_network: want_net, subnets: want_subnets },
                S::Router { external_network: have_net, subnets: have_subnets },
            ) => {
                if want_net != have_net {
                    Comparison::Replace(format!("external network {have_net} → {want_net}"))
                } else if want_subnets != have_subnets {
                    Comparison::Update(vec!["subnet interfaces changed".to_owned()])
                } else {
                    Comparison::Same
                }
            }
            (want, have) if want == have => Comparison::Same,
            (S::FloatingIp { network: want_net, .. }, S::FloatingIp { network: have_net, .. }) => {
                if want_net == have_net {
                    Comparison::Replace("associated with another server".to_owned())
                } else {
                    Comparison::Replace(format!("network {have_net} → {want_net}"))
                }
            }
            (S::Network, S::Network)
            | (S::SecurityGroupRule { .. }, S::SecurityGroupRule { .. }) => Comparison::Same,
            _ => Comparison::Replace("resource kind changed".to_owned()),
        }
    }
}

/// The groups a server is in: Nova puts a server declared with none in `default`.
pub(super) fn effective_groups(spec: &ServerSpec) -> BTreeSet<String> {
    if spec.security_groups.is_empty() {
        BTreeSet::from(["default".to_owned()])
    } else {
        spec.security_groups.clone()
    }
}

pub(super) fn compare_servers(want: &ServerSpec, have: &ServerSpec) -> Comparison {
    if let Some(fault) = &have.error {
        return Comparison::Replace(format!("server is in ERROR ({fault})"));
    }
    if have.resize_pending {
        return Comparison::Update(vec!["confirm the pending resize".to_owned()]);
    }
    if want.user_data_sha256 != have.user_data_sha256 {
        return Comparison::Replace("user data changed (template cloud-init.yaml.hbs)".to_owned());
    }
    let mut replace = Vec::new();
    changed("image", &have.image, &want.image, &mut replace);
    if !want.resize {
        changed("flavor", &have.flavor, &want.flavor, &mut replace);
    }
    changed("keypair", &have.keypair, &want.keypair, &mut replace);
    if want.availability_zone.is_some() && want.availability_zone != have.availability_zone {
        replace.push("availability zone changed".to_owned());
    }
    if want.networks != have.networks {
        replace.push("networks changed".to_owned());
    }
    if want.address.is_some() && want.address != have.address {
        replace.push("address changed".to_owned());
    }
    if !replace.is_empty() {
        return Comparison::Replace(replace.join("; "));
    }
    let mut update = Vec::new();
    if want.resize && want.flavor != have.flavor {
        update.push(format!("resize {} → {}", have.flavor, want.flavor));
    }
    if want.metadata != have.metadata {
        let keys: BTreeSet<&String> = want
            .metadata
            .keys()
            .chain(have.metadata.keys())
            .filter(|k| want.metadata.get(*k) != have.metadata.get(*k))
            .collect();
        update.push(format!(
            "metadata changed ({})",
            keys.into_iter().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    if effective_groups(want) != effective_groups(have) {
        update.push("security groups changed".to_owned());
    }
    if update.is_empty() {
        Comparison::Same
    } else {
        Comparison::Update(update)
    }
}

/// The provider's name in resource ids.
pub const KIND: ProviderKind = ProviderKind::named("openstack");

pub(crate) fn id(env: &str, kind: &str, name: impl Into<String>) -> ResourceId {
    ResourceId::new(env, KIND, kind, name)
}

/// Id of the server for `host`, which other providers depend on.
pub fn server_id(env: &str, host: &str) -> ResourceId {
    id(env, "server", host)
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

/// The environment apimon's marks name, when they say apimon manages it.
fn marked_env<'a>(managed: Option<&str>, env: Option<&'a str>) -> Option<&'a str> {
    (managed == Some("true")).then_some(env).flatten()
}

fn tag_value<'a>(tags: &'a [String], key: &str) -> Option<&'a str> {
    tags.iter().find_map(|t| t.strip_prefix(key).and_then(|rest| rest.strip_prefix('=')))
}

/// The environment whose apimon Neutron tags `tags` carries, if any.
pub(crate) fn tags_env(tags: &[String]) -> Option<&str> {
    marked_env(tag_value(tags, MANAGED_KEY), tag_value(tags, ENV_KEY))
}

/// The environment whose apimon marks Nova or Cinder `metadata` carries, if any.
pub(crate) fn metadata_env(metadata: &BTreeMap<String, String>) -> Option<&str> {
    marked_env(
        metadata.get(MANAGED_KEY).map(String::as_str),
        metadata.get(ENV_KEY).map(String::as_str),
    )
}

/// Whether Neutron tags mark a resource as apimon's in `env`.
pub(crate) fn is_owned_tags(tags: &[String], env: &str) -> bool {
    tags_env(tags) == Some(env)
}

/// Whether Nova or Cinder metadata marks a resource as apimon's in `env`.
pub(crate) fn is_owned_metadata(metadata: &BTreeMap<String, String>, env: &str) -> bool {
    metadata_env(metadata) == Some(env)
}

/// The Neutron tags apimon puts on what it creates in `env`.
pub(crate) fn ownership_tags(env: &str) -> Vec<String> {
    vec![format!("{MANAGED_KEY}=true"), format!("{ENV_KEY}={env}")]
}

/// The metadata apimon puts on the servers and volumes it creates in `env`.
pub(crate) fn ownership_metadata(env: &str) -> [(String, String); 2] {
    [(MANAGED_KEY.to_owned(), "true".to_owned()), (ENV_KEY.to_owned(), env.to_owned())]
}

/// Names → ids learned while observing and applying, so apply needs no
/// lookups for what observe already saw.
#[derive(Debug, Default)]
pub(crate) struct Index {
    pub security_groups: BTreeMap<String, String>,
    /// Rule name (see [`rule_name`]) → rule id.
    pub rules: BTreeMap<String, String>,
    pub networks: BTreeMap<String, String>,
    pub external_networks: BTreeMap<String, String>,
    pub subnets: BTreeMap<String, String>,
    pub servers: BTreeMap<String, String>,
    pub volumes: BTreeMap<String, String>,
    pub routers: BTreeMap<String, String>,
    /// (router id, subnet name) of each router interface.
    pub router_interfaces: BTreeSet<(String, String)>,
    /// Host name → floating IP id.
    pub floating_ips: BTreeMap<String, String>,
    /// Server name → names of the volumes attached to it.
    pub attached: BTreeMap<String, Vec<String>>,
    pub flavors: BTreeMap<String, String>,
    pub images: BTreeMap<String, String>,
}

/// How long apply waits for servers and volumes to settle.
#[derive(Debug, Clone, Copy)]
pub struct WaitOptions {
    /// A server reaching ACTIVE (or being gone after a delete).
    pub server_timeout: Duration,
    /// A volume reaching `available` or `in-use`.
    pub volume_timeout: Duration,
    /// Between two looks.
    pub poll_interval: Duration,
}

impl Default for WaitOptions {
    fn default() -> Self {
        Self {
            server_timeout: Duration::from_secs(600),
            volume_timeout: Duration::from_secs(300),
            poll_interval: Duration::from_secs(1),
        }
    }
}

/// The OpenStack provider of one environment.
#[derive(Debug)]
pub struct OpenstackProvider {
    env: String,
    cloud: Cloud,
    /// Ids of the resources the repository declares in this environment:
    /// existing resources of these names are observed even when not owned.
    wanted: BTreeSet<ResourceId>,
    /// The declared servers by name: the flavor and image of those a plan
    /// would create, replace or resize are checked against the cloud.
    servers: BTreeMap<String, ServerSpec>,
    index: Mutex<Index>,
    wait: WaitOptions,
}

impl OpenstackProvider {
    /// The provider for environment `env` managed with clouds.yaml entry
    /// `cloud` (in `clouds_file`, else the standard places); `Ok(None)`
    /// when no clouds.yaml has it.
    ///
    /// # Errors
    /// clouds.yaml exists but cannot be read.
    pub fn open(
        env: &str,
        cloud: &str,
        desired: &DesiredSet<OpenstackSpec>,
        clouds_file: Option<&Path>,
    ) -> Result<Option<Self>, OpenstackError> {
        let Some(config) = client::cloud_config(cloud, clouds_file)? else {
            return Ok(None);
        };
        let wanted = desired.keys().filter(|id| id.env == env).cloned().collect();
        let servers = desired
            .iter()
            .filter(|(id, _)| id.env == env)
            .filter_map(|(id, item)| match &item.spec {
                OpenstackSpec::Server(spec) => Some((id.name.clone(), spec.clone())),
                _ => None,
            })
            .collect();
        Ok(Some(Self {
            env: env.to_owned(),
            cloud: Cloud::new(cloud, config),
            wanted,
            servers,
            index: Mutex::new(Index::default()),
            wait: WaitOptions::default(),
        }))
    }

    /// Runs `f` on the index (a poisoned lock is recovered: the index is a cache).
    fn with_index<T>(&self, f: impl FnOnce(&mut Index) -> T) -> T {
        let mut guard = self.index.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut guard)
    }
}

impl Provider for OpenstackProvider {
    const KIND: ProviderKind = KIND;
    const OWNERSHIP: Ownership = Ownership::Marks;
    type Spec = OpenstackSpec;
    type Error = OpenstackError;

    fn desired(model: &Model<'_>, env: &Environment) -> DesiredSet<OpenstackSpec> {
        desired(env, model.rendered)
    }

    fn connect(
        context: &Context<'_>,
        env: &Environment,
        desired: &DesiredSet<OpenstackSpec>,
    ) -> Result<Availability<Self>, OpenstackError> {
        let clouds_file = context.machine.clouds_file.as_deref();
        Ok(match Self::open(&env.name, &env.cloud, desired, clouds_file)? {
            Some(provider) => Availability::Available(provider),
            None => Availability::Unavailable(format!(
                "cloud `{}` is in no clouds.yaml: pass --clouds-file or set OS_CLIENT_CONFIG_FILE",
                env.cloud
            )),
        })
    }

    /// API requests sent so far (after authentication).
    fn requests(&self) -> usize {
        self.cloud.requests()
    }

    async fn observe(&self, scope: &Scope) -> Result<ObservedSet<OpenstackSpec>, OpenstackError> {
        observe::observe(self, scope).await
    }

    async fn apply(
        &self,
        change: &Planned<ItemChange<OpenstackSpec>>,
    ) -> Result<(), OpenstackError> {
        apply::apply(self, change).await
    }

    fn classify(error: &OpenstackError) -> FailureKind {
        failure_kind(error.is_transient())
    }
}

/// What the environment asks of OpenStack.
pub fn desired(env: &Environment, rendered: &Rendered) -> DesiredSet<OpenstackSpec> {
    let name = env.name.as_str();
    let mut set = DesiredSet::new();
    let item = |spec, depends_on| DesiredItem { spec, depends_on };
    for keypair in &env.keypairs {
        set.insert(
            id(name, "keypair", &keypair.name),
            item(
                OpenstackSpec::Keypair { public_key: keypair.public_key.line().to_owned() },
                vec![],
            ),
        );
    }
    for group in &env.security_groups {
        let group_id = id(name, "security_group", &group.name);
        set.insert(
            group_id.clone(),
            item(OpenstackSpec::SecurityGroup { description: group.description.clone() }, vec![]),
        );
        for rule in &group.rules {
            let mut depends_on = vec![group_id.clone()];
            if let Remote::Group(remote) = &rule.remote {
                depends_on.push(id(name, "security_group", remote));
            }
            set.insert(
                id(name, "security_group_rule", rule_name(&group.name, rule)),
                item(
                    OpenstackSpec::SecurityGroupRule {
                        group: group.name.clone(),
                        rule: rule.clone(),
                    },
                    depends_on,
                ),
            );
        }
    }
    for network in env.networks.iter().filter(|n| !n.external) {
        let network_id = id(name, "network", &network.name);
        set.insert(network_id.clone(), item(OpenstackSpec::Network, vec![]));
        for subnet in &network.subnets {
            let spec = OpenstackSpec::Subnet {
                network: network.name.clone(),
                cidr: subnet.cidr.to_string(),
                gateway_ip: subnet.gateway_ip.map(|ip| ip.to_string()),
                dns_nameservers: subnet.dns_nameservers.iter().map(ToString::to_string).collect(),
            };
            set.insert(id(name, "subnet", &subnet.name), item(spec, vec![network_id.clone()]));
        }
    }
    for host in &env.hosts {
        let (user_data, user_data_sha256) = rendered
            .hosts
            .get(&host.name)
            .map(|r| (r.user_data.clone(), r.user_data_sha256.clone()))
            .unwrap_or_default();
        let mut depends_on = vec![id(name, "keypair", &host.keypair)];
        depends_on.extend(host.security_groups.iter().map(|g| id(name, "security_group", g)));
        for network in env.networks.iter().filter(|n| host.networks.contains(&n.name)) {
            depends_on.push(id(name, "network", &network.name));
            depends_on.extend(network.subnets.iter().map(|s| id(name, "subnet", &s.name)));
        }
        let spec = ServerSpec {
            flavor: host.flavor.clone(),
            image: host.image.clone(),
            keypair: host.keypair.clone(),
            availability_zone: host.availability_zone.clone(),
            networks: host.networks.clone(),
            address: host.address.map(|a| a.to_string()),
            security_groups: host.security_groups.iter().cloned().collect(),
            metadata: host.metadata.clone(),
            user_data_sha256,
            user_data,
            error: None,
            resize: env.policy.resize_servers,
            resize_pending: false,
        };
        let server = server_id(name, &host.name);
        set.insert(server.clone(), item(OpenstackSpec::Server(spec), depends_on));
        for volume in &host.volumes {
            let volume_name = format!("{}-{}", host.name, volume.name);
            let volume_id = id(name, "volume", &volume_name);
            set.insert(
                volume_id.clone(),
                item(
                    OpenstackSpec::Volume {
                        size_gb: volume.size_gb,
                        volume_type: volume.volume_type.clone(),
                        error: None,
                    },
                    vec![],
                ),
            );
            let attachment = OpenstackSpec::VolumeAttachment {
                server: host.name.clone(),
                volume: volume_name.clone(),
                device: volume.device.clone(),
            };
            set.insert(
                id(name, "volume_attachment", &volume_name),
                item(attachment, vec![server.clone(), volume_id]),
            );
        }
        if let Some(network) = &host.floating_ip {
            let spec =
                OpenstackSpec::FloatingIp { network: network.clone(), server: host.name.clone() };
            let depends_on = vec![server.clone(), id(name, "router", router_name(name))];
            set.insert(id(name, "floating_ip", &host.name), item(spec, depends_on));
        }
    }
    // One router to the external network the floating IPs come from.
    if let Some(external) = env.hosts.iter().find_map(|h| h.floating_ip.as_ref()) {
        let subnets: BTreeSet<String> = env
            .networks
            .iter()
            .filter(|n| !n.external)
            .flat_map(|n| n.subnets.iter().map(|s| s.name.clone()))
            .collect();
        let depends_on = subnets.iter().map(|s| id(name, "subnet", s)).collect();
        let spec = OpenstackSpec::Router { external_network: external.clone(), subnets };
        set.insert(id(name, "router", router_name(name)), item(spec, depends_on));
    }
    set
}

/// The environment's router: `<env>-router`.
pub fn router_name(env: &str) -> String {
    format!("{env}-router")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> ServerSpec {
        ServerSpec {
            flavor: "s3.medium.2".into(),
            image: "Ubuntu 24.04".into(),
            keypair: "k".into(),
            availability_zone: None,
            networks: vec!["net".into()],
            address: Some("192.168.10.5".into()),
            security_groups: BTreeSet::from(["ssh".to_owned()]),
            metadata: BTreeMap::from([("team".to_owned(), "apimon".to_owned())]),
            user_data_sha256: "aaa".into(),
            user_data: String::new(),
            error: None,
            resize: false,
            resize_pending: false,
        }
    }

    #[test]
    fn server_rules_table() {
        let base = server();
        let cases: Vec<(&str, ServerSpec, Comparison)> = vec![
            ("same", base.clone(), Comparison::Same),
            (
                "metadata in place",
                ServerSpec {
                    metadata: BTreeMap::from([("team".into(), "ops".into())]),
                    ..base.clone()
                },
                Comparison::Update(vec!["metadata changed (team)".into()]),
            ),
            (
                "groups in place",
                ServerSpec { security_groups: BTreeSet::new(), ..base.clone() },
                Comparison::Update(vec!["security groups changed".into()]),
            ),
            (
                "no groups means Nova's default",
                ServerSpec { security_groups: BTreeSet::from(["default".into()]), ..base.clone() },
                Comparison::Update(vec!["security groups changed".into()]),
            ),
            (
                "user data replaces",
                ServerSpec { user_data_sha256: "bbb".into(), ..base.clone() },
                Comparison::Replace("user data changed (template cloud-init.yaml.hbs)".into()),
            ),
            (
                "image replaces",
                ServerSpec { image: "Debian 12".into(), ..base.clone() },
                Comparison::Replace("image Ubuntu 24.04 → Debian 12".into()),
            ),
            (
                "flavor replaces",
                ServerSpec { flavor: "s3.large.2".into(), ..base.clone() },
                Comparison::Replace("flavor s3.medium.2 → s3.large.2".into()),
            ),
            (
                "flavor resizes when allowed",
                ServerSpec { flavor: "s3.large.2".into(), resize: true, ..base.clone() },
                Comparison::Update(vec!["resize s3.medium.2 → s3.large.2".into()]),
            ),
        ];
        for (name, want, expected) in cases {
            assert_eq!(
                OpenstackSpec::Server(want).compare(&OpenstackSpec::Server(base.clone())),
                expected,
                "{name}"
            );
        }
    }

    #[test]
    fn a_server_in_error_is_replaced_whatever_else_matches() {
        let broken = ServerSpec { error: Some("No valid host was found.".into()), ..server() };
        assert_eq!(
            OpenstackSpec::Server(server()).compare(&OpenstackSpec::Server(broken)),
            Comparison::Replace("server is in ERROR (No valid host was found.)".into())
        );
    }

    #[test]
    fn a_pending_resize_is_confirmed_in_place() {
        let pending = ServerSpec { resize_pending: true, ..server() };
        assert_eq!(
            OpenstackSpec::Server(server()).compare(&OpenstackSpec::Server(pending)),
            Comparison::Update(vec!["confirm the pending resize".into()])
        );
    }

    #[test]
    fn volumes_grow_in_place_but_never_shrink_in_place() {
        let have = OpenstackSpec::Volume { size_gb: 50, volume_type: None, error: None };
        let grow = OpenstackSpec::Volume { size_gb: 80, volume_type: None, error: None };
        let shrink = OpenstackSpec::Volume { size_gb: 20, volume_type: None, error: None };
        assert!(matches!(grow.compare(&have), Comparison::Update(_)));
        assert!(matches!(shrink.compare(&have), Comparison::Replace(_)));
        let failed =
            OpenstackSpec::Volume { size_gb: 50, volume_type: None, error: Some("error".into()) };
        assert_eq!(
            OpenstackSpec::Volume { size_gb: 50, volume_type: None, error: None }.compare(&failed),
            Comparison::Replace("volume is in error".into())
        );
    }
}

#[cfg(test)]
mod ownership_tests {
    use super::*;

    #[test]
    fn ownership_needs_both_marks_and_the_right_environment() {
        let tags = ownership_tags("outside");
        assert!(is_owned_tags(&tags, "outside"));
        assert!(!is_owned_tags(&tags, "inside"));
        assert!(!is_owned_tags(&tags[..1], "outside"));
        let metadata: BTreeMap<String, String> =
            ownership_metadata("outside").into_iter().collect();
        assert!(is_owned_metadata(&metadata, "outside"));
        assert!(!is_owned_metadata(&metadata, "inside"));
        assert!(!is_owned_metadata(&BTreeMap::new(), "outside"));
    }

    #[test]
    fn routers_and_attachments_compare_on_what_matters() {
        let router = |net: &str, subnets: &[&str]| OpenstackSpec::Router {
            external_network: net.into(),
            subnets: subnets.iter().map(|s| (*s).to_owned()).collect(),
        };
        assert_eq!(router("ext", &["a"]).compare(&router("ext", &["a"])), Comparison::Same);
        assert!(matches!(
            router("ext", &["a", "b"]).compare(&router("ext", &["a"])),
            Comparison::Update(_)
        ));
        assert!(matches!(
            router("ext2", &["a"]).compare(&router("ext", &["a"])),
            Comparison::Replace(_)
        ));
        let attachment = |server: &str, device: Option<&str>| OpenstackSpec::VolumeAttachment {
            server: server.into(),
            volume: "v".into(),
            device: device.map(Into::into),
        };
        assert_eq!(
            attachment("s", Some("/dev/vdb")).compare(&attachment("s", Some("/dev/vdc"))),
            Comparison::Same,
            "the device is only a hint"
        );
        assert!(matches!(
            attachment("t", None).compare(&attachment("s", None)),
            Comparison::Replace(_)
        ));
    }
}
