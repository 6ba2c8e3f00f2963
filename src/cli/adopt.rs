//! `apimon adopt`: takes over existing resources of declared names (a
//! platform built by hand or by the old playbooks). Lists them, shows the
//! plan as it will be once they are apimon's, and adopts on confirmation.
//! Adopting changes nothing but marks and the state store; `apimon apply`
//! then converges.

use std::io::Write;
use std::path::Path;

use super::{confirm, prepare_live, print_plan, LiveArgs, Outcome};
use crate::reconcile;
use crate::state::LockedStore;

pub(super) async fn adopt(
    repo: &Path,
    names: &[String],
    yes: bool,
    live: &LiveArgs,
) -> anyhow::Result<Outcome> {
    let prepared = prepare_live(repo, names, live)?;
    let store = LockedStore::open(&live.state_dir)?;
    let adoption = reconcile::plan_adoption(&prepared, &store.load()?).await?;
    let mut stdout = std::io::stdout().lock();
    if adoption.adopt.is_empty() {
        writeln!(
            stdout,
            "Nothing to adopt: every existing declared resource is apimon's already."
        )?;
        return Ok(Outcome::Ok);
    }
    writeln!(stdout, "Would adopt {} existing resource(s):", adoption.adopt.len())?;
    for id in &adoption.adopt {
        writeln!(stdout, "  {id}")?;
    }
    writeln!(stdout, "\nOnce adopted, `apimon apply` would make these changes:\n")?;
    print_plan(&mut stdout, &adoption.plan, "after adoption")?;
    drop(stdout);
    let question = "Adopt these resources as apimon's?";
    if !yes && !confirm("adopt", "the list", "--yes", question)? {
        eprintln!("Adoption cancelled; nothing was changed.");
        return Ok(Outcome::Invalid);
    }
    let failed = reconcile::adopt(&store, &prepared, &adoption).await?;
    let adopted = adoption.adopt.len() - failed.len();
    println!("Adopted {adopted} resource(s); {} failed.", failed.len());
    for (id, error) in &failed {
        eprintln!("error: {id}: {error}");
    }
    Ok(if failed.is_empty() { Outcome::Ok } else { Outcome::Invalid })
}
