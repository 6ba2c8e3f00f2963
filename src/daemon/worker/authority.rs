//! The authority gate of intake: a prepared commit that would widen
//! apimon's authority (`model::authority`) against the commit in force —
//! or, after a restart, against the last commit applied — is held for an
//! operator instead of taken in. Nothing of it runs meanwhile: preparing
//! sends no credential anywhere new (scenario credentials go only to the
//! daemon's own git host), and the commit in force stays.

use std::sync::Arc;

use chrono::Utc;

use super::super::approvals::commit_digest;
use super::super::status::HeldCommit;
use super::super::DaemonError;
use super::{blocking, Worker};
use crate::model::authority::{scenario_repository_moved, widenings, Widening};
use crate::model::DesiredState;
use crate::reconcile::Prepared;
use crate::source::git::CommitId;

/// What the gate decided for a prepared commit.
pub(super) enum Gate {
    /// Take it in.
    Pass,
    /// Hold it: what it widens, the digest an approval names, and (after
    /// a restart) the last commit applied, compared with.
    Hold { widenings: Vec<Widening>, digest: String, baseline: Option<CommitId> },
}

impl Worker {
    /// Whether `commit`, prepared as `prepared`, may be taken in now.
    pub(super) async fn gate(
        &self,
        commit: &CommitId,
        prepared: &Prepared,
    ) -> Result<Gate, DaemonError> {
        let mut baseline = None;
        let scenario_signers = self.config.raw.scenario_allowed_signers_file.as_ref();
        let scenario_signers = scenario_signers.is_some_and(|f| crate::fsutil::anchor_installed(f));
        let compare = |old: &DesiredState| {
            let mut found = widenings(old, &prepared.state, &prepared.environments);
            if scenario_signers {
                if let Some(moved) = scenario_repository_moved(old, &prepared.state) {
                    found.retain(|w| w.path != moved.path);
                    found.push(moved);
                    found.sort();
                }
            }
            found
        };
        let found = match &self.in_force {
            Some(in_force) => compare(&in_force.prepared.state),
            None => match self.last_applied(prepared)? {
                None => Vec::new(),
                Some(last) if last == *commit => Vec::new(),
                Some(last) => {
                    match self.load_commit(&last).await.inspect(|_| baseline = Some(last.clone())) {
                        Ok(old) => compare(&old),
                        Err(error) => vec![Widening {
                            path: "(the last commit applied)".to_owned(),
                            change: format!(
                                "{last} cannot be read ({}): nothing to compare with",
                                crate::error::chain(&error)
                            ),
                        }],
                    }
                }
            },
        };
        if found.is_empty() {
            return Ok(Gate::Pass);
        }
        let digest = commit_digest(&commit.0, &found);
        let approved = self.approvals.lock().is_ok_and(|a| a.approves_commit(&commit.0, &digest));
        if approved {
            tracing::warn!(%commit, %digest, widenings = %lines(&found), "An operator approved the commit's widened authority; taking it in.");
            if let Ok(mut approvals) = self.approvals.lock() {
                approvals.commit = None;
            }
            return Ok(Gate::Pass);
        }
        Ok(Gate::Hold { widenings: found, digest, baseline })
    }

    /// Holds `commit` for an operator; the commit in force stays.
    pub(super) fn hold_commit(
        &mut self,
        commit: &CommitId,
        widenings: &[Widening],
        digest: String,
    ) {
        tracing::warn!(%commit, %digest, widenings = %lines(widenings), "Commit held: it widens apimon's authority; the commit in force stays until an operator approves it (apimon approve --commit).");
        self.metrics.failure("authority");
        self.held = Some((commit.clone(), digest.clone()));
        let held = HeldCommit {
            commit: commit.clone(),
            digest,
            widenings: widenings.iter().map(ToString::to_string).collect(),
            since: Utc::now(),
        };
        self.update_status(|s| {
            let since = s.held.as_ref().filter(|h| h.commit == held.commit).map(|h| h.since);
            s.held = Some(HeldCommit { since: since.unwrap_or(held.since), ..held });
        });
    }

    /// Whether `commit` is held and no approval for it has come: nothing
    /// to do for it until one comes.
    pub(super) fn still_held(&self, commit: &CommitId) -> bool {
        self.held.as_ref().is_some_and(|(held, digest)| {
            held == commit
                && !self.approvals.lock().is_ok_and(|a| a.approves_commit(&held.0, digest))
        })
    }

    /// The commit the state store says was last applied to one of the
    /// daemon's environments.
    fn last_applied(&self, prepared: &Prepared) -> Result<Option<CommitId>, DaemonError> {
        let state = crate::state::read(&self.config.raw.state_dir)
            .map_err(|e| DaemonError::Reconcile(crate::reconcile::ReconcileError::from(e)))?;
        Ok(prepared
            .environments
            .iter()
            .filter_map(|env| state.environments.get(env)?.last_applied_commit.clone())
            .next()
            .map(CommitId))
    }

    /// The desired state at `commit`, from the daemon's own git cache.
    async fn load_commit(&self, commit: &CommitId) -> Result<Arc<DesiredState>, DaemonError> {
        let dir = self.commit_dir(commit);
        let source = Arc::clone(&self.source);
        let sources = self.scenario_sources.clone();
        let commit = commit.clone();
        blocking(move || {
            super::intake::locked(&source)?.export(&commit, &dir)?;
            let state = crate::model::load_repository_with(&dir, &sources)
                .map_err(|e| DaemonError::Reconcile(crate::reconcile::ReconcileError::Load(e)))?;
            Ok(Arc::new(state))
        })
        .await
    }
}

fn lines(widenings: &[Widening]) -> String {
    widenings.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}
