//! The hand-over of the daemon's state store during `apimon bootstrap`, as
//! an explicit state machine.
//!
//! One applier at a time: while bootstrap applies from a workstation, the
//! daemon on the bastion is stopped and its store is *taken*. The phases,
//! each persisted before the step that needs it so that a bootstrap killed
//! at any point resumes (or is refused, on another machine):
//!
//! ```text
//! Idle ──mark──► Marked ──read the bastion's store──► Saved ──apply,
//!   ▲            (bastion's copy newest)             (this machine's      credentials,
//!   │                                                 copy newest)        hand over──► Idle, daemon started
//!   └──────────── restore after a failure: Marked → unmark, start;
//!                 Saved → hand the store back, start (unless the apply
//!                 rebuilt the bastion: it stays stopped, this machine keeps the store)
//! ```
//!
//! The bastion is behind [`DaemonHost`] and planning, applying and asking
//! behind [`Operator`], so every phase and failure point is tested against
//! fakes; `cli::bootstrap` keeps the arguments, the confirmation and the
//! printing.

use std::path::{Path, PathBuf};

use async_trait::async_trait;

use super::bastion::Installed;
use super::STATE_DIR;
use crate::providers::host::HostError;
use crate::reconcile::Plan;
use crate::state::{self, LockedStore};

/// Where a state directory records the store it took (the mark it left).
const HOLDING_FILE: &str = "bootstrap.holding";

/// How far this machine got with a store it took, as persisted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// The bastion's store is marked as taken, not yet copied here: the
    /// bastion's copy is the newest.
    Marked,
    /// Copied here: this machine's copy is the newest until handed back.
    Saved,
}

/// What a state directory records of a store it took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holding {
    /// The mark left on the bastion.
    pub mark: String,
    /// How far it got.
    pub held: Held,
}

/// A new mark for a store this bootstrap takes: a random token, who and when.
pub fn mark() -> String {
    let token = hex::encode(rand::random::<[u8; 16]>());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned());
    format!("token={token}\nby={host}\nat={}\n", chrono::Utc::now().to_rfc3339())
}

/// The store `state_dir` holds, if it holds one.
pub fn holding(state_dir: &Path) -> Option<Holding> {
    let text = crate::fsutil::read_text_limited(&state_dir.join(HOLDING_FILE), 4096).ok()?;
    let (phase, mark) = text.split_once('\n')?;
    let held = if phase == "saved" { Held::Saved } else { Held::Marked };
    Some(Holding { mark: mark.to_owned(), held })
}

/// Records that `state_dir` holds the store marked `mark`, this far.
///
/// # Errors
/// The record cannot be written.
pub fn hold(state_dir: &Path, mark: &str, held: Held) -> std::io::Result<()> {
    let phase = match held {
        Held::Marked => "marked",
        Held::Saved => "saved",
    };
    let text = format!("{phase}\n{mark}");
    crate::fsutil::write_private(&state_dir.join(HOLDING_FILE), text.as_bytes(), 0o600)
}

/// Forgets the record: the store was handed back.
///
/// # Errors
/// The record exists and cannot be removed.
pub fn release(state_dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(state_dir.join(HOLDING_FILE)) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

/// The phase of one hand-over, in memory (the persisted part is [`Held`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Nothing taken.
    Idle,
    /// The bastion's store is marked; the mark.
    Marked(String),
    /// The store is held here; the mark.
    Saved(String),
    /// The store went back to the bastion: its copy is the newest again,
    /// never to be overwritten from here.
    HandedOver,
}

/// A step that talks to the bastion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Reading what it has.
    Read,
    /// Stopping the daemon.
    Stop,
    /// Marking its store as taken.
    Take,
    /// Writing the daemon's credentials.
    Credentials,
    /// Writing the store back and removing the mark.
    HandOver,
    /// Removing the mark (the store was not read).
    Unmark,
    /// Starting the daemon.
    Start,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Read => "read what the bastion has",
            Self::Stop => "stop the daemon",
            Self::Take => {
                "mark the daemon's state store as taken (has another bootstrap taken it meanwhile?)"
            }
            Self::Credentials => "write the daemon's credentials",
            Self::HandOver => "hand the state store back",
            Self::Unmark => "remove the mark from the state store",
            Self::Start => "start the daemon",
        })
    }
}

