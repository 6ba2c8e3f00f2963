//! `apimon bootstrap --env E`: from a workstation (or a CI runner) with
//! the environment's credentials to a daemon on its bastion that keeps the
//! platform converged from then on.
//!
//! 1. Reads what the bastion has: the daemon's state store (when a daemon
//!    runs there, its store is the one in force: copied here first), its
//!    credentials, whether it runs.
//! 2. Plans the environment (the bastion's daemon.yaml, unit, binary and
//!    account included: apimon.yaml's `daemon:`), and the credentials to
//!    write. Nothing to do, and the daemon runs: a no-op.
//! 3. Otherwise, after confirmation: stops a running daemon (one applier
//!    at a time), applies, writes the credentials, hands the state store
//!    over, starts the daemon, and waits, through an SSH tunnel, until it
//!    reports the environment converged.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::{apply_plan, confirm, prepare_live, print_plan, resolved_secrets, LiveArgs, Outcome};
use crate::apply::ApplyOptions;
use crate::bootstrap::bastion::{Bastion, DaemonBastion, Installed};
use crate::bootstrap::handover::{Failure, Handover, HandoverError, Note, Operator, Restored};
use crate::bootstrap::{self, Credential, Sources};
use crate::layout::STATE_DIR;
use crate::model::Role;
use crate::plan::{DesiredSet, Op};
use crate::providers::host::HostProvider;
use crate::providers::{openstack, Availability};
use crate::reconcile::{self, Plan, Prepared};
use crate::state::{self, LockedStore};

/// `apimon bootstrap`'s own options.
#[derive(Debug, clap::Args)]
pub struct BootstrapArgs {
    /// The environment whose bastion gets the daemon.
    #[arg(long)]
    pub env: String,
    /// Apply and install without asking for confirmation.
    #[arg(long)]
    pub yes: bool,
    /// Allow more deletions than the environment's max_deletes.
    #[arg(long)]
    pub allow_deletes: bool,
    /// How long to wait for the daemon to report the environment converged.
    #[arg(long, default_value_t = 900)]
    pub wait_seconds: u64,
    /// The SSH private key the daemon reaches this environment's hosts
    /// with: its own, authorized on them (the keypair of keypairs.yaml);
    /// given explicitly, so that no operator key lands on a bastion unasked.
    #[arg(long)]
    pub daemon_ssh_key: PathBuf,
    /// known_hosts lines for the git server (an ssh:// repository), added
    /// to the daemon's known_hosts.
    #[arg(long)]
    pub git_known_hosts: Option<PathBuf>,
    /// A file holding the approval token (at least 32 characters, e.g.
    /// `openssl rand -hex 32`): the daemon takes approvals (`apimon
    /// approve`) only with it. Without it the bastion's token stays; with
    /// none there, what needs an approval stays held.
    #[arg(long, value_name = "FILE")]
    pub approval_token: Option<PathBuf>,
    /// An OpenSSH allowed-signers file: from then on the daemon takes only
    /// commits signed by one of its keys (docs/security.md). Without it the
    /// bastion's stays; with none there, commits need no signature.
    #[arg(long, value_name = "FILE")]
    pub allowed_signers: Option<PathBuf>,
    /// An OpenSSH allowed-signers file for the scenario repository: from
    /// then on the daemon takes only scenario commits signed by one of its
    /// keys, and holds a change of `scenario_repository.url` for an
    /// approval. Without it the bastion's stays.
    #[arg(long, value_name = "FILE")]
    pub scenario_signers: Option<PathBuf>,
    /// Take the daemon back although it applied a commit this checkout
    /// does not contain (it follows another repository, or a commit was
    /// lost): its state store is kept, this checkout is applied, and the
    /// take-over is logged on the bastion (/var/lib/apimon/take-over.log).
    #[arg(long)]
    pub take_over: bool,
}

