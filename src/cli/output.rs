//! How a plan is printed: terraform-style text, JSON, or Markdown for a
//! pull-request comment.

use std::io::Write;

use super::{Outcome, PlanFormat};
use crate::reconcile::{self, Plan};

pub(super) fn output_plan(
    plan: &Plan,
    format: PlanFormat,
    context: &str,
) -> anyhow::Result<Outcome> {
    let mut stdout = std::io::stdout().lock();
    match format {
        PlanFormat::Json => {
            serde_json::to_writer_pretty(&mut stdout, plan)?;
            writeln!(stdout)?;
        }
        PlanFormat::Text => print_plan(&mut stdout, plan, context)?,
        PlanFormat::Markdown => print_markdown(&mut stdout, plan, context)?,
    }
    Ok(if plan.summary.has_changes() { Outcome::Changes } else { Outcome::Ok })
}

/// A pull-request comment: the summary, destroys called out, one table
/// row per change.
fn print_markdown(out: &mut impl Write, plan: &Plan, context: &str) -> std::io::Result<()> {
    let cell = |text: &str| text.replace('|', "\\|").replace('\n', " ");
    writeln!(out, "### apimon plan")?;
    writeln!(out)?;
    writeln!(out, "_{}_", cell(context))?;
    writeln!(out)?;
    writeln!(out, "**{}**", plan.summary)?;
    for line in reconcile::destroys(plan) {
        writeln!(out)?;
        writeln!(out, "> **Warning:** {}", cell(&line))?;
    }
    if plan.summary.has_changes() {
        writeln!(out)?;
        writeln!(out, "| | resource | why |")?;
        writeln!(out, "|---|---|---|")?;
        for change in plan.actions() {
            writeln!(
                out,
                "| `{}` | `{}` | {} |",
                change.op.symbol().trim(),
                cell(&change.id.to_string()),
                cell(change.op.reason())
            )?;
        }
    }
    Ok(())
}

/// terraform-style: one line per change with its reason, then the summary.
pub(super) fn print_plan(out: &mut impl Write, plan: &Plan, context: &str) -> std::io::Result<()> {
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
    writeln!(out, "{}", plan.summary)?;
    for line in reconcile::destroys(plan) {
        writeln!(out, "{line}")?;
    }
    if reconcile::destroys(plan).iter().any(|line| line.contains("(bastion)")) {
        writeln!(out, "The daemon holds changes that destroy or cut off the host it runs on (the bastion): apply them from a workstation (docs/operations.md, \"Changing the bastion\").")?;
    }
    Ok(())
}
