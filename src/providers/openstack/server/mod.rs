//! Nova servers: what a server is in the repository's terms, how it
//! compares (what changes in place, what replaces it) and how it is
//! observed. [`apply`] creates, resizes, replaces and deletes one with the
//! waits that takes; [`lookup`] turns names into ids.

mod apply;
mod desired;
mod lookup;

pub(super) use apply::{create, delete, get, replace, update};
pub(super) use lookup::{address, first_port, id_of};

use std::collections::{BTreeMap, BTreeSet};

use http::{HeaderName, HeaderValue};
use indexmap::IndexMap;
use openstack_sdk::api::compute::v2::flavor::list_detailed_20 as flavor_list;
use openstack_sdk::api::compute::v2::server::list_detailed_21 as server_list;
use openstack_sdk::api::image::v2::image::list as image_list;
use serde::{Deserialize, Serialize};

use super::client::{built, Cloud, OpenstackError};
use super::kind::{Kind, Wanted};
use super::marks::{is_owned_metadata, metadata_claim, oldest_first, refuse_foreign, Claims};
use super::observe::Observer;
use super::{
    id, Index, OpenstackProvider, OpenstackSpec, IMAGE_KEY, METADATA_KEYS_KEY, ROLE_KEY,
    ROOT_VOLUME_KEY, USER_DATA_KEY,
};
use crate::model::Environment;
use crate::plan::{Comparison, ObservedItem, ObservedSet};
use crate::providers::{changed, Scope};
use crate::render::Rendered;

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
    /// Observed only: still being built (BUILD), as after a create that was
    /// interrupted: waited for, never replaced for what it lacks yet.
    #[serde(skip)]
    pub building: bool,
    /// The role of the host it serves (desired; observed from metadata).
    pub role: Option<crate::model::Role>,
    /// Booted from a volume of this many GiB; `Some(0)` when observed
    /// booted from a volume apimon did not make (size unknown).
    pub root_volume_gb: Option<u32>,
}

/// Microversion for server lists: 2.47 embeds the flavor's name.
pub(super) const COMPUTE_VERSION: &str = "compute 2.47";

pub(super) fn version_header() -> (HeaderName, HeaderValue) {
    (HeaderName::from_static("openstack-api-version"), HeaderValue::from_static(COMPUTE_VERSION))
}

#[derive(Debug, Deserialize)]
pub(crate) struct ServerJson {
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
    pub availability_zone: Option<String>,
    #[serde(default)]
    pub fault: Option<FaultJson>,
}