pub(super) async fn bootstrap(
    repo: &Path,
    args: &BootstrapArgs,
    live: &LiveArgs,
) -> anyhow::Result<Outcome> {
    let names = vec![args.env.clone()];
    let prepared = prepare_live(repo, &names, live)?;
    let Some(env) = prepared.state.environments.get(&args.env) else {
        bail!("no environment {} in apimon.yaml", args.env);
    };
    let (Some(daemon), Some(host)) = (&env.daemon, env.daemon_host()) else {
        bail!("environment {} declares no `daemon:` in apimon.yaml (with a bastion host): bootstrap installs the daemon it describes; see docs/operations.md, section 0", args.env);
    };
    let listen: std::net::SocketAddr =
        daemon.listen.parse().context("daemon.listen is not an address")?;
    let address =
        if listen.ip().is_unspecified() { "127.0.0.1".to_owned() } else { listen.ip().to_string() };
    let listen = (address.as_str(), listen.port());
    let machine = live.machine();
    let secrets = resolved_secrets(live)?;
    let sources = Sources {
        secrets: &secrets,
        clouds_file: machine.clouds_file.as_deref(),
        ssh_key: &args.daemon_ssh_key,
        known_hosts: &machine.known_hosts,
        git_known_hosts: args.git_known_hosts.as_deref(),
        approval_token: args.approval_token.as_deref(),
        allowed_signers: args.allowed_signers.as_deref(),
        scenario_signers: args.scenario_signers.as_deref(),
        release_key: machine.release_key.as_deref(),
    };
    if prepared.state.apimon_binary.is_some() && machine.release_key.is_none() {
        eprintln!("warning: apimon_binary is pinned by its sha256 only, which proves the file is the one named, not who built it; give --release-key (and apimon_binary.signature_url) to install only signed releases (docs/security.md)");
    }
    let credentials = bootstrap::credentials(&prepared.state, env, &sources)?;
    // Where the cloud says, when the repository names no address.
    let locate = prepared.live.as_ref().and_then(|live| live.locator(&args.env));
    let provider = match HostProvider::for_environment(env, &DesiredSet::new(), &machine, locate) {
        Availability::Available(provider) => provider,
        Availability::Unavailable(why) => bail!("cannot reach the hosts of {}: {why}", args.env),
    };
    let bastion = Bastion::new(&provider, &host.name);
    let run = Run {
        args,
        live,
        repo,
        prepared: &prepared,
        bastion: &bastion,
        host: &host.name,
        listen,
        store: LockedStore::open(&live.state_dir)?,
        started: chrono::Utc::now(),
    };
    let plan = run.plan().await?;
    check_other_bastions(&provider, env, &host.name, &plan).await?;
    run.go(plan, &credentials).await
}

/// One bootstrap: the command line's part of it (the hand-over's protocol
/// is `bootstrap::handover`).
struct Run<'a> {
    args: &'a BootstrapArgs,
    live: &'a LiveArgs,
    repo: &'a Path,
    prepared: &'a Prepared,
    bastion: &'a Bastion<'a>,
    host: &'a str,
    listen: (&'a str, u16),
    store: LockedStore,
    started: chrono::DateTime<chrono::Utc>,
}

