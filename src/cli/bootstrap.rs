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
use crate::bootstrap::bastion::{Bastion, Installed};
use crate::bootstrap::{self, Credential, Sources, STATE_DIR};
use crate::plan::{DesiredSet, Op};
use crate::providers::host::HostProvider;
use crate::providers::{openstack, Availability};
use crate::reconcile::{self, Plan};
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
    /// The SSH key the daemon reaches the hosts with [default: --ssh-key].
    #[arg(long)]
    pub daemon_ssh_key: Option<PathBuf>,
    /// known_hosts lines for the git server (an ssh:// repository), added
    /// to the daemon's known_hosts.
    #[arg(long)]
    pub git_known_hosts: Option<PathBuf>,
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
        bail!("environment {} declares no `daemon:` in apimon.yaml (with a bastion host): bootstrap installs the daemon it describes; see docs/operations.md, section 1", args.env);
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
        ssh_key: args.daemon_ssh_key.as_deref().unwrap_or(&machine.ssh_key),
        known_hosts: &machine.known_hosts,
        git_known_hosts: args.git_known_hosts.as_deref(),
    };
    let credentials = bootstrap::credentials(&prepared.state, env, &sources)?;
    let provider = match HostProvider::for_environment(
        env,
        &DesiredSet::new(),
        &machine.ssh_key,
        &machine.known_hosts,
    ) {
        Availability::Available(provider) => provider,
        Availability::Unavailable(why) => bail!("cannot reach the hosts of {}: {why}", args.env),
    };
    let bastion = Bastion::new(&provider, &host.name);
    let store = LockedStore::open(&live.state_dir)?;
    let plan_with = |state: state::State| {
        let prepared = &prepared;
        async move { reconcile::plan_probing(prepared, &state, args.allow_deletes, live.probe()).await }
    };
    let mut plan = plan_with(store.load()?).await?;
    let server = openstack::server_id(&args.env, &host.name);
    let exists = !plan.changes.iter().any(|c| c.id == server && c.op == Op::Create);
    let mut installed = Installed::default();
    // Whether this machine holds the daemon's store (taken, not handed back).
    let mut holding = false;
    if exists {
        installed = bastion
            .installed(&credentials)
            .await
            .with_context(|| format!("cannot read what the bastion {} has", host.name))?;
        match &installed.taken {
            Some(mark) if bootstrap::holding(&live.state_dir).as_deref() == Some(mark.as_str()) => {
                println!("Resuming: this machine holds the state store an earlier bootstrap took from {}.", host.name);
                holding = true;
            }
            Some(mark) => bail!(
                "the state store of the daemon on {} was taken by another `apimon bootstrap` that did not hand it back ({}); run bootstrap again where that one ran (its state directory holds the newest state), or copy that state directory here",
                host.name,
                mark.split_whitespace().collect::<Vec<_>>().join(" ")
            ),
            None => {
                if take_over_state(&store, &installed, &host.name, &live.state_dir)? {
                    plan = plan_with(store.load()?).await?;
                }
            }
        }
    }
    let updates = credential_updates(&credentials, &installed);
    if !holding && !plan.summary.has_changes() && updates.is_empty() && installed.active {
        println!(
            "Nothing to do: the daemon on {} runs, and its files, its credentials and the platform are as the repository says.",
            host.name
        );
        return wait_converged(&bastion, listen, &args.env, Duration::from_secs(args.wait_seconds))
            .await;
    }
    show(&plan, &updates, &host.name, installed.active)?;
    let question = "Apply, install and start the daemon?";
    if !args.yes && !confirm("bootstrap", "the plan", "--yes", question)? {
        eprintln!("Bootstrap cancelled; nothing was changed.");
        return Ok(Outcome::Invalid);
    }
    if installed.active {
        // One applier at a time: the daemon finishes its change in progress.
        bastion.unit("stop").await?;
        println!("Stopped the daemon on {} (it finished its change in progress).", host.name);
    }
    if exists && !holding {
        // Take the store: the newest (after the stop), kept here, and the
        // bastion marked so that no daemon uses its copy meanwhile. Killed
        // before the mark, the bastion's store is still the one in force.
        let now = bastion.installed(&credentials).await?;
        if take_over_state(&store, &now, &host.name, &live.state_dir)? && installed.active {
            plan = plan_with(store.load()?).await?;
            println!("\nThe daemon changed things before it stopped; the plan is now:\n");
            print_plan(&mut std::io::stdout().lock(), &plan, "live")?;
        }
        if now.state.is_some() {
            let mark = bootstrap::mark();
            bootstrap::hold(&live.state_dir, &mark)?;
            bastion.take(&mark).await?;
        }
    }
    let outcome = apply_plan(&store, &prepared, &plan, &ApplyOptions::default()).await?;
    if !outcome.is_success() {
        if installed.active {
            hand_over_and_start(&bastion, &live.state_dir).await?;
            eprintln!("error: the apply did not complete; the daemon on {} runs again with the state as it is now, and retries", host.name);
        } else {
            eprintln!("error: the apply did not complete; the daemon was not started and the state store stays in {} until a bootstrap hands it over. Fix what failed and run bootstrap again.", live.state_dir.display());
        }
        return Ok(Outcome::Invalid);
    }
    bastion.prepare_directories().await?;
    for (credential, bytes) in &updates {
        bastion.write(credential, bytes).await?;
        println!("  wrote {}", credential.path);
    }
    hand_over_and_start(&bastion, &live.state_dir).await?;
    println!(
        "Started the daemon on {}; its state store is in force from now on ({} keeps a copy: never apply with it while the daemon runs).",
        host.name,
        live.state_dir.display()
    );
    wait_converged(&bastion, listen, &args.env, Duration::from_secs(args.wait_seconds)).await
}

