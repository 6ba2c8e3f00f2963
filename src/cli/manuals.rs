//! Shell completions and the man page, generated from the command line's
//! own definition (clap_complete, clap_mangen): what the package installs
//! is what the binary parses.

use anyhow::Context;
use clap::CommandFactory;

use super::{Cli, Outcome};

pub(super) fn completions(shell: clap_complete::Shell) -> anyhow::Result<Outcome> {
    let mut command = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut command, "apimon", &mut out);
    std::io::Write::write_all(&mut std::io::stdout(), &out)
        .context("cannot write the completions")?;
    Ok(Outcome::Ok)
}

pub(super) fn manpage() -> anyhow::Result<Outcome> {
    let mut out = Vec::new();
    clap_mangen::Man::new(Cli::command()).render(&mut out).context("cannot render the man page")?;
    std::io::Write::write_all(&mut std::io::stdout(), &out).context("cannot write the man page")?;
    Ok(Outcome::Ok)
}