impl Run<'_> {
    async fn plan(&self) -> anyhow::Result<Plan> {
        let state = self.store.load()?;
        Ok(reconcile::plan_probing(
            self.prepared,
            &state,
            self.args.allow_deletes,
            self.live.probe(),
        )
        .await?)
    }

    fn state_dir(&self) -> &Path {
        &self.live.state_dir
    }

    async fn go(&self, mut plan: Plan, credentials: &[Credential]) -> anyhow::Result<Outcome> {
        let server = openstack::server_id(&self.args.env, self.host);
        let exists = !plan.changes.iter().any(|c| c.id == server && c.op == Op::Create);
        let daemon_host = DaemonBastion { bastion: self.bastion, credentials };
        let mut handover =
            Handover::new(&daemon_host, self, &self.store, self.state_dir(), self.host);
        let mut installed = Installed::default();
        let mut resumed = false;
        if exists {
            installed = self
                .bastion
                .installed(credentials)
                .await
                .with_context(|| format!("cannot read what the bastion {} has", self.host))?;
            let begun = handover.begin(&installed).await?;
            resumed = begun.resumed;
            if begun.changed {
                plan = self.plan().await?;
            }
            self.check_checkout(installed.active).await?;
        }
        let updates = installed.updates(credentials);
        if !resumed && !plan.summary.has_changes() && updates.is_empty() && installed.active {
            println!(
                "Nothing to do: the daemon on {} runs, and its files, its credentials and the platform are as the repository says.",
                self.host
            );
            return self.wait_converged(None).await;
        }
        show(&plan, &updates, self.host, installed.active)?;
        let question = "Apply, install and start the daemon?";
        if !self.args.yes && !confirm("bootstrap", "the plan", "--yes", question)? {
            eprintln!("Bootstrap cancelled; nothing was changed.");
            return Ok(Outcome::Invalid);
        }
        match handover.run(plan, exists, installed.active).await {
            Ok(()) => self.wait_converged(Some(self.started)).await,
            Err(Failure { error, restored }) => {
                let error = anyhow::Error::new(error);
                let host = self.host;
                match restored {
                    Restored::NotNeeded => {}
                    Restored::Running => eprintln!("error: {error:#}; the daemon on {host} runs again with the state store as it is now"),
                    Restored::StaysStopped => eprintln!("error: {error:#}; the daemon on {host} stays stopped and this machine holds its state store ({}): fix what failed and run bootstrap again", self.state_dir().display()),
                    Restored::Failed(again) => eprintln!("error: {error:#}; the daemon on {host} could not be started again ({again}): run bootstrap again"),
                }
                Err(error)
            }
        }
    }

    /// The checkout must contain the commit the daemon applied (its
    /// `/status` when it runs, else the store's record): an older one would
    /// undo or prune what the daemon converged.
    async fn check_checkout(&self, active: bool) -> anyhow::Result<()> {
        let running = if active {
            match self.bastion.status(self.listen).await {
                Ok(status) => status["last_good_commit"].as_str().map(str::to_owned),
                Err(_) => None,
            }
        } else {
            None
        };
        let recorded = || {
            let state = self.store.load().ok()?;
            state.environments.get(&self.args.env)?.last_applied_commit.clone()
        };
        let Some(theirs) = running.or_else(recorded) else { return Ok(()) };
        let contained = crate::source::checkout_contains(self.repo, &theirs);
        if self.args.take_over && !matches!(contained, Ok(true)) {
            let ours = self.prepared.commit.as_deref().unwrap_or("?");
            let line = format!(
                "{} take-over: the daemon applied {theirs}; bootstrap applies {ours} from {} (by {})",
                chrono::Utc::now().to_rfc3339(),
                self.repo.display(),
                std::env::var("USER").unwrap_or_else(|_| "?".to_owned()),
            );
            eprintln!("warning: taking the daemon on {} back: it applied commit {theirs}, which this checkout ({ours}) does not contain; its state store is kept", self.host);
            self.bastion.log_take_over(&line).await?;
            return Ok(());
        }
        match contained {
            Ok(true) => Ok(()),
            Ok(false) => bail!(
                "the daemon on {} applied commit {theirs}, which this checkout ({}) does not contain: bootstrap would undo it. Check out that commit or a newer one (git fetch && git checkout {theirs}); if the daemon follows another repository, take it back with --take-over",
                self.host,
                self.prepared.commit.as_deref().unwrap_or("?")
            ),
            Err(why) => bail!(
                "cannot tell whether this checkout contains commit {theirs}, which the daemon on {} applied: {why}",
                self.host
            ),
        }
    }

    async fn wait_converged(
        &self,
        since: Option<chrono::DateTime<chrono::Utc>>,
    ) -> anyhow::Result<Outcome> {
        let timeout = Duration::from_secs(self.args.wait_seconds);
        wait_converged(self.bastion, self.listen, &self.args.env, since, timeout).await
    }
}

