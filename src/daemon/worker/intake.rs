//! Taking a commit in: ask the remote, fetch (bounded), verify the
//! signature, and only then export and prepare it (validate, render); a
//! commit that fails any step is rejected and the last good one stays in
//! force. The followed scenario branch is taken in the same way.

use std::sync::{Arc, Mutex, MutexGuard};

use chrono::Utc;

use super::super::status::Rejection;
use super::super::DaemonError;
use super::authority::Gate;
use super::{blocking, InForce, Worker};
use crate::model::secret::SecretStore;
use crate::model::Secrets;
use crate::reconcile::{self, Prepared, ReconcileError, Target};
use crate::source::git::{CommitId, GitError, GitSource};

/// The git source, for one blocking step.
pub(super) fn locked(source: &Mutex<GitSource>) -> Result<MutexGuard<'_, GitSource>, DaemonError> {
    source.lock().map_err(|_| DaemonError::Task("git source lock poisoned".into()))
}

impl Worker {
    /// Asks the remote and fetches if it moved; the remote's commit. A
    /// commit whose fetch is stopped at a bound is rejected (and not
    /// fetched again): the commit in force stays. Nothing is exported
    /// here: a commit is written to disk only once it is verified.
    pub(super) async fn sync(&mut self) -> Result<CommitId, DaemonError> {
        let source = Arc::clone(&self.source);
        let rejected = self.rejected.clone();
        let fetched = blocking(move || {
            let source = locked(&source)?;
            let remote = source.remote_head()?;
            if source.cached_head().as_ref() == Some(&remote) || Some(&remote) == rejected.as_ref()
            {
                return Ok(Ok(remote));
            }
            match source.fetch() {
                Ok(commit) => Ok(Ok(commit)),
                Err(error @ GitError::FetchLimit { .. }) => Ok(Err((remote, error))),
                Err(error) => Err(error.into()),
            }
        })
        .await?;
        match fetched {
            Ok(commit) => Ok(commit),
            Err((commit, error)) => {
                self.reject(&commit, None, vec![crate::error::chain(&error)], "fetch");
                Ok(commit)
            }
        }
    }

    async fn verify(&self, commit: &CommitId) -> Result<(), DaemonError> {
        let mut policy = self.signatures.clone();
        if policy.ssh_allowed_signers.is_none() {
            // The trust store's signers, while installed.
            let anchor = self.config.raw.allowed_signers_file.as_ref();
            policy.ssh_allowed_signers =
                anchor.filter(|file| crate::fsutil::anchor_installed(file)).cloned();
        }
        if !policy.required() {
            return Ok(());
        }
        let source = Arc::clone(&self.source);
        let commit = commit.clone();
        blocking(move || locked(&source)?.verify(&commit, &policy).map_err(DaemonError::from)).await
    }

    /// Exports `commit` afresh (an export left on disk is never trusted:
    /// it may have been changed since) and prepares it, away from the
    /// async threads (a large repository takes a while to validate); a
    /// shutdown does not wait for it. The caller has verified `commit`.
    pub(super) async fn prepare(
        &self,
        commit: &CommitId,
        secrets: SecretStore,
    ) -> Result<Prepared, DaemonError> {
        let dir = self.commit_dir(commit);
        let names = self.config.raw.environments.clone();
        let machine = self.machine();
        let sources = self.scenario_sources.clone();
        let source = Arc::clone(&self.source);
        let commit = commit.clone();
        let work = blocking(move || {
            locked(&source)?.export(&commit, &dir)?;
            let secrets = Secrets::Resolved(secrets);
            let mut prepared =
                reconcile::prepare(&dir, &names, &secrets, Target::Live(&machine), &sources)?;
            // An export is no checkout: the state store records the commit
            // applied from the daemon's own knowledge (a restart compares with it).
            prepared.commit = Some(commit.0.clone());
            Ok(prepared)
        });
        tokio::select! {
            result = work => result,
            () = self.stop.cancelled() => Err(DaemonError::Stopped),
        }
    }

    fn reject(
        &mut self,
        commit: &CommitId,
        scenario_commit: Option<CommitId>,
        errors: Vec<String>,
        stage: &str,
    ) {
        tracing::error!(%commit, scenario_commit = ?scenario_commit.as_ref().map(|c| &c.0), errors = %errors.join("; "), "Commit refused; the last good commit stays in force.");
        self.metrics.failure(stage);
        if scenario_commit.is_some() {
            // The commit in force stays, with the scenario commit it had.
            self.rejected_scenarios.clone_from(&scenario_commit);
        } else {
            self.rejected = Some(commit.clone());
            let _ = std::fs::remove_dir_all(self.commit_dir(commit));
        }
        self.update_status(|s| {
            s.rejected =
                Some(Rejection { commit: commit.clone(), scenario_commit, at: Utc::now(), errors })
        });
    }

