//! The command line: the arguments, and the commands that act on live
//! systems (`plan`, `apply`, `daemon`, `executor`); `offline` has the
//! ones that need no credentials, `output` how plans print, `approve`
//! the daemon's approvals.
//!
//! Each command returns an [`Outcome`] that `main` turns into an exit code;
//! errors are reported with their whole cause chain.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};

use std::time::Duration;

use crate::apply::{ApplyOptions, Event};
use crate::machine::Machine;
use crate::model::{secret::SecretStore, Secrets};
use crate::reconcile::{self, Prepared, ReconcileError, Target};
use crate::source::scenarios::SourceCache;

mod adopt;
mod approve;
mod args;
mod bootstrap;
mod daemon;
mod manuals;
mod offline;
mod output;
mod service;

pub use args::{LiveArgs, RepoArgs};

use offline::{plan_offline, render_to, validate};

use crate::state::{self, LockedStore};
use output::{output_plan, print_plan};

/// The version `--version` prints: the release and the commit it is built from.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("APIMON_COMMIT"),
    ", built ",
    env!("APIMON_BUILD_DATE"),
    ")"
);

/// apimon: GitOps for an API-monitoring platform on OpenStack.
#[derive(Debug, Parser)]
#[command(name = "apimon", version = VERSION, about)]
pub struct Cli {
    /// Log more (repeat for more detail); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Log lines as text, or as one JSON object each (for log collectors).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "APIMON_LOG_FORMAT", global = true)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How a plan is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PlanFormat {
    /// One line per change, then the summary.
    Text,
    /// The plan as JSON.
    Json,
    /// A Markdown table, ready to post on a pull request.
    Markdown,
}

