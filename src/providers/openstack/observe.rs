//! Reading what exists: one list call per kind (keypairs, servers, images of
//! those servers, security groups with their rules, networks, subnets,
//! floating IPs, volumes with their attachments), never a GET per resource.
//!
//! What is observed: everything tagged (Neutron) or labelled in metadata
//! (Nova, Cinder) `apimon:managed=true` + `apimon:env=<env>` — owned — and
//! anything else whose name the repository declares — not owned, so it is
//! compared but never deleted. Keypairs carry neither, so the state store
//! says which ones apimon created.

use std::collections::{BTreeMap, BTreeSet};

use http::{HeaderName, HeaderValue};
use indexmap::IndexMap;
use openstack_sdk::api::block_storage::v3::volume::list_detailed as volume_list;
use openstack_sdk::api::compute::v2::flavor::list_detailed_20 as flavor_list;
use openstack_sdk::api::compute::v2::keypair::list_20 as keypair_list;
use openstack_sdk::api::compute::v2::server::list_detailed_21 as server_list;
use openstack_sdk::api::image::v2::image::list as image_list;
use openstack_sdk::api::network::v2::floatingip::list as floating_ip_list;
use openstack_sdk::api::network::v2::network::list as network_list;
use openstack_sdk::api::network::v2::port::list as port_list;
use openstack_sdk::api::network::v2::router::list as router_list;
use openstack_sdk::api::network::v2::security_group::list as security_group_list;
use openstack_sdk::api::network::v2::subnet::list as subnet_list;
use serde::Deserialize;

use super::client::{built, OpenstackError};
use super::{
    id, is_owned_metadata, is_owned_tags, metadata_env, rule_name, tags_env, Index,
    OpenstackProvider, OpenstackSpec, ServerSpec, IMAGE_KEY, METADATA_KEYS_KEY, USER_DATA_KEY,
};
use crate::model::{Direction, Protocol, Remote, Rule};
use crate::plan::{ObservedItem, ObservedSet, ResourceId};
use crate::providers::Scope;

/// `device_owner` of a router's interface ports: plain, distributed (DVR), HA.
const ROUTER_INTERFACE_OWNERS: [&str; 3] = [
    "network:router_interface",
    "network:router_interface_distributed",
    "network:ha_router_replicated_interface",
];

/// Microversion for server lists: 2.47 embeds the flavor's name.
pub(super) const COMPUTE_VERSION: &str = "compute 2.47";

pub(super) fn version_header() -> (HeaderName, HeaderValue) {
    (HeaderName::from_static("openstack-api-version"), HeaderValue::from_static(COMPUTE_VERSION))
}

#[derive(Debug, Deserialize)]
struct KeypairJson {
    name: String,
    #[serde(default)]
    public_key: String,
}

#[derive(Debug, Deserialize)]
pub(super) struct ServerJson {
    pub id: String,
    #[serde(default)]
    created: String,
    pub name: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(default)]
    key_name: Option<String>,
    #[serde(default)]
    flavor: FlavorJson,
    /// `{"id": ...}`, or `""` for servers booted from a volume.
    #[serde(default)]
    image: serde_json::Value,
    /// Network name → addresses, in the order of the server's interfaces.
    #[serde(default)]
    addresses: IndexMap<String, Vec<AddressJson>>,
    #[serde(default)]
    security_groups: Vec<NamedJson>,
    #[serde(rename = "OS-EXT-AZ:availability_zone", default)]
    availability_zone: Option<String>,
    #[serde(default)]
    pub fault: Option<FaultJson>,
}

impl ServerJson {
    /// Network names in the order of the server's interfaces.
    pub fn addresses_order(&self) -> Vec<String> {
        self.addresses.keys().cloned().collect()
    }
}

