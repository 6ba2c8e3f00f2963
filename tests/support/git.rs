//! Real git repositories for tests: a bare "origin", a working clone to
//! commit and push from, and optionally `git daemon` serving origin over
//! git:// on a free loopback port (stopped on drop).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, require_binary};

/// A bare origin and a work tree that pushes to it.
pub struct GitRemote {
    dir: tempfile::TempDir,
    daemon: Option<(Child, u16)>,
}

fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .args([
            "-c",
            "user.name=Test Operator",
            "-c",
            "user.email=ops@example.test",
            "-c",
            "init.defaultBranch=main",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run git");
    assert!(output.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

impl GitRemote {
    /// An empty origin and its clone, or `None` (skip) without git outside CI.
    pub fn new() -> Option<Self> {
        require_binary("git", "git")?;
        let dir = tempfile::tempdir().expect("temp dir");
        git(dir.path(), &["init", "-q", "--bare", "-b", "main", "origin.git"]);
        git(dir.path(), &["clone", "-q", "origin.git", "work"]);
        Some(Self { dir, daemon: None })
    }

    /// The work tree.
    pub fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    /// The bare origin's path.
    pub fn origin_path(&self) -> PathBuf {
        self.dir.path().join("origin.git")
    }

    /// file:// URL of origin.
    pub fn file_url(&self) -> String {
        format!("file://{}", self.dir.path().join("origin.git").display())
    }

    /// Serves origin with `git daemon`; returns its git:// URL.
    pub fn serve(&mut self) -> String {
        let port = free_port();
        // A group of its own: `git daemon` runs `git-daemon` as a child,
        // which outlives a kill of `git` alone.
        let child = super::process::spawn(
            Command::new("git")
                .args(["daemon", "--reuseaddr", "--export-all", "--listen=127.0.0.1"])
                .arg(format!("--port={port}"))
                .arg(format!("--base-path={}", self.dir.path().display()))
                .arg(self.dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
            "git daemon",
        );
        self.daemon = Some((child, port));
        super::wait_listening("git daemon", port, Duration::from_secs(10), String::new);
        format!("git://127.0.0.1:{port}/origin.git")
    }

    /// The port `git daemon` serves on, once [`Self::serve`] started it.
    pub fn daemon_port(&self) -> Option<u16> {
        self.daemon.as_ref().map(|(_, port)| *port)
    }

    /// Copies `files` into the work tree (relative path, content).
    pub fn write(&self, files: &[(String, String)]) {
        for (path, content) in files {
            let target = self.work().join(path);
            std::fs::create_dir_all(target.parent().expect("parent")).expect("mkdir");
            std::fs::write(target, content).expect("write");
        }
    }

    /// Replaces `from` with `to` in a work-tree file (must be present).
    pub fn edit(&self, rel: &str, from: &str, to: &str) {
        let path = self.work().join(rel);
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.contains(from), "{rel} does not contain {from:?}");
        std::fs::write(path, text.replacen(from, to, 1)).expect("write");
    }

    /// Commits everything; returns the commit id.
    pub fn commit(&self, message: &str) -> String {
        git(&self.work(), &["add", "-A"]);
        git(&self.work(), &["commit", "-q", "--allow-empty", "-m", message]);
        git(&self.work(), &["rev-parse", "HEAD"])
    }

    /// Commits everything with an SSH signature by `key`.
    pub fn commit_signed(&self, message: &str, key: &Path) -> String {
        git(&self.work(), &["add", "-A"]);
        let signing = format!("user.signingkey={}", key.display());
        git(
            &self.work(),
            &["-c", "gpg.format=ssh", "-c", &signing, "commit", "-q", "-S", "-m", message],
        );
        git(&self.work(), &["rev-parse", "HEAD"])
    }

    /// Pushes main (forced when `force`).
    pub fn push(&self, force: bool) {
        let mut args = vec!["push", "-q", "origin", "main"];
        if force {
            args.push("--force");
        }
        git(&self.work(), &args);
    }

    /// `git reset --hard <commit>` in the work tree.
    pub fn reset_hard(&self, commit: &str) {
        git(&self.work(), &["reset", "-q", "--hard", commit]);
    }
}

impl Drop for GitRemote {
    fn drop(&mut self) {
        if let Some((mut child, _)) = self.daemon.take() {
            super::process::stop(&mut child);
        }
    }
}
