//! The commands that need no credentials: `validate`, `render`, and
//! `plan --offline` (with `--base`, a pull request's preview).

use std::path::Path;

use anyhow::Context;

use super::output::output_plan;
use super::{load, report_invalid, runtime, scenario_sources, BaseMissing, Outcome, PlanFormat};
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
    base: Option<(&str, BaseMissing)>,
    format: PlanFormat,
    allow_deletes: bool,
) -> anyhow::Result<Outcome> {
    let Some(prepared) = load(repo, names)? else { return Ok(Outcome::Invalid) };
    let Some((base, missing)) = base else {
        let plan =
            runtime()?.block_on(reconcile::plan(&prepared, &State::default(), allow_deletes))?;
        return output_plan(&plan, &[], format, "offline: compared with nothing");
    };
    let (base_prepared, context) = match prepare_base(repo, names, base) {
        Ok(Base::Applied(prepared, short)) => {
            (Some(*prepared), format!("offline: compared with {base} ({short}) as applied"))
        }
        Ok(Base::NewEnvironments(short)) => (
            None,
            format!("offline: compared with nothing: {base} ({short}) has none of these environments"),
        ),
        Err(why) if missing == BaseMissing::Empty => {
            (None, format!("offline: compared with nothing: the base {base} cannot be used ({why})"))
        }
        Err(why) => anyhow::bail!(
            "the base {base} cannot be used: {why}; the preview would show everything as new (give --base-missing=empty to compare with nothing all the same)"
        ),
    };
    let plan = reconcile::preview(&prepared, base_prepared.as_ref(), allow_deletes)?;
    let widened = base_prepared.as_ref().map_or_else(Vec::new, |base| {
        crate::model::authority::widenings(&base.state, &prepared.state, &prepared.environments)
    });
    output_plan(&plan, &widened, format, &context)
}

/// A pull request's base, as the preview uses it.
enum Base {
    /// Its desired state, prepared; its short commit.
    Applied(Box<reconcile::Prepared>, String),
    /// It loads, but holds none of the environments previewed: they are
    /// new in the change; its short commit.
    NewEnvironments(String),
}

/// Reads revision `base` of the checkout at `repo` and prepares it; why it
/// cannot be used, in words.
fn prepare_base(repo: &Path, names: &[String], base: &str) -> Result<Base, String> {
    let dir = crate::fsutil::PrivateTempDir::new("apimon-base")
        .map_err(|e| format!("cannot make a temporary directory: {e}"))?;
    let checkout = dir.path().join("base");
    let commit = crate::source::git::export_revision(repo, base, &checkout).map_err(|e| {
        let why = crate::error::chain(&e);
        format!("cannot read revision {base}: {}", why.lines().next().unwrap_or_default())
    })?;
    let short = commit.0[..commit.0.len().min(12)].to_owned();
    let sources = scenario_sources(&Machine::from_env()).map_err(|e| e.to_string())?;
    let prepare = |names: &[String]| {
        reconcile::prepare(&checkout, names, &Secrets::Redacted, Target::Offline, &sources)
    };
    match prepare(names) {
        Ok(prepared) => Ok(Base::Applied(Box::new(prepared), short)),
        Err(error) => {
            let why = crate::error::chain(&error).lines().next().unwrap_or_default().to_owned();
            // Valid, without (some of) these environments: they are new.
            let Ok(all) = prepare(&[]) else { return Err(format!("{short}: {why}")) };
            let present: Vec<String> =
                names.iter().filter(|n| all.state.environments.contains_key(*n)).cloned().collect();
            if names.is_empty() || present.len() == names.len() {
                return Err(format!("{short}: {why}"));
            }
            if present.is_empty() {
                return Ok(Base::NewEnvironments(short));
            }
            prepare(&present)
                .map(|prepared| Base::Applied(Box::new(prepared), short.clone()))
                .map_err(|e| {
                    format!(
                        "{short}: {}",
                        crate::error::chain(&e).lines().next().unwrap_or_default()
                    )
                })
        }
    }
}
