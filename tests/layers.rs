//! The floors of the crate, enforced: every top-level module of `src/`
//! has a floor, and a module may use only modules on its own floor or
//! below — seen in `use` lines, `pub use` re-exports, grouped imports
//! (`crate::{a, b::c}`), inline paths (`crate::daemon::X` in an
//! expression) and `super::` chains that climb to the crate root. Modules
//! on one floor must not form a circle either. Test code (the item after
//! `#[cfg(test)]`) is not checked: a test may build what it tests from
//! anywhere; code after it is. docs/architecture.md draws the same table.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Floor by top-level module, bottom first.
const FLOORS: &[(usize, &[&str])] = &[
    (
        0,
        &[
            "error",
            "url",
            "digest",
            "layout",
            "limits",
            "fsutil",
            "httpbody",
            "progress",
            "retry",
            "cron",
            "known_hosts",
            "serve",
            "machine",
        ],
    ),
    (1, &["model"]),
    (2, &["plan", "render", "source"]),
    (3, &["apply", "state", "notify"]),
    (4, &["providers"]),
    (5, &["reconcile", "bootstrap"]),
    (6, &["daemon", "executor", "health"]),
    (7, &["cli"]),
];

fn floor_of(module: &str) -> Option<usize> {
    FLOORS.iter().find(|(_, names)| names.contains(&module)).map(|(floor, _)| *floor)
}

/// One use of another top-level module.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Use {
    line: usize,
    target: String,
    text: String,
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The identifier at the start of `text`.
fn ident(text: &str) -> &str {
    let end = text.find(|c: char| !is_ident(c)).unwrap_or(text.len());
    &text[..end]
}

/// The first path segment of each item of the group that starts `text`
/// (just after its `{`), however deep the group is nested, top level only.
fn group_heads(text: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0usize;
    let mut expecting = true;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => expecting = true,
            c if expecting && depth == 0 && is_ident(c) => {
                let name = ident(&text[i..]);
                if name != "self" {
                    heads.push(name.to_owned());
                }
                expecting = false;
                for _ in 1..name.len() {
                    chars.next();
                }
            }
            _ => {}
        }
    }
    heads
}

/// Every use of a top-level module in `source`, the text of a file whose
/// `source` with each `#[cfg(test)]` item (up to its `;`, or its braces
/// matched) blanked out, lines kept: code after a test module is still
/// checked.
fn without_test_items(source: &str) -> String {
    const MARK: &str = "#[cfg(test)]";
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(at) = rest.find(MARK) {
        out.push_str(&rest[..at]);
        let item = &rest[at..];
        let mut depth = 0usize;
        let mut end = item.len();
        for (i, c) in item.char_indices().skip(MARK.len()) {
            match c {
                '{' => depth += 1,
                '}' if depth > 0 => {
                    depth -= 1;
                    if depth == 0 {
                        end = i + 1;
                        break;
                    }
                }
                ';' if depth == 0 => {
                    end = i + 1;
                    break;
                }
                _ => {}
            }
        }
        out.extend(item[..end].chars().map(|c| if c == '\n' { '\n' } else { ' ' }));
        rest = &item[end..];
    }
    out.push_str(rest);
    out
}

/// module path below the crate root is `module_path` (`["model",
/// "validate", "daemon"]`; a `mod.rs` is its directory's module).
fn uses(module_path: &[String], source: &str) -> Vec<Use> {
    let code = without_test_items(source);
    let mut found = Vec::new();
    for (number, line) in code.lines().enumerate() {
        let line_code = line.split("//").next().unwrap_or_default();
        let mut push = |target: String| {
            found.push(Use { line: number + 1, target, text: line.trim().to_owned() });
        };
        for (at, _) in line_code.match_indices("crate::") {
            let before = line_code[..at].chars().next_back();
            if before.is_some_and(|c| is_ident(c) || c == '$') {
                continue;
            }
            let rest = &line_code[at + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                group_heads(group).into_iter().for_each(&mut push);
            } else if !ident(rest).is_empty() {
                push(ident(rest).to_owned());
            }
        }
        for (at, _) in line_code.match_indices("super::") {
            let before = line_code[..at].chars().next_back();
            if before.is_some_and(|c| is_ident(c) || c == ':') {
                continue;
            }
            let mut rest = &line_code[at..];
            let mut climbs = 0;
            while let Some(next) = rest.strip_prefix("super::") {
                climbs += 1;
                rest = next;
            }
            // Climbing to the crate root from a file `module_path.len()` deep.
            if climbs >= module_path.len() {
                if let Some(group) = rest.strip_prefix('{') {
                    group_heads(group).into_iter().for_each(&mut push);
                } else if !ident(rest).is_empty() {
                    push(ident(rest).to_owned());
                }
            }
        }
    }
    found
}

/// Every `.rs` file under `src/` but the crate roots, with its module path.
fn sources(root: &Path) -> Vec<(Vec<String>, PathBuf)> {
    let mut files = Vec::new();
    let mut pending = vec![root.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src").filter_map(Result::ok) {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(root).expect("inside src").with_extension("");
                let mut parts: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                if parts.last().is_some_and(|p| p == "mod") {
                    parts.pop();
                }
                if parts == ["lib"] || parts == ["main"] {
                    continue;
                }
                files.push((parts, path));
            }
        }
    }
    files.sort();
    files
}

