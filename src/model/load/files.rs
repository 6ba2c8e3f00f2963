//! The repository's files, read as hostile input: every path must resolve
//! to a regular file inside the repository (a symbolic link may point
//! elsewhere in it, never out of it), devices and fifos are refused, file
//! names must be printable, and sizes, counts and depths are bounded.
//! Problems become diagnostics naming the file; nothing is read twice.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::fsutil::{kind_of, read_limited, ReadError};
use crate::model::error::{Diagnostic, Location};

use crate::limits::{MAX_FILE_BYTES, MAX_REPOSITORY_BYTES, MAX_REPOSITORY_FILES, MAX_TREE_DEPTH};

/// Reads files of one repository, collecting problems.
pub(crate) struct RepoFiles {
    root: PathBuf,
    canonical: PathBuf,
    read: u64,
    pub problems: Vec<Diagnostic>,
}

impl RepoFiles {
    /// The repository at `root`.
    ///
    /// # Errors
    /// `root` cannot be resolved.
    pub fn new(root: &Path) -> std::io::Result<Self> {
        Ok(Self {
            root: root.to_owned(),
            canonical: std::fs::canonicalize(root)?,
            read: 0,
            problems: Vec::new(),
        })
    }

    fn problem(&mut self, rel: &Path, message: impl Into<String>) {
        self.problems.push(Diagnostic::new(Location::file(rel), "", message));
    }

    /// Where `rel` really is, if that is inside the repository; `None`
    /// (and a problem) otherwise. `Ok(None)` when it does not exist.
    fn resolve(&mut self, rel: &Path) -> Result<Option<PathBuf>, ()> {
        let path = self.root.join(rel);
        match std::fs::canonicalize(&path) {
            Ok(real) if real.starts_with(&self.canonical) => Ok(Some(real)),
            Ok(real) => {
                self.problem(rel, format!("is a symbolic link to {}, outside the repository; expected a file inside it", real.display()));
                Err(())
            }
            Err(_) if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_symlink()) => {
                self.problem(rel, "is a broken symbolic link");
                Err(())
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => {
                self.problem(rel, format!("cannot read: {error}"));
                Err(())
            }
        }
    }

    /// The repository's directory, as given.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether `rel` exists (as anything).
    pub fn exists(&self, rel: &Path) -> bool {
        std::fs::symlink_metadata(self.root.join(rel)).is_ok()
    }

    /// The bytes of `rel`, or `None` with a problem.
    pub fn read(&mut self, rel: &Path) -> Option<Vec<u8>> {
        let real = match self.resolve(rel) {
            Ok(Some(real)) => real,
            Ok(None) => {
                self.problem(rel, "cannot read: no such file");
                return None;
            }
            Err(()) => return None,
        };
        let budget = MAX_FILE_BYTES.min(MAX_REPOSITORY_BYTES.saturating_sub(self.read));
        match read_limited(&real, budget) {
            Ok(bytes) => {
                self.read += bytes.len() as u64;
                Some(bytes)
            }
            Err(ReadError::TooLarge { size, .. }) if budget < MAX_FILE_BYTES => {
                self.problem(rel, format!("is {size} bytes, past the {MAX_REPOSITORY_BYTES} bytes apimon reads from one repository"));
                None
            }
            Err(error) => {
                self.problem(rel, error.to_string());
                None
            }
        }
    }

