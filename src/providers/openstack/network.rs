//! Neutron networks, subnets and the environment's router (its gateway on
//! the external network the floating IPs come from, an interface on each
//! subnet). External networks are only referenced, by name.

use openstack_sdk::api::network::v2::network::{
    create as network_create, delete as network_delete, list as network_list,
    tag::replace as network_tags,
};
use openstack_sdk::api::network::v2::subnet::{
    create as subnet_create, delete as subnet_delete, list as subnet_list, set as subnet_set,
    tag::replace as subnet_tags,
};
use serde::Deserialize;

use super::client::{built, Cloud, OpenstackError};
use super::common::{known, Created, Named};
use super::kind::{Kind, Wanted};
use super::marks::{is_owned_tags, oldest_first, refuse_foreign, tags_claim, Claims};
use super::observe::Observer;
use super::{id, OpenstackProvider, OpenstackSpec};
use crate::model::Environment;
use crate::plan::Comparison;
use crate::providers::Scope;
use crate::render::Rendered;

/// A Neutron network of the environment.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Network {}

impl Kind for Network {
    const LABEL: &'static str = "network";
    type Listing = Vec<NetworkJson>;

    /// The environment's own networks; external ones are only referenced.
    fn desired(env: &Environment, _: &Rendered) -> Vec<Wanted<Self>> {
        let wanted =
            |n: &crate::model::Network| (id(&env.name, "network", &n.name), Network {}, vec![]);
        env.networks.iter().filter(|n| !n.external).map(wanted).collect()
    }

    /// Every network the project sees (its own, external and shared ones), oldest first.
    async fn list(cloud: &Cloud, _: &str) -> Result<Self::Listing, OpenstackError> {
        let request = network_list::Request::builder().build().map_err(|e| built("networks", e))?;
        let mut networks = cloud.list::<NetworkJson, _>("networks", request).await?;
        oldest_first(&mut networks, |n| (&n.created_at, &n.id));
        Ok(networks)
    }

    async fn observe(
        o: &mut Observer<'_>,
        networks: Self::Listing,
        _: &OpenstackProvider,
        _: &Scope,
    ) -> Result<(), OpenstackError> {
        observe_networks(o, &networks)
    }

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
    type Listing = Vec<SubnetJson>;

    fn desired(env: &Environment, _: &Rendered) -> Vec<Wanted<Self>> {
        let mut wanted = Vec::new();
        for network in env.networks.iter().filter(|n| !n.external) {
            for subnet in &network.subnets {
                let spec = Subnet {
                    network: network.name.clone(),
                    cidr: subnet.cidr.to_string(),
                    gateway_ip: subnet.gateway_ip.map(|ip| ip.to_string()),
                    dns_nameservers: subnet
                        .dns_nameservers
                        .iter()
                        .map(ToString::to_string)
                        .collect(),
                    enable_dhcp: subnet.enable_dhcp,
                };
                let network = id(&env.name, "network", &network.name);
                wanted.push((id(&env.name, "subnet", &subnet.name), spec, vec![network]));
            }
        }
        wanted
    }

    /// The project's subnets, oldest first.
    async fn list(cloud: &Cloud, project: &str) -> Result<Self::Listing, OpenstackError> {
        let mut subnets = list_in_project!(cloud, project, subnet_list, SubnetJson, "subnets")?;
        oldest_first(&mut subnets, |n| (&n.created_at, &n.id));
        Ok(subnets)
    }

    async fn observe(
        o: &mut Observer<'_>,
        subnets: Self::Listing,
        _: &OpenstackProvider,
        _: &Scope,
    ) -> Result<(), OpenstackError> {
        observe_subnets(o, subnets)
    }

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

#[derive(Debug, Deserialize)]
pub(crate) struct NetworkJson {
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
pub(crate) struct SubnetJson {
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

/// The project's own networks, and external/shared ones by name (for floating IPs).
fn observe_networks(o: &mut Observer<'_>, networks: &[NetworkJson]) -> Result<(), OpenstackError> {
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

fn observe_subnets(o: &mut Observer<'_>, subnets: Vec<SubnetJson>) -> Result<(), OpenstackError> {
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
