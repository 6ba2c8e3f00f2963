//! Reading what exists: one list call per kind (keypairs, servers, images of
//! those servers, security groups with their rules, networks, subnets,
//! routers and their interfaces, floating IPs, volumes with their
//! attachments), all at once, never a GET per resource. Each kind's module
//! turns its list into observed resources.
//!
//! What is observed: everything tagged (Neutron) or labelled in metadata
//! (Nova, Cinder) `apimon:managed=true` + `apimon:env=<env>` — owned — and
//! anything else whose name the repository declares — not owned, so it is
//! compared but never deleted. Keypairs carry neither, so the state store
//! says which ones apimon created.

use std::collections::{BTreeMap, BTreeSet};

use super::client::OpenstackError;
use super::marks::oldest_first;
use super::{
    floating_ip, id, keypair, network, router, security_group, server, volume, Index,
    OpenstackProvider, OpenstackSpec,
};
use crate::plan::{ObservedItem, ObservedSet, ResourceId};
use crate::providers::Scope;

/// One observation in the making: what was found, the name → id index for
/// apply, and the names given to Neutron and Nova ids (twins renamed) that
/// later kinds refer to.
pub(super) struct Observer<'a> {
    pub env: &'a str,
    pub project: &'a str,
    wanted: &'a BTreeSet<ResourceId>,
    pub set: ObservedSet<OpenstackSpec>,
    pub index: Index,
    /// Network id → name.
    pub network_names: BTreeMap<String, String>,
    /// Subnet id → name.
    pub subnet_names: BTreeMap<String, String>,
    /// Network name → its subnets.
    pub subnets_of: BTreeMap<String, Vec<ResourceId>>,
    /// Server id → name.
    pub server_names: BTreeMap<String, String>,
}

impl Observer<'_> {
    /// Whether the repository declares `kind` `name`.
    pub fn wants(&self, kind: &'static str, name: &str) -> bool {
        self.wanted.contains(&id(self.env, kind, name))
    }

    /// Records a resource; whether it was kept. Two resources of one name
    /// (Neutron and Nova allow it): the owned one counts, else the first.
    /// The index follows what is kept, so apply acts on what was planned.
    pub fn insert(
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
    let project = cloud.project_id().await?;
    let project = project.as_str();
    // Independent list calls, all at once.
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
        keypair::list(cloud),
        server::list(cloud),
        security_group::list(cloud, project),
        network::list_networks(cloud),
        network::list_subnets(cloud, project),
        floating_ip::list(cloud, project),
        volume::list(cloud),
        router::list_routers(cloud, project),
        router::list_interfaces(cloud, project),
    )?;
    // Oldest first, so the same resource keeps a name from one plan to the next.
    oldest_first(&mut groups, |g| (&g.created_at, &g.id));
    oldest_first(&mut networks, |n| (&n.created_at, &n.id));
    oldest_first(&mut subnets, |n| (&n.created_at, &n.id));
    oldest_first(&mut routers, |r| (&r.created_at, &r.id));
    oldest_first(&mut volumes, |v| (&v.created_at, &v.id));

    let mut o = Observer {
        env: provider.env.as_str(),
        project,
        wanted: &provider.wanted,
        set: ObservedSet::new(),
        index: Index::default(),
        network_names: BTreeMap::new(),
        subnet_names: BTreeMap::new(),
        subnets_of: BTreeMap::new(),
        server_names: BTreeMap::new(),
    };
    // Servers, volumes and Neutron resources carry their own ownership
    // marks, which a hand-made look-alike lacks; the state store speaks only
    // for keypairs, which can carry none.
    keypair::observe(&mut o, keypairs, scope);
    network::observe_networks(&mut o, &networks)?;
    network::observe_subnets(&mut o, subnets)?;
    router::observe_routers(&mut o, routers, &interfaces)?;
    security_group::observe(&mut o, &groups)?;
    server::observe(&mut o, cloud, &servers).await?;
    volume::observe(&mut o, volumes)?;
    floating_ip::observe(&mut o, floating_ips)?;
    let Observer { set, mut index, .. } = o;
    server::check_flavors_and_images(provider, &set, &mut index).await?;
    provider.with_index(|current| *current = index);
    Ok(set)
}
