//! One list per kind per cloud project per observation: environments
//! whose clouds.yaml entries hold the same credentials (one session, so
//! one project, region and interface) read each list of an observation
//! once, each taking its own resources from it by their marks. A list is
//! shared only within one observation (`Scope::pass`): a later pass, and
//! every call outside an observation (apply's lookups), asks the cloud.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use openstack_sdk::api::RestEndpoint;
use tokio::sync::OnceCell;

/// A list's items as the cloud sent them.
pub(super) type Items = Arc<Vec<serde_json::Value>>;

/// The lists of the newest pass, by session and request.
#[derive(Default)]
struct Memo {
    pass: u64,
    lists: HashMap<String, Arc<OnceCell<Items>>>,
}

fn memo() -> &'static Mutex<Memo> {
    static MEMO: OnceLock<Mutex<Memo>> = OnceLock::new();
    MEMO.get_or_init(Mutex::default)
}

/// What tells one list request from another: the service, method, path,
/// query and headers (a microversion changes the answer).
pub(super) fn request_key<E: RestEndpoint>(endpoint: &E) -> String {
    format!(
        "{:?} {} {} {:?} {:?}",
        endpoint.service_type(),
        endpoint.method(),
        endpoint.endpoint(),
        endpoint.parameters(),
        endpoint.request_headers()
    )
}

/// The cell of `key` (session and request) in `pass`; `None` for a pass
/// older than the newest one seen (its lists are gone: ask the cloud).
pub(super) fn cell(pass: u64, key: String) -> Option<Arc<OnceCell<Items>>> {
    let mut memo = memo().lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if pass > memo.pass {
        memo.pass = pass;
        memo.lists.clear();
    }
    if pass < memo.pass {
        return None;
    }
    Some(Arc::clone(memo.lists.entry(key).or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pass_shares_its_cells_and_a_newer_pass_drops_them() {
        // Passes far above what other tests in this process use.
        let base = u64::MAX / 2;
        let a = cell(base, "s GET networks".into()).expect("cell");
        let b = cell(base, "s GET networks".into()).expect("cell");
        assert!(Arc::ptr_eq(&a, &b), "one list per pass");
        let other = cell(base, "t GET networks".into()).expect("cell");
        assert!(!Arc::ptr_eq(&a, &other), "another session lists for itself");
        let newer = cell(base + 1, "s GET networks".into()).expect("cell");
        assert!(!Arc::ptr_eq(&a, &newer), "a new pass lists again");
        assert!(cell(base, "s GET networks".into()).is_none(), "an old pass asks the cloud");
    }
}
