//! Nova keypairs. They can carry no marks, so the state store says which
//! ones apimon created; a changed public key replaces the keypair.

use openstack_sdk::api::compute::v2::keypair::{
    create_21 as keypair_create, delete_20 as keypair_delete, get_20 as keypair_get,
    list_20 as keypair_list,
};
use serde::Deserialize;

use super::client::{built, Cloud, OpenstackError};
use super::kind::{Kind, Wanted};
use super::observe::Observer;
use super::{id, OpenstackProvider, OpenstackSpec};
use crate::model::Environment;
use crate::plan::Comparison;
use crate::providers::Scope;
use crate::render::Rendered;

/// A Nova keypair.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Keypair {
    /// OpenSSH public key line.
    pub public_key: String,
}

impl Kind for Keypair {
    const LABEL: &'static str = "keypair";
    type Listing = Vec<KeypairJson>;

    /// Keypairs with a public key; an existing one is only referenced:
    /// nothing to create, ever to delete.
    fn desired(env: &Environment, _: &Rendered) -> Vec<Wanted<Self>> {
        env.keypairs
            .iter()
            .filter_map(|k| Some((k, k.public_key.as_ref()?)))
            .map(|(keypair, key)| {
                let spec = Keypair { public_key: key.line().to_owned() };
                (id(&env.name, "keypair", &keypair.name), spec, vec![])
            })
            .collect()
    }

    /// Every keypair of the user.
    async fn list(cloud: &Cloud, _: &str) -> Result<Vec<KeypairJson>, OpenstackError> {
        let request = keypair_list::Request::builder().build().map_err(|e| built("keypairs", e))?;
        cloud.list_unpaged("keypairs", request).await
    }

    /// The keypairs apimon created (the state store says which) or the
    /// repository declares.
    async fn observe(
        o: &mut Observer<'_>,
        keypairs: Vec<KeypairJson>,
        _: &OpenstackProvider,
        scope: &Scope,
    ) -> Result<(), OpenstackError> {
        for keypair in keypairs {
            let keypair_id = id(o.env, "keypair", &keypair.name);
            let owned = scope.owned.contains(&keypair_id);
            if owned || o.wants("keypair", &keypair.name) {
                let spec = OpenstackSpec::Keypair(Keypair {
                    public_key: keypair.public_key.trim().to_owned(),
                });
                o.insert(keypair_id, spec, owned, vec![]);
            }
        }
        Ok(())
    }

    fn compare(&self, have: &Self) -> Comparison {
        compare(&self.public_key, &have.public_key)
    }

    async fn create(
        &self,
        p: &OpenstackProvider,
        r: &str,
        name: &str,
    ) -> Result<(), OpenstackError> {
        create(p, r, name, &self.public_key).await
    }

    async fn delete(
        &self,
        p: &OpenstackProvider,
        r: &str,
        name: &str,
    ) -> Result<(), OpenstackError> {
        delete(p, r, name).await
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct KeypairJson {
    name: String,
    #[serde(default)]
    public_key: String,
}

/// A changed key cannot be changed in place.
pub(super) fn compare(want: &str, have: &str) -> Comparison {
    if want == have {
        Comparison::Same
    } else {
        Comparison::Replace("public key changed (keypairs cannot change in place)".to_owned())
    }
}

pub(super) async fn create(
    p: &OpenstackProvider,
    r: &str,
    name: &str,
    public_key: &str,
) -> Result<(), OpenstackError> {
    let body = keypair_create::KeypairBuilder::default()
        .name(name)
        .public_key(public_key)
        .build()
        .map_err(|e| built(r, e))?;
    let request =
        keypair_create::Request::builder().keypair(body).build().map_err(|e| built(r, e))?;
    match p.cloud.execute(r, "create", request).await {
        // A retry after a lost answer: fine if the key is the one we sent.
        Err(error) if error.is_conflict() => {
            #[derive(Deserialize)]
            struct Existing {
                public_key: String,
            }
            let request =
                keypair_get::Request::builder().id(name).build().map_err(|e| built(r, e))?;
            let existing: Existing = p.cloud.query(r, "read", request).await?;
            if existing.public_key.trim() == public_key.trim() {
                Ok(())
            } else {
                Err(error)
            }
        }
        other => other,
    }
}

pub(super) async fn delete(
    p: &OpenstackProvider,
    r: &str,
    name: &str,
) -> Result<(), OpenstackError> {
    delete_by_id!(p, r, keypair_delete, name)
}