/// What a pull request's preview does when its `--base` cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BaseMissing {
    /// Fail (exit 1): a preview against nothing would show everything as new.
    Fail,
    /// Compare with nothing, and say so.
    Empty,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line: timestamp, level, target, fields, spans.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check the repository; exit 1 with file:line:column errors.
    Validate {
        #[command(flatten)]
        repo: RepoArgs,
        /// Only these environments (repeat, or comma-separated): their hosts are rendered and, with
        /// --secrets, only their secrets (and project-wide ones) are checked.
        #[arg(long, value_delimiter = ',')]
        env: Vec<String>,
        /// Also check that every referenced secret is set (file, then APIMON_SECRET_<NAME>).
        #[arg(long, env = "APIMON_SECRETS_FILE")]
        secrets: Option<PathBuf>,
    },
    /// Write the rendered files of every host to a directory (secrets redacted).
    Render {
        #[command(flatten)]
        repo: RepoArgs,
        /// Only these environments (repeat, or comma-separated); all when absent.
        #[arg(long, value_delimiter = ',')]
        env: Vec<String>,
        /// Output directory: <out>/<env>/<host>/...
        #[arg(long)]
        out: PathBuf,
    },
    /// Show what applying would change. Exit 0: no changes, 2: changes, 1: error.
    Plan {
        #[command(flatten)]
        repo: RepoArgs,
        /// Only these environments (repeat, or comma-separated); all when absent.
        #[arg(long, value_delimiter = ',')]
        env: Vec<String>,
        /// Compare with nothing: needs no credentials, shows everything as created.
        #[arg(long)]
        offline: bool,
        /// With --offline: compare with this revision's desired state as if
        /// applied (`origin/main`): a pull request's preview.
        #[arg(long, requires = "offline", value_name = "REV")]
        base: Option<String>,
        /// With --base: when that revision cannot be read or its desired
        /// state does not load, fail (the default) or compare with nothing.
        #[arg(long, requires = "base", value_enum, default_value_t = BaseMissing::Fail)]
        base_missing: BaseMissing,
        /// Print the plan as JSON (same as --format json).
        #[arg(long)]
        json: bool,
        /// Output: text, json, or markdown (a pull-request comment).
        #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
        format: PlanFormat,
        /// Allow more deletions than an environment's max_deletes.
        #[arg(long)]
        allow_deletes: bool,
        #[command(flatten)]
        live: LiveArgs,
    },
    /// Plan against the live systems, confirm, apply. Exit 0: all applied, 1: not.
    Apply {
        #[command(flatten)]
        repo: RepoArgs,
        /// Only these environments (repeat, or comma-separated); all when absent.
        #[arg(long, value_delimiter = ',')]
        env: Vec<String>,
        /// Apply without asking for confirmation.
        #[arg(long)]
        auto_approve: bool,
        /// Allow more deletions than an environment's max_deletes.
        #[arg(long)]
        allow_deletes: bool,
        /// Changes applied at once.
        #[arg(long, default_value_t = 4)]
        parallelism: usize,
        /// Tries per change on transient errors (unreachable, 5xx, timeout).
        #[arg(long, default_value_t = 4)]
        attempts: u32,
        /// First retry delay in milliseconds; doubles per try, up to 10 s.
        #[arg(long, default_value_t = 500)]
        backoff_ms: u64,
        #[command(flatten)]
        live: LiveArgs,
    },
    /// Take over existing resources of declared names that apimon did not
    /// create (a platform built by hand or by the old playbooks): lists
    /// them and the plan once adopted, then marks them as apimon's and
    /// records them in the state store. Refused for resources another
    /// environment owns. Exit 0: adopted (or nothing to adopt), 1: not.
    Adopt {
        #[command(flatten)]
        repo: RepoArgs,
        /// Only these environments (repeat, or comma-separated); all when absent.
        #[arg(long, value_delimiter = ',')]
        env: Vec<String>,
        /// Adopt without asking for confirmation.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        live: LiveArgs,
    },
    /// Install the daemon on an environment's bastion (apimon.yaml's
    /// `daemon:`): converge the environment, write the daemon's files and
    /// credentials (only this environment's), hand the state store over,
    /// start it and wait until it reports the environment converged. Run
    /// again: nothing to do, or an upgrade; never a second daemon.
    /// Exit 0: the daemon runs and converged, 1: not.
    Bootstrap {
        #[command(flatten)]
        repo: RepoArgs,
        #[command(flatten)]
        args: bootstrap::BootstrapArgs,
        #[command(flatten)]
        live: LiveArgs,
    },
    /// Approve what a running daemon holds for an operator (`/status`
    /// lists it): one pending change by id, every pending change of one
    /// environment, or a held commit that widens apimon's authority. Each
    /// approval names the digest the daemon shows now, and is printed.
    /// Exit 0: approved, 1: not.
    Approve {
        /// The pending change's resource id (`outside/influxdb.user/telegraf`).
        #[arg(long, group = "what", required_unless_present_any = ["env", "commit"])]
        id: Option<String>,
        /// Every pending change of this environment.
        #[arg(long, group = "what")]
        env: Option<String>,
        /// The held commit (its widenings are printed).
        #[arg(long, group = "what")]
        commit: Option<String>,
        /// The daemon's configuration: its address and approval token file.
        #[arg(long, default_value = "/etc/apimon/daemon.yaml")]
        config: PathBuf,
        /// The daemon's URL, instead of `listen` from its configuration.
        #[arg(long, value_name = "URL")]
        daemon: Option<String>,
        /// File holding the approval token, instead of its `approval_token_file`.
        #[arg(long)]
        token_file: Option<PathBuf>,
    },
    /// Follow the repository and keep the platform converged (on the bastion).
    Daemon {
        /// The daemon configuration.
        #[arg(long, default_value = "/etc/apimon/daemon.yaml")]
        config: PathBuf,
        /// Run by the unit's ExecStartPre before every start, as root: when
        /// the last hand-over to a new binary or daemon.yaml did not report
        /// ready, put the previous ones back (docs/operations.md,
        /// "Upgrading apimon"); then exit.
        #[arg(long)]
        before_start: bool,
    },
    /// Print shell completions to stdout (the package installs them).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print apimon's man page (roff) to stdout (the package installs it).
    Manpage,
    /// Run the scenarios of this host's environment on their schedules (on the executor host).
    Executor {
        /// The executor configuration, rendered by apimon.
        #[arg(long, default_value = "/etc/apimon/executor.yaml")]
        config: PathBuf,
    },
    /// Evaluate the repository's health rules against the measurements and publish each service's state.
    Health {
        /// The health service's configuration.
        #[arg(long, default_value = "/etc/apimon/health.yaml")]
        config: PathBuf,
    },
}

