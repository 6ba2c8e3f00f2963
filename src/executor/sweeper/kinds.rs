//! The kinds the sweeper deletes, in the order they must go: what is
//! attached first (servers hold ports, volumes and floating IPs; snapshots
//! hold volumes; routers hold subnets), then what it was attached to.

/// The service types a kind is found under (first match wins).
pub type Services = &'static [&'static str];

/// One kind of leftover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    /// The `kind` tag of its `apimon_sweep` point.
    pub name: &'static str,
    /// Where its API is.
    pub services: Services,
    /// Its list, below the service's (versioned) root; `{project}` is the
    /// token's project.
    pub list: &'static str,
    /// The key of the list in the answer.
    pub key: &'static str,
    /// Its own URL below the root; `{id}` is its id (its name for keypairs).
    pub item: &'static str,
    /// Deleted asynchronously: wait for 404 before the next kind.
    pub wait: bool,
}

const COMPUTE: Services = &["compute"];
const NETWORK: Services = &["network"];
const VOLUME: Services = &["block-storage", "volumev3", "volume"];
const IMAGE: Services = &["image"];

/// Every kind, in deletion order.
pub const KINDS: &[Kind] = &[
    Kind {
        name: "server",
        services: COMPUTE,
        list: "/servers/detail",
        key: "servers",
        item: "/servers/{id}",
        wait: true,
    },
    Kind {
        name: "floating_ip",
        services: NETWORK,
        list: "/v2.0/floatingips?project_id={project}",
        key: "floatingips",
        item: "/v2.0/floatingips/{id}",
        wait: false,
    },
    Kind {
        name: "snapshot",
        services: VOLUME,
        list: "/snapshots/detail",
        key: "snapshots",
        item: "/snapshots/{id}",
        wait: true,
    },
    Kind {
        name: "volume",
        services: VOLUME,
        list: "/volumes/detail",
        key: "volumes",
        item: "/volumes/{id}",
        wait: false,
    },
    Kind {
        name: "router",
        services: NETWORK,
        list: "/v2.0/routers?project_id={project}",
        key: "routers",
        item: "/v2.0/routers/{id}",
        wait: false,
    },
    Kind {
        name: "port",
        services: NETWORK,
        list: "/v2.0/ports?project_id={project}",
        key: "ports",
        item: "/v2.0/ports/{id}",
        wait: false,
    },
    Kind {
        name: "subnet",
        services: NETWORK,
        list: "/v2.0/subnets?project_id={project}",
        key: "subnets",
        item: "/v2.0/subnets/{id}",
        wait: false,
    },
    Kind {
        name: "network",
        services: NETWORK,
        list: "/v2.0/networks?project_id={project}",
        key: "networks",
        item: "/v2.0/networks/{id}",
        wait: false,
    },
    Kind {
        name: "security_group",
        services: NETWORK,
        list: "/v2.0/security-groups?project_id={project}",
        key: "security_groups",
        item: "/v2.0/security-groups/{id}",
        wait: false,
    },
    Kind {
        name: "keypair",
        services: COMPUTE,
        list: "/os-keypairs",
        key: "keypairs",
        item: "/os-keypairs/{id}",
        wait: false,
    },
    Kind {
        name: "image",
        services: IMAGE,
        list: "/v2/images?owner={project}",
        key: "images",
        item: "/v2/images/{id}",
        wait: false,
    },
];

/// The root `kind`'s paths hang below: Neutron's and Glance's catalog
/// entries are often unversioned (their paths carry the version), Nova's
/// and Cinder's are versioned.
pub fn root(kind: &Kind, endpoint: &str) -> String {
    let endpoint = endpoint.trim_end_matches('/');
    let strip = |suffix: &str| endpoint.strip_suffix(suffix).unwrap_or(endpoint).to_owned();
    match kind.services {
        s if s == NETWORK => strip("/v2.0"),
        s if s == IMAGE => strip("/v2"),
        _ => endpoint.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versioned_network_and_image_endpoints_are_not_doubled() {
        let network = KINDS.iter().find(|k| k.name == "network").copied();
        let image = KINDS.iter().find(|k| k.name == "image").copied();
        let (Some(network), Some(image)) = (network, image) else { panic!("kinds") };
        assert_eq!(root(&network, "http://n:9696/v2.0/"), "http://n:9696");
        assert_eq!(root(&network, "http://n:9696"), "http://n:9696");
        assert_eq!(root(&image, "http://g:9292/v2"), "http://g:9292");
    }

    #[test]
    fn servers_go_first_and_what_they_hold_after_them() {
        let order: Vec<&str> = KINDS.iter().map(|k| k.name).collect();
        let at = |name| order.iter().position(|n| *n == name);
        assert!(at("server") < at("port") && at("server") < at("volume"));
        assert!(at("snapshot") < at("volume") && at("router") < at("subnet"));
        assert!(at("port") < at("network") && at("subnet") < at("network"));
    }
}
