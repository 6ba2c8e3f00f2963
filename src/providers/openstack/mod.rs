//! OpenStack: keypairs, security groups and rules, networks and subnets,
//! servers, volumes and their attachments, routers, floating IPs, Swift
//! containers.
//!
//! One file per resource kind (terraform-provider-openstack's layout):
//! [`keypair`], [`security_group`] (and rules), [`network`] (networks,
//! subnets), [`router`], [`server`], [`volume`] (and attachments),
//! [`floating_ip`], [`container`], each with what the environment asks of
//! it, its API structs, its list call and observation, its compare and its
//! `impl Kind` ([`kind`]). This module holds the one list of kinds
//! (`kinds!`, which generates [`OpenstackSpec`], the desired set, the
//! observation and the dispatch); [`client`] the session (through
//! `openstack_sdk`), [`observe`] what one observation gathers, and
//! [`wait`] the one polling helper.
//!
//! Ownership: servers, volumes and containers carry metadata, Neutron
//! resources tags, `apimon:managed=true` and `apimon:env=<env>`; keypairs
//! can carry neither, so the state store records the ones apimon created.
//! Only owned resources are ever deleted or replaced.

#[macro_use]
mod common;
#[macro_use]
mod kind;
mod adopt;
mod apply;
pub mod client;
mod container;
mod floating_ip;
mod keypair;
mod locate;
pub mod marks;
mod network;
mod observe;
mod router;
mod security_group;
mod server;
mod shared_lists;
mod volume;
mod wait;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

use crate::model::Environment;
use crate::plan::{
    Comparison, DesiredSet, ItemChange, ObservedSet, Planned, ProviderKind, ResourceId, Spec,
};
use crate::providers::{
    failure_kind, Availability, Context, FailureKind, Model, Ownership, Provider, Scope,
};

use self::client::{Cloud, OpenstackError};
pub use floating_ip::FloatingIp;
pub use keypair::Keypair;
pub use marks::{ENV_KEY, MANAGED_KEY};
pub use network::{Network, Subnet};
pub use router::Router;
pub use security_group::rule_name;
pub use security_group::{SecurityGroup, SecurityGroupRule};
pub use server::ServerSpec;
pub use volume::{Volume, VolumeAttachment};

/// Server metadata key holding the image name the server was booted with:
/// what a plan compares, so a cloud that renames or retires an image (image
/// rotation) does not make every server look replaced.
pub const IMAGE_KEY: &str = "apimon:image";
/// Server metadata key listing the operator's keys apimon set (comma
/// separated): only those are compared and removed, so keys the platform
/// adds to servers never show up as a diff.
pub const METADATA_KEYS_KEY: &str = "apimon:metadata_keys";
/// Server metadata key holding the size in GiB of the root volume a server
/// was booted from (Nova does not show it without a request per volume).
pub const ROOT_VOLUME_KEY: &str = "apimon:root_volume_gb";
/// Server metadata key naming the role of the host a server serves.
pub const ROLE_KEY: &str = "apimon:role";
/// Server metadata key holding the sha256 of the user data (Nova cannot
/// return user data, so a change is detected through this hash).
pub const USER_DATA_KEY: &str = "apimon:user_data_sha256";

kinds! {
    Keypair(keypair::Keypair),
    SecurityGroup(security_group::SecurityGroup),
    SecurityGroupRule(security_group::SecurityGroupRule),
    Network(network::Network),
    Subnet(network::Subnet),
    Server(server::ServerSpec),
    Volume(volume::Volume),
    VolumeAttachment(volume::VolumeAttachment),
    Router(router::Router),
    FloatingIp(floating_ip::FloatingIp),
    Container(container::Container),
}

/// The provider's name in resource ids.
pub const KIND: ProviderKind = ProviderKind::named("openstack");

pub(crate) fn id(env: &str, kind: &'static str, name: impl Into<String>) -> ResourceId {
    ResourceId::new(env, KIND, kind, name)
}

/// Id of the server for `host`, which other providers depend on.
pub fn server_id(env: &str, host: &str) -> ResourceId {
    id(env, "server", host)
}

/// Id of the floating IP of `host`, through which apimon reaches the
/// jump host when the repository gives no address for it.
pub fn floating_ip_id(env: &str, host: &str) -> ResourceId {
    id(env, "floating_ip", host)
}