/// What breaks the floors in the crate at `root`: each upward use and
/// each circle, as lines to print.
fn violations(root: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module_path, path) in sources(root) {
        let top = module_path[0].clone();
        let Some(floor) = floor_of(&top) else {
            problems.push(format!("{}: module `{top}` has no floor in tests/layers.rs FLOORS (and docs/architecture.md)", path.display()));
            continue;
        };
        let text = std::fs::read_to_string(&path).expect("read source");
        for found in uses(&module_path, &text) {
            if found.target == top {
                continue;
            }
            let Some(target_floor) = floor_of(&found.target) else { continue };
            if target_floor > floor {
                problems.push(format!(
                    "{}:{}: `{top}` (floor {floor}) uses `{}` (floor {target_floor}), a floor above: {}",
                    path.display(),
                    found.line,
                    found.target,
                    found.text
                ));
            }
            edges.entry(top.clone()).or_default().insert(found.target);
        }
    }
    if let Some(circle) = find_circle(&edges) {
        problems.push(format!("modules form a circle: {}", circle.join(" -> ")));
    }
    problems
}

fn find_circle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = stack.iter().position(|n| n == node) {
            let mut circle = stack[start..].to_vec();
            circle.push(node.to_owned());
            return Some(circle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_owned());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(circle) = visit(next, edges, stack, done) {
                return Some(circle);
            }
        }
        stack.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    edges.keys().find_map(|node| visit(node, edges, &mut Vec::new(), &mut done))
}

#[test]
fn no_module_uses_a_floor_above_its_own_and_no_circle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let problems = violations(&root);
    assert!(problems.is_empty(), "the floors are broken:\n{}", problems.join("\n"));
}

fn path(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|p| (*p).to_owned()).collect()
}

fn targets(module: &[&str], text: &str) -> Vec<String> {
    uses(&path(module), text).into_iter().map(|u| u.target).collect()
}

#[test]
fn inline_paths_groups_re_exports_and_super_chains_are_seen() {
    let text = "fn f() { let x = crate::daemon::config::MAX; }\n";
    assert_eq!(targets(&["model", "validate"], text), ["daemon"]);
    let text = "use crate::{plan::Op, daemon::{config, self}, self};\n";
    assert_eq!(targets(&["model"], text), ["plan", "daemon"]);
    assert_eq!(targets(&["model"], "pub use crate::daemon::Config;\n"), ["daemon"]);
    // From src/model/validate/daemon.rs, three `super::` reach the root.
    let text = "use super::super::super::daemon::X;\nuse super::super::raw::Y;\n";
    assert_eq!(targets(&["model", "validate", "daemon"], text), ["daemon"]);
    assert_eq!(targets(&["apply"], "use super::providers::FailureKind;\n"), ["providers"]);
    // Not uses: comments, `$crate` in macros, other crates' paths, tests.
    let text = "// crate::daemon\nlet y = $crate::daemon::X; other_crate::daemon::X;\n#[cfg(test)]\nuse crate::cli;\n";
    assert!(targets(&["model"], text).is_empty());
}

#[test]
fn an_upward_inline_path_fails_the_check() {
    let dir = tempfile::tempdir().expect("temp dir");
    let src = dir.path();
    std::fs::create_dir_all(src.join("model")).expect("mkdir");
    std::fs::write(src.join("lib.rs"), "pub mod model;\npub mod daemon;\n").expect("write");
    std::fs::write(
        src.join("model/mod.rs"),
        "pub fn limit() -> u64 {\n    crate::daemon::config::MAX_WINDOW_MINUTES\n}\n",
    )
    .expect("write");
    std::fs::write(src.join("daemon.rs"), "pub use crate::model::limit;\n").expect("write");
    let problems = violations(src);
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert!(
        problems[0].ends_with("model/mod.rs:2: `model` (floor 1) uses `daemon` (floor 6), a floor above: crate::daemon::config::MAX_WINDOW_MINUTES"),
        "{problems:#?}"
    );
    assert_eq!(problems[1], "modules form a circle: daemon -> model -> daemon");
}

#[test]
fn test_items_are_skipped_but_code_after_them_is_checked() {
    let dir = tempfile::tempdir().expect("temp dir");
    let src = dir.path();
    std::fs::write(src.join("lib.rs"), "pub mod model;\npub mod daemon;\n").expect("write");
    let model = "#[cfg(test)]\nmod tests {\n    fn f() { let _ = crate::daemon::X; }\n}\n\n#[cfg(test)]\nuse crate::daemon::Y;\n\npub fn after() -> u8 {\n    crate::daemon::Z\n}\n";
    std::fs::write(src.join("model.rs"), model).expect("write");
    std::fs::write(src.join("daemon.rs"), "pub const Z: u8 = 1;\n").expect("write");
    let problems = violations(src);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(problems[0].ends_with("model.rs:10: `model` (floor 1) uses `daemon` (floor 6), a floor above: crate::daemon::Z"), "{problems:#?}");
}