#[derive(Debug, Default, Deserialize)]
struct FlavorJson {
    #[serde(default)]
    original_name: Option<String>,
    #[serde(default)]
    id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct AddressJson {
    addr: String,
    #[serde(default)]
    version: Option<u8>,
    #[serde(rename = "OS-EXT-IPS:type", default)]
    kind: Option<String>,
}

#[derive(Debug, Deserialize)]
struct NamedJson {
    name: String,
}

#[derive(Debug, Deserialize)]
pub(super) struct FaultJson {
    #[serde(default)]
    pub message: String,
}

#[derive(Debug, Deserialize)]
struct ImageJson {
    id: String,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
struct SecurityGroupJson {
    id: String,
    #[serde(default)]
    created_at: String,
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

#[derive(Debug, Deserialize)]
struct NetworkJson {
    id: String,
    #[serde(default)]
    created_at: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    project_id: Option<String>,
    #[serde(rename = "router:external", default)]
    external: bool,
}

#[derive(Debug, Deserialize)]
struct SubnetJson {
    id: String,
    #[serde(default)]
    created_at: String,
    #[serde(default)]
    name: String,
    network_id: String,
    cidr: String,
    #[serde(default)]
    gateway_ip: Option<String>,
    #[serde(default)]
    dns_nameservers: Vec<String>,
    #[serde(default)]
    tags: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct FloatingIpJson {
    id: String,
    floating_network_id: String,
    #[serde(default)]
    floating_ip_address: String,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    port_details: Option<PortDetailsJson>,
}

#[derive(Debug, Deserialize)]
struct PortDetailsJson {
    #[serde(default)]
    device_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RouterJson {
    id: String,
    #[serde(default)]
    created_at: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    external_gateway_info: Option<GatewayJson>,
}

#[derive(Debug, Deserialize)]
struct GatewayJson {
    #[serde(default)]
    network_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct InterfacePortJson {
    #[serde(default)]
    device_id: String,
    #[serde(default)]
    device_owner: String,
    #[serde(default)]
    fixed_ips: Vec<FixedIpJson>,
}

#[derive(Debug, Deserialize)]
struct FixedIpJson {
    subnet_id: String,
}

#[derive(Debug, Deserialize)]
pub(super) struct VolumeJson {
    pub id: String,
    #[serde(default)]
    created_at: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    size: u32,
    #[serde(default)]
    volume_type: Option<String>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub attachments: Vec<AttachmentJson>,
}

#[derive(Debug, Deserialize)]
pub(super) struct AttachmentJson {
    pub server_id: String,
    #[serde(default)]
    device: Option<String>,
}

/// The name a resource is observed under. The oldest owned resource of a
/// name keeps it; a younger owned twin (left by a create that was retried
/// after its answer was lost, say) is observed as `<name>~<id>`, and so
/// pruned like any leftover instead of haunting the index.
#[derive(Default)]
struct Claims(BTreeSet<String>);

impl Claims {
    fn name(&mut self, name: &str, id: &str, owned: bool) -> String {
        if owned && !self.0.insert(name.to_owned()) {
            format!("{name}~{}", id.get(..8).unwrap_or(id))
        } else {
            name.to_owned()
        }
    }
}

/// A declared name taken by a resource apimon marked for another
/// environment (`marked`: the environment its marks name; environments
/// sharing a project): taking it over would make the two fight forever.
fn refuse_foreign(
    what: &str,
    name: &str,
    env: &str,
    marked: Option<&str>,
) -> Result<(), OpenstackError> {
    match marked.filter(|other| *other != env) {
        None => Ok(()),
        Some(other) => Err(OpenstackError::Failed {
            resource: format!("{what} {name}"),
            message: format!(
                "the name is taken by environment `{other}` (marked apimon:env={other}) in the same project; give it another name in one of the two environments"
            ),
        }),
    }
}

/// Oldest first, so the same resource keeps a name from one plan to the next.
fn oldest_first<T>(items: &mut [T], key: impl Fn(&T) -> (&str, &str)) {
    items.sort_by(|a, b| key(a).cmp(&key(b)));
}

/// Built output of one observation.
struct Observation<'a> {
    env: &'a str,
    wanted: &'a BTreeSet<ResourceId>,
    set: ObservedSet<OpenstackSpec>,
}

impl Observation<'_> {
    fn wants(&self, kind: &str, name: &str) -> bool {
        self.wanted.contains(&id(self.env, kind, name))
    }

