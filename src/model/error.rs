//! Diagnostics: one per problem found in the repository, each pointing at
//! the file, line and column and the key path it concerns.

use std::fmt;
use std::path::PathBuf;

/// A place in the repository: a file relative to the repository root, and
/// where known the line and column (both 1-based).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Location {
    /// Path relative to the repository root.
    pub file: PathBuf,
    /// 1-based line, when the problem is inside the file.
    pub line: Option<usize>,
    /// 1-based column.
    pub column: Option<usize>,
}

impl Location {
    /// A whole file or directory.
    pub fn file(file: impl Into<PathBuf>) -> Self {
        Self { file: file.into(), line: None, column: None }
    }

    /// A position inside a file.
    pub fn at(file: impl Into<PathBuf>, line: usize, column: usize) -> Self {
        Self { file: file.into(), line: Some(line), column: Some(column) }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let (Some(line), Some(column)) = (self.line, self.column) {
            write!(f, ":{line}:{column}")?;
        }
        Ok(())
    }
}

/// One problem in the repository.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Diagnostic {
    /// Where.
    pub location: Location,
    /// Key path inside the file (`hosts[1].security_groups[0]`), empty for the whole file.
    pub path: String,
    /// What is wrong, and what was expected.
    pub message: String,
}

/// Longest message a diagnostic keeps: parser messages may quote a whole
/// value, and a hostile file can make that value megabytes long.
pub const MAX_MESSAGE_CHARS: usize = 1_000;

/// Most diagnostics printed; the rest are counted.
pub const MAX_PRINTED: usize = 200;

impl Diagnostic {
    /// A diagnostic at `location` for `path`.
    pub fn new(location: Location, path: impl Into<String>, message: impl Into<String>) -> Self {
        Self { location, path: bounded(path.into()), message: bounded(message.into()) }
    }
}

/// `text`, cut to [`MAX_MESSAGE_CHARS`] characters.
fn bounded(mut text: String) -> String {
    if let Some((cut, _)) = text.char_indices().nth(MAX_MESSAGE_CHARS) {
        text.truncate(cut);
        text.push_str("… (cut)");
    }
    text
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.location)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in one pass, sorted by place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// Sorts and removes exact duplicates, so output is stable.
    pub fn normalized(mut list: Vec<Diagnostic>) -> Self {
        list.sort();
        list.dedup();
        Self(list)
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, diagnostic) in self.0.iter().take(MAX_PRINTED).enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{diagnostic}")?;
        }
        if self.0.len() > MAX_PRINTED {
            write!(f, "\n… and {} more problem(s)", self.0.len() - MAX_PRINTED)?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// Loading the repository failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The repository root cannot be read at all.
    #[error("cannot read repository {path}")]
    Io {
        /// Path that failed.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The scenario repository cannot be fetched now (network, server):
    /// worth trying again, unlike an invalid repository.
    #[error("cannot fetch scenario repository {url}: {message}")]
    Fetch {
        /// Remote URL (no credentials in it).
        url: String,
        /// What went wrong.
        message: String,
        /// Whether trying again may help (an unreachable server) or not
        /// until something changes (refused credentials or host key).
        kind: crate::error::FailureKind,
    },
    /// The repository was read but is invalid.
    #[error("the repository has {count} error(s):\n{0}", count = .0 .0.len())]
    Invalid(Diagnostics),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diagnostic_prints_file_line_column_path_and_message() {
        let d = Diagnostic::new(Location::at("a.yaml", 3, 7), "hosts[0].name", "expected a string");
        assert_eq!(d.to_string(), "a.yaml:3:7: hosts[0].name: expected a string");
    }

    #[test]
    fn output_is_bounded_however_large_the_input() {
        let huge = Diagnostic::new(Location::at("a.yaml", 1, 1), "", "x".repeat(1_000_000));
        assert!(huge.to_string().len() < 2 * MAX_MESSAGE_CHARS);
        let many = Diagnostics::normalized(
            (0..5_000)
                .map(|i| Diagnostic::new(Location::at("a.yaml", i + 1, 1), "", "bad"))
                .collect(),
        );
        let text = many.to_string();
        assert_eq!(text.lines().count(), MAX_PRINTED + 1);
        assert!(text.ends_with("… and 4800 more problem(s)"), "{}", &text[text.len() - 60..]);
    }

    #[test]
    fn diagnostics_are_sorted_by_place_and_deduplicated() {
        let late = Diagnostic::new(Location::at("a.yaml", 9, 1), "", "late");
        let early = Diagnostic::new(Location::at("a.yaml", 2, 1), "", "early");
        let all = Diagnostics::normalized(vec![late.clone(), early.clone(), late.clone()]);
        assert_eq!(all.0, vec![early, late]);
    }
}