/// How a command ended, when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Success; for `plan`, nothing to change.
    Ok,
    /// Validation found problems, or an apply did not complete (already printed).
    Invalid,
    /// `plan` found changes.
    Changes,
    /// The daemon stopped for its service manager to start it again.
    Restart,
}

impl From<Outcome> for ExitCode {
    fn from(outcome: Outcome) -> Self {
        match outcome {
            Outcome::Ok => ExitCode::SUCCESS,
            Outcome::Invalid => ExitCode::from(1),
            Outcome::Changes => ExitCode::from(2),
            Outcome::Restart => ExitCode::from(crate::daemon::self_image::RESTART_EXIT_STATUS),
        }
    }
}

/// Says where the bastions the repository gives no address were reached
/// (on stderr: `plan --json` keeps stdout), however the command ended.
fn tell_cloud_addresses(outcome: anyhow::Result<Outcome>) -> anyhow::Result<Outcome> {
    for (name, address, which) in crate::providers::host::bastions::reached_from_cloud() {
        eprintln!("The bastion {name} is at {address}: its {} as the cloud says (no ssh.bastion_address in the repository; nothing is written to it).", which.label());
    }
    outcome
}

/// Runs one command.
///
/// # Errors
/// Anything that stops the command; the caller prints it with its causes.
pub fn run(cli: Cli) -> anyhow::Result<Outcome> {
    match cli.command {
        Command::Validate { repo, env, secrets } => validate(&repo.repo, &env, secrets.as_deref()),
        Command::Render { repo, env, out } => render_to(&repo.repo, &env, &out),
        Command::Plan {
            repo,
            env,
            offline: true,
            base,
            base_missing,
            json,
            format,
            allow_deletes,
            ..
        } => {
            let format = if json { PlanFormat::Json } else { format };
            let base = base.as_deref().map(|rev| (rev, base_missing));
            plan_offline(&repo.repo, &env, base, format, allow_deletes)
        }
        Command::Plan { repo, env, offline: false, json, format, allow_deletes, live, .. } => {
            let format = if json { PlanFormat::Json } else { format };
            let outcome =
                runtime()?.block_on(plan_live(&repo.repo, &env, format, allow_deletes, &live));
            tell_cloud_addresses(outcome)
        }
        Command::Apply {
            repo,
            env,
            auto_approve,
            allow_deletes,
            parallelism,
            attempts,
            backoff_ms,
            live,
        } => {
            let options = ApplyOptions {
                parallelism,
                max_attempts: attempts.max(1),
                initial_backoff: Duration::from_millis(backoff_ms),
                ..ApplyOptions::default()
            };
            let outcome = runtime()?.block_on(apply(
                &repo.repo,
                &env,
                auto_approve,
                allow_deletes,
                &options,
                &live,
            ));
            tell_cloud_addresses(outcome)
        }
        Command::Executor { config } => runtime()?.block_on(service::executor(config)),
        Command::Health { config } => runtime()?.block_on(service::health(config)),
        Command::Adopt { repo, env, yes, live } => {
            tell_cloud_addresses(runtime()?.block_on(adopt::adopt(&repo.repo, &env, yes, &live)))
        }
        Command::Bootstrap { repo, args, live } => tell_cloud_addresses(
            runtime()?.block_on(bootstrap::bootstrap(&repo.repo, &args, &live)),
        ),
        Command::Approve { id, env, commit, config, daemon, token_file } => {
            let what = match (id, env, commit) {
                (Some(id), _, _) => approve::What::Change(id),
                (_, Some(env), _) => approve::What::Environment(env),
                (_, _, Some(commit)) => approve::What::Commit(commit),
                _ => anyhow::bail!("give one of --id, --env and --commit"),
            };
            runtime()?.block_on(approve::approve(what, &config, daemon, token_file))
        }
        Command::Completions { shell } => manuals::completions(shell),
        Command::Manpage => manuals::manpage(),
        Command::Daemon { config, before_start: true } => daemon::before_start(&config),
        Command::Daemon { config, before_start: false } => {
            let config = crate::daemon::config::Config::load(&config)?;
            let runtime = runtime()?;
            let outcome = runtime.block_on(daemon::daemon(config));
            // A forced stop must not wait for a git fetch in a blocking thread.
            runtime.shutdown_timeout(Duration::from_secs(2));
            outcome
        }
    }
}

