//! The commands that need no credentials: `validate`, `render`, and
//! `plan --offline` (with `--base`, a pull request's preview).

use std::path::Path;

use anyhow::Context;

use super::output::output_plan;
use super::{load, report_invalid, runtime, scenario_sources, Outcome, PlanFormat};
use crate::machine::Machine;
use crate::model::{secret::SecretStore, Secrets};
use crate::reconcile::{self, Target};
use crate::state::State;

pub(super) fn validate(
    repo: &Path,
    names: &[String],
    secrets_file: Option<&Path>,
) -> anyhow::Result<Outcome> {
    let Some(loaded) = load(repo, names)? else { return Ok(Outcome::Invalid) };
    let selected = loaded.state.select_many(names).map_err(anyhow::Error::msg)?;
    if let Some(file) = secrets_file {
        let store = SecretStore::load(Some(file), std::env::vars())?;
        let only = (!names.is_empty()).then_some(selected.as_slice());
        if let Err(diagnostics) = loaded.state.check_secrets(&Secrets::Resolved(store), only) {
            report_invalid(&diagnostics.to_string(), diagnostics.0.len());
            return Ok(Outcome::Invalid);
        }
    }
    let hosts = loaded.rendered.hosts.len();
    println!(
        "{}: valid ({} environment(s), {hosts} host(s), {} scenario(s), {} dashboard(s))",
        repo.display(),
        selected.len(),
        loaded.state.scenarios.len(),
        loaded.state.dashboards.len()
    );
    Ok(Outcome::Ok)
}

pub(super) fn render_to(repo: &Path, names: &[String], out: &Path) -> anyhow::Result<Outcome> {
    // Secrets stay redacted: a rendered copy on a developer's disk must
    // never hold credentials.
    let Some(loaded) = load(repo, names)? else { return Ok(Outcome::Invalid) };
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

pub(super) fn plan_offline(
    repo: &Path,
    names: &[String],
    base: Option<&str>,
    format: PlanFormat,
    allow_deletes: bool,
) -> anyhow::Result<Outcome> {
    let Some(prepared) = load(repo, names)? else { return Ok(Outcome::Invalid) };
    let Some(base) = base else {
        let plan =
            runtime()?.block_on(reconcile::plan(&prepared, &State::default(), allow_deletes))?;
        return output_plan(&plan, &[], format, "offline: compared with nothing");
    };
    let dir = crate::fsutil::PrivateTempDir::new("apimon-base")
        .context("cannot make a temporary directory")?;
    let checkout = dir.path().join("base");
    let commit = crate::source::git::export_revision(repo, base, &checkout).with_context(|| {
        format!("cannot read revision {base} of the repository at {}", repo.display())
    })?;
    let short = &commit.0[..commit.0.len().min(12)];
    // A base that is invalid, or lacks the environment, counts as nothing.
    let sources = scenario_sources(&Machine::from_env())?;
    let base_prepared =
        match reconcile::prepare(&checkout, names, &Secrets::Redacted, Target::Offline, &sources) {
            Ok(prepared) => Some(prepared),
            Err(error) => {
                eprintln!(
                    "note: the base {base} ({short}) is compared as empty: {}",
                    crate::error::chain(&error).lines().next().unwrap_or_default()
                );
                None
            }
        };
    let plan = reconcile::preview(&prepared, base_prepared.as_ref(), allow_deletes)?;
    let widened = base_prepared.as_ref().map_or_else(Vec::new, |base| {
        crate::model::authority::widenings(&base.state, &prepared.state, &prepared.environments)
    });
    let context = format!("offline: compared with {base} ({short}) as applied");
    output_plan(&plan, &widened, format, &context)
}