/// Whether destroying `id` would cut access to `host` of `env`: its server
/// and floating IP, its security groups and their rules, its networks and
/// subnets, and the environment's router. The daemon on `host` never
/// applies such a change to itself.
pub fn cuts_access_to(env: &Environment, host: &crate::model::Host, id: &ResourceId) -> bool {
    if *id.env != *env.name || id.provider != KIND {
        return false;
    }
    let name: &str = &id.name;
    match &*id.kind {
        "server" | "floating_ip" => name == host.name,
        "security_group" => host.security_groups.iter().any(|g| g == name),
        "security_group_rule" => host
            .security_groups
            .iter()
            .any(|g| name.strip_prefix(g.as_str()).is_some_and(|rest| rest.starts_with(':'))),
        "network" => host.networks.iter().any(|n| *n == name),
        "subnet" => env
            .networks
            .iter()
            .filter(|n| host.networks.contains(&n.name))
            .any(|n| n.subnets.iter().any(|s| s.name == name)),
        "router" => name == router_name(&env.name),
        _ => false,
    }
}

/// Names → ids learned while observing and applying, so apply needs no
/// lookups for what observe already saw.
#[derive(Debug, Default)]
pub(crate) struct Index {
    pub security_groups: BTreeMap<String, String>,
    /// Rule name (see [`rule_name`]) → rule id.
    pub rules: BTreeMap<String, String>,
    pub networks: BTreeMap<String, String>,
    pub external_networks: BTreeMap<String, String>,
    pub subnets: BTreeMap<String, String>,
    pub servers: BTreeMap<String, String>,
    pub volumes: BTreeMap<String, String>,
    pub routers: BTreeMap<String, String>,
    /// (router id, subnet name) of each router interface.
    pub router_interfaces: BTreeSet<(String, String)>,
    /// Host name → floating IP id.
    pub floating_ips: BTreeMap<String, String>,
    /// Server name → names of the volumes attached to it.
    pub attached: BTreeMap<String, Vec<String>>,
    pub flavors: BTreeMap<String, String>,
    pub images: BTreeMap<String, String>,
}

/// How long apply waits for servers and volumes to settle.
#[derive(Debug, Clone, Copy)]
pub struct WaitOptions {
    /// A server reaching ACTIVE (or being gone after a delete).
    pub server_timeout: Duration,
    /// A volume reaching `available` or `in-use`.
    pub volume_timeout: Duration,
    /// Between two looks.
    pub poll_interval: Duration,
}

impl Default for WaitOptions {
    fn default() -> Self {
        Self {
            server_timeout: Duration::from_secs(600),
            volume_timeout: Duration::from_secs(300),
            poll_interval: Duration::from_secs(1),
        }
    }
}

/// The OpenStack provider of one environment.
#[derive(Debug)]
pub struct OpenstackProvider {
    env: String,
    cloud: Cloud,
    /// Ids of the resources the repository declares in this environment:
    /// existing resources of these names are observed even when not owned.
    wanted: BTreeSet<ResourceId>,
    /// The declared servers by name: the flavor and image of those a plan
    /// would create, replace or resize are checked against the cloud.
    servers: BTreeMap<String, ServerSpec>,
    index: Mutex<Index>,
    wait: WaitOptions,
}

impl OpenstackProvider {
    /// The provider for environment `env` managed with clouds.yaml entry
    /// `cloud` (in `clouds_file`, else the standard places); `Ok(None)`
    /// when no clouds.yaml has it.
    ///
    /// # Errors
    /// clouds.yaml exists but cannot be read.
    pub fn open(
        env: &str,
        cloud: &str,
        desired: &DesiredSet<OpenstackSpec>,
        clouds_file: Option<&Path>,
    ) -> Result<Option<Self>, OpenstackError> {
        let Some(config) = client::cloud_config(cloud, clouds_file)? else {
            return Ok(None);
        };
        let wanted = desired.keys().filter(|id| *id.env == *env).cloned().collect();
        let servers = desired
            .iter()
            .filter(|(id, _)| *id.env == *env)
            .filter_map(|(id, item)| match &item.spec {
                OpenstackSpec::Server(spec) => Some((id.name.to_string(), spec.clone())),
                _ => None,
            })
            .collect();
        Ok(Some(Self {
            env: env.to_owned(),
            cloud: Cloud::new(cloud, config),
            wanted,
            servers,
            index: Mutex::new(Index::default()),
            wait: WaitOptions::default(),
        }))
    }

    /// Runs `f` on the index (a poisoned lock is recovered: the index is a cache).
    fn with_index<T>(&self, f: impl FnOnce(&mut Index) -> T) -> T {
        let mut guard = self.index.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut guard)
    }
}

