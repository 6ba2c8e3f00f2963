//! Writing a commit's tree to a directory, as hostile input: every entry's
//! name is checked before it becomes a path ([`super::entry_name`]), files,
//! bytes and depth are counted against [`crate::limits`] as the tree is
//! walked (a blob's size is read from its header before it is inflated),
//! and everything goes to a staging directory beside the target that is
//! removed on any failure, so a refused tree leaves nothing behind.
//!
//! A symbolic link whose target stays inside the tree is written as what
//! it points at (a file's content, or a directory's files below the link),
//! as a checkout's link would read — scenario repositories link
//! `playbooks/callback_plugins` to a directory beside it, for one. Links
//! inside what a link brought, and links out of the tree, are written as
//! files holding their target, never followed; submodules are skipped.

use std::io::Write;
use std::path::{Path, PathBuf};

use git2::{ObjectType, Odb, Oid, Repository, Tree};

use super::entry_name::{check_name, join_inside, NameRefusal};
use super::git::{CommitId, GitError};
use crate::limits::{MAX_FILE_BYTES, MAX_REPOSITORY_BYTES, MAX_REPOSITORY_FILES, MAX_TREE_DEPTH};

/// A link's mode in a git tree.
const LINK_MODE: i32 = 0o120_000;

/// Why a tree is not exported: it is not a tree apimon takes.
#[derive(Debug, thiserror::Error)]
pub enum ExportRefusal {
    /// An entry's name would not stay inside its directory, or is not one
    /// git checks out.
    #[error("tree entry {path} {reason}")]
    Name {
        /// The entry's path in the tree, as far as it can be shown.
        path: String,
        /// What is wrong with the name.
        reason: NameRefusal,
    },
    /// Past one of the limits.
    #[error("tree entry {path}: {what} past the limit of {limit}")]
    Limit {
        /// The entry where the limit was reached.
        path: String,
        /// What was counted.
        what: &'static str,
        /// The limit.
        limit: u64,
    },
    /// Two entries of one name in one tree.
    #[error("tree entry {path} appears twice")]
    Duplicate {
        /// The entry's path.
        path: String,
    },
}

/// What stopped an export.
enum Failure {
    Refused(ExportRefusal),
    Io(std::io::Error),
    Git(git2::Error),
}

impl From<ExportRefusal> for Failure {
    fn from(refusal: ExportRefusal) -> Self {
        Self::Refused(refusal)
    }
}

impl From<git2::Error> for Failure {
    fn from(error: git2::Error) -> Self {
        Self::Git(error)
    }
}

/// Writes `tree` into `dir` (replaced if it exists).
pub(super) fn write_tree(
    repo: &Repository,
    tree: &Tree<'_>,
    commit: &CommitId,
    dir: &Path,
) -> Result<(), GitError> {
    let export_error =
        |source| GitError::Export { commit: commit.clone(), path: dir.to_owned(), source };
    let (parent, name) = match (dir.parent(), dir.file_name()) {
        (Some(parent), Some(name)) => (parent, name.to_string_lossy().into_owned()),
        _ => return Err(export_error(std::io::Error::other("not a directory path"))),
    };
    std::fs::create_dir_all(parent).map_err(export_error)?;
    remove_stale_staging(parent);
    let staging = parent.join(format!(".{name}.partial-{}", unique()));
    std::fs::create_dir(&staging).map_err(export_error)?;
    let written = repo.odb().map_err(Failure::Git).and_then(|odb| {
        let mut writer = Writer { repo, odb, root: tree, staging: &staging, files: 0, bytes: 0 };
        writer.write_dir(tree, Path::new(""), 0, false)
    });
    if let Err(failure) = written {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(match failure {
            Failure::Refused(source) => GitError::Refused { commit: commit.clone(), source },
            Failure::Io(source) => export_error(source),
            Failure::Git(source) => {
                GitError::Git { action: "read the tree of", url: commit.to_string(), source }
            }
        });
    }
    swap_in(&staging, dir, parent, &name).map_err(|e| {
        let _ = std::fs::remove_dir_all(&staging);
        export_error(e)
    })
}

/// Puts `staging` where `dir` is, replacing it.
fn swap_in(staging: &Path, dir: &Path, parent: &Path, name: &str) -> std::io::Result<()> {
    let old = parent.join(format!(".{name}.old-{}", unique()));
    let had_one = match std::fs::rename(dir, &old) {
        Ok(()) => true,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => false,
        Err(error) => return Err(error),
    };
    std::fs::rename(staging, dir)?;
    if had_one {
        let _ = std::fs::remove_dir_all(&old);
    }
    Ok(())
}

