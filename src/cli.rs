//! The command line: `validate`, `render`, `plan`.
//!
//! Each command returns an [`Outcome`] that `main` turns into an exit code;
//! errors are reported with their whole cause chain.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};

use crate::engine::{self, Observed, Plan};
use crate::model::{self, secret::SecretStore, DesiredState, Environment, LoadError, Secrets};
use crate::render::{self, Rendered, Templates};

/// apimon: GitOps for an API-monitoring platform on OpenStack.
#[derive(Debug, Parser)]
#[command(name = "apimon", version, about)]
pub struct Cli {
    /// Log more (repeat for more detail); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check the repository; exit 1 with file:line:column errors.
    Validate {
        #[command(flatten)]
        repo: RepoArgs,
        /// Also check that every referenced secret is set (file, then APIMON_SECRET_<NAME>).
        #[arg(long, env = "APIMON_SECRETS_FILE")]
        secrets: Option<PathBuf>,
    },
    /// Write the rendered files of every host to a directory (secrets redacted).
    Render {
        #[command(flatten)]
        repo: RepoArgs,
        /// Only this environment.
        #[arg(long)]
        env: Option<String>,
        /// Output directory: <out>/<env>/<host>/...
        #[arg(long)]
        out: PathBuf,
    },
    /// Show what applying would change. Exit 0: no changes, 2: changes, 1: error.
    Plan {
        #[command(flatten)]
        repo: RepoArgs,
        /// Only this environment.
        #[arg(long)]
        env: Option<String>,
        /// Compare with nothing: needs no credentials, shows everything as created.
        #[arg(long)]
        offline: bool,
        /// Print the plan as JSON.
        #[arg(long)]
        json: bool,
        /// Allow more deletions than an environment's max_deletes.
        #[arg(long)]
        allow_deletes: bool,
    },
}

/// `--repo`.
#[derive(Debug, Args)]
pub struct RepoArgs {
    /// The desired-state repository (a checkout).
    #[arg(long, default_value = ".")]
    pub repo: PathBuf,
}

/// How a command ended, when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Success; for `plan`, nothing to change.
    Ok,
    /// Validation found problems (already printed).
    Invalid,
    /// `plan` found changes.
    Changes,
}

impl From<Outcome> for ExitCode {
    fn from(outcome: Outcome) -> Self {
        match outcome {
            Outcome::Ok => ExitCode::SUCCESS,
            Outcome::Invalid => ExitCode::from(1),
            Outcome::Changes => ExitCode::from(2),
        }
    }
}

/// Runs one command.
///
/// # Errors
/// Anything that stops the command; the caller prints it with its causes.
pub fn run(cli: Cli) -> anyhow::Result<Outcome> {
    match cli.command {
        Command::Validate { repo, secrets } => validate(&repo.repo, secrets.as_deref()),
        Command::Render { repo, env, out } => render_to(&repo.repo, env.as_deref(), &out),
        Command::Plan { repo, env, offline, json, allow_deletes } => {
            if !offline {
                bail!("live observation of OpenStack, InfluxDB, Grafana and hosts is not available yet; run `apimon plan --offline` to plan against nothing");
            }
            plan_offline(&repo.repo, env.as_deref(), json, allow_deletes)
        }
    }
}

/// A repository loaded, validated and rendered with redacted secrets.
struct Loaded {
    state: DesiredState,
    rendered: Rendered,
}

/// Loads and renders; `Ok(None)` when the repository is invalid (printed).
fn load(repo: &Path, env: Option<&str>, secrets: &Secrets) -> anyhow::Result<Option<Loaded>> {
    let state = match model::load_repository(repo) {
        Ok(state) => state,
        Err(LoadError::Invalid(diagnostics)) => {
            report_invalid(&diagnostics.to_string(), diagnostics.0.len());
            return Ok(None);
        }
        Err(error) => return Err(error.into()),
    };
    let templates = match Templates::new(&state.templates) {
        Ok(templates) => templates,
        Err(diagnostics) => {
            report_invalid(&diagnostics.to_string(), diagnostics.0.len());
            return Ok(None);
        }
    };
    let environments: Vec<&Environment> = state.select(env).map_err(anyhow::Error::msg)?;
    let rendered = match render::render_all(&state, &environments, &templates, secrets) {
        Ok(rendered) => rendered,
        Err(error) => {
            report_invalid(&error.to_string(), 1);
            return Ok(None);
        }
    };
    Ok(Some(Loaded { state, rendered }))
}

