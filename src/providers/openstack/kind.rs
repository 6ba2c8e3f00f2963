//! The contract every OpenStack resource kind implements ([`Kind`]), and
//! [`kinds!`], the one list of kinds: from it come [`OpenstackSpec`]
//! (one variant per kind), the desired set, the observation (every kind's
//! list call at once, then each kind's reading in row order) and the
//! dispatch of compare, labels and every verb. A kind is one file (its
//! spec, what the environment asks of it, its API structs, list call,
//! observation, verbs and `impl Kind`), one `mod` line and one row in
//! `kinds!` (in `mod.rs`).
//!
//! [`OpenstackSpec`]: super::OpenstackSpec

use super::client::{Cloud, OpenstackError};
use super::observe::Observer;
use super::{Index, OpenstackProvider};
use crate::model::Environment;
use crate::plan::{Comparison, ResourceId};
use crate::providers::Scope;
use crate::render::Rendered;

/// One resource an environment asks for: its id, its spec, what it needs first.
pub(crate) type Wanted<S> = (ResourceId, S, Vec<ResourceId>);

/// One resource kind: how a declared one compares with an observed one,
/// and how it is created, changed, replaced, deleted and adopted.
/// `r` is the resource as errors name it, `name` its name.
pub(crate) trait Kind: Clone + PartialEq {
    /// How errors name it (`keypair`, `floating IP of host`).
    const LABEL: &'static str;

    /// What this kind's list call returns: `()` for a kind whose parent's
    /// list brings it in (security group rules, volume attachments).
    type Listing: Send;

    /// What `env` asks for of this kind.
    fn desired(env: &Environment, rendered: &Rendered) -> Vec<Wanted<Self>>;

    /// Its one list call; every kind's runs at once.
    async fn list(cloud: &Cloud, project: &str) -> Result<Self::Listing, OpenstackError>;

    /// Records what the listing holds. Kinds are read in `kinds!` order,
    /// so one may use the names an earlier kind recorded in `o`.
    async fn observe(
        o: &mut Observer<'_>,
        listing: Self::Listing,
        p: &OpenstackProvider,
        scope: &Scope,
    ) -> Result<(), OpenstackError>;

    /// What differs, and whether in place.
    fn compare(&self, have: &Self) -> Comparison;

    /// Whether the index knows a resource of this name that observation
    /// did not report: made by an earlier try whose answer was lost.
    fn made_already(_index: &Index, _name: &str) -> bool {
        false
    }

    /// Creates it.
    async fn create(
        &self,
        p: &OpenstackProvider,
        r: &str,
        name: &str,
    ) -> Result<(), OpenstackError>;

    /// Changes `have` into `self` in place.
    async fn update(
        &self,
        _have: &Self,
        _p: &OpenstackProvider,
        r: &str,
        _name: &str,
    ) -> Result<(), OpenstackError> {
        Err(OpenstackError::Failed {
            resource: r.to_owned(),
            message: "cannot be changed in place".to_owned(),
        })
    }

    /// Replaces `have` with `self`: deleted, then created.
    async fn replace(
        &self,
        have: &Self,
        p: &OpenstackProvider,
        r: &str,
        name: &str,
    ) -> Result<(), OpenstackError> {
        have.delete(p, r, name).await?;
        self.create(p, r, name).await
    }

    /// Deletes it.
    async fn delete(
        &self,
        p: &OpenstackProvider,
        r: &str,
        name: &str,
    ) -> Result<(), OpenstackError>;

    /// Adds apimon's marks to it (`apimon adopt`); nothing for kinds that
    /// carry none or follow their parent.
    async fn adopt(
        &self,
        _p: &OpenstackProvider,
        _r: &str,
        _name: &str,
    ) -> Result<(), OpenstackError> {
        Ok(())
    }

    /// How it reads back once adopted as `desired` (default: as observed).
    fn adopted(&self, _desired: &Self) -> Self {
        self.clone()
    }
}

/// The listing half of [`Kind`] for a kind whose parent's list brings it
/// in (security group rules, volume attachments): nothing to list, nothing
/// to read.
macro_rules! listed_by_parent {
    () => {
        type Listing = ();

        async fn list(
            _: &super::client::Cloud,
            _: &str,
        ) -> Result<(), super::client::OpenstackError> {
            Ok(())
        }

        async fn observe(
            _: &mut super::observe::Observer<'_>,
            _: (),
            _: &super::OpenstackProvider,
            _: &crate::providers::Scope,
        ) -> Result<(), super::client::OpenstackError> {
            Ok(())
        }
    };
}

