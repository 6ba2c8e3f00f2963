//! Neutron networks, subnets and the environment's router (its gateway on
//! the external network the floating IPs come from, an interface on each
//! subnet). External networks are only referenced, by name.

use std::collections::BTreeSet;

use openstack_sdk::api::network::v2::network::{
    create as network_create, delete as network_delete, list as network_list,
    tag::replace as network_tags,
};
use openstack_sdk::api::network::v2::port::list as port_list;
use openstack_sdk::api::network::v2::router::{
    add_router_interface, create as router_create, delete as router_delete, list as router_list,
    remove_router_interface, tag::replace as router_tags,
};
use openstack_sdk::api::network::v2::subnet::{
    create as subnet_create, delete as subnet_delete, list as subnet_list, set as subnet_set,
    tag::replace as subnet_tags,
};
use serde::Deserialize;

use super::client::{built, Cloud, OpenstackError};
use super::common::{gone_is_fine, known, Created, Named};
use super::kind::Kind;
use super::marks::{is_owned_tags, refuse_foreign, tags_claim, Claims};
use super::observe::Observer;
use super::{id, OpenstackProvider, OpenstackSpec};
use crate::plan::Comparison;

/// A Neutron network of the environment.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Network {}

impl Kind for Network {
    const LABEL: &'static str = "network";

    fn compare(&self, _have: &Self) -> Comparison {
        Comparison::Same
    }

    fn made_already(index: &super::Index, name: &str) -> bool {
        index.networks.contains_key(name)
    }

    async fn create(
        &self,
        p: &OpenstackProvider,
        r: &str,
        name: &str,
    ) -> Result<(), OpenstackError> {
        create(p, r, name).await
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
        use openstack_sdk::api::network::v2::network::tag::set as network_tag;
        let id = known(p, r, |i| i.networks.get(name).cloned())?;
        add_tags!(p, r, network_tag, network_id, id)
    }
}

/// A Neutron subnet.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Subnet {
    /// Network name.
    pub network: String,
    /// CIDR.
    pub cidr: String,
    /// Gateway; `None` for Neutron's default.
    pub gateway_ip: Option<String>,
    /// DNS servers.
    pub dns_nameservers: Vec<String>,
    /// DHCP on.
    pub enable_dhcp: bool,
}

impl Kind for Subnet {
    const LABEL: &'static str = "subnet";

    fn compare(&self, have: &Self) -> Comparison {
        compare_subnet(self, have)
    }

    fn made_already(index: &super::Index, name: &str) -> bool {
        index.subnets.contains_key(name)
    }

    async fn create(
        &self,
        p: &OpenstackProvider,
        r: &str,
        name: &str,
    ) -> Result<(), OpenstackError> {
        create_subnet(p, r, name, self).await
    }

    async fn update(
        &self,
        _have: &Self,
        p: &OpenstackProvider,
        r: &str,
        name: &str,
    ) -> Result<(), OpenstackError> {
        let change = SubnetChange {
            gateway_ip: self.gateway_ip.as_deref(),
            dns_nameservers: &self.dns_nameservers,
            enable_dhcp: self.enable_dhcp,
        };
        update_subnet(p, r, name, &change).await
    }

    async fn delete(
        &self,
        p: &OpenstackProvider,
        r: &str,
        name: &str,
    ) -> Result<(), OpenstackError> {
        delete_subnet(p, r, name).await
    }

    async fn adopt(
        &self,
        p: &OpenstackProvider,
        r: &str,
        name: &str,
    ) -> Result<(), OpenstackError> {
        use openstack_sdk::api::network::v2::subnet::tag::set as subnet_tag;
        let id = known(p, r, |i| i.subnets.get(name).cloned())?;
        add_tags!(p, r, subnet_tag, subnet_id, id)
    }
}

/// The router that connects the environment's subnets to the external
/// network its floating IPs come from (Neutron needs one, or it refuses to
/// associate a floating IP).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Router {
    /// External network of the gateway.
    pub external_network: String,
    /// Subnets with an interface on it.
    pub subnets: BTreeSet<String>,
}

impl Kind for Router {
    const LABEL: &'static str = "router";

    fn compare(&self, have: &Self) -> Comparison {
        compare_router(
            (&self.external_network, &self.subnets),
            (&have.external_network, &have.subnets),
        )
    }

    async fn create(
        &self,
        p: &OpenstackProvider,
        r: &str,
        name: &str,
    ) -> Result<(), OpenstackError> {
        create_router(p, r, name, &self.external_network, &self.subnets).await
    }