fn report_invalid(text: &str, count: usize) {
    eprintln!("{text}");
    eprintln!("error: the repository is invalid ({count} problem(s)); nothing was changed");
}

fn validate(repo: &Path, secrets_file: Option<&Path>) -> anyhow::Result<Outcome> {
    let Some(loaded) = load(repo, None, &Secrets::Redacted)? else { return Ok(Outcome::Invalid) };
    if let Some(file) = secrets_file {
        let store = SecretStore::load(Some(file), std::env::vars())?;
        if let Err(diagnostics) = loaded.state.check_secrets(&Secrets::Resolved(store)) {
            report_invalid(&diagnostics.to_string(), diagnostics.0.len());
            return Ok(Outcome::Invalid);
        }
    }
    let hosts = loaded.rendered.hosts.len();
    println!(
        "{}: valid ({} environment(s), {hosts} host(s), {} scenario(s), {} dashboard(s))",
        repo.display(),
        loaded.state.environments.len(),
        loaded.state.scenarios.len(),
        loaded.state.dashboards.len()
    );
    Ok(Outcome::Ok)
}

fn render_to(repo: &Path, env: Option<&str>, out: &Path) -> anyhow::Result<Outcome> {
    // Secrets stay redacted: a rendered copy on a developer's disk must
    // never hold credentials.
    let Some(loaded) = load(repo, env, &Secrets::Redacted)? else { return Ok(Outcome::Invalid) };
    let mut written = 0;
    for host in loaded.rendered.hosts.values() {
        let base = out.join(&host.env).join(&host.host);
        write_file(&base.join("user-data.yaml"), host.user_data.as_bytes())?;
        written += 1;
        for file in &host.files {
            write_file(&base.join(file.path.trim_start_matches('/')), file.content.expose())?;
            written += 1;
        }
    }
    println!(
        "rendered {written} file(s) for {} host(s) into {}",
        loaded.rendered.hosts.len(),
        out.display()
    );
    Ok(Outcome::Ok)
}

fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create directory {}", parent.display()))?;
    }
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

fn plan_offline(
    repo: &Path,
    env: Option<&str>,
    json: bool,
    allow_deletes: bool,
) -> anyhow::Result<Outcome> {
    let secrets = Secrets::Redacted;
    let Some(loaded) = load(repo, env, &secrets)? else { return Ok(Outcome::Invalid) };
    let environments = loaded.state.select(env).map_err(anyhow::Error::msg)?;
    let desired = engine::desired(&loaded.state, &environments, &loaded.rendered, &secrets);
    let policies: BTreeMap<String, model::Policy> =
        environments.iter().map(|e| (e.name.clone(), e.policy)).collect();
    let plan = engine::plan(&desired, &Observed::default(), &policies, allow_deletes)?;
    let mut stdout = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut stdout, &plan)?;
        writeln!(stdout)?;
    } else {
        print_plan(&mut stdout, &plan, "offline: compared with an empty cloud")?;
    }
    Ok(if plan.summary.has_changes() { Outcome::Changes } else { Outcome::Ok })
}

/// terraform-style: one line per change with its reason, then the summary.
fn print_plan(out: &mut impl Write, plan: &Plan, context: &str) -> std::io::Result<()> {
    writeln!(out, "apimon plan ({context})")?;
    writeln!(out)?;
    // Align reasons, but do not let one very long id push every reason off screen.
    let width = plan.actions().map(|c| c.id.to_string().len()).max().unwrap_or(0).min(64);
    for change in plan.actions() {
        writeln!(
            out,
            "{:>3} {:<width$}  {}",
            change.op.symbol(),
            change.id.to_string(),
            change.op.reason()
        )?;
    }
    if plan.summary.has_changes() {
        writeln!(out)?;
    }
    writeln!(out, "{}", plan.summary)
}