    /// Records a resource; whether it was kept. Two resources of one name
    /// (Neutron and Nova allow it): the owned one counts, else the first.
    /// The index follows what is kept, so apply acts on what was planned.
    fn insert(
        &mut self,
        id: ResourceId,
        spec: OpenstackSpec,
        owned: bool,
        depends_on: Vec<ResourceId>,
    ) -> bool {
        if self.set.get(&id).is_some_and(|existing| existing.owned || !owned) {
            return false;
        }
        self.set.insert(id, ObservedItem { spec, owned, depends_on });
        true
    }
}

/// Reads the environment's resources, refreshing the provider's name → id index.
pub(super) async fn observe(
    provider: &OpenstackProvider,
    scope: &Scope,
) -> Result<ObservedSet<OpenstackSpec>, OpenstackError> {
    let cloud = &provider.cloud;
    let env = provider.env.as_str();
    let project = cloud.project_id().await?;

    // Independent list calls, all at once.
    let keypairs = async {
        let request = keypair_list::Request::builder().build().map_err(|e| built("keypairs", e))?;
        cloud.query::<Vec<KeypairJson>, _>("keypairs", "list", request).await
    };
    let servers = async {
        let (name, value) = version_header();
        let request = server_list::Request::builder()
            .header(name, value)
            .build()
            .map_err(|e| built("servers", e))?;
        cloud.list::<ServerJson, _>("servers", request).await
    };
    let groups = async {
        let request = security_group_list::Request::builder()
            .tenant_id(project.as_str())
            .build()
            .map_err(|e| built("security groups", e))?;
        cloud.list::<SecurityGroupJson, _>("security groups", request).await
    };
    let networks = async {
        let request = network_list::Request::builder().build().map_err(|e| built("networks", e))?;
        cloud.list::<NetworkJson, _>("networks", request).await
    };
    let subnets = async {
        let request = subnet_list::Request::builder()
            .tenant_id(project.as_str())
            .build()
            .map_err(|e| built("subnets", e))?;
        cloud.list::<SubnetJson, _>("subnets", request).await
    };
    let floating_ips = async {
        let request = floating_ip_list::Request::builder()
            .tenant_id(project.as_str())
            .build()
            .map_err(|e| built("floating IPs", e))?;
        cloud.list::<FloatingIpJson, _>("floating IPs", request).await
    };
    let volumes = async {
        let request = volume_list::Request::builder().build().map_err(|e| built("volumes", e))?;
        cloud.list::<VolumeJson, _>("volumes", request).await
    };
    let routers = async {
        let request = router_list::Request::builder()
            .tenant_id(project.as_str())
            .build()
            .map_err(|e| built("routers", e))?;
        cloud.list::<RouterJson, _>("routers", request).await
    };
    let interfaces = async {
        // Every port of the project: HA and distributed routers label their
        // interfaces differently, and Neutron's filter takes one value.
        let request = port_list::Request::builder()
            .tenant_id(project.as_str())
            .build()
            .map_err(|e| built("router interfaces", e))?;
        cloud.list::<InterfacePortJson, _>("router interfaces", request).await
    };
    let (
        keypairs,
        servers,
        mut groups,
        mut networks,
        mut subnets,
        floating_ips,
        mut volumes,
        mut routers,
        interfaces,
    ) = tokio::try_join!(
        keypairs,
        servers,
        groups,
        networks,
        subnets,
        floating_ips,
        volumes,
        routers,
        interfaces
    )?;

    oldest_first(&mut groups, |g| (&g.created_at, &g.id));
    oldest_first(&mut networks, |n| (&n.created_at, &n.id));
    oldest_first(&mut subnets, |n| (&n.created_at, &n.id));
    oldest_first(&mut routers, |r| (&r.created_at, &r.id));
    oldest_first(&mut volumes, |v| (&v.created_at, &v.id));

    // Image names of the servers in question, in one call.
    let mut relevant_servers: Vec<&ServerJson> = servers
        .iter()
        .filter(|s| s.status != "DELETED" && s.status != "SOFT_DELETED")
        .filter(|s| {
            is_owned_metadata(&s.metadata, env)
                || provider.wanted.contains(&id(env, "server", &s.name))
        })
        .collect();
    oldest_first(&mut relevant_servers, |s| (&s.created, &s.id));
    let image_ids: BTreeSet<&str> = relevant_servers
        .iter()
        .filter(|s| !s.metadata.contains_key(IMAGE_KEY))
        .filter_map(|s| s.image.get("id").and_then(|v| v.as_str()))
        .collect();
    let images: BTreeMap<String, String> = if image_ids.is_empty() {
        BTreeMap::new()
    } else {
        let filter = format!("in:{}", image_ids.into_iter().collect::<Vec<_>>().join(","));
        let request =
            image_list::Request::builder().id(filter).build().map_err(|e| built("images", e))?;
        cloud
            .list::<ImageJson, _>("images", request)
            .await?
            .into_iter()
            .map(|i| (i.id.clone(), i.name.unwrap_or(i.id)))
            .collect()
    };

    let mut index = Index::default();
    let mut seen = Observation { env, wanted: &provider.wanted, set: ObservedSet::new() };

    // Servers, volumes and Neutron resources carry their own ownership
    // marks, which a hand-made look-alike lacks; the state store speaks only
    // for keypairs, which can carry none.
    for keypair in keypairs {
        let keypair_id = id(env, "keypair", &keypair.name);
        let owned = scope.owned.contains(&keypair_id);
        if owned || seen.wants("keypair", &keypair.name) {
            let spec = OpenstackSpec::Keypair { public_key: keypair.public_key.trim().to_owned() };
            seen.insert(keypair_id, spec, owned, vec![]);
        }
    }

    // Networks: the project's own, and external/shared ones by name (for floating IPs).
    let mut network_names: BTreeMap<String, String> = BTreeMap::new();
    let mut claims = Claims::default();
    for network in &networks {
        let mine = network.project_id.as_deref() == Some(project.as_str());
        if !mine && !network.external {
            continue;
        }
        let owned = mine && is_owned_tags(&network.tags, env);
        let name = claims.name(&network.name, &network.id, owned);
        network_names.insert(network.id.clone(), name.clone());
        if mine && !owned && seen.wants("network", &name) {
            refuse_foreign("network", &name, env, tags_env(&network.tags))?;
        }
        if mine && (owned || seen.wants("network", &name)) {
            if seen.insert(id(env, "network", &name), OpenstackSpec::Network, owned, vec![]) {
                index.networks.insert(name, network.id.clone());
            }
        } else if network.external {
            index.external_networks.entry(network.name.clone()).or_insert(network.id.clone());
        }
    }
    let mut subnets_of: BTreeMap<String, Vec<ResourceId>> = BTreeMap::new();
    let mut subnet_names: BTreeMap<String, String> = BTreeMap::new();
    let mut claims = Claims::default();
    for subnet in subnets {
        let owned = is_owned_tags(&subnet.tags, env);
        let name = claims.name(&subnet.name, &subnet.id, owned);
        subnet_names.insert(subnet.id.clone(), name.clone());
        if !owned && !seen.wants("subnet", &name) {
            continue;
        }
        if !owned {
            refuse_foreign("subnet", &name, env, tags_env(&subnet.tags))?;
        }
        let Some(network) = network_names.get(&subnet.network_id) else { continue };
        let network_id = id(env, "network", network);
        subnets_of.entry(network.clone()).or_default().push(id(env, "subnet", &name));
        let spec = OpenstackSpec::Subnet {
            network: network.clone(),
            cidr: subnet.cidr,
            gateway_ip: subnet.gateway_ip,
            dns_nameservers: subnet.dns_nameservers,
        };
        if seen.insert(id(env, "subnet", &name), spec, owned, vec![network_id]) {
            index.subnets.insert(name, subnet.id);
        }
    }

    // Routers, with the subnets they have interfaces on.
    let mut claims = Claims::default();
    for router in routers {
        let owned = is_owned_tags(&router.tags, env);
        let name = claims.name(&router.name, &router.id, owned);
        if !owned && !seen.wants("router", &name) {
            continue;
        }
        if !owned {
            refuse_foreign("router", &name, env, tags_env(&router.tags))?;
        }
        let external_network = router
            .external_gateway_info
            .and_then(|g| g.network_id)
            .map(|id| network_names.get(&id).cloned().unwrap_or(id))
            .unwrap_or_default();
        let subnets: BTreeSet<String> = interfaces
            .iter()
            .filter(|port| {
                port.device_id == router.id
                    && ROUTER_INTERFACE_OWNERS.contains(&port.device_owner.as_str())
            })
            .flat_map(|port| port.fixed_ips.iter())
            .map(|ip| {
                subnet_names.get(&ip.subnet_id).cloned().unwrap_or_else(|| ip.subnet_id.clone())
            })
            .collect();
        index.router_interfaces.extend(subnets.iter().map(|s| (router.id.clone(), s.clone())));
        let depends_on = subnets.iter().map(|s| id(env, "subnet", s)).collect();
        let spec = OpenstackSpec::Router { external_network, subnets };
        if seen.insert(id(env, "router", &name), spec, owned, depends_on) {
            index.routers.insert(name, router.id);
        }
    }

    // Security groups, then their rules (a rule may name another group).
    let group_names: BTreeMap<&str, &str> =
        groups.iter().map(|g| (g.id.as_str(), g.name.as_str())).collect();
    let mut claims = Claims::default();
    for group in &groups {
        let owned = is_owned_tags(&group.tags, env);
        let name = claims.name(&group.name, &group.id, owned);
        if !owned && !seen.wants("security_group", &name) {
            continue;
        }
        if !owned {
            refuse_foreign("security group", &name, env, tags_env(&group.tags))?;
        }
        let group_id = id(env, "security_group", &name);
        let spec = OpenstackSpec::SecurityGroup { description: group.description.clone() };
        if seen.insert(group_id.clone(), spec, owned, vec![]) {
            index.security_groups.insert(name.clone(), group.id.clone());
        }
        if name != group.name {
            // A twin about to be pruned: its rules go with it.
            continue;
        }
        for raw in &group.security_group_rules {
            let Some(rule) = rule_of(raw, &group_names) else { continue };
            let name = rule_name(&group.name, &rule);
            let declared = seen.wants("security_group_rule", &name);
            // Neutron gives every new group "egress to anywhere" rules (IPv4
            // and IPv6); they are not apimon's unless the repository declares one.
            if !declared && is_default_egress(&rule) {
                continue;
            }
            let rule_id = id(env, "security_group_rule", &name);
            if seen.set.contains_key(&rule_id) {
                continue;
            }
            index.rules.insert(name, raw.id.clone());
            let mut depends_on = vec![group_id.clone()];
            if let Remote::Group(remote) = &rule.remote {
                depends_on.push(id(env, "security_group", remote));
            }
            let spec = OpenstackSpec::SecurityGroupRule { group: group.name.clone(), rule };
            seen.insert(rule_id, spec, owned, depends_on);
        }
    }

    // Servers.
    let mut server_names: BTreeMap<String, String> = BTreeMap::new();
    let mut claims = Claims::default();
    for server in relevant_servers {
        let owned = is_owned_metadata(&server.metadata, env);
        let name = claims.name(&server.name, &server.id, owned);
        if !owned {
            refuse_foreign("host", &name, env, metadata_env(&server.metadata))?;
        }
        let spec = server_spec(server, &images);
        let mut depends_on = Vec::new();
        if !spec.keypair.is_empty() {
            depends_on.push(id(env, "keypair", &spec.keypair));
        }
        depends_on.extend(spec.security_groups.iter().map(|g| id(env, "security_group", g)));
        for network in &spec.networks {
            depends_on.push(id(env, "network", network));
            depends_on.extend(subnets_of.get(network).into_iter().flatten().cloned());
        }
        if seen.insert(id(env, "server", &name), OpenstackSpec::Server(spec), owned, depends_on) {
            server_names.insert(server.id.clone(), name.clone());
            index.servers.insert(name, server.id.clone());
        }
    }

    // Volumes and their attachments.
    let mut claims = Claims::default();
    for volume in volumes {
        let Some(name) = volume.name.as_deref() else { continue };
        let owned = is_owned_metadata(&volume.metadata, env);
        let name = claims.name(name, &volume.id, owned);
        if !owned && !seen.wants("volume", &name) {
            continue;
        }
        if !owned {
            refuse_foreign("volume", &name, env, metadata_env(&volume.metadata))?;
        }
        let volume_id = id(env, "volume", &name);
        let error = volume.status.starts_with("error").then(|| volume.status.clone());
        let spec =
            OpenstackSpec::Volume { size_gb: volume.size, volume_type: volume.volume_type, error };
        if seen.insert(volume_id.clone(), spec, owned, vec![]) {
            index.volumes.insert(name.clone(), volume.id.clone());
        }
        for attachment in &volume.attachments {
            let Some(server) = server_names.get(&attachment.server_id) else { continue };
            index.attached.entry(server.clone()).or_default().push(name.clone());
            let spec = OpenstackSpec::VolumeAttachment {
                server: server.clone(),
                volume: name.clone(),
                device: attachment.device.clone(),
            };
            let depends_on = vec![id(env, "server", server), volume_id.clone()];
            seen.insert(id(env, "volume_attachment", &name), spec, owned, depends_on);
        }
    }

    // Floating IPs, by the server their port belongs to.
    for fip in floating_ips {
        let owned = is_owned_tags(&fip.tags, env);
        let server = fip
            .port_details
            .as_ref()
            .and_then(|p| p.device_id.as_ref())
            .and_then(|device| server_names.get(device));
        let (name, depends_on) = match server {
            Some(server) => (
                server.clone(),
                vec![id(env, "server", server), id(env, "router", super::router_name(env))],
            ),
            // An owned address no server uses any more: pruned like any leftover.
            None if owned => (format!("unassociated-{}", fip.floating_ip_address), vec![]),
            None => continue,
        };
        if !owned && !seen.wants("floating_ip", &name) {
            continue;
        }
        let network =
            network_names.get(&fip.floating_network_id).cloned().unwrap_or(fip.floating_network_id);
        let spec =
            OpenstackSpec::FloatingIp { network, server: server.cloned().unwrap_or_default() };
        if seen.insert(id(env, "floating_ip", &name), spec, owned, depends_on) {
            index.floating_ips.insert(name, fip.id);
        }
    }

    check_flavors_and_images(provider, &seen.set, &mut index).await?;
    provider.with_index(|current| *current = index);
    Ok(seen.set)
}

/// Fails the plan, before anything changes, when a server it would create,
/// replace or resize names a flavor or image the cloud does not have. Only
/// then does it cost requests (two): a no-op plan never looks.
async fn check_flavors_and_images(
    provider: &OpenstackProvider,
    observed: &ObservedSet<OpenstackSpec>,
    index: &mut Index,
) -> Result<(), OpenstackError> {
    let env = provider.env.as_str();
    let changing: Vec<(&String, &ServerSpec)> = provider
        .servers
        .iter()
        .filter(|(name, want)| match observed.get(&id(env, "server", name.as_str())) {
            Some(ObservedItem { spec: OpenstackSpec::Server(have), .. }) => {
                super::compare_servers(want, have) != crate::plan::Comparison::Same
            }
            _ => true,
        })
        .collect();
    if changing.is_empty() {
        return Ok(());
    }
    let request =
        flavor_list::Request::builder().build().map_err(|e| built("flavors and images", e))?;
    let flavors: Vec<NamedIdJson> = provider.cloud.list("flavors", request).await?;
    index.flavors.extend(flavors.into_iter().map(|f| (f.name, f.id)));
    let names: BTreeSet<&str> = changing.iter().map(|(_, s)| s.image.as_str()).collect();
    let filter = format!(
        "in:{}",
        names
            .iter()
            .map(|n| format!("\"{}\"", n.replace('"', "\\\"")))
            .collect::<Vec<_>>()
            .join(",")
    );
    // Newest first, as apply's own lookup asks: clouds re-upload images under one name.
    let request = image_list::Request::builder()
        .name(filter)
        .sort("created_at:desc")
        .build()
        .map_err(|e| built("flavors and images", e))?;
    let mut images: Vec<(String, String)> = provider
        .cloud
        .list::<ImageJson, _>("images", request)
        .await?
        .into_iter()
        .filter_map(|i| i.name.map(|name| (name, i.id)))
        .collect();
    // Several images of one name: the newest (listed first) must win the index.
    images.reverse();
    index.images.extend(images);
    for (name, spec) in changing {
        let resource = format!("host {name}");
        if !index.flavors.contains_key(&spec.flavor) {
            return Err(OpenstackError::Missing {
                resource,
                what: "flavor",
                name: spec.flavor.clone(),
            });
        }
        if !index.images.contains_key(&spec.image) {
            return Err(OpenstackError::Missing {
                resource,
                what: "image",
                name: spec.image.clone(),
            });
        }
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
struct NamedIdJson {
    id: String,
    #[serde(default)]
    name: String,
}

/// A server as apimon describes it.
fn server_spec(server: &ServerJson, images: &BTreeMap<String, String>) -> ServerSpec {
    let booted_from = server.metadata.get(IMAGE_KEY).cloned();
    let image =
        booted_from.unwrap_or_else(|| match server.image.get("id").and_then(|v| v.as_str()) {
            Some(image_id) => images
                .get(image_id)
                .cloned()
                .unwrap_or_else(|| format!("(image {image_id}, no longer listed)")),
            None => "(booted from volume)".to_owned(),
        });
    let flavor = server
        .flavor
        .original_name
        .clone()
        .or_else(|| server.flavor.id.clone())
        .unwrap_or_default();
    let networks: Vec<String> = server.addresses.keys().cloned().collect();
    let address = server.addresses.values().next().and_then(|addresses| {
        // The repository's `address` is IPv4; on a dual-stack network the
        // IPv6 address may come first.
        let fixed = || addresses.iter().filter(|a| a.kind.as_deref() != Some("floating"));
        fixed().find(|a| a.version == Some(4)).or_else(|| fixed().next()).map(|a| a.addr.clone())
    });
    // The keys apimon set, when it says which; else every key but its own.
    let managed_keys: Option<BTreeSet<&str>> = server
        .metadata
        .get(METADATA_KEYS_KEY)
        .map(|keys| keys.split(',').filter(|k| !k.is_empty()).collect());
    let metadata = server
        .metadata
        .iter()
        .filter(|(key, _)| !key.starts_with("apimon:"))
        .filter(|(key, _)| managed_keys.as_ref().is_none_or(|keys| keys.contains(key.as_str())))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let error = (server.status == "ERROR").then(|| {
        server
            .fault
            .as_ref()
            .map(|f| f.message.clone())
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| "no fault message".to_owned())
    });
    ServerSpec {
        flavor,
        image,
        keypair: server.key_name.clone().unwrap_or_default(),
        availability_zone: server.availability_zone.clone().filter(|z| !z.is_empty()),
        networks,
        address,
        security_groups: server.security_groups.iter().map(|g| g.name.clone()).collect(),
        metadata,
        user_data_sha256: server.metadata.get(USER_DATA_KEY).cloned().unwrap_or_default(),
        user_data: String::new(),
        error,
        resize: false,
        resize_pending: server.status == "VERIFY_RESIZE",
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
    fn another_environments_marks_are_recognised() {
        let tags = |env: &str| vec!["apimon:managed=true".to_owned(), format!("apimon:env={env}")];
        assert_eq!(tags_env(&tags("inside")), Some("inside"));
        assert!(refuse_foreign("network", "net", "outside", tags_env(&tags("inside"))).is_err());
        assert!(refuse_foreign("network", "net", "outside", tags_env(&tags("outside"))).is_ok());
        assert_eq!(tags_env(&["apimon:env=inside".to_owned()]), None);
        assert_eq!(tags_env(&[]), None);
        let metadata: BTreeMap<String, String> =
            super::super::ownership_metadata("inside").into_iter().collect();
        assert_eq!(metadata_env(&metadata), Some("inside"));
        let refused =
            refuse_foreign("network", "net", "outside", Some("inside")).expect_err("refused");
        assert!(refused
            .to_string()
            .starts_with("network net: the name is taken by environment `inside`"));
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