impl Provider for OpenstackProvider {
    const KIND: ProviderKind = KIND;
    const OWNERSHIP: Ownership = Ownership::Marks;
    type Spec = OpenstackSpec;
    type Error = OpenstackError;

    fn desired(model: &Model<'_>, env: &Environment) -> DesiredSet<OpenstackSpec> {
        desired(env, model.rendered)
    }

    fn connect(
        context: &Context<'_>,
        env: &Environment,
        desired: &DesiredSet<OpenstackSpec>,
    ) -> Result<Availability<Self>, OpenstackError> {
        let clouds_file = context.machine.clouds_file.as_deref();
        Ok(match Self::open(&env.name, &env.cloud, desired, clouds_file)? {
            Some(provider) => Availability::Available(provider),
            None => Availability::Unavailable(format!(
                "cloud `{}` is in no clouds.yaml: pass --clouds-file or set OS_CLIENT_CONFIG_FILE",
                env.cloud
            )),
        })
    }

    /// API requests sent so far (after authentication).
    fn requests(&self) -> usize {
        self.cloud.requests()
    }

    /// Servers' floating IPs and fixed addresses, asked when needed.
    fn locator(
        provider: &std::sync::Arc<Self>,
    ) -> Option<std::sync::Arc<dyn crate::providers::locate::Locate>> {
        Some(std::sync::Arc::clone(provider) as _)
    }

    async fn observe(&self, scope: &Scope) -> Result<ObservedSet<OpenstackSpec>, OpenstackError> {
        observe::observe(self, scope).await
    }

    async fn apply(
        &self,
        change: &Planned<ItemChange<OpenstackSpec>>,
    ) -> Result<(), OpenstackError> {
        apply::apply(self, change).await
    }

    fn classify(error: &OpenstackError) -> FailureKind {
        failure_kind(error.is_transient())
    }

    fn endangers(
        own: &super::OwnHost<'_>,
        id: &ResourceId,
        _deleted: &std::collections::BTreeSet<ResourceId>,
    ) -> bool {
        cuts_access_to(own.env, own.host, id)
    }

    fn follows_owner(id: &ResourceId) -> bool {
        // Rules carry no marks: they are the group's; attachments the volume's.
        matches!(&*id.kind, "security_group_rule" | "volume_attachment")
    }

    fn adopted(observed: &OpenstackSpec, desired: &OpenstackSpec) -> OpenstackSpec {
        adopt::adopted(observed, desired)
    }

    async fn adopt(
        &self,
        change: &Planned<ItemChange<OpenstackSpec>>,
    ) -> Result<(), OpenstackError> {
        adopt::adopt(self, change).await
    }

    fn describe(name: &str, spec: &OpenstackSpec) -> Option<(&'static str, String)> {
        match spec {
            OpenstackSpec::Server(server) => Some((
                "server",
                match server.role {
                    Some(role) => format!("{name} ({})", role.as_str()),
                    None => name.to_owned(),
                },
            )),
            OpenstackSpec::Volume(_) => Some(("volume", name.to_owned())),
            _ => None,
        }
    }
}