/// The one list of kinds: `Variant(SpecType)`, in the order they are
/// observed (a kind after those whose names it uses). Generates
/// `OpenstackSpec`, `desired`, the observation and the dispatch.
macro_rules! kinds {
    ($($variant:ident($spec:ty)),+ $(,)?) => {
        /// What the environment asks of OpenStack, kind by kind.
        pub fn desired(
            env: &$crate::model::Environment,
            rendered: &$crate::render::Rendered,
        ) -> DesiredSet<OpenstackSpec> {
            let mut set = DesiredSet::new();
            $(
                for (id, spec, depends_on) in <$spec as kind::Kind>::desired(env, rendered) {
                    set.insert(id, $crate::plan::DesiredItem::new(OpenstackSpec::$variant(spec), depends_on));
                }
            )+
            set
        }

        /// Every kind's list call at once, then each kind's reading in row order.
        #[allow(non_snake_case)]
        async fn observe_kinds(
            p: &OpenstackProvider,
            o: &mut observe::Observer<'_>,
            scope: &Scope,
        ) -> Result<(), OpenstackError> {
            let project = o.project;
            let ($($variant,)+) = tokio::try_join!(
                $(<$spec as kind::Kind>::list(&p.cloud, project)),+
            )?;
            $(<$spec as kind::Kind>::observe(o, $variant, p, scope).await?;)+
            Ok(())
        }

        /// One OpenStack resource: one variant per [`Kind`](kind::Kind).
        #[derive(Debug, Clone, PartialEq, Eq, Serialize)]
        #[serde(tag = "kind", rename_all = "snake_case")]
        pub enum OpenstackSpec {
            $(
                #[doc = concat!("A `", stringify!($variant), "`.")]
                $variant($spec),
            )+
        }

        impl Spec for OpenstackSpec {
            fn compare(&self, observed: &Self) -> Comparison {
                match (self, observed) {
                    $((Self::$variant(want), Self::$variant(have)) => kind::Kind::compare(want, have),)+
                    _ => Comparison::Replace("resource kind changed".to_owned()),
                }
            }
        }

        impl OpenstackSpec {
            /// How errors name the resource `name`.
            pub(crate) fn label(&self, name: &str) -> String {
                let kind = match self {
                    $(Self::$variant(_) => <$spec as kind::Kind>::LABEL,)+
                };
                format!("{kind} {name}")
            }

            fn made_already(&self, index: &Index, name: &str) -> bool {
                match self {
                    $(Self::$variant(_) => <$spec as kind::Kind>::made_already(index, name),)+
                }
            }

            async fn create(&self, p: &OpenstackProvider, name: &str) -> Result<(), OpenstackError> {
                // Observation found none of this name, so an id the index
                // knows comes from an earlier try whose answer was lost
                // after the resource was made and marked: it exists, done.
                if p.with_index(|i| self.made_already(i, name)) {
                    return Ok(());
                }
                let r = self.label(name);
                match self {
                    $(Self::$variant(spec) => kind::Kind::create(spec, p, &r, name).await,)+
                }
            }

            async fn update(&self, have: &Self, p: &OpenstackProvider, name: &str) -> Result<(), OpenstackError> {
                let r = self.label(name);
                match (self, have) {
                    $((Self::$variant(want), Self::$variant(have)) => kind::Kind::update(want, have, p, &r, name).await,)+
                    _ => Err(OpenstackError::Failed { resource: r, message: "cannot be changed in place".to_owned() }),
                }
            }

            async fn replace(&self, have: &Self, p: &OpenstackProvider, name: &str) -> Result<(), OpenstackError> {
                let r = self.label(name);
                match (self, have) {
                    $((Self::$variant(want), Self::$variant(have)) => kind::Kind::replace(want, have, p, &r, name).await,)+
                    _ => {
                        have.delete(p, name).await?;
                        self.create(p, name).await
                    }
                }
            }

            async fn delete(&self, p: &OpenstackProvider, name: &str) -> Result<(), OpenstackError> {
                let r = self.label(name);
                match self {
                    $(Self::$variant(spec) => kind::Kind::delete(spec, p, &r, name).await,)+
                }
            }

            async fn adopt(&self, p: &OpenstackProvider, r: &str, name: &str) -> Result<(), OpenstackError> {
                match self {
                    $(Self::$variant(spec) => kind::Kind::adopt(spec, p, r, name).await,)+
                }
            }

            fn adopted(&self, desired: &Self) -> Self {
                match (self, desired) {
                    $((Self::$variant(have), Self::$variant(want)) => Self::$variant(kind::Kind::adopted(have, want)),)+
                    _ => self.clone(),
                }
            }
        }
    };
}
