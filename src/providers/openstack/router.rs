//! The environment's router: its gateway on the external network the
//! floating IPs come from, and an interface on each subnet. A new external
//! network replaces it; interfaces change in place.

use std::collections::BTreeSet;

use openstack_sdk::api::network::v2::port::list as port_list;
use openstack_sdk::api::network::v2::router::{
    add_router_interface, create as router_create, delete as router_delete, list as router_list,
    remove_router_interface, tag::replace as router_tags,
};
use serde::Deserialize;

use super::client::{built, Cloud, OpenstackError};
use super::common::{gone_is_fine, known, Created};
use super::kind::{Kind, Wanted};
use super::marks::{is_owned_tags, oldest_first, refuse_foreign, tags_claim, Claims};
use super::network::network_id;
use super::observe::Observer;
use super::{id, router_name, OpenstackProvider, OpenstackSpec};
use crate::model::Environment;
use crate::plan::Comparison;
use crate::providers::Scope;
use crate::render::Rendered;

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
    type Listing = (Vec<RouterJson>, Vec<InterfacePortJson>);

    /// One router to the external network the floating IPs come from.
    fn desired(env: &Environment, _: &Rendered) -> Vec<Wanted<Self>> {
        let Some(external) = env.hosts.iter().find_map(|h| h.floating_ip.as_ref()) else {
            return vec![];
        };
        let subnets: BTreeSet<String> = env
            .networks
            .iter()
            .filter(|n| !n.external)
            .flat_map(|n| n.subnets.iter().map(|s| s.name.clone()))
            .collect();
        let depends_on = subnets.iter().map(|s| id(&env.name, "subnet", s)).collect();
        let spec = Router { external_network: external.clone(), subnets };
        vec![(id(&env.name, "router", router_name(&env.name)), spec, depends_on)]
    }

    /// The project's routers (oldest first) and their interface ports.
    async fn list(cloud: &Cloud, project: &str) -> Result<Self::Listing, OpenstackError> {
        let (mut routers, interfaces) =
            tokio::try_join!(list_routers(cloud, project), list_interfaces(cloud, project))?;
        oldest_first(&mut routers, |r| (&r.created_at, &r.id));
        Ok((routers, interfaces))
    }

    async fn observe(
        o: &mut Observer<'_>,
        (routers, interfaces): Self::Listing,
        _: &OpenstackProvider,
        _: &Scope,
    ) -> Result<(), OpenstackError> {
        observe_routers(o, routers, &interfaces)
    }

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
pub(crate) struct RouterJson {
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
pub(crate) struct InterfacePortJson {
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

/// The project's routers.
async fn list_routers(cloud: &Cloud, project: &str) -> Result<Vec<RouterJson>, OpenstackError> {
    list_in_project!(cloud, project, router_list, RouterJson, "routers")
}

/// Every port of the project: HA and distributed routers label their
/// interfaces differently, and Neutron's filter takes one value.
async fn list_interfaces(
    cloud: &Cloud,
    project: &str,
) -> Result<Vec<InterfacePortJson>, OpenstackError> {
    list_in_project!(cloud, project, port_list, InterfacePortJson, "router interfaces")
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

/// Routers, with the subnets they have interfaces on.
fn observe_routers(
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
