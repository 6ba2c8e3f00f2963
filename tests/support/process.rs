//! Every process a test starts runs in a process group of its own,
//! recorded in `$APIMON_PROCESS_LOG` (set by `scripts/test.sh`), and is
//! stopped with its whole group — children included (`git daemon` runs
//! `git-daemon`, sshd a process per connection) — when its handle drops,
//! panics included. `scripts/test.sh` checks at the end that no recorded
//! group is left.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

/// Starts `command` in a process group of its own and records the group
/// (`what` names it in a leak report).
///
/// # Panics
/// The command cannot start.
pub fn spawn(command: &mut Command, what: &str) -> Child {
    let child = command.process_group(0).spawn().unwrap_or_else(|e| panic!("start {what}: {e}"));
    record(child.id(), what);
    child
}

/// Records the group led by `pid` (started elsewhere in a group of its own).
pub fn record(pid: u32, what: &str) {
    let Some(log) = std::env::var_os("APIMON_PROCESS_LOG") else { return };
    // The leader's start time tells a recycled group id from ours.
    let started = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat.rsplit_once(')').map(|(_, rest)| rest.to_owned()))
        .and_then(|rest| rest.split_whitespace().nth(19).map(str::to_owned))
        .unwrap_or_default();
    let test = std::thread::current().name().unwrap_or("unnamed").to_owned();
    let line = format!("{pid} {started} {test} {what}\n");
    let _ = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .and_then(|mut file| std::io::Write::write_all(&mut file, line.as_bytes()));
}

/// Stops `child`'s whole group and reaps `child`.
pub fn stop(child: &mut Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let _ = child.kill();
    let _ = child.wait();
}
