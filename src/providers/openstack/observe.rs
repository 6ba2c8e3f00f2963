//! Reading what exists: one list call per kind (keypairs, servers, images of
//! those servers, security groups with their rules, networks, subnets,
//! routers and their interfaces, floating IPs, volumes with their
//! attachments), all at once, never a GET per resource (`kinds!` runs
//! them). Each kind's module turns its list into observed resources,
//! recording here the names later kinds refer to.
//!
//! What is observed: everything tagged (Neutron) or labelled in metadata
//! (Nova, Cinder) `apimon:managed=true` + `apimon:env=<env>` — owned — and
//! anything else whose name the repository declares — not owned, so it is
//! compared but never deleted. Keypairs carry neither, so the state store
//! says which ones apimon created.

use std::collections::{BTreeMap, BTreeSet};

use super::client::OpenstackError;
use super::{id, observe_kinds, Index, OpenstackProvider, OpenstackSpec};
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
    let project = provider.cloud.project_id().await?;
    let mut o = Observer {
        env: provider.env.as_str(),
        project: project.as_str(),
        wanted: &provider.wanted,
        set: ObservedSet::new(),
        index: Index::default(),
        network_names: BTreeMap::new(),
        subnet_names: BTreeMap::new(),
        subnets_of: BTreeMap::new(),
        server_names: BTreeMap::new(),
    };
    // The pass's lists are shared with the environments of the same
    // credentials (one cloud project): one list per kind per pass.
    provider.cloud.observing(scope.pass);
    let read = observe_kinds(provider, &mut o, scope).await;
    provider.cloud.observed();
    read?;
    let Observer { set, index, .. } = o;
    provider.with_index(|current| *current = index);
    Ok(set)
}
