//! Addresses the repository leaves to the cloud: the bastion's floating IP
//! when `ssh.bastion_address` is not set, a host's fixed address when its
//! `address` is not. A provider that can answer (OpenStack) offers a
//! [`Locate`]; the ones that connect to hosts ask it, when they connect,
//! so an address the same apply just created is found. Nothing is written
//! back to the repository.

use std::collections::BTreeMap;
use std::sync::Arc;

/// Which of a server's addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Which {
    /// Its floating IP (from outside the environment's networks).
    Floating,
    /// Its fixed IPv4 address on its first network (from inside).
    Fixed,
    /// Not an address: the availability zone Nova put it in (an
    /// executor's `zone` tag).
    Zone,
}

impl Which {
    /// For messages: `floating IP`, `fixed address`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Floating => "floating IP",
            Self::Fixed => "fixed address",
            Self::Zone => "availability zone",
        }
    }
}

/// The cloud could not say.
#[derive(Debug, thiserror::Error)]
pub enum LocateError {
    /// The server does not exist (yet).
    #[error("server {server} does not exist (yet), so it has no {}", which.label())]
    NoServer {
        /// Server name.
        server: String,
        /// Which address.
        which: Which,
    },
    /// The server exists without such an address (yet).
    #[error("server {server} has no {} (yet)", which.label())]
    NoAddress {
        /// Server name.
        server: String,
        /// Which address.
        which: Which,
    },
    /// Asking the cloud failed.
    #[error("cannot ask the cloud for the {} of server {server}: {message}", which.label())]
    Cloud {
        /// Server name.
        server: String,
        /// Which address.
        which: Which,
        /// Why.
        message: String,
    },
}

/// What tells apimon where a server is.
#[async_trait::async_trait]
pub trait Locate: Send + Sync + std::fmt::Debug {
    /// `server`'s address of the kind `which`, as the cloud has it now.
    ///
    /// # Errors
    /// No such server or address, or the cloud cannot be asked.
    async fn address(&self, server: &str, which: Which) -> Result<String, LocateError>;
}

/// The locators of the environments, by environment name.
pub type Locators = BTreeMap<String, Arc<dyn Locate>>;

/// An address: the one the repository gives, or the one the cloud gives.
#[derive(Debug, Clone)]
pub enum Address {
    /// Written in the repository.
    Given(String),
    /// Asked of the cloud when needed.
    Cloud {
        /// Server name.
        server: String,
        /// Which of its addresses.
        which: Which,
        /// Who answers.
        locate: Arc<dyn Locate>,
    },
}

impl Address {
    /// The address now.
    ///
    /// # Errors
    /// The cloud cannot say (see [`LocateError`]).
    pub async fn resolve(&self) -> Result<String, LocateError> {
        match self {
            Self::Given(address) => Ok(address.clone()),
            Self::Cloud { server, which, locate } => locate.address(server, *which).await,
        }
    }

    /// For messages and keys: the address, or `floating IP of <server>`.
    pub fn describe(&self) -> String {
        match self {
            Self::Given(address) => address.clone(),
            Self::Cloud { server, which, .. } => format!("{} of {server}", which.label()),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Answers from a table (for unit tests of what asks).
    #[derive(Debug, Default)]
    pub struct Table(pub BTreeMap<(String, Which), String>);

    #[async_trait::async_trait]
    impl Locate for Table {
        async fn address(&self, server: &str, which: Which) -> Result<String, LocateError> {
            self.0
                .get(&(server.to_owned(), which))
                .cloned()
                .ok_or_else(|| LocateError::NoAddress { server: server.to_owned(), which })
        }
    }

    #[tokio::test]
    async fn a_given_address_is_itself_and_a_cloud_one_is_asked_for_when_resolved() {
        let given = Address::Given("203.0.113.7".to_owned());
        assert_eq!(given.resolve().await.expect("given"), "203.0.113.7");
        assert_eq!(given.describe(), "203.0.113.7");
        let table =
            Table(BTreeMap::from([(("b".to_owned(), Which::Floating), "198.51.100.9".to_owned())]));
        let locate: Arc<dyn Locate> = Arc::new(table);
        let floating = Address::Cloud {
            server: "b".into(),
            which: Which::Floating,
            locate: Arc::clone(&locate),
        };
        assert_eq!(floating.describe(), "floating IP of b");
        assert_eq!(floating.resolve().await.expect("floating"), "198.51.100.9");
        let fixed = Address::Cloud { server: "b".into(), which: Which::Fixed, locate };
        let error = fixed.resolve().await.expect_err("no fixed address in the table");
        assert_eq!(error.to_string(), "server b has no fixed address (yet)");
    }
}