impl ServerJson {
    /// Its fixed address on its first network: IPv4 first (the
    /// repository's `address` is IPv4; on a dual-stack network the IPv6
    /// address may come first).
    pub fn fixed_address(&self) -> Option<String> {
        let addresses = self.addresses.values().next()?;
        let fixed = || addresses.iter().filter(|a| a.kind.as_deref() != Some("floating"));
        fixed().find(|a| a.version == Some(4)).or_else(|| fixed().next()).map(|a| a.addr.clone())
    }

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
struct PortJson {
    id: String,
    network_id: String,
}

/// The groups a server is in: Nova puts a server declared with none in `default`.
fn effective_groups(spec: &ServerSpec) -> BTreeSet<String> {
    if spec.security_groups.is_empty() {
        BTreeSet::from(["default".to_owned()])
    } else {
        spec.security_groups.clone()
    }
}

pub(super) fn compare(want: &ServerSpec, have: &ServerSpec) -> Comparison {
    if let Some(fault) = &have.error {
        return Comparison::Replace(format!("server is in ERROR ({fault})"));
    }
    if have.resize_pending {
        return Comparison::Update(vec!["confirm the pending resize".to_owned()]);
    }
    if have.building {
        return Comparison::Update(vec!["still building: wait until it is ACTIVE".to_owned()]);
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
    if want.root_volume_gb != have.root_volume_gb {
        let disk = |gb: Option<u32>| match gb {
            None => "the flavor's disk".to_owned(),
            Some(0) => "a volume".to_owned(),
            Some(gb) => format!("a {gb} GiB volume"),
        };
        replace.push(format!(
            "root disk {} → {}",
            disk(have.root_volume_gb),
            disk(want.root_volume_gb)
        ));
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

/// The servers apimon owns or the repository declares, oldest first, and
/// the names of the images they were booted from when their metadata does
/// not say (one request, only then).
async fn observe(
    o: &mut Observer<'_>,
    cloud: &Cloud,
    servers: &[ServerJson],
) -> Result<(), OpenstackError> {
    let mut relevant: Vec<&ServerJson> = servers
        .iter()
        .filter(|s| s.status != "DELETED" && s.status != "SOFT_DELETED")
        .filter(|s| is_owned_metadata(&s.metadata, o.env) || o.wants("server", &s.name))
        .collect();
    oldest_first(&mut relevant, |s| (&s.created, &s.id));
    let images = image_names(cloud, &relevant).await?;
    let mut claims = Claims::default();
    for server in relevant {
        let owned = is_owned_metadata(&server.metadata, o.env);
        let name = claims.name(&server.name, &server.id, owned);
        if !owned {
            refuse_foreign("host", &name, o.env, metadata_claim(&server.metadata))?;
        }
        let spec = server_spec(server, &images);
        let mut depends_on = Vec::new();
        if !spec.keypair.is_empty() {
            depends_on.push(id(o.env, "keypair", &spec.keypair));
        }
        depends_on.extend(spec.security_groups.iter().map(|g| id(o.env, "security_group", g)));
        for network in &spec.networks {
            depends_on.push(id(o.env, "network", network));
            depends_on.extend(o.subnets_of.get(network).into_iter().flatten().cloned());
        }
        if o.insert(id(o.env, "server", &name), OpenstackSpec::Server(spec), owned, depends_on) {
            o.server_names.insert(server.id.clone(), name.clone());
            o.index.servers.insert(name, server.id.clone());
        }
    }
    Ok(())
}

/// Image id → name, for servers whose metadata does not name their image.
async fn image_names(
    cloud: &Cloud,
    servers: &[&ServerJson],
) -> Result<BTreeMap<String, String>, OpenstackError> {
    let image_ids: BTreeSet<&str> = servers
        .iter()
        .filter(|s| !s.metadata.contains_key(IMAGE_KEY))
        .filter_map(|s| s.image.get("id").and_then(|v| v.as_str()))
        .collect();
    if image_ids.is_empty() {
        return Ok(BTreeMap::new());
    }
    let filter = format!("in:{}", image_ids.into_iter().collect::<Vec<_>>().join(","));
    let request =
        image_list::Request::builder().id(filter).build().map_err(|e| built("images", e))?;
    Ok(cloud
        .list::<ImageJson, _>("images", request)
        .await?
        .into_iter()
        .map(|i| (i.id.clone(), i.name.unwrap_or(i.id)))
        .collect())
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
    let address = server.fixed_address();
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
        building: server.status == "BUILD",
        role: server
            .metadata
            .get(ROLE_KEY)
            .and_then(|r| serde_json::from_value(serde_json::Value::String(r.clone())).ok()),
        root_volume_gb: root_volume_gb(server),
    }
}

/// Nova shows no image for a server booted from a volume; its size is what
/// apimon asked for when it made it (metadata: no request per server).
fn root_volume_gb(server: &ServerJson) -> Option<u32> {
    if server.image.get("id").is_some() {
        return None;
    }
    Some(server.metadata.get(ROOT_VOLUME_KEY).and_then(|gb| gb.parse().ok()).unwrap_or(0))
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
                compare(want, have) != crate::plan::Comparison::Same
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

impl Kind for ServerSpec {
    const LABEL: &'static str = "host";
    type Listing = Vec<ServerJson>;

    fn desired(env: &Environment, rendered: &Rendered) -> Vec<Wanted<Self>> {
        env.hosts.iter().map(|host| desired::server(env, host, rendered)).collect()
    }

    /// Every server of the project.
    async fn list(cloud: &Cloud, _: &str) -> Result<Self::Listing, OpenstackError> {
        let (name, value) = version_header();
        let request = server_list::Request::builder()
            .header(name, value)
            .build()
            .map_err(|e| built("servers", e))?;
        cloud.list::<ServerJson, _>("servers", request).await
    }

    /// The servers, then (only when one changes) the flavors and images
    /// they would be built with.
    async fn observe(
        o: &mut Observer<'_>,
        servers: Self::Listing,
        p: &OpenstackProvider,
        _: &Scope,
    ) -> Result<(), OpenstackError> {
        observe(o, &p.cloud, &servers).await?;
        check_flavors_and_images(p, &o.set, &mut o.index).await
    }

    fn compare(&self, have: &Self) -> Comparison {
        compare(self, have)
    }

    async fn create(
        &self,
        p: &OpenstackProvider,
        r: &str,
        name: &str,
    ) -> Result<(), OpenstackError> {
        create(p, r, name, self).await.map(drop)
    }

    async fn update(
        &self,
        have: &Self,
        p: &OpenstackProvider,
        r: &str,
        name: &str,
    ) -> Result<(), OpenstackError> {
        update(p, r, name, self, have).await
    }

    async fn replace(
        &self,
        _have: &Self,
        p: &OpenstackProvider,
        r: &str,
        name: &str,
    ) -> Result<(), OpenstackError> {
        replace(p, r, name, self).await
    }

    async fn delete(
        &self,
        p: &OpenstackProvider,
        r: &str,
        name: &str,
    ) -> Result<(), OpenstackError> {
        delete(p, r, name).await
    }

    /// Ownership, the user-data hash and the image and role as adopted.
    async fn adopt(
        &self,
        p: &OpenstackProvider,
        r: &str,
        name: &str,
    ) -> Result<(), OpenstackError> {
        use openstack_sdk::api::compute::v2::server::metadata::create as server_metadata;
        let id = super::common::known(p, r, |i| i.servers.get(name).cloned())?;
        let mut metadata: Vec<(String, String)> = super::marks::ownership_metadata(&p.env).into();
        metadata.push((super::USER_DATA_KEY.to_owned(), self.user_data_sha256.clone()));
        // A placeholder such as "(booted from volume)" is no image name.
        if !self.image.starts_with('(') {
            metadata.push((super::IMAGE_KEY.to_owned(), self.image.clone()));
        }
        if let Some(role) = self.role {
            metadata.push((super::ROLE_KEY.to_owned(), role.as_str().to_owned()));
        }
        let request = server_metadata::Request::builder()
            .server_id(id.as_str())
            .metadata(metadata.into_iter())
            .build()
            .map_err(|e| super::client::built(r, e))?;
        p.cloud.execute(r, "mark", request).await
    }

    /// A server whose user data Nova cannot show is taken as booted with
    /// the rendered one (the hash adopt writes), so adopting alone replaces
    /// nothing; the next template change does, as for any server.
    fn adopted(&self, desired: &Self) -> Self {
        let mut adopted = self.clone();
        if adopted.user_data_sha256.is_empty() {
            adopted.user_data_sha256.clone_from(&desired.user_data_sha256);
        }
        adopted.role = desired.role;
        adopted
    }
}