/// Removes the exports in `dir` other than the one named `keep`. Dot-names
/// are exports in progress (of this or another process): [`write_tree`]
/// removes those left by a process that is gone.
pub fn prune_exports(dir: &Path, keep: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name();
        if name.to_str() != Some(keep) && !name.to_string_lossy().starts_with('.') {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// `<pid>-<random>`: no two exports (of this process or another) share a
/// staging directory.
fn unique() -> String {
    format!("{}-{:016x}", std::process::id(), rand::random::<u64>())
}

/// Removes staging and replaced directories left by a process that is gone
/// (killed mid-export).
fn remove_stale_staging(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(rest) = name.rsplit_once(".partial-").or_else(|| name.rsplit_once(".old-")) else {
            continue;
        };
        let Some(pid) = rest.1.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        if name.starts_with('.') && !alive(pid) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn alive(pid: i32) -> bool {
    if pid == std::process::id() as i32 {
        return true;
    }
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

/// One export in progress, with what it has written so far.
struct Writer<'a, 'r> {
    repo: &'r Repository,
    odb: Odb<'r>,
    root: &'a Tree<'r>,
    staging: &'a Path,
    files: usize,
    bytes: u64,
}

fn shown(path: &Path) -> String {
    path.to_string_lossy().escape_debug().to_string()
}

impl<'r> Writer<'_, 'r> {
    /// Writes the entries of `tree` at `rel`; `linked` when `tree` was
    /// reached through a link (its own links stay text: no chains).
    fn write_dir(
        &mut self,
        tree: &Tree<'_>,
        rel: &Path,
        depth: usize,
        linked: bool,
    ) -> Result<(), Failure> {
        if depth > MAX_TREE_DEPTH {
            return Err(ExportRefusal::Limit {
                path: shown(rel),
                what: "directory depth",
                limit: MAX_TREE_DEPTH as u64,
            }
            .into());
        }
        for entry in tree.iter() {
            let name = check_name(entry.name_bytes()).map_err(|reason| ExportRefusal::Name {
                path: shown(&rel.join(String::from_utf8_lossy(entry.name_bytes()).as_ref())),
                reason,
            })?;
            let child = rel.join(name);
            let target = self.path(&child)?;
            match entry.kind() {
                Some(ObjectType::Tree) => {
                    self.make_dir(&target, &child)?;
                    let subtree = self.repo.find_tree(entry.id())?;
                    self.write_dir(&subtree, &child, depth + 1, linked)?;
                }
                Some(ObjectType::Blob) if entry.filemode() == LINK_MODE => {
                    self.write_link(entry.id(), rel, &child, &target, depth, linked)?;
                }
                Some(ObjectType::Blob) => self.write_blob(entry.id(), &child, &target)?,
                // Submodules and other kinds are not part of a desired state.
                _ => {}
            }
        }
        Ok(())
    }

    /// Where `rel` goes: below the staging directory, or refused.
    fn path(&self, rel: &Path) -> Result<PathBuf, Failure> {
        join_inside(self.staging, rel).ok_or_else(|| {
            ExportRefusal::Name { path: shown(rel), reason: NameRefusal::Slash }.into()
        })
    }

    fn make_dir(&self, target: &Path, rel: &Path) -> Result<(), Failure> {
        std::fs::create_dir(target).map_err(|error| not_created(error, rel))
    }

    /// Counts one more file of `size` bytes, or refuses at the limit.
    fn take(&mut self, rel: &Path, size: u64) -> Result<(), Failure> {
        let limit = |what, limit| ExportRefusal::Limit { path: shown(rel), what, limit }.into();
        if size > MAX_FILE_BYTES {
            return Err(limit("file size", MAX_FILE_BYTES));
        }
        if self.files + 1 > MAX_REPOSITORY_FILES {
            return Err(limit("number of files", MAX_REPOSITORY_FILES as u64));
        }
        if self.bytes + size > MAX_REPOSITORY_BYTES {
            return Err(limit("bytes in all files", MAX_REPOSITORY_BYTES));
        }
        self.files += 1;
        self.bytes += size;
        Ok(())
    }

    /// The blob `id`, after its size (from the header, before inflating
    /// it) fit the budget.
    fn read_blob(&mut self, id: Oid, rel: &Path) -> Result<git2::Blob<'r>, Failure> {
        let (size, _) = self.odb.read_header(id)?;
        self.take(rel, size as u64)?;
        Ok(self.repo.find_blob(id)?)
    }

    fn write_blob(&mut self, id: Oid, rel: &Path, target: &Path) -> Result<(), Failure> {
        let blob = self.read_blob(id, rel)?;
        write_new(target, blob.content(), rel)
    }

    /// The link `rel` in directory `parent`: what it points at when that is
    /// inside the tree and no link itself, else its target as text.
    fn write_link(
        &mut self,
        id: Oid,
        parent: &Path,
        rel: &Path,
        target: &Path,
        depth: usize,
        linked: bool,
    ) -> Result<(), Failure> {
        let link = self.read_blob(id, rel)?;
        let link = link.content();
        let inside = if linked {
            None
        } else {
            std::str::from_utf8(link).ok().and_then(|t| resolve(parent, t))
        };
        let pointed = match &inside {
            None => None,
            Some(inside) if inside.as_os_str().is_empty() => Some(self.root.as_object().clone()),
            Some(inside) => self.root.get_path(inside).ok().and_then(|entry| {
                (entry.filemode() != LINK_MODE).then(|| entry.to_object(self.repo).ok()).flatten()
            }),
        };
        match pointed.as_ref().map(|o| (o.kind(), o)) {
            Some((Some(ObjectType::Blob), object)) => self.write_blob(object.id(), rel, target),
            Some((Some(ObjectType::Tree), object)) => {
                let tree = self.repo.find_tree(object.id())?;
                self.make_dir(target, rel)?;
                self.write_dir(&tree, rel, depth + 1, true)
            }
            _ => write_new(target, link, rel),
        }
    }
}

/// Creates `target` (never overwrites: two entries of one name are refused).
fn write_new(target: &Path, content: &[u8], rel: &Path) -> Result<(), Failure> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(target)
        .map_err(|error| not_created(error, rel))?;
    file.write_all(content).map_err(Failure::Io)
}

/// Why `rel` was not created: there already (two entries of one name), or
/// the file system's error.
fn not_created(error: std::io::Error, rel: &Path) -> Failure {
    match error.kind() {
        std::io::ErrorKind::AlreadyExists => ExportRefusal::Duplicate { path: shown(rel) }.into(),
        _ => Failure::Io(error),
    }
}

/// `target`, relative to the directory `parent` (empty at the root), as a
/// path inside the tree; `None` when absolute or leaving it.
fn resolve(parent: &Path, target: &str) -> Option<PathBuf> {
    if target.starts_with('/') {
        return None;
    }
    let mut parts: Vec<String> =
        parent.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            name => {
                check_name(name.as_bytes()).ok()?;
                parts.push(name.to_owned());
            }
        }
    }
    Some(parts.iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_targets_resolve_inside_the_tree_only() {
        assert_eq!(
            resolve(Path::new("playbooks"), "../library/callback_plugins/"),
            Some(PathBuf::from("library/callback_plugins"))
        );
        assert_eq!(resolve(Path::new(""), "roles"), Some(PathBuf::from("roles")));
        assert_eq!(resolve(Path::new("a"), ".."), Some(PathBuf::new()));
        assert_eq!(resolve(Path::new(""), "../secrets"), None);
        assert_eq!(resolve(Path::new("a"), "/etc/passwd"), None);
        assert_eq!(resolve(Path::new(""), ".git/config"), None);
    }

    #[test]
    fn stale_staging_of_a_gone_process_is_removed_and_ours_kept() {
        let dir = tempfile::tempdir().expect("temp dir");
        // PID 2^22+1 is above Linux's pid_max: no such process.
        let gone = dir.path().join(".abc.partial-4194305-00");
        let ours = dir.path().join(format!(".abc.partial-{}-00", std::process::id()));
        let export = dir.path().join("abc");
        for path in [&gone, &ours, &export] {
            std::fs::create_dir(path).expect("mkdir");
        }
        remove_stale_staging(dir.path());
        assert!(!gone.exists());
        assert!(ours.exists() && export.exists());
    }

    /// A repository to write raw objects into, as `git hash-object
    /// --literally` would: no name is checked.
    struct Raw {
        dir: tempfile::TempDir,
        repo: Repository,
    }

    impl Raw {
        fn new() -> Self {
            let dir = tempfile::tempdir().expect("temp dir");
            let repo = Repository::init_bare(dir.path().join("r.git")).expect("init");
            Self { dir, repo }
        }

        fn blob(&self, content: &[u8]) -> Oid {
            self.repo.odb().and_then(|o| o.write(ObjectType::Blob, content)).expect("blob")
        }

        /// A tree of `(mode, name, id)` entries, written as they are.
        fn tree(&self, entries: &[(&str, &[u8], Oid)]) -> Oid {
            let mut bytes = Vec::new();
            for (mode, name, id) in entries {
                bytes.extend_from_slice(mode.as_bytes());
                bytes.push(b' ');
                bytes.extend_from_slice(name);
                bytes.push(0);
                bytes.extend_from_slice(id.as_bytes());
            }
            self.repo.odb().and_then(|o| o.write(ObjectType::Tree, &bytes)).expect("tree")
        }

        /// Exports `tree` to `<dir>/exports/commit`.
        fn export(&self, tree: Oid) -> Result<PathBuf, GitError> {
            let tree = self.repo.find_tree(tree).expect("find tree");
            let target = self.dir.path().join("exports/commit");
            write_tree(&self.repo, &tree, &CommitId("c0ffee".into()), &target).map(|()| target)
        }

        /// Every path below the temporary directory, but the repository's.
        fn files(&self) -> Vec<String> {
            let mut found = Vec::new();
            let mut pending = vec![self.dir.path().to_owned()];
            while let Some(dir) = pending.pop() {
                for entry in std::fs::read_dir(&dir).expect("read dir").filter_map(Result::ok) {
                    let path = entry.path();
                    if path.starts_with(self.dir.path().join("r.git")) {
                        continue;
                    }
                    let rel = path.strip_prefix(self.dir.path()).expect("inside");
                    found.push(rel.display().to_string());
                    if entry.file_type().is_ok_and(|t| t.is_dir()) {
                        pending.push(path);
                    }
                }
            }
            found.sort();
            found
        }
    }

    fn refusal(result: Result<PathBuf, GitError>) -> String {
        match result {
            Err(GitError::Refused { source, .. }) => source.to_string(),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    // A NUL ends a name in git's tree format and libgit2 does not parse an
    // empty one: those never reach the export (entry_name's table has them).
    macro_rules! hostile_names {
        ($($test:ident: $name:expr, $kind:expr => $message:expr;)*) => {$(
            #[test]
            fn $test() {
                let raw = Raw::new();
                let payload = raw.blob(b"pwned");
                let inner = raw.tree(&[("100644", b"pwned", payload)]);
                let entry = if $kind == "tree" { ("40000", inner) } else { ("100644", payload) };
                let ok = raw.blob(b"fine");
                let root = raw.tree(&[("100644", b"apimon.yaml", ok), (entry.0, $name, entry.1)]);
                let message = refusal(raw.export(root));
                assert!(message.contains($message), "{message}");
                // Nothing left: no export, no staging, nothing beside them.
                assert_eq!(raw.files(), vec!["exports".to_owned()]);
            }
        )*};
    }

    hostile_names! {
        an_absolute_name_is_refused: b"/tmp/apimon-export-test-pwned", "blob" => "tree entry /tmp/apimon-export-test-pwned has a /";
        a_subtree_named_dot_dot_is_refused: b"..", "tree" => "tree entry .. is named . or ..";
        a_blob_named_dot_dot_is_refused: b"..", "blob" => "is named . or ..";
        a_subtree_named_dot_is_refused: b".", "tree" => "is named . or ..";
        a_dot_git_directory_is_refused: b".git", "tree" => "tree entry .git is named like .git";
        an_upper_case_dot_git_is_refused: b".GIT", "tree" => "is named like .git";
        a_dot_git_with_trailing_dots_is_refused: b".git. .", "tree" => "is named like .git";
        a_name_with_a_slash_is_refused: b"../../escape", "blob" => "has a /";
        a_backslash_is_refused: b"..\\escape", "blob" => "\\";
    }

    #[test]
    fn a_hostile_name_deep_inside_is_named_with_its_path() {
        let raw = Raw::new();
        let payload = raw.blob(b"pwned");
        let bad = raw.tree(&[("100644", b"..", payload)]);
        let mid = raw.tree(&[("40000", b"roles", bad)]);
        let root = raw.tree(&[("40000", b"playbooks", mid)]);
        let message = refusal(raw.export(root));
        assert!(message.contains("tree entry playbooks/roles/.. is named"), "{message}");
        assert_eq!(raw.files(), vec!["exports".to_owned()]);
    }

    #[test]
    fn a_tree_bomb_is_refused_at_the_byte_limit_with_nothing_left() {
        let raw = Raw::new();
        let mib = raw.blob(&vec![b'x'; 1024 * 1024]);
        let names: Vec<String> = (0..64).map(|i| format!("f{i:02}")).collect();
        let entries: Vec<(&str, &[u8], Oid)> =
            names.iter().map(|n| ("100644", n.as_bytes(), mib)).collect();
        let sixty_four = raw.tree(&entries);
        let dirs: Vec<String> = (0..4).map(|i| format!("d{i}")).collect();
        let entries: Vec<(&str, &[u8], Oid)> =
            dirs.iter().map(|n| ("40000", n.as_bytes(), sixty_four)).collect();
        let message = refusal(raw.export(raw.tree(&entries)));
        assert!(message.contains("bytes in all files past the limit of 134217728"), "{message}");
        assert_eq!(raw.files(), vec!["exports".to_owned()]);
    }

    #[test]
    fn a_file_bomb_is_refused_at_the_file_limit() {
        let raw = Raw::new();
        let empty = raw.blob(b"");
        let names: Vec<String> = (0..1000).map(|i| format!("f{i:04}")).collect();
        let entries: Vec<(&str, &[u8], Oid)> =
            names.iter().map(|n| ("100644", n.as_bytes(), empty)).collect();
        let thousand = raw.tree(&entries);
        let dirs: Vec<String> = (0..21).map(|i| format!("d{i:02}")).collect();
        let entries: Vec<(&str, &[u8], Oid)> =
            dirs.iter().map(|n| ("40000", n.as_bytes(), thousand)).collect();
        let message = refusal(raw.export(raw.tree(&entries)));
        assert!(message.contains("number of files past the limit of 20000"), "{message}");
        assert_eq!(raw.files(), vec!["exports".to_owned()]);
    }

    #[test]
    fn deep_nesting_and_large_files_are_refused() {
        let raw = Raw::new();
        let mut tree = raw.tree(&[("100644", b"leaf", raw.blob(b"x"))]);
        for _ in 0..=MAX_TREE_DEPTH {
            tree = raw.tree(&[("40000", b"d", tree)]);
        }
        assert!(refusal(raw.export(tree)).contains("directory depth past the limit of 32"));
        let large = raw.blob(&vec![0; MAX_FILE_BYTES as usize + 1]);
        let message = refusal(raw.export(raw.tree(&[("100644", b"big.json", large)])));
        assert!(message.contains("tree entry big.json: file size past the limit"), "{message}");
        assert_eq!(raw.files(), vec!["exports".to_owned()]);
    }

    #[test]
    fn a_duplicate_entry_is_refused() {
        let raw = Raw::new();
        let blob = raw.blob(b"a");
        let root = raw.tree(&[("100644", b"same", blob), ("100644", b"same", blob)]);
        assert!(refusal(raw.export(root)).contains("tree entry same appears twice"));
    }

    #[test]
    fn links_inside_are_written_as_their_target_and_outside_as_text() {
        let raw = Raw::new();
        let plugin = raw.tree(&[("100644", b"apimon.py", raw.blob(b"# callback"))]);
        let library = raw.tree(&[("40000", b"callback_plugins", plugin)]);
        let up = raw.blob(b"../library/callback_plugins");
        let out = raw.blob(b"../../../etc/passwd");
        let playbooks = raw.tree(&[("120000", b"callback_plugins", up), ("120000", b"leak", out)]);
        let root = raw.tree(&[("40000", b"library", library), ("40000", b"playbooks", playbooks)]);
        let dir = raw.export(root).expect("export");
        let linked = std::fs::read_to_string(dir.join("playbooks/callback_plugins/apimon.py"));
        assert_eq!(linked.expect("linked file"), "# callback");
        let leak = std::fs::read_to_string(dir.join("playbooks/leak")).expect("leak as text");
        assert_eq!(leak, "../../../etc/passwd");
    }

    #[test]
    fn an_export_on_disk_is_replaced_by_the_commit_as_it_is() {
        let raw = Raw::new();
        let root = raw.tree(&[("100644", b"apimon.yaml", raw.blob(b"project: p\n"))]);
        let dir = raw.export(root).expect("export");
        std::fs::write(dir.join("apimon.yaml"), "tampered").expect("tamper");
        std::fs::write(dir.join("extra.yaml"), "planted").expect("plant");
        let dir = raw.export(root).expect("export again");
        assert_eq!(std::fs::read_to_string(dir.join("apimon.yaml")).expect("read"), "project: p\n");
        assert!(!dir.join("extra.yaml").exists());
        assert_eq!(raw.files(), vec!["exports", "exports/commit", "exports/commit/apimon.yaml"]);
    }
}
