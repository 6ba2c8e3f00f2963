//! A host that cannot be reached because its server (or the jump host's,
//! or the jump host's floating IP) does not exist yet holds nothing:
//! observed as empty, so the plan creates its files after the server,
//! instead of failing the whole plan — the first apply of an empty
//! project. Only the cloud's word counts: a host that exists and does not
//! answer stays an error.

use super::ssh::SshError;
use super::{HostError, HostProvider};
use crate::providers::locate::{LocateError, Which};

impl HostProvider {
    /// Whether `error`, reaching `host`, means its server (or the way to
    /// it) does not exist yet, as the cloud says.
    pub(super) async fn not_there_yet(&self, host: &str, error: &HostError) -> bool {
        let not_yet = |e: &LocateError| {
            matches!(e, LocateError::NoServer { .. } | LocateError::NoAddress { .. })
        };
        match error {
            HostError::Ssh(SshError::Locate { source, .. }) => not_yet(source),
            HostError::Ssh(SshError::Connect { .. }) => {
                let Some(locate) = &self.locate else { return false };
                // Asked only after a failure: a reachable platform costs
                // no request.
                for server in [host, self.bastion.name.as_str()] {
                    if let Err(e) = locate.address(server, Which::Fixed).await {
                        if matches!(e, LocateError::NoServer { .. }) {
                            return true;
                        }
                    }
                }
                false
            }
            _ => false,
        }
    }
}