/// The environment's router: `<env>-router`.
pub fn router_name(env: &str) -> String {
    format!("{env}-router")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> ServerSpec {
        ServerSpec {
            flavor: "s3.medium.2".into(),
            image: "Ubuntu 24.04".into(),
            keypair: "k".into(),
            availability_zone: None,
            networks: vec!["net".into()],
            address: Some("192.168.10.5".into()),
            security_groups: BTreeSet::from(["ssh".to_owned()]),
            metadata: BTreeMap::from([("team".to_owned(), "apimon".to_owned())]),
            user_data_sha256: "aaa".into(),
            user_data: String::new(),
            error: None,
            resize: false,
            resize_pending: false,
            building: false,
            role: None,
            root_volume_gb: None,
        }
    }

    #[test]
    fn server_rules_table() {
        let base = server();
        let cases: Vec<(&str, ServerSpec, Comparison)> = vec![
            ("same", base.clone(), Comparison::Same),
            (
                "metadata in place",
                ServerSpec {
                    metadata: BTreeMap::from([("team".into(), "ops".into())]),
                    ..base.clone()
                },
                Comparison::Update(vec!["metadata changed (team)".into()]),
            ),
            (
                "groups in place",
                ServerSpec { security_groups: BTreeSet::new(), ..base.clone() },
                Comparison::Update(vec!["security groups changed".into()]),
            ),
            (
                "no groups means Nova's default",
                ServerSpec { security_groups: BTreeSet::from(["default".into()]), ..base.clone() },
                Comparison::Update(vec!["security groups changed".into()]),
            ),
            (
                "user data replaces",
                ServerSpec { user_data_sha256: "bbb".into(), ..base.clone() },
                Comparison::Replace("user data changed (template cloud-init.yaml.hbs)".into()),
            ),
            (
                "image replaces",
                ServerSpec { image: "Debian 12".into(), ..base.clone() },
                Comparison::Replace("image Ubuntu 24.04 → Debian 12".into()),
            ),
            (
                "flavor replaces",
                ServerSpec { flavor: "s3.large.2".into(), ..base.clone() },
                Comparison::Replace("flavor s3.medium.2 → s3.large.2".into()),
            ),
            (
                "a root volume replaces",
                ServerSpec { root_volume_gb: Some(20), ..base.clone() },
                Comparison::Replace("root disk the flavor's disk → a 20 GiB volume".into()),
            ),
            (
                "flavor resizes when allowed",
                ServerSpec { flavor: "s3.large.2".into(), resize: true, ..base.clone() },
                Comparison::Update(vec!["resize s3.medium.2 → s3.large.2".into()]),
            ),
        ];
        for (name, want, expected) in cases {
            assert_eq!(
                OpenstackSpec::Server(want).compare(&OpenstackSpec::Server(base.clone())),
                expected,
                "{name}"
            );
        }
    }

    #[test]
    fn a_server_in_error_is_replaced_whatever_else_matches() {
        let broken = ServerSpec { error: Some("No valid host was found.".into()), ..server() };
        assert_eq!(
            OpenstackSpec::Server(server()).compare(&OpenstackSpec::Server(broken)),
            Comparison::Replace("server is in ERROR (No valid host was found.)".into())
        );
    }

    #[test]
    fn a_pending_resize_is_confirmed_in_place() {
        let pending = ServerSpec { resize_pending: true, ..server() };
        assert_eq!(
            OpenstackSpec::Server(server()).compare(&OpenstackSpec::Server(pending)),
            Comparison::Update(vec!["confirm the pending resize".into()])
        );
    }

    #[test]
    fn volumes_grow_in_place_but_never_shrink_in_place() {
        let have = OpenstackSpec::Volume(Volume { size_gb: 50, volume_type: None, error: None });
        let grow = OpenstackSpec::Volume(Volume { size_gb: 80, volume_type: None, error: None });
        let shrink = OpenstackSpec::Volume(Volume { size_gb: 20, volume_type: None, error: None });
        assert!(matches!(grow.compare(&have), Comparison::Update(_)));
        assert!(matches!(shrink.compare(&have), Comparison::Replace(_)));
        let failed = OpenstackSpec::Volume(Volume {
            size_gb: 50,
            volume_type: None,
            error: Some("error".into()),
        });
        assert_eq!(
            OpenstackSpec::Volume(Volume { size_gb: 50, volume_type: None, error: None })
                .compare(&failed),
            Comparison::Replace("volume is in error".into())
        );
    }

    #[test]
    fn routers_and_attachments_compare_on_what_matters() {
        let router = |net: &str, subnets: &[&str]| {
            OpenstackSpec::Router(Router {
                external_network: net.into(),
                subnets: subnets.iter().map(|s| (*s).to_owned()).collect(),
            })
        };
        assert_eq!(router("ext", &["a"]).compare(&router("ext", &["a"])), Comparison::Same);
        assert!(matches!(
            router("ext", &["a", "b"]).compare(&router("ext", &["a"])),
            Comparison::Update(_)
        ));
        assert!(matches!(
            router("ext2", &["a"]).compare(&router("ext", &["a"])),
            Comparison::Replace(_)
        ));
        let attachment = |server: &str, device: Option<&str>| {
            OpenstackSpec::VolumeAttachment(VolumeAttachment {
                server: server.into(),
                volume: "v".into(),
                device: device.map(Into::into),
            })
        };
        assert_eq!(
            attachment("s", Some("/dev/vdb")).compare(&attachment("s", Some("/dev/vdc"))),
            Comparison::Same,
            "the device is only a hint"
        );
        assert!(matches!(
            attachment("t", None).compare(&attachment("s", None)),
            Comparison::Replace(_)
        ));
    }
}
