//! Where the desired state comes from: the daemon's git source ([`git`]),
//! and for the CLI, which commit a checkout is
//! at, read from `.git` directly so `apply` can record it without a git
//! library.

pub mod entry_name;
pub mod export;
mod failure;
mod fetch;
pub mod git;
pub mod scenarios;

use std::path::{Path, PathBuf};

/// The commit `repo` (or the checkout containing it) is at, if it is a git
/// checkout whose HEAD resolves.
pub fn head_commit(repo: &Path) -> Option<String> {
    let start = repo.canonicalize().ok()?;
    let git_dir = start.ancestors().find_map(git_dir_of)?;
    let head = std::fs::read_to_string(git_dir.join("HEAD")).ok()?;
    let head = head.trim();
    match head.strip_prefix("ref: ") {
        None => is_object_id(head).then(|| head.to_owned()),
        Some(reference) => resolve(&git_dir, reference),
    }
}

/// Whether the checkout at `repo` has `commit` in its history (its HEAD is
/// `commit` or a descendant): applying it keeps what `commit` made.
///
/// # Errors
/// Not a git checkout, or `commit` is not in it (fetch first).
pub fn checkout_contains(repo: &Path, commit: &str) -> Result<bool, String> {
    let repository = git2::Repository::discover(repo).map_err(|e| e.message().to_owned())?;
    let head = repository
        .head()
        .and_then(|h| h.peel_to_commit())
        .map_err(|e| format!("no HEAD commit: {}", e.message()))?
        .id();
    let wanted = git2::Oid::from_str(commit).map_err(|e| e.message().to_owned())?;
    if repository.find_commit(wanted).is_err() {
        return Err(format!("commit {commit} is not in this checkout (git fetch first)"));
    }
    Ok(head == wanted
        || repository.graph_descendant_of(head, wanted).map_err(|e| e.message().to_owned())?)
}

fn git_dir_of(dir: &Path) -> Option<PathBuf> {
    let dot_git = dir.join(".git");
    if dot_git.is_dir() {
        return Some(dot_git);
    }
    // A worktree or submodule: `.git` is a file naming the real directory.
    let text = std::fs::read_to_string(&dot_git).ok()?;
    let target = text.trim().strip_prefix("gitdir: ")?;
    Some(dir.join(target))
}

fn resolve(git_dir: &Path, reference: &str) -> Option<String> {
    if let Ok(text) = std::fs::read_to_string(git_dir.join(reference)) {
        let id = text.trim();
        return is_object_id(id).then(|| id.to_owned());
    }
    let packed = std::fs::read_to_string(git_dir.join("packed-refs"))
        .or_else(|_| {
            std::fs::read_to_string(git_dir.join("commondir")).and_then(|common| {
                std::fs::read_to_string(git_dir.join(common.trim()).join("packed-refs"))
            })
        })
        .ok()?;
    packed.lines().find_map(|line| {
        let (id, name) = line.split_once(' ')?;
        (name == reference && is_object_id(id)).then(|| id.to_owned())
    })
}

fn is_object_id(text: &str) -> bool {
    (text.len() == 40 || text.len() == 64) && text.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_follows_a_branch_reference_and_packed_refs() {
        let dir = tempfile::tempdir().expect("temp dir");
        let git = dir.path().join(".git");
        std::fs::create_dir_all(git.join("refs/heads")).expect("mkdir");
        std::fs::write(git.join("HEAD"), "ref: refs/heads/main\n").expect("write");
        let id = "0123456789abcdef0123456789abcdef01234567";
        std::fs::write(git.join("packed-refs"), format!("# pack-refs\n{id} refs/heads/main\n"))
            .expect("write");
        let sub = dir.path().join("examples-repo");
        std::fs::create_dir_all(&sub).expect("mkdir");
        assert_eq!(head_commit(&sub).as_deref(), Some(id));
        let newer = "89abcdef0123456789abcdef0123456789abcdef";
        std::fs::write(git.join("refs/heads/main"), format!("{newer}\n")).expect("write");
        assert_eq!(head_commit(dir.path()).as_deref(), Some(newer));
    }

    #[test]
    fn a_plain_directory_has_no_commit() {
        let dir = tempfile::tempdir().expect("temp dir");
        assert_eq!(head_commit(dir.path()), None);
    }
}

#[cfg(test)]
mod checkout_tests {
    use super::*;

    fn commit(repo: &git2::Repository, message: &str) -> git2::Oid {
        let signature = git2::Signature::now("t", "t@example.test").expect("signature");
        let tree_id = repo.index().and_then(|mut i| i.write_tree()).expect("tree");
        let tree = repo.find_tree(tree_id).expect("tree");
        let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
        let parents: Vec<&git2::Commit> = parent.iter().collect();
        repo.commit(Some("HEAD"), &signature, &signature, message, &tree, &parents).expect("commit")
    }

    #[test]
    fn a_checkout_contains_its_ancestors_not_its_descendants() {
        let dir = tempfile::tempdir().expect("temp dir");
        let repo = git2::Repository::init(dir.path()).expect("init");
        let first = commit(&repo, "first");
        let second = commit(&repo, "second");
        assert_eq!(checkout_contains(dir.path(), &first.to_string()), Ok(true));
        assert_eq!(checkout_contains(dir.path(), &second.to_string()), Ok(true));
        repo.set_head_detached(first).expect("detach");
        assert_eq!(checkout_contains(dir.path(), &second.to_string()), Ok(false));
        let unknown = "0123456789012345678901234567890123456789";
        assert!(checkout_contains(dir.path(), unknown).is_err_and(|e| e.contains("git fetch")));
    }
}