    async fn update(
        &self,
        have: &Self,
        p: &OpenstackProvider,
        r: &str,
        name: &str,
    ) -> Result<(), OpenstackError> {
        update_router(p, r, name, &self.subnets, &have.subnets).await
    }

    async fn delete(
        &self,
        p: &OpenstackProvider,
        r: &str,
        name: &str,
    ) -> Result<(), OpenstackError> {
        delete_router(p, r, name, &self.subnets).await
    }

    async fn adopt(
        &self,
        p: &OpenstackProvider,
        r: &str,
        name: &str,
    ) -> Result<(), OpenstackError> {
        use openstack_sdk::api::network::v2::router::tag::set as router_tag;
        let id = known(p, r, |i| i.routers.get(name).cloned())?;
        add_tags!(p, r, router_tag, router_id, id)
    }
}

/// `device_owner` of a router's interface ports: plain, distributed (DVR), HA.
const ROUTER_INTERFACE_OWNERS: [&str; 3] = [
    "network:router_interface",
    "network:router_interface_distributed",
    "network:ha_router_replicated_interface",
];

#[derive(Debug, Deserialize)]
pub(super) struct NetworkJson {
    pub id: String,
    #[serde(default)]
    pub created_at: String,
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
pub(super) struct SubnetJson {
    pub id: String,
    #[serde(default)]
    pub created_at: String,
    #[serde(default)]
    name: String,
    network_id: String,
    cidr: String,
    #[serde(default)]
    gateway_ip: Option<String>,
    #[serde(default)]
    dns_nameservers: Vec<String>,
    #[serde(default = "dhcp_default")]
    enable_dhcp: bool,
    #[serde(default)]
    tags: Vec<String>,
}

/// Neutron's default when a subnet does not say.
fn dhcp_default() -> bool {
    true
}

#[derive(Debug, Deserialize)]
pub(super) struct RouterJson {
    pub id: String,
    #[serde(default)]
    pub created_at: String,
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
pub(super) struct InterfacePortJson {
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

/// Every network the project sees (its own, external and shared ones).
pub(super) async fn list_networks(cloud: &Cloud) -> Result<Vec<NetworkJson>, OpenstackError> {
    let request = network_list::Request::builder().build().map_err(|e| built("networks", e))?;
    cloud.list::<NetworkJson, _>("networks", request).await
}

/// The project's subnets.
pub(super) async fn list_subnets(
    cloud: &Cloud,
    project: &str,
) -> Result<Vec<SubnetJson>, OpenstackError> {
    list_in_project!(cloud, project, subnet_list, SubnetJson, "subnets")
}

/// The project's routers.
pub(super) async fn list_routers(
    cloud: &Cloud,
    project: &str,
) -> Result<Vec<RouterJson>, OpenstackError> {
    list_in_project!(cloud, project, router_list, RouterJson, "routers")
}

/// Every port of the project: HA and distributed routers label their
/// interfaces differently, and Neutron's filter takes one value.
pub(super) async fn list_interfaces(
    cloud: &Cloud,
    project: &str,
) -> Result<Vec<InterfacePortJson>, OpenstackError> {
    list_in_project!(cloud, project, port_list, InterfacePortJson, "router interfaces")
}

/// Network and CIDR changes replace a subnet; gateway and DNS change in place.
pub(super) fn compare_subnet(want: &Subnet, have: &Subnet) -> Comparison {
    let Subnet {
        network: want_net,
        cidr: want_cidr,
        gateway_ip: want_gw,
        dns_nameservers: want_dns,
        enable_dhcp: want_dhcp,
    } = want;
    let Subnet {
        network: have_net,
        cidr: have_cidr,
        gateway_ip: have_gw,
        dns_nameservers: have_dns,
        enable_dhcp: have_dhcp,
    } = have;
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
    if want_dhcp != have_dhcp {
        reasons.push(format!("dhcp {have_dhcp} → {want_dhcp}"));
    }
    if reasons.is_empty() {
        Comparison::Same
    } else {
        Comparison::Update(reasons)
    }
}

/// A new external network replaces the router; subnet interfaces change in place.
pub(super) fn compare_router(
    (want_net, want_subnets): (&str, &BTreeSet<String>),
    (have_net, have_subnets): (&str, &BTreeSet<String>),
) -> Comparison {
    if want_net != have_net {
        Comparison::Replace(format!("external network {have_net} → {want_net}"))
    } else if want_subnets != have_subnets {
        Comparison::Update(vec!["subnet interfaces changed".to_owned()])
    } else {
        Comparison::Same
    }
}

/// The project's own networks, and external/shared ones by name (for floating IPs).
pub(super) fn observe_networks(
    o: &mut Observer<'_>,
    networks: &[NetworkJson],
) -> Result<(), OpenstackError> {
    let mut claims = Claims::default();
    for network in networks {
        let mine = network.project_id.as_deref() == Some(o.project);
        if !mine && !network.external {
            continue;
        }
        let owned = mine && is_owned_tags(&network.tags, o.env);
        let name = claims.name(&network.name, &network.id, owned);
        o.network_names.insert(network.id.clone(), name.clone());
        if mine && !owned && o.wants("network", &name) {
            refuse_foreign("network", &name, o.env, tags_claim(&network.tags))?;
        }
        if mine && (owned || o.wants("network", &name)) {
            let spec = OpenstackSpec::Network(Network {});
            if o.insert(id(o.env, "network", &name), spec, owned, vec![]) {
                o.index.networks.insert(name, network.id.clone());
            }
        } else if network.external {
            o.index.external_networks.entry(network.name.clone()).or_insert(network.id.clone());
        }
    }
    Ok(())
}

pub(super) fn observe_subnets(
    o: &mut Observer<'_>,
    subnets: Vec<SubnetJson>,
) -> Result<(), OpenstackError> {
    let mut claims = Claims::default();
    for subnet in subnets {
        let owned = is_owned_tags(&subnet.tags, o.env);
        let name = claims.name(&subnet.name, &subnet.id, owned);
        o.subnet_names.insert(subnet.id.clone(), name.clone());
        if !owned && !o.wants("subnet", &name) {
            continue;
        }
        if !owned {
            refuse_foreign("subnet", &name, o.env, tags_claim(&subnet.tags))?;
        }
        let Some(network) = o.network_names.get(&subnet.network_id).cloned() else { continue };
        let network_id = id(o.env, "network", &network);
        o.subnets_of.entry(network.clone()).or_default().push(id(o.env, "subnet", &name));
        let spec = OpenstackSpec::Subnet(Subnet {
            network,
            cidr: subnet.cidr,
            gateway_ip: subnet.gateway_ip,
            dns_nameservers: subnet.dns_nameservers,
            enable_dhcp: subnet.enable_dhcp,
        });
        if o.insert(id(o.env, "subnet", &name), spec, owned, vec![network_id]) {
            o.index.subnets.insert(name, subnet.id);
        }
    }
    Ok(())
}

/// Routers, with the subnets they have interfaces on.
pub(super) fn observe_routers(
    o: &mut Observer<'_>,
    routers: Vec<RouterJson>,
    interfaces: &[InterfacePortJson],
) -> Result<(), OpenstackError> {
    let mut claims = Claims::default();
    for router in routers {
        let owned = is_owned_tags(&router.tags, o.env);
        let name = claims.name(&router.name, &router.id, owned);
        if !owned && !o.wants("router", &name) {
            continue;
        }
        if !owned {
            refuse_foreign("router", &name, o.env, tags_claim(&router.tags))?;
        }
        let external_network = router
            .external_gateway_info
            .and_then(|g| g.network_id)
            .map(|id| o.network_names.get(&id).cloned().unwrap_or(id))
            .unwrap_or_default();
        let subnets: BTreeSet<String> = interfaces
            .iter()
            .filter(|port| {
                port.device_id == router.id
                    && ROUTER_INTERFACE_OWNERS.contains(&port.device_owner.as_str())
            })
            .flat_map(|port| port.fixed_ips.iter())
            .map(|ip| {
                o.subnet_names.get(&ip.subnet_id).cloned().unwrap_or_else(|| ip.subnet_id.clone())
            })
            .collect();
        o.index.router_interfaces.extend(subnets.iter().map(|s| (router.id.clone(), s.clone())));
        let depends_on = subnets.iter().map(|s| id(o.env, "subnet", s)).collect();
        let spec = OpenstackSpec::Router(Router { external_network, subnets });
        if o.insert(id(o.env, "router", &name), spec, owned, depends_on) {
            o.index.routers.insert(name, router.id);
        }
    }
    Ok(())
}

pub(super) async fn create(
    p: &OpenstackProvider,
    r: &str,
    name: &str,
) -> Result<(), OpenstackError> {
    let body =
        network_create::NetworkBuilder::default().name(name).build().map_err(|e| built(r, e))?;
    let request =
        network_create::Request::builder().network(body).build().map_err(|e| built(r, e))?;
    let created: Created = p.cloud.query(r, "create", request).await?;
    tag_or_undo!(p, r, network_tags, network_id, network_delete, created.id.as_str())?;
    p.with_index(|i| i.networks.insert(name.to_owned(), created.id));
    Ok(())
}

pub(super) async fn delete(
    p: &OpenstackProvider,
    r: &str,
    name: &str,
) -> Result<(), OpenstackError> {
    let id = network_id(p, r, name).await?;
    delete_by_id!(p, r, network_delete, id.as_str())?;
    p.with_index(|i| i.networks.remove(name));
    Ok(())
}

/// Creates subnet `name` as `spec`.
pub(super) async fn create_subnet(
    p: &OpenstackProvider,
    r: &str,
    name: &str,
    spec: &Subnet,
) -> Result<(), OpenstackError> {
    let Subnet { network, cidr, gateway_ip, dns_nameservers, enable_dhcp } = spec;
    let network_id = network_id(p, r, network).await?;
    let mut body = subnet_create::SubnetBuilder::default();
    body.name(name)
        .network_id(network_id.as_str())
        .cidr(Some(cidr.as_str().into()))
        .ip_version(if cidr.contains(':') { 6 } else { 4 })
        .enable_dhcp(*enable_dhcp)
        .dns_nameservers(dns_nameservers.iter().map(|d| d.as_str().into()).collect::<Vec<_>>());
    if let Some(gateway) = gateway_ip {
        body.gateway_ip(Some(gateway.as_str().into()));
    }
    let body = body.build().map_err(|e| built(r, e))?;
    let request =
        subnet_create::Request::builder().subnet(body).build().map_err(|e| built(r, e))?;
    let created: Created = p.cloud.query(r, "create", request).await?;
    tag_or_undo!(p, r, subnet_tags, subnet_id, subnet_delete, created.id.as_str())?;
    p.with_index(|i| i.subnets.insert(name.to_owned(), created.id));
    Ok(())
}

/// What changes in place on a subnet.
pub(super) struct SubnetChange<'a> {
    pub gateway_ip: Option<&'a str>,
    pub dns_nameservers: &'a [String],
    pub enable_dhcp: bool,
}

/// Sets the gateway, DNS servers and DHCP of subnet `name`.
pub(super) async fn update_subnet(
    p: &OpenstackProvider,
    r: &str,
    name: &str,
    change: &SubnetChange<'_>,
) -> Result<(), OpenstackError> {
    let id = known(p, r, |i| i.subnets.get(name).cloned())?;
    let mut body = subnet_set::SubnetBuilder::default();
    body.dns_nameservers(
        change.dns_nameservers.iter().map(|d| d.as_str().into()).collect::<Vec<_>>(),
    )
    .enable_dhcp(change.enable_dhcp);
    if let Some(gateway) = change.gateway_ip {
        body.gateway_ip(Some(gateway.into()));
    }
    let body = body.build().map_err(|e| built(r, e))?;
    let request = subnet_set::Request::builder()
        .id(id.as_str())
        .subnet(body)
        .build()
        .map_err(|e| built(r, e))?;
    p.cloud.execute(r, "update", request).await
}

pub(super) async fn delete_subnet(
    p: &OpenstackProvider,
    r: &str,
    name: &str,
) -> Result<(), OpenstackError> {
    let id = known(p, r, |i| i.subnets.get(name).cloned())?;
    delete_by_id!(p, r, subnet_delete, id.as_str())?;
    p.with_index(|i| i.subnets.remove(name));
    Ok(())
}

/// Creates the router with its gateway and an interface on each subnet.
pub(super) async fn create_router(
    p: &OpenstackProvider,
    r: &str,
    name: &str,
    external_network: &str,
    subnets: &BTreeSet<String>,
) -> Result<(), OpenstackError> {
    // An earlier attempt of this change may have made the router and
    // some interfaces already: finish its work instead of repeating it.
    if let Some(id) = p.with_index(|i| i.routers.get(name).cloned()) {
        for subnet in subnets {
            router_interface(p, r, &id, subnet, true).await?;
        }
        return Ok(());
    }
    let network_id = network_id(p, r, external_network).await?;
    let gateway = router_create::ExternalGatewayInfoBuilder::default()
        .network_id(network_id.as_str())
        .build()
        .map_err(|e| built(r, e))?;
    let body = router_create::RouterBuilder::default()
        .name(name)
        .external_gateway_info(Some(gateway))
        .build()
        .map_err(|e| built(r, e))?;
    let request =
        router_create::Request::builder().router(body).build().map_err(|e| built(r, e))?;
    let created: Created = p.cloud.query(r, "create", request).await?;
    tag_or_undo!(p, r, router_tags, router_id, router_delete, created.id.as_str())?;
    p.with_index(|i| i.routers.insert(name.to_owned(), created.id.clone()));
    for subnet in subnets {
        router_interface(p, r, &created.id, subnet, true).await?;
    }
    Ok(())
}

/// Adds and removes interfaces so the router has one on each of `want`.
pub(super) async fn update_router(
    p: &OpenstackProvider,
    r: &str,
    name: &str,
    want: &BTreeSet<String>,
    have: &BTreeSet<String>,
) -> Result<(), OpenstackError> {
    let id = known(p, r, |i| i.routers.get(name).cloned())?;
    for subnet in want.difference(have) {
        router_interface(p, r, &id, subnet, true).await?;
    }
    for subnet in have.difference(want) {
        router_interface(p, r, &id, subnet, false).await?;
    }
    Ok(())
}

pub(super) async fn delete_router(
    p: &OpenstackProvider,
    r: &str,
    name: &str,
    subnets: &BTreeSet<String>,
) -> Result<(), OpenstackError> {
    let id = known(p, r, |i| i.routers.get(name).cloned())?;
    for subnet in subnets {
        router_interface(p, r, &id, subnet, false).await?;
    }
    delete_by_id!(p, r, router_delete, id.as_str())?;
    p.with_index(|i| i.routers.remove(name));
    Ok(())
}

/// Adds (or removes) the router's interface on `subnet`.
async fn router_interface(
    p: &OpenstackProvider,
    r: &str,
    router_id: &str,
    subnet: &str,
    add: bool,
) -> Result<(), OpenstackError> {
    let subnet_id = known(p, r, |i| i.subnets.get(subnet).cloned())?;
    let key = (router_id.to_owned(), subnet.to_owned());
    if add {
        if p.with_index(|i| i.router_interfaces.contains(&key)) {
            return Ok(());
        }
        let request = add_router_interface::Request::builder()
            .id(router_id)
            .subnet_id(subnet_id.as_str())
            .build()
            .map_err(|e| built(r, e))?;
        p.cloud.execute(r, &format!("add interface on subnet {subnet}"), request).await?;
        p.with_index(|i| i.router_interfaces.insert(key));
        Ok(())
    } else {
        p.with_index(|i| i.router_interfaces.remove(&key));
        let request = remove_router_interface::Request::builder()
            .id(router_id)
            .subnet_id(subnet_id.as_str())
            .build()
            .map_err(|e| built(r, e))?;
        gone_is_fine(
            p.cloud.execute(r, &format!("remove interface on subnet {subnet}"), request).await,
        )
    }
}

pub(super) async fn network_id(
    p: &OpenstackProvider,
    r: &str,
    name: &str,
) -> Result<String, OpenstackError> {
    if let Some(id) =
        p.with_index(|i| i.networks.get(name).or_else(|| i.external_networks.get(name)).cloned())
    {
        return Ok(id);
    }
    let request = network_list::Request::builder().name(name).build().map_err(|e| built(r, e))?;
    let found: Vec<Named> = p.cloud.list(r, request).await?;
    found.into_iter().find(|n| n.name == name).map(|n| n.id).ok_or_else(|| {
        OpenstackError::Missing { resource: r.to_owned(), what: "network", name: name.to_owned() }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subnet(cidr: &str, dns: &[&str], dhcp: bool) -> Subnet {
        Subnet {
            network: "net".to_owned(),
            cidr: cidr.to_owned(),
            gateway_ip: None,
            dns_nameservers: dns.iter().map(|d| (*d).to_owned()).collect(),
            enable_dhcp: dhcp,
        }
    }

    #[test]
    fn dhcp_and_dns_change_in_place_and_the_cidr_replaces() {
        let have = subnet("10.0.0.0/24", &["9.9.9.9"], true);
        assert!(matches!(compare_subnet(&have, &have), Comparison::Same));
        let Comparison::Update(reasons) = compare_subnet(&subnet("10.0.0.0/24", &[], false), &have)
        else {
            panic!("expected an update");
        };
        assert_eq!(reasons, ["dns nameservers changed", "dhcp true → false"]);
        assert!(matches!(
            compare_subnet(&subnet("10.0.1.0/24", &["9.9.9.9"], true), &have),
            Comparison::Replace(_)
        ));
    }
}