/// Copies the bastion's state store (the daemon's, in force) here when it
/// differs from the local one; whether it did.
fn take_over_state(
    store: &LockedStore,
    installed: &Installed,
    host: &str,
    local: &Path,
) -> anyhow::Result<bool> {
    let Some(text) = &installed.state else { return Ok(false) };
    let source = PathBuf::from(format!("{host}:{STATE_DIR}/{}", state::STATE_FILE));
    let theirs = state::parse(&source, text)?;
    let ours = store.load()?;
    if serde_json::to_value(&theirs)? == serde_json::to_value(&ours)? {
        return Ok(false);
    }
    store.save(&theirs)?;
    println!(
        "Using the state store of the daemon on {host} (it is the one in force; copied to {}).",
        local.display()
    );
    Ok(true)
}

fn credential_updates<'a>(
    credentials: &'a [Credential],
    installed: &Installed,
) -> Vec<(&'a Credential, Vec<u8>)> {
    credentials.iter().filter_map(|c| installed.update(c).map(|bytes| (c, bytes))).collect()
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

async fn hand_over_and_start(bastion: &Bastion<'_>, state_dir: &Path) -> anyhow::Result<()> {
    let path = state_dir.join(state::STATE_FILE);
    let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    bastion.hand_over_state(&bytes).await?;
    bootstrap::release(state_dir)?;
    bastion.unit("start").await?;
    Ok(())
}

/// Waits until the daemon's `/status` shows `env` at the newest commit it
/// saw, and says how it ended there.
async fn wait_converged(
    bastion: &Bastion<'_>,
    listen: (&str, u16),
    env: &str,
    timeout: Duration,
) -> anyhow::Result<Outcome> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match bastion.status(listen).await {
            Ok(status) => {
                if let Some(done) = converged(&status, env) {
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
            Err(error) => error,
        };
        if Instant::now() >= deadline {
            bail!("the daemon did not report {env} converged within {timeout:?}: {last}");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// How the daemon's first run at the newest commit ended, once it did.
fn converged(status: &serde_json::Value, env: &str) -> Option<anyhow::Result<Outcome>> {
    let seen = status["last_seen_commit"].as_str()?;
    if status["rejected"]["commit"].as_str() == Some(seen) {
        let errors = status["rejected"]["errors"].to_string();
        return Some(Err(anyhow::anyhow!("the daemon refused commit {seen}: {errors}")));
    }
    let environment = &status["environments"][env];
    if environment["commit"].as_str() != Some(seen) {
        return None;
    }
    let outcome = environment["outcome"].as_str()?;
    Some(Ok(match outcome {
        "success" | "no_changes" => {
            println!(
                "The daemon is running and reports {env} converged at commit {seen} ({outcome})."
            );
            Outcome::Ok
        }
        _ => {
            eprintln!(
                "error: the daemon runs, but its run at commit {seen} ended {outcome}: failed {}, pending {}, last error {}",
                environment["failed"], environment["pending"], status["last_error"]
            );
            Outcome::Invalid
        }
    }))
}
