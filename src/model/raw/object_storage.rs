//! `inventory/<env>/object_storage.yaml`: Swift containers apimon creates
//! and keeps in the environment's cloud project (job logs go to one).

use serde::Deserialize;

/// `inventory/<env>/object_storage.yaml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectStorageFile {
    /// Containers.
    #[serde(default)]
    pub containers: Vec<Container>,
}

/// A Swift container.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Container {
    /// Name: 1 to 63 of letters, digits, `-`, `_` and `.`, not starting with `.`.
    pub name: String,
    /// Anyone may read its objects (and list them) without a token
    /// (`X-Container-Read: .r:*,.rlistings`). Off by default.
    #[serde(default)]
    pub public: bool,
}