/// The hand-over failed.
#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    /// A step on the bastion failed.
    #[error("cannot {step} on {host}")]
    Bastion {
        /// The bastion.
        host: String,
        /// Which step.
        step: Step,
        /// Cause.
        #[source]
        source: HostError,
    },
    /// Another bootstrap holds the store.
    #[error("the state store of the daemon on {host} was taken by another `apimon bootstrap` that did not hand it back ({holder}); run bootstrap again where that one ran (its state directory holds the newest state). If that machine is lost, copy the bastion's {STATE_DIR}/{} into --state-dir and remove {STATE_DIR}/{} there", state::STATE_FILE, state::TAKEN_FILE)]
    ForeignMark {
        /// The bastion.
        host: String,
        /// Who holds it, from the mark.
        holder: String,
    },
    /// The local state directory failed.
    #[error("state directory {}", path.display())]
    Local {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The state store failed (read, parse, save).
    #[error(transparent)]
    Store(#[from] state::StateError),
    /// Planning or applying failed (the operator's words).
    #[error("{0}")]
    Operator(String),
    /// The operator declined the plan shown after the store changed.
    #[error("bootstrap cancelled after the daemon stopped")]
    Cancelled,
    /// The apply did not complete.
    #[error("the apply did not complete")]
    Incomplete,
}

/// How the daemon was left after a failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restored {
    /// Nothing to restore: no daemon ran.
    NotNeeded,
    /// It runs again (with the store as it is now).
    Running,
    /// It stays stopped and this machine holds its store: the apply
    /// rebuilt its server (or the plan could not be read).
    StaysStopped,
    /// Starting it again failed too.
    Failed(String),
}

/// A failed hand-over and how the daemon was left.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct Failure {
    /// What failed.
    #[source]
    pub error: HandoverError,
    /// How the daemon was left.
    pub restored: Restored,
}

/// The daemon's bastion, as the hand-over uses it.
#[async_trait]
pub trait DaemonHost: Sync {
    /// What it has.
    async fn installed(&self) -> Result<Installed, HostError>;
    /// Marks the store as taken (exclusively: never over another mark).
    async fn take(&self, mark: &str) -> Result<(), HostError>;
    /// Removes `mark` (only that one).
    async fn unmark(&self, mark: &str) -> Result<(), HostError>;
    /// Writes the store back, then removes `mark`.
    async fn hand_over(&self, store: &[u8], mark: &str) -> Result<(), HostError>;
    /// Stops or starts the daemon's unit.
    async fn unit(&self, start: bool) -> Result<(), HostError>;
    /// Writes the credentials it lacks (read again: a new or replaced
    /// bastion has none); the paths written.
    async fn install_credentials(&self) -> Result<Vec<String>, HostError>;
}

/// Planning, applying and asking: the command line's part.
#[async_trait]
pub trait Operator: Sync {
    /// Plans against the live systems with the local store as it is.
    async fn plan(&self) -> Result<Plan, HandoverError>;
    /// Applies `plan` (the local store records it).
    async fn apply(&self, plan: &Plan) -> Result<(), HandoverError>;
    /// Whether `plan` creates or replaces the daemon's server.
    fn rebuilds_bastion(&self, plan: &Plan) -> bool;
    /// The store changed after it was taken: whether to apply `plan` instead.
    fn confirm_changed(&self, plan: &Plan) -> Result<bool, HandoverError>;
    /// Something happened worth telling.
    fn note(&self, what: Note<'_>);
}

/// What the hand-over tells the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note<'a> {
    /// The bastion's store is used here now (copied).
    UsingBastionStore,
    /// A killed bootstrap is resumed with the store held here.
    Resuming,
    /// The daemon was stopped.
    Stopped,
    /// A credential was written.
    Wrote(&'a str),
    /// The store went back and the daemon started.
    Started,
}

/// How a bootstrap starts with the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Begun {
    /// An earlier bootstrap of this machine is resumed.
    pub resumed: bool,
    /// The local store changed (plan again).
    pub changed: bool,
}

