//! Writing a commit's tree to a directory: blobs as files, through a
//! staging directory so a failure leaves no half-written tree. A symbolic
//! link whose target stays inside the tree is written as what it points at
//! (a file's content, or a directory's files below the link), as a
//! checkout's link would read — scenario repositories link
//! `playbooks/callback_plugins` to a directory beside it, for one. Any
//! other link is written as a file holding its target, never followed;
//! submodules are skipped. What links add is bounded.

use std::path::{Path, PathBuf};

use git2::{Repository, Tree, TreeWalkMode, TreeWalkResult};

use super::git::{CommitId, GitError};

/// Most files and bytes links may add to one export (a hostile tree could
/// link one directory many times).
const MAX_LINKED_FILES: usize = 20_000;
const MAX_LINKED_BYTES: u64 = 128 * 1024 * 1024;

/// A link's mode in a git tree.
const LINK_MODE: i32 = 0o120_000;

#[derive(Default)]
struct Budget {
    files: usize,
    bytes: u64,
}

impl Budget {
    fn take(&mut self, files: usize, bytes: u64) -> bool {
        let (files, bytes) = (self.files + files, self.bytes + bytes);
        let fits = files <= MAX_LINKED_FILES && bytes <= MAX_LINKED_BYTES;
        if fits {
            (self.files, self.bytes) = (files, bytes);
        }
        fits
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
    let staging = dir.with_extension("partial");
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(export_error)?;
    }
    std::fs::create_dir_all(&staging).map_err(export_error)?;
    let mut budget = Budget::default();
    let mut failure = None;
    tree.walk(TreeWalkMode::PreOrder, |parent, entry| {
        let path = staging.join(parent).join(entry.name().unwrap_or_default());
        let written = match entry.kind() {
            Some(git2::ObjectType::Tree) => std::fs::create_dir_all(&path),
            Some(git2::ObjectType::Blob) => match repo.find_blob(entry.id()) {
                Ok(blob) if entry.filemode() == LINK_MODE => {
                    write_link(repo, tree, parent, blob.content(), &path, &mut budget)
                }
                Ok(blob) => std::fs::write(&path, blob.content()),
                Err(e) => Err(std::io::Error::other(e.to_string())),
            },
            // Submodules and other kinds are not part of a desired state.
            _ => Ok(()),
        };
        match written {
            Ok(()) => TreeWalkResult::Ok,
            Err(error) => {
                failure = Some(error);
                TreeWalkResult::Abort
            }
        }
    })
    .map_err(|e| GitError::Git { action: "walk tree of", url: String::new(), source: e })?;
    if let Some(error) = failure {
        return Err(export_error(error));
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(export_error)?;
    }
    std::fs::rename(&staging, dir).map_err(export_error)
}

/// The link at `parent`/… with target `target`: what it points at when
/// that is inside `root` and within the budget, else its target as text.
fn write_link(
    repo: &Repository,
    root: &Tree<'_>,
    parent: &str,
    target: &[u8],
    path: &Path,
    budget: &mut Budget,
) -> std::io::Result<()> {
    let as_text = || std::fs::write(path, target);
    let Some(inside) = std::str::from_utf8(target).ok().and_then(|t| resolve(parent, t)) else {
        return as_text();
    };
    let object = if inside.as_os_str().is_empty() {
        Some(root.as_object().clone())
    } else {
        root.get_path(&inside).ok().and_then(|entry| {
            // A link to a link stays text: no chains, no cycles.
            (entry.filemode() != LINK_MODE).then(|| entry.to_object(repo).ok()).flatten()
        })
    };
    match object {
        Some(object) => match object.kind() {
            Some(git2::ObjectType::Blob) => {
                let Some(blob) = object.as_blob() else { return as_text() };
                if !budget.take(1, blob.content().len() as u64) {
                    return as_text();
                }
                std::fs::write(path, blob.content())
            }
            Some(git2::ObjectType::Tree) => {
                let Some(tree) = object.as_tree() else { return as_text() };
                write_subtree(repo, tree, path, budget).or_else(|_| as_text())
            }
            _ => as_text(),
        },
        None => as_text(),
    }
}

/// The files of `tree` below `path` (links inside it as text), if they fit
/// the budget; nothing is written otherwise.
fn write_subtree(
    repo: &Repository,
    tree: &Tree<'_>,
    path: &Path,
    budget: &mut Budget,
) -> std::io::Result<()> {
    let mut blobs: Vec<(PathBuf, git2::Oid)> = Vec::new();
    let _ = tree.walk(TreeWalkMode::PreOrder, |parent, entry| {
        if entry.kind() == Some(git2::ObjectType::Blob) {
            blobs.push((Path::new(parent).join(entry.name().unwrap_or_default()), entry.id()));
        }
        if blobs.len() > MAX_LINKED_FILES {
            TreeWalkResult::Abort
        } else {
            TreeWalkResult::Ok
        }
    });
    let mut contents = Vec::new();
    let mut bytes = 0u64;
    for (rel, id) in &blobs {
        let blob = repo.find_blob(*id).map_err(|e| std::io::Error::other(e.to_string()))?;
        bytes += blob.content().len() as u64;
        contents.push((rel, blob));
    }
    if blobs.len() > MAX_LINKED_FILES || !budget.take(blobs.len(), bytes) {
        return Err(std::io::Error::other("past the budget of linked files"));
    }
    std::fs::create_dir_all(path)?;
    for (rel, blob) in contents {
        let target = path.join(rel);
        if let Some(dir) = target.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(target, blob.content())?;
    }
    Ok(())
}

/// `target`, relative to the directory `parent` (`a/b/`, empty at the
/// root), as a path inside the tree; `None` when absolute or leaving it.
fn resolve(parent: &str, target: &str) -> Option<PathBuf> {
    if target.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = parent.split('/').filter(|p| !p.is_empty()).collect();
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            name => parts.push(name),
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
            resolve("playbooks/", "../library/callback_plugins/"),
            Some(PathBuf::from("library/callback_plugins"))
        );
        assert_eq!(resolve("", "roles"), Some(PathBuf::from("roles")));
        assert_eq!(resolve("a/", ".."), Some(PathBuf::new()));
        assert_eq!(resolve("", "../secrets"), None);
        assert_eq!(resolve("a/", "/etc/passwd"), None);
    }
}
