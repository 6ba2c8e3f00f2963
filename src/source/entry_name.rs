//! The one way an exported path is made: every tree entry's name checked
//! as git's own `verify_path` checks it before a checkout (with
//! `core.protectNTFS` and `core.protectHFS`, both of which git applies by
//! default on some platform), and the joined path checked to stay inside
//! the export. libgit2 reads trees without these checks, and a tree
//! written with `git hash-object --literally` may hold any name.

use std::path::{Component, Path, PathBuf};

/// Why a tree entry's name is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameRefusal {
    /// No name at all: it would be the directory itself.
    #[error("has an empty name")]
    Empty,
    /// `.` or `..`: it would leave its directory.
    #[error("is named . or .., which would leave its directory")]
    Dot,
    /// `.git` in any spelling a file system reads as `.git`.
    #[error("is named like .git, which git never checks out")]
    DotGit,
    /// A `/` inside: an absolute path or one that reaches into another directory.
    #[error("has a / in its name (an absolute path or several components)")]
    Slash,
    /// A `\`: a path separator on NTFS, refused by git by default.
    #[error("has a \\ in its name")]
    Backslash,
    /// A NUL byte.
    #[error("has a NUL byte in its name")]
    Nul,
    /// Not UTF-8, or with control characters (what the loader refuses too).
    #[error("has a name that is not printable UTF-8")]
    NotPrintable,
}

/// Characters HFS+ ignores when it compares names: `.g\u{200c}it` is `.git` there.
fn hfs_ignorable(c: char) -> bool {
    matches!(c, '\u{200c}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{206a}'..='\u{206f}' | '\u{feff}')
}

/// Whether `name` is read as `.git` by some file system: any case, with
/// trailing dots or spaces (NTFS), an alternate data stream (`.git::$…`),
/// the 8.3 short name `git~1`, or HFS+'s ignorable characters.
fn is_dot_git(name: &str) -> bool {
    let folded: String = name.chars().filter(|c| !hfs_ignorable(*c)).collect();
    let folded = folded.to_ascii_lowercase();
    let stream_free = folded.split(':').next().unwrap_or_default();
    let trimmed = stream_free.trim_end_matches(['.', ' ']);
    trimmed == ".git" || trimmed == "git~1"
}

/// `name` if git would check it out, else why not.
///
/// # Errors
/// The [`NameRefusal`] that applies first.
pub fn check_name(name: &[u8]) -> Result<&str, NameRefusal> {
    if name.is_empty() {
        return Err(NameRefusal::Empty);
    }
    if name.contains(&b'/') {
        return Err(NameRefusal::Slash);
    }
    if name.contains(&0) {
        return Err(NameRefusal::Nul);
    }
    if name.contains(&b'\\') {
        return Err(NameRefusal::Backslash);
    }
    let text = std::str::from_utf8(name).map_err(|_| NameRefusal::NotPrintable)?;
    if text.chars().any(char::is_control) {
        return Err(NameRefusal::NotPrintable);
    }
    if text == "." || text == ".." {
        return Err(NameRefusal::Dot);
    }
    if is_dot_git(text) {
        return Err(NameRefusal::DotGit);
    }
    Ok(text)
}

/// `root` joined with `rel`, when every component of `rel` is a plain
/// name and the result stays below `root`; `None` otherwise. The names
/// were checked one by one already: this is the second lock on the door.
pub fn join_inside(root: &Path, rel: &Path) -> Option<PathBuf> {
    if rel.as_os_str().is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return None;
    }
    let joined = root.join(rel);
    joined.starts_with(root).then_some(joined)
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! names {
        ($($test:ident: $name:expr => $expected:expr;)*) => {$(
            #[test]
            fn $test() {
                assert_eq!(check_name($name).map(|_| ()), $expected, "{:?}", String::from_utf8_lossy($name));
            }
        )*};
    }

    names! {
        plain_name_is_accepted: b"schedule.yaml" => Ok(());
        dotfile_is_accepted: b".ansible-lint" => Ok(());
        gitignore_is_accepted: b".gitignore" => Ok(());
        dots_inside_are_accepted: b"a..b" => Ok(());
        unicode_is_accepted: b"\xc3\xa9t\xc3\xa9.yaml" => Ok(());
        empty_is_refused: b"" => Err(NameRefusal::Empty);
        dot_is_refused: b"." => Err(NameRefusal::Dot);
        dot_dot_is_refused: b".." => Err(NameRefusal::Dot);
        dot_git_is_refused: b".git" => Err(NameRefusal::DotGit);
        dot_git_upper_is_refused: b".GIT" => Err(NameRefusal::DotGit);
        dot_git_mixed_is_refused: b".GiT" => Err(NameRefusal::DotGit);
        dot_git_trailing_dots_is_refused: b".git..." => Err(NameRefusal::DotGit);
        dot_git_trailing_spaces_is_refused: b".git  " => Err(NameRefusal::DotGit);
        dot_git_dot_space_is_refused: b".git . " => Err(NameRefusal::DotGit);
        dot_git_stream_is_refused: b".git::$INDEX_ALLOCATION" => Err(NameRefusal::DotGit);
        git_short_name_is_refused: b"GIT~1" => Err(NameRefusal::DotGit);
        dot_git_hfs_ignorable_is_refused: ".g\u{200c}it".as_bytes() => Err(NameRefusal::DotGit);
        absolute_is_refused: b"/etc/passwd" => Err(NameRefusal::Slash);
        slash_inside_is_refused: b"a/../../b" => Err(NameRefusal::Slash);
        trailing_slash_is_refused: b"a/" => Err(NameRefusal::Slash);
        nul_is_refused: b"a\0b" => Err(NameRefusal::Nul);
        backslash_is_refused: b"..\\..\\x" => Err(NameRefusal::Backslash);
        not_utf8_is_refused: b"a\xffb" => Err(NameRefusal::NotPrintable);
        newline_is_refused: b"a\nb" => Err(NameRefusal::NotPrintable);
        escape_is_refused: b"\x1b[31m" => Err(NameRefusal::NotPrintable);
    }

    #[test]
    fn joined_paths_stay_below_the_root() {
        let root = Path::new("/var/cache/apimon/export");
        assert_eq!(
            join_inside(root, Path::new("a/b.yaml")),
            Some(PathBuf::from("/var/cache/apimon/export/a/b.yaml"))
        );
        assert_eq!(join_inside(root, Path::new("/etc/passwd")), None);
        assert_eq!(join_inside(root, Path::new("a/../../x")), None);
        assert_eq!(join_inside(root, Path::new("..")), None);
        assert_eq!(join_inside(root, Path::new("./a")), None);
        assert_eq!(join_inside(root, Path::new("")), None);
    }
}
