//! Where the environment's servers are, for the providers that reach
//! hosts ([`Locate`]): a server's floating IP or fixed address, asked of
//! Nova and Neutron when a connection needs it.

use super::OpenstackProvider;
use crate::providers::locate::{Locate, LocateError, Which};

#[async_trait::async_trait]
impl Locate for OpenstackProvider {
    async fn address(&self, server: &str, which: Which) -> Result<String, LocateError> {
        super::server::address(self, server, which).await
    }
}
