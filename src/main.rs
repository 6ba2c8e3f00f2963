//! `apimon`: thin entry point. Parses the command line, sets up logging,
//! runs the command and maps its outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;

use apimon::cli::{self, Cli};

fn main() -> ExitCode {
    ignore_file_size_signal();
    bound_git_waits();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return match error.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    ExitCode::SUCCESS
                }
                // Not 2, which `plan` means "changes": a CI step that
                // accepts 2 must not pass a mistyped command.
                _ => ExitCode::from(USAGE),
            };
        }
    };
    init_logging(cli.verbose, cli.command.is_service(), cli.log_format);
    match cli::run(cli) {
        Ok(outcome) => outcome.into(),
        // `apimon plan | head` closes the pipe early: not an error.
        Err(error) if is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(1)
        }
    }
}

/// The exit code of a command line that cannot be parsed (sysexits'
/// `EX_USAGE`).
const USAGE: u8 = 64;

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Logs go to stderr so that `plan --json` output stays machine-readable.
/// The services (daemon, executor) log their own events at info by default
/// (each applied change, each run) and their dependencies' at warn only.
fn init_logging(verbose: u8, service: bool, format: cli::LogFormat) {
    let default = match (verbose, service) {
        (0, false) => "warn",
        (0, true) | (1, _) => "warn,apimon=info",
        (2, _) => "info,apimon=debug",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        cli::LogFormat::Json => builder.json().with_current_span(true).init(),
        cli::LogFormat::Text => {
            // Colour only on a terminal: a journal or a log file gets plain text.
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
            builder.with_ansi(ansi).init();
        }
    }
}

/// libgit2 waits for a server forever by default: a remote that accepts a
/// connection and never answers would stall the daemon's git source (and a
/// scenario repository's fetch) for good.
fn bound_git_waits() {
    // SAFETY: these set libgit2 globals without synchronisation; called
    // before any thread starts, as their contract asks.
    unsafe {
        let _ = git2::opts::set_server_connect_timeout_in_milliseconds(15_000);
        let _ = git2::opts::set_server_timeout_in_milliseconds(60_000);
    }
}

/// Past a file size limit (`ulimit -f`) the kernel kills the process with
/// SIGXFSZ unless it is ignored; ignored, the write fails with EFBIG, which
/// apimon reports like a full disk and survives.
fn ignore_file_size_signal() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: installing SIG_IGN runs no handler code, so nothing in it can
    // be unsafe to run asynchronously; it happens before any thread starts.
    let _ = unsafe { signal(Signal::SIGXFSZ, SigHandler::SigIgn) };
}
