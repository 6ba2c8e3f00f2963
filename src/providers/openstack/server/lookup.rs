//! Server names → ids (index first, then Nova), flavor and image names →
//! ids, and a server's first port (where its floating IP goes).

use openstack_sdk::api::compute::v2::flavor::list_detailed_20 as flavor_list;
use openstack_sdk::api::compute::v2::server::list_detailed_21 as server_list;
use openstack_sdk::api::image::v2::image::list as image_list;
use openstack_sdk::api::network::v2::floatingip::list as floating_ip_list;
use openstack_sdk::api::network::v2::port::list as port_list;

use super::{get, PortJson, ServerJson};
use crate::providers::locate::{LocateError, Which};
use crate::providers::openstack::client::{built, OpenstackError};
use crate::providers::openstack::common::Named;
use crate::providers::openstack::marks::is_owned_metadata;
use crate::providers::openstack::network::network_id;
use crate::providers::openstack::OpenstackProvider;

pub(in crate::providers::openstack) async fn id_of(
    p: &OpenstackProvider,
    r: &str,
    name: &str,
) -> Result<String, OpenstackError> {
    if let Some(id) = p.with_index(|i| i.servers.get(name).cloned()) {
        return Ok(id);
    }
    let id = find_owned_server(p, r, name).await?.ok_or_else(|| OpenstackError::Missing {
        resource: r.to_owned(),
        what: "server",
        name: name.to_owned(),
    })?;
    p.with_index(|i| i.servers.insert(name.to_owned(), id.clone()));
    Ok(id)
}

/// The id of the server apimon created as `name` in this environment, asking Nova.
pub(super) async fn find_owned_server(
    p: &OpenstackProvider,
    r: &str,
    name: &str,
) -> Result<Option<String>, OpenstackError> {
    let request = server_list::Request::builder()
        .name(format!("^{}$", regex_escape(name)))
        .build()
        .map_err(|e| built(r, e))?;
    let found: Vec<ServerJson> = p.cloud.list(r, request).await?;
    Ok(found
        .into_iter()
        .find(|s| s.name == name && s.status != "DELETED" && is_owned_metadata(&s.metadata, &p.env))
        .map(|s| s.id))
}

pub(super) async fn flavor_id(
    p: &OpenstackProvider,
    r: &str,
    name: &str,
) -> Result<String, OpenstackError> {
    if let Some(id) = p.with_index(|i| i.flavors.get(name).cloned()) {
        return Ok(id);
    }
    let request = flavor_list::Request::builder().build().map_err(|e| built(r, e))?;
    let flavors: Vec<Named> = p.cloud.list(r, request).await?;
    p.with_index(|i| i.flavors.extend(flavors.into_iter().map(|f| (f.name, f.id))));
    p.with_index(|i| i.flavors.get(name).cloned()).ok_or_else(|| OpenstackError::Missing {
        resource: r.to_owned(),
        what: "flavor",
        name: name.to_owned(),
    })
}

pub(super) async fn image_id(
    p: &OpenstackProvider,
    r: &str,
    name: &str,
) -> Result<String, OpenstackError> {
    if let Some(id) = p.with_index(|i| i.images.get(name).cloned()) {
        return Ok(id);
    }
    // Newest first: clouds re-upload images under the same name.
    let request = image_list::Request::builder()
        .name(name)
        .sort("created_at:desc")
        .build()
        .map_err(|e| built(r, e))?;
    let images: Vec<Named> = p.cloud.list(r, request).await?;
    let id = images.into_iter().find(|i| i.name == name).map(|i| i.id).ok_or_else(|| {
        OpenstackError::Missing { resource: r.to_owned(), what: "image", name: name.to_owned() }
    })?;
    p.with_index(|i| i.images.insert(name.to_owned(), id.clone()));
    Ok(id)
}

/// The server's port on its first network (where its floating IP goes).
pub(in crate::providers::openstack) async fn first_port(
    p: &OpenstackProvider,
    r: &str,
    server_id: &str,
) -> Result<String, OpenstackError> {
    let request =
        port_list::Request::builder().device_id(server_id).build().map_err(|e| built(r, e))?;
    let ports: Vec<PortJson> = p.cloud.list(r, request).await?;
    let server = get(p, r, server_id).await?;
    let first_network = server.addresses_order().into_iter().next();
    let first_network_id = match first_network {
        Some(network) => Some(network_id(p, r, &network).await?),
        None => None,
    };
    ports
        .iter()
        .find(|port| Some(&port.network_id) == first_network_id.as_ref())
        .or_else(|| ports.first())
        .map(|port| port.id.clone())
        .ok_or_else(|| OpenstackError::Failed {
            resource: r.to_owned(),
            message: "the server has no port to attach a floating IP to".to_owned(),
        })
}

/// The address of the server apimon created as `name`: its floating IP
/// (on its first port) or its fixed address on its first network.
pub(in crate::providers::openstack) async fn address(
    p: &OpenstackProvider,
    name: &str,
    which: Which,
) -> Result<String, LocateError> {
    let r = &format!("server {name}");
    let cloud = |error: OpenstackError| LocateError::Cloud {
        server: name.to_owned(),
        which,
        message: crate::error::chain(&error),
    };
    let no_address = || LocateError::NoAddress { server: name.to_owned(), which };
    let Some(id) = find_owned_server(p, r, name).await.map_err(cloud)? else {
        return Err(LocateError::NoServer { server: name.to_owned(), which });
    };
    match which {
        Which::Fixed => get(p, r, &id).await.map_err(cloud)?.fixed_address().ok_or_else(no_address),
        Which::Zone => get(p, r, &id)
            .await
            .map_err(cloud)?
            .availability_zone
            .filter(|zone| !zone.is_empty())
            .ok_or_else(no_address),
        Which::Floating => {
            let port = match first_port(p, r, &id).await {
                Ok(port) => port,
                // No port yet (still building): no floating IP either.
                Err(OpenstackError::Failed { .. }) => return Err(no_address()),
                Err(error) => return Err(cloud(error)),
            };
            let request = floating_ip_list::Request::builder()
                .port_id(port)
                .build()
                .map_err(|e| cloud(built(r, e)))?;
            let found: Vec<FloatingIpAddress> = p.cloud.list(r, request).await.map_err(cloud)?;
            let address = found.into_iter().map(|f| f.floating_ip_address).find(|a| !a.is_empty());
            address.ok_or_else(no_address)
        }
    }
}

#[derive(Debug, serde::Deserialize)]
struct FloatingIpAddress {
    #[serde(default)]
    floating_ip_address: String,
}

/// Nova's name filter is a regular expression.
fn regex_escape(name: &str) -> String {
    name.chars()
        .flat_map(|c| {
            let special = "\\.+*?()|[]{}^$".contains(c);
            special.then_some('\\').into_iter().chain(std::iter::once(c))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_are_matched_literally_by_novas_regex_filter() {
        assert_eq!(regex_escape("outside-bastion"), "outside-bastion");
        assert_eq!(regex_escape("a.b(1)"), "a\\.b\\(1\\)");
    }
}