/// One hand-over.
pub struct Handover<'a, H: DaemonHost, O: Operator> {
    bastion: &'a H,
    operator: &'a O,
    store: &'a LockedStore,
    state_dir: &'a Path,
    host: &'a str,
    phase: Phase,
}

impl<'a, H: DaemonHost, O: Operator> Handover<'a, H, O> {
    /// A hand-over with the daemon on `host`, holding nothing yet.
    pub fn new(
        bastion: &'a H,
        operator: &'a O,
        store: &'a LockedStore,
        state_dir: &'a Path,
        host: &'a str,
    ) -> Self {
        Self { bastion, operator, store, state_dir, host, phase: Phase::Idle }
    }

    /// Where it stands.
    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    fn on_bastion(&self, step: Step) -> impl FnOnce(HostError) -> HandoverError + '_ {
        move |source| HandoverError::Bastion { host: self.host.to_owned(), step, source }
    }

    fn local(&self, error: std::io::Error) -> HandoverError {
        HandoverError::Local { path: self.state_dir.join(HOLDING_FILE), source: error }
    }

    /// Before anything changes, with what the bastion has: resumes a store
    /// this machine holds, refuses another's mark, else copies the
    /// bastion's store here when it differs (the daemon's is in force).
    ///
    /// # Errors
    /// Another bootstrap's mark, or the bastion or the store failed.
    pub async fn begin(&mut self, installed: &Installed) -> Result<Begun, HandoverError> {
        let Some(mark) = &installed.taken else {
            let changed = self.take_over_state(installed)?;
            return Ok(Begun { resumed: false, changed });
        };
        let Some(held) = holding(self.state_dir).filter(|h| h.mark == *mark) else {
            return Err(HandoverError::ForeignMark {
                host: self.host.to_owned(),
                holder: mark.split_whitespace().collect::<Vec<_>>().join(" "),
            });
        };
        let mut changed = false;
        if held.held == Held::Marked {
            // Killed after marking, before reading: the bastion's copy is the newest.
            let now = self.bastion.installed().await.map_err(self.on_bastion(Step::Read))?;
            changed = self.take_over_state(&now)?;
            hold(self.state_dir, mark, Held::Saved).map_err(|e| self.local(e))?;
        }
        self.operator.note(Note::Resuming);
        self.phase = Phase::Saved(mark.clone());
        Ok(Begun { resumed: true, changed })
    }

    /// After confirmation: stops a running daemon, takes the store (when
    /// the bastion exists and it is not held already), applies `plan`,
    /// writes the credentials, hands the store back and starts the daemon.
    /// On a failure the daemon that ran (or ran before a resumed bootstrap
    /// stopped it) is restored, and [`Failure`] says how.
    ///
    /// # Errors
    /// The first step that failed, with how the daemon was left.
    pub async fn run(&mut self, plan: Plan, exists: bool, active: bool) -> Result<(), Failure> {
        let daemon_ran = active || matches!(self.phase, Phase::Saved(_));
        let result = self.steps(plan, exists, active).await;
        match result {
            Ok(()) => Ok(()),
            Err(error) => {
                let restored = if daemon_ran && self.phase != Phase::HandedOver {
                    self.restore().await
                } else {
                    Restored::NotNeeded
                };
                Err(Failure { error, restored })
            }
        }
    }

    async fn steps(
        &mut self,
        mut plan: Plan,
        exists: bool,
        active: bool,
    ) -> Result<(), HandoverError> {
        if active {
            // One applier at a time: the daemon finishes its change in progress.
            self.bastion.unit(false).await.map_err(self.on_bastion(Step::Stop))?;
            self.operator.note(Note::Stopped);
        }
        if exists && self.phase == Phase::Idle {
            // Marked first: from here no daemon uses the bastion's copy, so
            // the copy read next is the newest, and a killed bootstrap resumes.
            let mark = mark();
            hold(self.state_dir, &mark, Held::Marked).map_err(|e| self.local(e))?;
            // Marked from here even if the answer is lost: a restore removes
            // this mark only (never another's), and a re-run after a kill
            // finds its own mark and resumes.
            self.phase = Phase::Marked(mark.clone());
            self.bastion.take(&mark).await.map_err(self.on_bastion(Step::Take))?;
            let now = self.bastion.installed().await.map_err(self.on_bastion(Step::Read))?;
            if self.take_over_state(&now)? {
                plan = self.operator.plan().await?;
                if plan.summary.has_changes() && !self.operator.confirm_changed(&plan)? {
                    return Err(HandoverError::Cancelled);
                }
            }
            hold(self.state_dir, &mark, Held::Saved).map_err(|e| self.local(e))?;
            self.phase = Phase::Saved(mark);
        }
        self.operator.apply(&plan).await?;
        let written =
            self.bastion.install_credentials().await.map_err(self.on_bastion(Step::Credentials))?;
        for path in &written {
            self.operator.note(Note::Wrote(path));
        }
        self.hand_over_and_start().await?;
        self.operator.note(Note::Started);
        Ok(())
    }

    /// The store this machine holds goes back, the mark with it, and the
    /// daemon starts.
    async fn hand_over_and_start(&mut self) -> Result<(), HandoverError> {
        let mark = match &self.phase {
            Phase::Marked(mark) | Phase::Saved(mark) => mark.clone(),
            Phase::Idle | Phase::HandedOver => String::new(),
        };
        let path = self.state_dir.join(state::STATE_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(source) => return Err(HandoverError::Local { path, source }),
        };
        self.bastion.hand_over(&bytes, &mark).await.map_err(self.on_bastion(Step::HandOver))?;
        self.phase = Phase::HandedOver;
        release(self.state_dir).map_err(|e| self.local(e))?;
        self.bastion.unit(true).await.map_err(self.on_bastion(Step::Start))
    }

    /// After a failure with the daemon stopped.
    async fn restore(&mut self) -> Restored {
        let failed = |error: HandoverError| Restored::Failed(crate::error::chain(&error));
        match self.phase.clone() {
            Phase::Idle => self.start_again().await,
            // Not read yet: the bastion's own store is the newest; unmark it.
            Phase::Marked(mark) => {
                if let Err(error) = self.bastion.unmark(&mark).await {
                    return failed(self.on_bastion(Step::Unmark)(error));
                }
                self.phase = Phase::Idle;
                if let Err(error) = release(self.state_dir) {
                    return failed(self.local(error));
                }
                self.start_again().await
            }
            Phase::Saved(_) => {
                let rebuilt = match self.operator.plan().await {
                    Ok(plan) => self.operator.rebuilds_bastion(&plan),
                    Err(_) => true,
                };
                if rebuilt {
                    return Restored::StaysStopped;
                }
                match self.hand_over_and_start().await {
                    Ok(()) => Restored::Running,
                    Err(error) => failed(error),
                }
            }
            Phase::HandedOver => Restored::NotNeeded,
        }
    }

    /// Starts the daemon with the bastion's own store.
    async fn start_again(&self) -> Restored {
        match self.bastion.unit(true).await {
            Ok(()) => Restored::Running,
            Err(error) => {
                Restored::Failed(crate::error::chain(&self.on_bastion(Step::Start)(error)))
            }
        }
    }

    /// Copies the bastion's state store (the daemon's, in force) here when
    /// it differs from the local one; whether it did.
    fn take_over_state(&self, installed: &Installed) -> Result<bool, HandoverError> {
        let Some(text) = &installed.state else { return Ok(false) };
        let source = PathBuf::from(format!("{}:{STATE_DIR}/{}", self.host, state::STATE_FILE));
        let theirs = state::parse(&source, text)?;
        let ours = self.store.load()?;
        if theirs == ours {
            return Ok(false);
        }
        self.store.save(&theirs)?;
        self.operator.note(Note::UsingBastionStore);
        Ok(true)
    }
}

#[cfg(test)]
mod tests;