/// Planning, applying, asking and telling, for the hand-over.
#[async_trait::async_trait]
impl Operator for Run<'_> {
    async fn plan(&self) -> Result<Plan, HandoverError> {
        Run::plan(self).await.map_err(|e| HandoverError::Operator(format!("{e:#}")))
    }

    async fn apply(&self, plan: &Plan) -> Result<(), HandoverError> {
        let outcome = apply_plan(&self.store, self.prepared, plan, &ApplyOptions::default())
            .await
            .map_err(|e| HandoverError::Operator(format!("{e:#}")))?;
        if outcome.is_success() {
            Ok(())
        } else {
            Err(HandoverError::Incomplete)
        }
    }

    /// Whether `plan` creates or replaces the daemon's server (it then comes
    /// up empty: no daemon to start again, credentials to write anew).
    fn rebuilds_bastion(&self, plan: &Plan) -> bool {
        let server = openstack::server_id(&self.args.env, self.host);
        plan.actions().any(|c| c.id == server && matches!(c.op, Op::Create | Op::Replace { .. }))
    }

    fn confirm_changed(&self, plan: &Plan) -> Result<bool, HandoverError> {
        let ask = || -> anyhow::Result<bool> {
            println!("\nThe daemon's state store changed meanwhile; the plan is now:\n");
            print_plan(&mut std::io::stdout().lock(), plan, "live")?;
            Ok(self.args.yes
                || confirm("bootstrap", "the plan", "--yes", "Apply this plan instead?")?)
        };
        ask().map_err(|e| HandoverError::Operator(format!("{e:#}")))
    }

    fn note(&self, what: Note<'_>) {
        let host = self.host;
        match what {
            Note::UsingBastionStore => println!(
                "Using the state store of the daemon on {host} (it is the one in force; copied to {}).",
                self.state_dir().display()
            ),
            Note::Resuming => println!(
                "Resuming: this machine holds the state store an earlier bootstrap took from {host}."
            ),
            Note::Stopped => {
                println!("Stopped the daemon on {host} (it finished its change in progress).")
            }
            Note::Wrote(path) => println!("  wrote {path}"),
            Note::Started => println!(
                "Started the daemon on {host}; its state store is in force from now on ({} keeps a copy: never apply with it while the daemon runs).",
                self.state_dir().display()
            ),
        }
    }
}

/// A daemon (or its state store) on another bastion than the one the
/// repository gives it: starting one here would make two.
async fn check_other_bastions(
    provider: &HostProvider,
    env: &crate::model::Environment,
    daemon_host: &str,
    plan: &Plan,
) -> anyhow::Result<()> {
    let others = env.hosts.iter().filter(|h| h.role == Role::Bastion && h.name != daemon_host);
    for other in others {
        let server = openstack::server_id(&env.name, &other.name);
        if plan.changes.iter().any(|c| c.id == server && c.op == Op::Create) {
            continue;
        }
        let found = Bastion::new(provider, &other.name)
            .installed(&[])
            .await
            .with_context(|| format!("cannot check the bastion {} for a daemon", other.name))?;
        if found.active || found.state.is_some() {
            bail!(
                "the bastion {} {} but the daemon belongs on {daemon_host}, the first bastion: move it as docs/operations.md, section 6j says (stop it there and move its state store into --state-dir)",
                other.name,
                if found.active { "runs a daemon" } else { "holds a daemon's state store" },
            );
        }
    }
    Ok(())
}

fn show(
    plan: &Plan,
    updates: &[(&Credential, Vec<u8>)],
    host: &str,
    active: bool,
) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    print_plan(&mut stdout, plan, "live")?;
    use std::io::Write;
    writeln!(stdout, "\nOn the bastion {host}:")?;
    if active {
        writeln!(stdout, "  stop the daemon first (it finishes its change in progress)")?;
    }
    for (credential, _) in updates {
        writeln!(stdout, "  write {} (mode {:04o})", credential.path, credential.mode)?;
    }
    writeln!(stdout, "  hand over the state store ({STATE_DIR}/{})", state::STATE_FILE)?;
    writeln!(stdout, "  start the daemon and wait until it reports the environment converged")?;
    Ok(())
}

