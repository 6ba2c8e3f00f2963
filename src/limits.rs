//! How much apimon takes from one repository: one definition for the
//! loader (which reads files) and the git export (which writes them), so
//! a tree refused by one is refused by the other, and a fetch is bounded
//! before anything is expanded.

/// Largest file apimon reads from, or exports out of, a repository.
pub const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;
/// Most bytes of one repository, all files together.
pub const MAX_REPOSITORY_BYTES: u64 = 128 * 1024 * 1024;
/// Most files of one repository (and under one directory tree).
pub const MAX_REPOSITORY_FILES: usize = 20_000;
/// Deepest directory nesting in a tree.
pub const MAX_TREE_DEPTH: usize = 32;

/// Most bytes one fetch may receive, unless configured otherwise. A pack
/// carries the whole history on a first fetch, so this is far above what
/// one commit may hold.
pub const DEFAULT_MAX_FETCH_BYTES: u64 = 1024 * 1024 * 1024;
/// Most objects one fetch may receive.
pub const MAX_FETCH_OBJECTS: usize = 2_000_000;
/// Longest one fetch may take while the server keeps sending (a server
/// that stops sending fails sooner, at libgit2's read timeout).
pub const MAX_FETCH_SECONDS: u64 = 15 * 60;