/// Runs the executor; SIGHUP reloads, SIGTERM/SIGINT stop (twice: at once).
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn resolved_secrets(live: &LiveArgs) -> anyhow::Result<Secrets> {
    Ok(Secrets::Resolved(SecretStore::load(live.secrets.as_deref(), std::env::vars())?))
}

/// Which commit of the scenario repository this run uses, on stderr.
fn note_scenario_repository(prepared: &Prepared) {
    if let Some(repository) = &prepared.state.scenario_repository {
        let followed =
            repository.branch.as_ref().map(|b| format!(" (branch {b})")).unwrap_or_default();
        eprintln!(
            "note: scenario repository {} at {}{followed}",
            crate::url::redact_url(&repository.url),
            repository.commit
        );
    }
}

fn note_not_observed(prepared: &Prepared) {
    if !prepared.not_observed.is_empty() {
        eprintln!(
            "note: not part of this live plan: {}; `apimon plan --offline` shows everything",
            prepared.not_observed.join("; ")
        );
    }
}

/// Loads and renders with real secrets, sets up the live providers, and
/// says on stderr what the live plan leaves out.
fn prepare_live(repo: &Path, names: &[String], live: &LiveArgs) -> anyhow::Result<Prepared> {
    let secrets = resolved_secrets(live)?;
    let machine = live.machine();
    let sources = scenario_sources(&machine)?;
    let prepared = reconcile::prepare(repo, names, &secrets, Target::Live(&machine), &sources)?;
    note_scenario_repository(&prepared);
    note_not_observed(&prepared);
    Ok(prepared)
}

async fn plan_live(
    repo: &Path,
    names: &[String],
    format: PlanFormat,
    allow_deletes: bool,
    live: &LiveArgs,
) -> anyhow::Result<Outcome> {
    let prepared = prepare_live(repo, names, live)?;
    let state = state::read(&live.state_dir)?;
    let plan = reconcile::plan_probing(&prepared, &state, allow_deletes, live.probe()).await?;
    output_plan(&plan, &[], format, "live")
}

async fn apply(
    repo: &Path,
    names: &[String],
    auto_approve: bool,
    allow_deletes: bool,
    options: &ApplyOptions,
    live: &LiveArgs,
) -> anyhow::Result<Outcome> {
    let prepared = prepare_live(repo, names, live)?;
    // Lock before observing: the plan must not go stale under another apply.
    let store = LockedStore::open(&live.state_dir)?;
    let state = store.load()?;
    let plan = reconcile::plan_probing(&prepared, &state, allow_deletes, live.probe()).await?;
    {
        let mut stdout = std::io::stdout().lock();
        print_plan(&mut stdout, &plan, "live")?;
    }
    if plan.summary.has_changes() && !auto_approve && !confirmed()? {
        eprintln!("Apply cancelled; nothing was changed.");
        return Ok(Outcome::Invalid);
    }
    let outcome = apply_plan(&store, &prepared, &plan, options).await?;
    Ok(if outcome.is_success() { Outcome::Ok } else { Outcome::Invalid })
}

