//! Hostile git content for tests: objects written with `git hash-object
//! --literally` (trees with any entry name, as a hostile server or
//! contributor can make them; git's own checks never run), and a TCP
//! relay that throttles what a git server sends.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn git_in(git_dir: &Path, args: &[&str], input: Option<&[u8]>) -> Vec<u8> {
    let mut child = Command::new("git")
        .arg("--git-dir")
        .arg(git_dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "Hostile")
        .env("GIT_AUTHOR_EMAIL", "hostile@example.test")
        .env("GIT_COMMITTER_NAME", "Hostile")
        .env("GIT_COMMITTER_EMAIL", "hostile@example.test")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run git");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.unwrap_or_default().to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let output = child.wait_with_output().expect("git output");
    writer.join().expect("writer").expect("write to git");
    assert!(output.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    output.stdout
}

fn hex_line(bytes: Vec<u8>) -> String {
    String::from_utf8_lossy(&bytes).trim().to_owned()
}

/// One tree entry: mode (`100644`, `40000`, `120000`), name bytes, object id.
pub type Entry = (String, Vec<u8>, String);

/// Writes a blob; its id.
pub fn blob(git_dir: &Path, content: &[u8]) -> String {
    hex_line(git_in(git_dir, &["hash-object", "-w", "--stdin"], Some(content)))
}

/// Writes a tree of `entries` exactly as given (any name, any order).
pub fn tree(git_dir: &Path, entries: &[Entry]) -> String {
    let mut bytes = Vec::new();
    for (mode, name, id) in entries {
        bytes.extend_from_slice(mode.as_bytes());
        bytes.push(b' ');
        bytes.extend_from_slice(name);
        bytes.push(0);
        bytes.extend_from_slice(&hex::decode(id).expect("object id"));
    }
    hex_line(git_in(
        git_dir,
        &["hash-object", "-t", "tree", "--literally", "-w", "--stdin"],
        Some(&bytes),
    ))
}

/// The entries of `rev`'s root tree.
pub fn entries(git_dir: &Path, rev: &str) -> Vec<Entry> {
    let listing = git_in(git_dir, &["ls-tree", "-z", rev], None);
    listing
        .split(|b| *b == 0)
        .filter(|record| !record.is_empty())
        .map(|record| {
            let tab = record.iter().position(|b| *b == b'\t').expect("tab");
            let meta = String::from_utf8_lossy(&record[..tab]).into_owned();
            let fields: Vec<&str> = meta.split(' ').collect();
            let mode = fields[0].trim_start_matches('0').to_owned();
            (mode, record[tab + 1..].to_vec(), fields[2].to_owned())
        })
        .collect()
}

/// A commit of `tree` on `parent`; its id.
pub fn commit(git_dir: &Path, tree: &str, parent: Option<&str>, message: &str) -> String {
    let mut args = vec!["commit-tree", tree, "-m", message];
    if let Some(parent) = parent {
        args.extend(["-p", parent]);
    }
    hex_line(git_in(git_dir, &args, None))
}

/// Points `refs/heads/<branch>` at `commit` (a push, as the server sees it).
pub fn set_branch(git_dir: &Path, branch: &str, commit: &str) {
    git_in(git_dir, &["update-ref", &format!("refs/heads/{branch}"), commit], None);
}

/// `entries` with `extra` added, sorted as git sorts a tree (a tree's name
/// compares as if it ended in `/`), so lookups by path still work.
pub fn with(mut entries: Vec<Entry>, extra: Vec<Entry>) -> Vec<Entry> {
    entries.extend(extra);
    let key = |e: &Entry| {
        let mut name = e.1.clone();
        if e.0 == "40000" {
            name.push(b'/');
        }
        name
    };
    entries.sort_by_key(key);
    entries
}

/// Every path below `dir` that is not inside a bare repository (`*.git`).
pub fn files_outside_git_caches(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(current) = pending.pop() {
        let Ok(listing) = std::fs::read_dir(&current) else { continue };
        for entry in listing.filter_map(Result::ok) {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "git") {
                continue;
            }
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                pending.push(path);
            } else {
                found.push(path.strip_prefix(dir).expect("inside").display().to_string());
            }
        }
    }
    found.sort();
    found
}

/// A relay on a free loopback port to `upstream`, sending the server's
/// bytes to the client at most `bytes_per_second`. Stops when dropped.
pub struct Throttle {
    pub port: u16,
    stop: Arc<AtomicBool>,
}

impl Throttle {
    pub fn start(upstream: u16, bytes_per_second: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind relay");
        let port = listener.local_addr().expect("address").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        std::thread::spawn(move || {
            while !stopping.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let stop = Arc::clone(&stopping);
                        std::thread::spawn(move || relay(client, upstream, bytes_per_second, stop));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Self { port, stop }
    }
}

impl Drop for Throttle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn relay(client: TcpStream, upstream: u16, bytes_per_second: usize, stop: Arc<AtomicBool>) {
    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else { return };
    client.set_nonblocking(false).ok();
    let (Ok(mut client_in), Ok(mut server_out)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    // Client to server: unthrottled (the requests are small).
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut client_in, &mut server_out);
        let _ = server_out.shutdown(std::net::Shutdown::Write);
    });
    // Server to client: a tenth of the rate every 100 ms.
    let (mut server, mut client) = (server, client);
    let chunk = (bytes_per_second / 10).max(1);
    let mut buffer = vec![0u8; chunk];
    while !stop.load(Ordering::SeqCst) {
        match server.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if client.write_all(&buffer[..n]).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    let _ = client.shutdown(std::net::Shutdown::Both);
}
