//! The sections of an environment's inventory, one row each: its file,
//! its raw type (in `raw`), its parsed type and its check (in `validate`,
//! one module per section). From the list come [`INVENTORY_FILES`],
//! [`RawInventory`] (which `load` reads), [`Sections`] (what an
//! [`Environment`](super::Environment) holds, reached through it) and the
//! checking, in row order: a section's check may read the sections above
//! it. A provider's desired state is one row here.

use std::path::Path;

use super::load::{Document, Reader};
use super::validate::{self, SectionCheck};
use super::{raw, Grafana, Host, Influxdb, Keypair, Network, SecurityGroup};

/// `field: "file" => RawType => ParsedType by check`, a section after
/// those its check reads.
macro_rules! sections {
    ($($field:ident: $file:literal => $raw:ty => $parsed:ty, by $check:path;)+) => {
        /// The files an environment's inventory directory may hold.
        pub const INVENTORY_FILES: &[&str] = &[$($file),+];

        /// An environment's inventory, file by file (each optional).
        #[derive(Debug, Clone)]
        pub struct RawInventory {
            $(
                #[doc = concat!("`", $file, "`")]
                pub $field: Document<$raw>,
            )+
        }

        impl RawInventory {
            /// Every inventory file of `dir` (absent ones empty).
            pub(super) fn read(reader: &mut Reader, dir: &Path) -> Self {
                Self { $($field: reader.optional_yaml(dir.join($file)),)+ }
            }
        }

        /// An environment's inventory, checked.
        #[derive(Debug, Clone, Default)]
        pub struct Sections {
            $(
                #[doc = concat!("From `", $file, "`.")]
                pub $field: $parsed,
            )+
        }

        impl Sections {
            /// Checks every section in row order.
            pub(super) fn check(cx: &mut SectionCheck<'_>) -> Self {
                let mut sections = Self::default();
                $(sections.$field = $check(cx, &sections);)+
                sections
            }
        }
    };
}

sections! {
    keypairs: "keypairs.yaml" => raw::KeypairsFile => Vec<Keypair>, by validate::keypairs::check;
    security_groups: "security_groups.yaml" => raw::SecurityGroupsFile => Vec<SecurityGroup>,
        by validate::networks::check_security_groups;
    networks: "networks.yaml" => raw::NetworksFile => Vec<Network>, by validate::networks::check_networks;
    hosts: "hosts.yaml" => raw::HostsFile => Vec<Host>, by validate::hosts::check;
    influxdb: "influxdb.yaml" => raw::InfluxdbFile => Influxdb, by validate::influxdb::check;
    grafana: "grafana.yaml" => raw::GrafanaFile => Grafana, by validate::grafana::check_folders;
    object_storage: "object_storage.yaml" => raw::ObjectStorageFile => Vec<raw::Container>,
        by validate::object_storage::check;
}
