//! How a plan is printed: terraform-style text, JSON, or Markdown for a
//! pull-request comment.

use std::io::Write;

use super::{Outcome, PlanFormat};
use crate::model::authority::Widening;
use crate::reconcile::{self, Plan};

/// Prints `plan`, and what in it widens apimon's authority (`widened`: a
/// daemon holds such a commit for an operator's approval).
pub(super) fn output_plan(
    plan: &Plan,
    widened: &[Widening],
    format: PlanFormat,
    context: &str,
) -> anyhow::Result<Outcome> {
    let mut stdout = std::io::stdout().lock();
    match format {
        PlanFormat::Json => {
            let mut value = serde_json::to_value(plan)?;
            if let Some(object) = value.as_object_mut() {
                let lines: Vec<String> = widened.iter().map(ToString::to_string).collect();
                object.insert("needs_approval".to_owned(), serde_json::json!(lines));
            }
            serde_json::to_writer_pretty(&mut stdout, &value)?;
            writeln!(stdout)?;
        }
        PlanFormat::Text => {
            print_plan(&mut stdout, plan, context)?;
            for widening in widened {
                writeln!(stdout, "needs approval: {widening}")?;
            }
            if !widened.is_empty() {
                writeln!(stdout, "{NEEDS_APPROVAL}")?;
            }
        }
        PlanFormat::Markdown => print_markdown(&mut stdout, plan, widened, context)?,
    }
    let changes = plan.summary.has_changes() || !widened.is_empty();
    Ok(if changes { Outcome::Changes } else { Outcome::Ok })
}

const NEEDS_APPROVAL: &str = "A daemon holds this commit until an operator approves it with the approval token (apimon approve --commit; docs/security.md).";

/// A pull-request comment: the summary, destroys called out, one table
/// row per change.
fn print_markdown(
    out: &mut impl Write,
    plan: &Plan,
    widened: &[Widening],
    context: &str,
) -> std::io::Result<()> {
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
    if !widened.is_empty() {
        writeln!(out)?;
        writeln!(out, "> **Needs approval** (widens apimon's authority):")?;
        for widening in widened {
            writeln!(out, "> - `{}`: {}", cell(&widening.path), cell(&widening.change))?;
        }
        writeln!(out, "> {NEEDS_APPROVAL}")?;
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
