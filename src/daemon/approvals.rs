//! Approvals, given over `POST /approve` with the approval token (never
//! the webhook secret: forges send that with every delivery), each bound
//! to what the operator saw:
//!
//! - a pending change (report-only drift, a destructive change waiting for
//!   its window) by its id and its digest — the commit in force, the id
//!   and the change — so an approval lapses when the change or the commit
//!   moves;
//! - a held commit (one that widens apimon's authority) by its id and the
//!   digest of what it widens.
//!
//! The next reconcile takes them; what it used is forgotten.

use std::collections::BTreeMap;

use crate::model::authority::Widening;
use crate::plan::ResourceId;

/// The digest of the pending change of `id` shown as `change` under
/// `commit`: what an approval of it names.
pub fn change_digest(commit: &str, id: &ResourceId, change: &str) -> String {
    short_digest(&format!("{commit}\n{id}\n{change}"))
}

/// The digest of a held commit's widenings.
pub fn commit_digest(commit: &str, widenings: &[Widening]) -> String {
    let lines: Vec<String> = widenings.iter().map(ToString::to_string).collect();
    short_digest(&format!("{commit}\n{}", lines.join("\n")))
}

fn short_digest(text: &str) -> String {
    crate::digest::sha256_hex(text.as_bytes()).chars().take(16).collect()
}

/// What operators approved and the next reconcile has not used yet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Approvals {
    /// Pending changes: resource id → the digest it had.
    pub changes: BTreeMap<String, String>,
    /// A held commit and the digest of its widenings.
    pub commit: Option<(String, String)>,
}

impl Approvals {
    /// Whether the change of `id`, now with `digest`, may run although it
    /// would be held.
    pub fn approves(&self, id: &ResourceId, digest: &str) -> bool {
        self.changes.get(&id.to_string()).is_some_and(|d| d == digest)
    }

    /// Whether the held `commit` whose widenings have `digest` may be taken in.
    pub fn approves_commit(&self, commit: &str, digest: &str) -> bool {
        self.commit.as_ref().is_some_and(|(c, d)| c == commit && d == digest)
    }

    /// Whether nothing is approved.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.commit.is_none()
    }

    /// Forgets what `used` holds (approvals given meanwhile stay).
    pub fn forget(&mut self, used: &Self) {
        self.changes.retain(|id, digest| used.changes.get(id) != Some(digest));
        if self.commit.is_some() && self.commit == used.commit {
            self.commit = None;
        }
    }
}

/// What `POST /approve` takes: exactly one of `id`, `environment` and
/// `commit`; `digest` as `/status` shows it (required with `commit`; with
/// `id`, it must still match).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// One pending change, by resource id.
    pub id: Option<String>,
    /// Every pending change of one environment, as pending now.
    pub environment: Option<String>,
    /// The held commit.
    pub commit: Option<String>,
    /// The digest the operator saw.
    pub digest: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::ProviderKind;

    fn user(name: &str) -> ResourceId {
        ResourceId::new("outside", ProviderKind::named("influxdb"), "user", name)
    }

    #[test]
    fn an_approval_covers_the_change_it_names_while_it_is_the_same_and_is_used_once() {
        let (telegraf, grafana) = (user("telegraf"), user("grafana"));
        let digest = change_digest("c1", &telegraf, "- delete");
        let mut approvals = Approvals::default();
        approvals.changes.insert(telegraf.to_string(), digest.clone());
        assert!(approvals.approves(&telegraf, &digest));
        assert!(!approvals.approves(&grafana, &change_digest("c1", &grafana, "- delete")));
        // The same change under the next commit, or another change: lapsed.
        assert!(!approvals.approves(&telegraf, &change_digest("c2", &telegraf, "- delete")));
        assert!(!approvals.approves(&telegraf, &change_digest("c1", &telegraf, "~ update")));
        let used = approvals.clone();
        approvals.commit = Some(("c3".into(), "d".into()));
        approvals.forget(&used);
        assert!(!approvals.approves(&telegraf, &digest));
        assert!(approvals.approves_commit("c3", "d"), "given meanwhile: kept");
        assert!(!approvals.approves_commit("c3", "other") && !approvals.approves_commit("c4", "d"));
    }

    #[test]
    fn a_commit_digest_covers_every_widening() {
        let widening = |path: &str| Widening { path: path.into(), change: "a → b".into() };
        let one = commit_digest("c1", &[widening("x")]);
        assert_ne!(one, commit_digest("c1", &[widening("x"), widening("y")]));
        assert_ne!(one, commit_digest("c2", &[widening("x")]));
        assert_eq!(one, commit_digest("c1", &[widening("x")]));
    }
}
