//! Neutron floating IPs, one per host that declares one, named after the
//! host. They need the environment's router to the external network.

use openstack_sdk::api::network::v2::floatingip::{
    create as fip_create, delete as fip_delete, list as floating_ip_list, set as fip_set,
    tag::replace as fip_tags,
};
use serde::Deserialize;

use super::client::{built, Cloud, OpenstackError};
use super::common::{known, Created};
use super::kind::{Kind, Wanted};
use super::marks::{is_owned_tags, refuse_foreign, tags_claim};
use super::network::network_id;
use super::observe::Observer;
use super::server::{self, first_port};
use super::{id, router_name, server_id, OpenstackProvider, OpenstackSpec};
use crate::model::Environment;
use crate::plan::Comparison;
use crate::providers::Scope;
use crate::render::Rendered;

/// A floating IP associated with a server.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FloatingIp {
    /// External network.
    pub network: String,
    /// Server name.
    pub server: String,
}

impl Kind for FloatingIp {
    const LABEL: &'static str = "floating IP of host";
    type Listing = Vec<FloatingIpJson>;

    /// One per host that asks for one, once its server and the router exist.
    fn desired(env: &Environment, _: &Rendered) -> Vec<Wanted<Self>> {
        let name = env.name.as_str();
        let wanted = |host: &crate::model::Host| {
            let network = host.floating_ip.as_ref()?;
            let spec = FloatingIp { network: network.clone(), server: host.name.clone() };
            let depends_on =
                vec![server_id(name, &host.name), id(name, "router", router_name(name))];
            Some((id(name, "floating_ip", &host.name), spec, depends_on))
        };
        env.hosts.iter().filter_map(wanted).collect()
    }

    /// The project's floating IPs, with the device of their port.
    async fn list(cloud: &Cloud, project: &str) -> Result<Self::Listing, OpenstackError> {
        list_in_project!(cloud, project, floating_ip_list, FloatingIpJson, "floating IPs")
    }

    async fn observe(
        o: &mut Observer<'_>,
        floating_ips: Self::Listing,
        _: &OpenstackProvider,
        _: &Scope,
    ) -> Result<(), OpenstackError> {
        observe(o, floating_ips)
    }

    fn compare(&self, have: &Self) -> Comparison {
        if self == have {
            Comparison::Same
        } else if self.network == have.network {
            Comparison::Replace("associated with another server".to_owned())
        } else {
            Comparison::Replace(format!("network {} → {}", have.network, self.network))
        }
    }

    fn made_already(index: &super::Index, name: &str) -> bool {
        index.floating_ips.contains_key(name)
    }

    async fn create(
        &self,
        p: &OpenstackProvider,
        r: &str,
        name: &str,
    ) -> Result<(), OpenstackError> {
        create(p, r, name, &self.network, &self.server).await
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
        use openstack_sdk::api::network::v2::floatingip::tag::set as fip_tag;
        let id = known(p, r, |i| i.floating_ips.get(name).cloned())?;
        add_tags!(p, r, fip_tag, floatingip_id, id)
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct FloatingIpJson {
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

/// Floating IPs, by the server their port belongs to.
fn observe(o: &mut Observer<'_>, floating_ips: Vec<FloatingIpJson>) -> Result<(), OpenstackError> {
    for fip in floating_ips {
        let owned = is_owned_tags(&fip.tags, o.env);
        let server = fip
            .port_details
            .as_ref()
            .and_then(|p| p.device_id.as_ref())
            .and_then(|device| o.server_names.get(device))
            .cloned();
        let (name, depends_on) = match &server {
            Some(server) => (
                server.clone(),
                vec![id(o.env, "server", server), id(o.env, "router", super::router_name(o.env))],
            ),
            // An owned address no server uses any more: pruned like any leftover.
            None if owned => (format!("unassociated-{}", fip.floating_ip_address), vec![]),
            None => continue,
        };
        if !owned && !o.wants("floating_ip", &name) {
            continue;
        }
        if !owned {
            refuse_foreign("floating IP", &name, o.env, tags_claim(&fip.tags))?;
        }
        let network = o
            .network_names
            .get(&fip.floating_network_id)
            .cloned()
            .unwrap_or(fip.floating_network_id);
        let spec =
            OpenstackSpec::FloatingIp(FloatingIp { network, server: server.unwrap_or_default() });
        if o.insert(id(o.env, "floating_ip", &name), spec, owned, depends_on) {
            o.index.floating_ips.insert(name, fip.id);
        }
    }
    Ok(())
}

pub(super) async fn create(
    p: &OpenstackProvider,
    r: &str,
    name: &str,
    network: &str,
    server: &str,
) -> Result<(), OpenstackError> {
    let network_id = network_id(p, r, network).await?;
    let server_id = server::id_of(p, r, server).await?;
    let port = first_port(p, r, &server_id).await?;
    let body = fip_create::FloatingipBuilder::default()
        .floating_network_id(network_id.as_str())
        .port_id(Some(port.into()))
        .build()
        .map_err(|e| built(r, e))?;
    let request =
        fip_create::Request::builder().floatingip(body).build().map_err(|e| built(r, e))?;
    let created: Created = p.cloud.query(r, "create", request).await?;
    tag_or_undo!(p, r, fip_tags, floatingip_id, fip_delete, created.id.as_str())?;
    p.with_index(|i| i.floating_ips.insert(name.to_owned(), created.id));
    Ok(())
}

/// Moves the floating IP `fip` (an id) to the server `server_id`.
pub(super) async fn move_to(
    p: &OpenstackProvider,
    r: &str,
    fip: &str,
    server_id: &str,
) -> Result<(), OpenstackError> {
    let port = first_port(p, r, server_id).await?;
    let body = fip_set::FloatingipBuilder::default()
        .port_id(Some(port.into()))
        .build()
        .map_err(|e| built(r, e))?;
    let request =
        fip_set::Request::builder().id(fip).floatingip(body).build().map_err(|e| built(r, e))?;
    p.cloud.execute(r, "move the floating IP to the new server", request).await
}

pub(super) async fn delete(
    p: &OpenstackProvider,
    r: &str,
    name: &str,
) -> Result<(), OpenstackError> {
    let id = known(p, r, |i| i.floating_ips.get(name).cloned())?;
    delete_by_id!(p, r, fip_delete, id.as_str())?;
    p.with_index(|i| i.floating_ips.remove(name));
    Ok(())
}