    /// Puts `commit`, prepared, in force.
    fn install(&mut self, commit: &CommitId, prepared: Prepared, fingerprint: String) {
        let scenario_commit =
            prepared.state.scenario_repository.as_ref().map(|r| CommitId(r.commit.clone()));
        self.in_force = Some(InForce {
            commit: commit.clone(),
            secrets: fingerprint,
            prepared: Arc::new(prepared),
        });
        // Exports of earlier or refused commits go.
        let commits = self.config.raw.state_dir.join("commits");
        crate::source::export::prune_exports(&commits, &commit.0);
        self.rejected = None;
        self.rejected_scenarios = None;
        self.converged = false;
        self.merged.clear();
        self.retries.clear();
        self.update_status(|s| {
            s.last_good_commit = Some(commit.clone());
            s.scenario_repository_commit = scenario_commit;
            s.rejected = None;
        });
    }

    /// Puts the last commit applied back in force (verified and prepared
    /// again), while a newer one is held; a failure leaves nothing in
    /// force, as before.
    async fn restore(&mut self, commit: &CommitId) -> Result<(), DaemonError> {
        if let Err(error) = self.verify(commit).await {
            tracing::error!(%commit, error = %error, "The last commit applied does not verify; nothing is in force.");
            return Ok(());
        }
        let secrets = self.secrets()?;
        let fingerprint = secrets.fingerprint();
        match self.prepare(commit, secrets).await {
            Ok(prepared) => {
                tracing::info!(%commit, "The last commit applied is in force while the newest is held.");
                self.install(commit, prepared, fingerprint);
                Ok(())
            }
            Err(error @ (DaemonError::Reconcile(_) | DaemonError::Git(_))) => {
                tracing::error!(%commit, error = %crate::error::chain(&error), "The last commit applied cannot be prepared; nothing is in force.");
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    /// The new commit of the followed scenario branch, when it moved since
    /// the commit in force was prepared (and was not refused already). An
    /// unreachable remote is logged: the commit in force carries on.
    pub(super) async fn scenario_branch_moved(&self) -> Option<CommitId> {
        let repository = self.in_force.as_ref()?.prepared.state.scenario_repository.as_ref()?;
        let branch = repository.branch.clone()?;
        let (url, current) = (repository.url.clone(), repository.commit.clone());
        let sources = self.scenario_sources.clone();
        let shown = crate::url::redact_url(&url);
        let head =
            blocking(move || sources.remote_head(&url, &branch).map_err(DaemonError::from)).await;
        match head {
            Ok(head) if head.0 != current && Some(&head) != self.rejected_scenarios.as_ref() => {
                tracing::info!(repository = %shown, commit = %head, "The scenario repository's branch moved.");
                Some(head)
            }
            Ok(_) => None,
            Err(error) => {
                tracing::warn!(repository = %shown, error = %crate::error::chain(&error), "Cannot ask the scenario repository for its branch; the commit in force carries on.");
                None
            }
        }
    }

    /// Takes a new commit in, or rejects it; `scenario_head` when it is
    /// the commit in force again, for its scenario branch's new commit.
    pub(super) async fn take_in(
        &mut self,
        commit: &CommitId,
        scenario_head: Option<CommitId>,
    ) -> Result<(), DaemonError> {
        tracing::info!(%commit, "New commit.");
        if let Err(error) = self.verify(commit).await {
            self.reject(commit, None, vec![error.to_string()], "signature");
            return Ok(());
        }
        // Validate and render before anything else: a bad commit never applies.
        let secrets = self.secrets()?;
        let fingerprint = secrets.fingerprint();
        match self.prepare(commit, secrets).await {
            Ok(prepared) => {
                match self.gate(commit, &prepared).await? {
                    Gate::Pass => {}
                    Gate::Hold { widenings, digest, baseline } => {
                        self.hold_commit(commit, &widenings, digest);
                        // After a restart nothing is in force: the last
                        // commit applied is, while this one waits.
                        if let (None, Some(baseline)) = (&self.in_force, baseline) {
                            self.restore(&baseline).await?;
                        }
                        return Ok(());
                    }
                }
                self.held = None;
                self.install(commit, prepared, fingerprint);
                self.update_status(|s| s.held = None);
                Ok(())
            }
            Err(DaemonError::Reconcile(ReconcileError::Invalid(diagnostics))) => {
                self.reject(
                    commit,
                    scenario_head,
                    diagnostics.0.iter().map(ToString::to_string).collect(),
                    "validate",
                );
                Ok(())
            }
            Err(DaemonError::Reconcile(error @ ReconcileError::Render(_))) => {
                self.reject(commit, scenario_head, vec![error.to_string()], "validate");
                Ok(())
            }
            Err(DaemonError::Git(error @ GitError::Refused { .. })) => {
                self.reject(commit, None, vec![crate::error::chain(&error)], "export");
                Ok(())
            }
            Err(error) => Err(error),
        }
    }
}
