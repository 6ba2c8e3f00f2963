//! The state store during an apply: ownership is written ahead. Before a
//! change creates anything, the store records the resource as apimon's and
//! is synced to disk; after each change, what it did (a deletion, a
//! fingerprint) is recorded at once. A crash or a full disk at any point
//! therefore leaves every resource an apply created recorded — at worst a
//! record of something a failed create never made, which the next plan
//! finds missing and forgets. A journal that cannot write says so, and the
//! apply stops before changing anything more.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{write, ResourceId, State, StateError};
use crate::plan::Op;

/// One apply's record keeper.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    state: Mutex<State>,
}

impl Journal {
    /// Starts from `state`, forgetting `forget` (resources that no longer exist).
    pub(super) fn open(
        dir: &Path,
        mut state: State,
        forget: &[ResourceId],
    ) -> Result<Self, StateError> {
        let mut changed = false;
        for id in forget {
            changed |= state.forget(id);
        }
        let journal = Self { dir: dir.to_owned(), state: Mutex::new(state) };
        if changed {
            journal.save_with(|_| true)?;
        }
        Ok(journal)
    }

    /// Applies `edit` to the state and writes it if `edit` says it changed.
    fn save_with(&self, edit: impl FnOnce(&mut State) -> bool) -> Result<(), StateError> {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if edit(&mut state) {
            write(&self.dir, &state)?;
        }
        Ok(())
    }

    /// Records, before the call that creates it, that `id` is apimon's.
    ///
    /// # Errors
    /// The store cannot be written: the change must not be made.
    pub fn intend(&self, id: &ResourceId) -> Result<(), StateError> {
        self.save_with(|state| {
            state.environments.entry(id.env.to_string()).or_default().owned.insert(id.clone())
        })
    }

    /// Forgets `id`'s fingerprint before a change writes what it vouches
    /// for: a write whose answer is lost must not leave an old fingerprint
    /// that a later commit declaring the old value would match unverified.
    ///
    /// # Errors
    /// The store cannot be written: the change must not be made.
    pub fn unverify(&self, id: &ResourceId) -> Result<(), StateError> {
        self.save_with(|state| {
            state
                .environments
                .get_mut(&*id.env)
                .is_some_and(|env| env.fingerprints.remove(&id.to_string()).is_some())
        })
    }

    /// Records that `op` on `id` was applied (see [`State::record_applied`]).
    ///
    /// # Errors
    /// The store cannot be written.
    pub fn applied(
        &self,
        id: &ResourceId,
        op: &Op,
        fingerprint: Option<&str>,
    ) -> Result<(), StateError> {
        self.save_with(|state| {
            let before = state.environments.get(&*id.env).cloned();
            state.record_applied(id, op, fingerprint);
            state.environments.get(&*id.env) != before.as_ref()
        })
    }

    /// Records the end of the apply with `finish` and writes the store.
    ///
    /// # Errors
    /// The store cannot be written.
    pub fn finish(&self, finish: impl FnOnce(&mut State)) -> Result<(), StateError> {
        self.save_with(|state| {
            finish(state);
            true
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::ProviderKind;
    use crate::state::read;

    fn id(name: &str) -> ResourceId {
        ResourceId::new("outside", ProviderKind::named("influxdb"), "user", name)
    }

    #[test]
    fn an_intent_is_on_disk_before_the_create_and_a_delete_right_after() {
        let dir = tempfile::tempdir().expect("temp dir");
        let journal = Journal::open(dir.path(), State::default(), &[]).expect("journal");
        journal.intend(&id("a")).expect("intend");
        assert!(read(dir.path()).expect("read").owns(&id("a")), "recorded before the call");
        journal.applied(&id("a"), &Op::Delete, None).expect("applied");
        assert!(!read(dir.path()).expect("read").owns(&id("a")));
    }

    #[test]
    fn what_no_longer_exists_is_forgotten() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut state = State::default();
        state.record_applied(&id("gone"), &Op::Create, Some("f"));
        let journal = Journal::open(dir.path(), state, &[id("gone")]).expect("journal");
        drop(journal);
        let state = read(dir.path()).expect("read");
        assert!(!state.owns(&id("gone")));
        assert_eq!(state.fingerprint(&id("gone")), None);
    }
}