/// Waits until the daemon's `/status` shows `env` at the newest commit it
/// saw, and says how it ended there.
async fn wait_converged(
    bastion: &Bastion<'_>,
    listen: (&str, u16),
    env: &str,
    since: Option<chrono::DateTime<chrono::Utc>>,
    timeout: Duration,
) -> anyhow::Result<Outcome> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match bastion.status(listen).await {
            Ok(status) => {
                if let Some(done) = converged(&status, env, since) {
                    return done;
                }
                format!(
                    "last seen commit {}, environment {env} at {} ({}), last error {}",
                    status["last_seen_commit"],
                    status["environments"][env]["commit"],
                    status["environments"][env]["outcome"],
                    status["last_error"]
                )
            }
            Err(error) => crate::error::chain(&error),
        };
        if Instant::now() >= deadline {
            bail!("the daemon did not report {env} converged within {timeout:?}: {last}");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// How the daemon's run at the newest commit ended, once it did; a run
/// that failed (which records no commit) counts when it ended after `since`
/// (any, without).
fn converged(
    status: &serde_json::Value,
    env: &str,
    since: Option<chrono::DateTime<chrono::Utc>>,
) -> Option<anyhow::Result<Outcome>> {
    let seen = status["last_seen_commit"].as_str()?;
    if status["rejected"]["commit"].as_str() == Some(seen) {
        let errors = status["rejected"]["errors"].to_string();
        return Some(Err(anyhow::anyhow!("the daemon refused commit {seen}: {errors}")));
    }
    let environment = &status["environments"][env];
    let at_seen = environment["commit"].as_str() == Some(seen);
    let ran_since = since.is_none_or(|since| {
        environment["last_run"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .is_some_and(|t| t >= since)
    });
    match environment["outcome"].as_str()? {
        outcome @ ("success" | "no_changes") if at_seen && ran_since => {
            println!(
                "The daemon is running and reports {env} converged at commit {seen} ({outcome})."
            );
            Some(Ok(Outcome::Ok))
        }
        outcome @ ("failed" | "partial" | "pending") if ran_since => {
            eprintln!(
                "error: the daemon runs, but its run ended {outcome}: failed {}, pending {}, last error {}",
                environment["failed"], environment["pending"], status["last_error"]
            );
            Some(Ok(Outcome::Invalid))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn status(commit: Option<&str>, outcome: &str, last_run: &str) -> serde_json::Value {
        json!({
            "last_seen_commit": "c2",
            "environments": {"e": {"commit": commit, "outcome": outcome, "last_run": last_run}},
        })
    }

    #[test]
    fn the_wait_ends_at_the_first_run_after_the_start() {
        let since =
            chrono::DateTime::parse_from_rfc3339("2026-12-02T10:00:00Z").map(|t| t.to_utc()).ok();
        let before = "2026-12-02T09:59:00Z";
        let after = "2026-12-02T10:00:05Z";
        let outcome = |s: &serde_json::Value, since| converged(s, "e", since).map(|r| r.ok());
        assert_eq!(outcome(&status(Some("c2"), "no_changes", before), since), None);
        assert_eq!(outcome(&status(Some("c1"), "success", after), since), None);
        assert_eq!(outcome(&status(Some("c2"), "success", after), since), Some(Some(Outcome::Ok)));
        assert_eq!(
            outcome(&status(Some("c1"), "failed", after), since),
            Some(Some(Outcome::Invalid))
        );
        assert_eq!(outcome(&status(Some("c1"), "failed", before), since), None);
        assert_eq!(
            outcome(&status(Some("c1"), "failed", before), None),
            Some(Some(Outcome::Invalid))
        );
        let refused =
            json!({"last_seen_commit": "c2", "rejected": {"commit": "c2", "errors": ["x"]}});
        assert!(matches!(converged(&refused, "e", since), Some(Err(_))));
    }
}