/// Applies `plan`, printing each change as it finishes, then the outcome.
async fn apply_plan(
    store: &LockedStore,
    prepared: &Prepared,
    plan: &reconcile::Plan,
    options: &ApplyOptions,
) -> anyhow::Result<crate::apply::Outcome> {
    // Progress: every finished change counts; on a terminal the one
    // starting is shown too, so a long change (a server booting) is visible.
    let total = plan.actions().count();
    let finished = std::sync::atomic::AtomicUsize::new(0);
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let step = || finished.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    let report = |event: Event<'_>| match event {
        Event::Started(id, op) if terminal => println!(
            "    [{}/{total}] {id}: {}…",
            finished.load(std::sync::atomic::Ordering::Relaxed) + 1,
            op.name()
        ),
        Event::Started(..) => {}
        Event::Applied(id, op) => println!("{:>3} [{}/{total}] {id}: done", op.symbol(), step()),
        Event::Failed(id, error) => println!("  ! [{}/{total}] {id}: failed: {error}", step()),
        Event::Skipped(id, because) => {
            println!("  . [{}/{total}] {id}: skipped, depends on {because}", step());
        }
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let outcome = reconcile::apply(store, prepared, plan, options, report, &stop).await?;
    println!();
    println!("{outcome}");
    if let Some(live) = &prepared.live {
        for (provider, requests) in live.requests() {
            tracing::info!(%provider, requests, "Apply finished.");
        }
    }
    Ok(outcome)
}

/// Asks on the terminal; refuses when there is none.
fn confirmed() -> anyhow::Result<bool> {
    confirm("apply", "the plan", "--auto-approve", "Apply these changes?")
}

/// Asks `question` on the terminal; without one, refuses to `what`,
/// naming what to review and the flag that skips the question.
fn confirm(what: &str, review: &str, flag: &str, question: &str) -> anyhow::Result<bool> {
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() {
        bail!("refusing to {what} without confirmation: standard input is not a terminal; review {review} and pass {flag}");
    }
    print!("\n{question} Only 'yes' is accepted: ");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(answer.trim() == "yes")
}

/// Where this command caches scenario repositories, and its git credentials.
fn scenario_sources(machine: &Machine) -> anyhow::Result<SourceCache> {
    SourceCache::from_env(machine.known_hosts.clone())
        .context("cannot read the git credentials for scenario repositories")
}

/// Loads and renders with redacted secrets; `Ok(None)` when the
/// repository is invalid (printed).
fn load(repo: &Path, names: &[String]) -> anyhow::Result<Option<Prepared>> {
    let sources = scenario_sources(&Machine::from_env())?;
    match reconcile::prepare(repo, names, &Secrets::Redacted, Target::Offline, &sources) {
        Ok(prepared) => {
            note_scenario_repository(&prepared);
            Ok(Some(prepared))
        }
        Err(ReconcileError::Invalid(diagnostics)) => {
            report_invalid(&diagnostics.to_string(), diagnostics.0.len());
            Ok(None)
        }
        Err(error @ ReconcileError::Render(_)) => {
            report_invalid(&error.to_string(), 1);
            Ok(None)
        }
        Err(ReconcileError::UnknownEnvironment(message)) => Err(anyhow::Error::msg(message)),
        Err(error) => Err(error.into()),
    }
}

fn report_invalid(text: &str, count: usize) {
    eprintln!("{text}");
    eprintln!("error: the repository is invalid ({count} problem(s)); nothing was changed");
}

impl Command {
    /// A long-running service (logs its own events at info by default).
    pub fn is_service(&self) -> bool {
        matches!(self, Self::Daemon { .. } | Self::Executor { .. } | Self::Health { .. })
    }
}