    /// The entries of directory `rel` (none if it is absent), sorted, each
    /// with whether it is a directory; hidden entries are skipped, names
    /// that are not printable UTF-8 are problems.
    pub fn list_dir(&mut self, rel: &Path) -> Vec<(String, bool)> {
        let real = match self.resolve(rel) {
            Ok(Some(real)) if real.is_dir() => real,
            _ => return Vec::new(),
        };
        let entries = match std::fs::read_dir(&real) {
            Ok(entries) => entries,
            Err(error) => {
                self.problem(rel, format!("cannot list directory: {error}"));
                return Vec::new();
            }
        };
        let mut names = Vec::new();
        for entry in entries.filter_map(Result::ok) {
            let raw_name = entry.file_name();
            let Some(name) = raw_name.to_str().filter(|n| !n.chars().any(char::is_control)) else {
                let shown = raw_name.to_string_lossy().escape_debug().to_string();
                self.problem(
                    &rel.join(&raw_name),
                    format!("file name {shown:?} is not printable UTF-8; rename it"),
                );
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            let child = rel.join(name);
            let is_dir = match self.resolve(&child) {
                Ok(Some(real)) => real.is_dir(),
                _ => continue,
            };
            names.push((name.to_owned(), is_dir));
        }
        names.sort();
        names
    }

    /// Every file below the subdirectories of `base`, by path relative to
    /// `base`; a directory reached twice (a symbolic link loop) is read
    /// once, and depth and count are bounded.
    pub fn tree(&mut self, base: &Path) -> BTreeMap<String, Vec<u8>> {
        self.walk(base, false)
    }

    /// Every file below `base`, its own files included (see [`Self::tree`]).
    pub fn all_files(&mut self, base: &Path) -> BTreeMap<String, Vec<u8>> {
        self.walk(base, true)
    }

    fn walk(&mut self, base: &Path, top_level_files: bool) -> BTreeMap<String, Vec<u8>> {
        let mut files = BTreeMap::new();
        let mut seen: BTreeSet<PathBuf> = BTreeSet::new();
        if let Ok(Some(real)) = self.resolve(base) {
            seen.insert(real);
        }
        let listing = self.list_dir(base);
        if top_level_files {
            for (name, _) in listing.iter().filter(|(_, is_dir)| !is_dir) {
                if let Some(bytes) = self.read_entry(&base.join(name)) {
                    files.insert(name.clone(), bytes);
                }
            }
        }
        let mut pending: Vec<(PathBuf, usize)> = listing
            .into_iter()
            .filter(|(_, is_dir)| *is_dir)
            .map(|(name, _)| (PathBuf::from(name), 1))
            .collect();
        pending.reverse();
        while let Some((sub, depth)) = pending.pop() {
            let rel = base.join(&sub);
            let Ok(Some(real)) = self.resolve(&rel) else { continue };
            if !seen.insert(real) {
                continue;
            }
            if depth > MAX_TREE_DEPTH {
                self.problem(&rel, format!("is nested deeper than {MAX_TREE_DEPTH} directories"));
                continue;
            }
            for (name, is_dir) in self.list_dir(&rel) {
                let child = sub.join(&name);
                if is_dir {
                    pending.push((child, depth + 1));
                } else if files.len() >= MAX_REPOSITORY_FILES {
                    self.problem(base, format!("holds more than {MAX_REPOSITORY_FILES} files"));
                    return files;
                } else if let Some(bytes) = self.read_entry(&base.join(&child)) {
                    files.insert(child.to_string_lossy().into_owned(), bytes);
                }
            }
        }
        files
    }

    /// A listed entry that is not a directory: refused unless a regular file.
    fn read_entry(&mut self, rel: &Path) -> Option<Vec<u8>> {
        if let Ok(metadata) = std::fs::metadata(self.root.join(rel)) {
            if !metadata.is_file() {
                self.problem(
                    rel,
                    format!("is a {}, not a regular file", kind_of(metadata.file_type())),
                );
                return None;
            }
        }
        self.read(rel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_inside_are_followed_and_outside_refused() {
        let outside = tempfile::tempdir().expect("temp dir");
        std::fs::write(outside.path().join("secrets.yaml"), "x: y").expect("write");
        let repo = tempfile::tempdir().expect("temp dir");
        std::fs::write(repo.path().join("real.yaml"), "a: b").expect("write");
        std::os::unix::fs::symlink("real.yaml", repo.path().join("inside.yaml")).expect("link");
        std::os::unix::fs::symlink(
            outside.path().join("secrets.yaml"),
            repo.path().join("leak.yaml"),
        )
        .expect("link");
        let mut files = RepoFiles::new(repo.path()).expect("repo");
        assert_eq!(files.read(Path::new("inside.yaml")).as_deref(), Some(&b"a: b"[..]));
        assert!(files.read(Path::new("leak.yaml")).is_none());
        let problems: Vec<String> = files.problems.iter().map(ToString::to_string).collect();
        assert!(problems[0].starts_with("leak.yaml: is a symbolic link to"), "{problems:?}");
        assert!(problems[0].contains("outside the repository"), "{problems:?}");
    }

    #[test]
    fn a_link_loop_is_walked_once() {
        let repo = tempfile::tempdir().expect("temp dir");
        let sub = repo.path().join("scenarios/playbooks");
        std::fs::create_dir_all(&sub).expect("dirs");
        std::fs::write(sub.join("a.yaml"), "- hosts: localhost").expect("write");
        std::os::unix::fs::symlink("..", sub.join("again")).expect("link");
        let mut files = RepoFiles::new(repo.path()).expect("repo");
        let tree = files.tree(Path::new("scenarios"));
        assert!(tree.contains_key("playbooks/a.yaml"), "{:?}", tree.keys());
        assert!(tree.len() <= 2, "{:?}", tree.keys());
    }
}
