//! Reads a repository's files into raw documents.
//!
//! This stage only parses: each file becomes a [`Document`] holding its
//! typed value and a [`SourceMap`], or a diagnostic naming the place that
//! did not parse. Cross-references are `validate.rs`'s job.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use super::error::{Diagnostic, LoadError, Location};
use super::raw;
use super::source_map::SourceMap;

/// The files an environment's inventory directory may hold.
pub const INVENTORY_FILES: [&str; 6] = [
    "hosts.yaml",
    "keypairs.yaml",
    "security_groups.yaml",
    "networks.yaml",
    "influxdb.yaml",
    "grafana.yaml",
];

/// One parsed YAML file.
#[derive(Debug, Clone)]
pub struct Document<T> {
    /// Path relative to the repository root.
    pub file: PathBuf,
    /// The typed content.
    pub value: T,
    /// Where each key path sits in the file.
    pub map: SourceMap,
}

impl<T> Document<T> {
    /// The location of the value at `path` in this file.
    pub fn at(&self, path: &str) -> Location {
        let (line, column) = self.map.position(path);
        Location::at(&self.file, line, column)
    }
}

/// One environment's inventory files; an absent file is an empty one.
#[derive(Debug, Clone)]
pub struct RawInventory {
    /// hosts.yaml
    pub hosts: Document<raw::HostsFile>,
    /// keypairs.yaml
    pub keypairs: Document<raw::KeypairsFile>,
    /// security_groups.yaml
    pub security_groups: Document<raw::SecurityGroupsFile>,
    /// networks.yaml
    pub networks: Document<raw::NetworksFile>,
    /// influxdb.yaml
    pub influxdb: Document<raw::InfluxdbFile>,
    /// grafana.yaml
    pub grafana: Document<raw::GrafanaFile>,
}

/// A dashboard JSON file.
#[derive(Debug, Clone)]
pub struct RawDashboard {
    /// Path relative to the repository root.
    pub file: PathBuf,
    /// Folder uid: the directory under `dashboards/`.
    pub folder: String,
    /// The dashboard model.
    pub model: serde_json::Value,
    /// Positions of its keys (JSON is YAML, so the YAML index serves).
    pub map: SourceMap,
}

/// A template override from the repository's `templates/`.
#[derive(Debug, Clone)]
pub struct RawTemplate {
    /// Path relative to the repository root.
    pub file: PathBuf,
    /// Template source.
    pub text: String,
}

/// Every file of a repository, parsed.
#[derive(Debug, Clone)]
pub struct RawRepository {
    /// apimon.yaml
    pub root: Document<raw::Root>,
    /// inventory/<env>/ by environment directory name.
    pub inventories: BTreeMap<String, RawInventory>,
    /// scenarios/<name>.yaml by name.
    pub scenarios: BTreeMap<String, Document<raw::Scenario>>,
    /// scenarios/schedule.yaml
    pub schedule: Document<raw::ScheduleFile>,
    /// Every other file under scenarios/ (playbooks and their data), by
    /// path relative to scenarios/.
    pub scenario_files: BTreeMap<String, Vec<u8>>,
    /// dashboards/<folder>/*.json
    pub dashboards: Vec<RawDashboard>,
    /// templates/<name> by file name.
    pub templates: BTreeMap<String, RawTemplate>,
}

/// Collects parse problems while reading.
struct Reader<'a> {
    repo: &'a Path,
    problems: Vec<Diagnostic>,
}

impl Reader<'_> {
    fn read_text(&mut self, rel: &Path) -> Option<String> {
        match std::fs::read(self.repo.join(rel)) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => Some(text),
                Err(error) => {
                    let offset = error.utf8_error().valid_up_to();
                    let text = String::from_utf8_lossy(&error.as_bytes()[..offset]).into_owned();
                    let (line, column) = line_column(&text, offset);
                    self.problems.push(Diagnostic::new(
                        Location::at(rel, line, column),
                        "",
                        "invalid UTF-8; expected a UTF-8 text file",
                    ));
                    None
                }
            },
            Err(error) => {
                self.problems.push(Diagnostic::new(
                    Location::file(rel),
                    "",
                    format!("cannot read: {error}"),
                ));
                None
            }
        }
    }

    /// Parses `rel`; an absent or empty file gives `T::default()`.
    fn optional_yaml<T: DeserializeOwned + Default>(&mut self, rel: PathBuf) -> Document<T> {
        let text = if self.repo.join(&rel).exists() { self.read_text(&rel) } else { None };
        match text {
            Some(text) if !is_blank_yaml(&text) => {
                self.parse(rel.clone(), &text).unwrap_or_else(|| empty(rel))
            }
            _ => empty(rel),
        }
    }

    /// Parses `rel`, which must exist and hold a document.
    fn required_yaml<T: DeserializeOwned>(
        &mut self,
        rel: PathBuf,
        what: &str,
    ) -> Option<Document<T>> {
        if !self.repo.join(&rel).is_file() {
            self.problems.push(Diagnostic::new(
                Location::file(&rel),
                "",
                format!("file is missing; expected {what}"),
            ));
            return None;
        }
        let text = self.read_text(&rel)?;
        if is_blank_yaml(&text) {
            self.problems.push(Diagnostic::new(
                Location::at(&rel, 1, 1),
                "",
                format!("file is empty; expected {what}"),
            ));
            return None;
        }
        self.parse(rel, &text)
    }

    fn parse<T: DeserializeOwned>(&mut self, rel: PathBuf, text: &str) -> Option<Document<T>> {
        match parse_yaml(text) {
            Ok(value) => Some(Document { map: SourceMap::build(text), file: rel, value }),
            Err(problem) => {
                self.problems.push(Diagnostic::new(
                    Location::at(&rel, problem.line, problem.column),
                    problem.path,
                    problem.message,
                ));
                None
            }
        }
    }

    fn list_dir(&mut self, rel: &Path) -> Vec<(String, bool)> {
        let dir = self.repo.join(rel);
        if !dir.is_dir() {
            return Vec::new();
        }
        match std::fs::read_dir(&dir) {
            Ok(entries) => {
                let mut names: Vec<(String, bool)> = entries
                    .filter_map(Result::ok)
                    .filter_map(|e| {
                        let is_dir = e.file_type().ok()?.is_dir();
                        Some((e.file_name().to_str()?.to_owned(), is_dir))
                    })
                    .filter(|(name, _)| !name.starts_with('.'))
                    .collect();
                names.sort();
                names
            }
            Err(error) => {
                self.problems.push(Diagnostic::new(
                    Location::file(rel),
                    "",
                    format!("cannot list directory: {error}"),
                ));
                Vec::new()
            }
        }
    }
}

fn empty<T: Default>(doc_file: PathBuf) -> Document<T> {
    Document { file: doc_file, value: T::default(), map: SourceMap::default() }
}

/// A YAML file that holds only comments and blank lines.
fn is_blank_yaml(text: &str) -> bool {
    text.lines().all(|line| {
        let line = line.trim();
        line.is_empty() || line.starts_with('#') || line == "---"
    })
}

/// 1-based line and column of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// A parse failure, already located.
#[derive(Debug)]
pub struct ParseProblem {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// Key path, empty at the top.
    pub path: String,
    /// What was wrong, including what was expected.
    pub message: String,
}

/// Deserializes YAML, keeping the key path and position of any error.
pub fn parse_yaml<T: DeserializeOwned>(text: &str) -> Result<T, ParseProblem> {
    let deserializer = yaml_serde::Deserializer::from_str(text);
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        let (line, column) = inner.location().map(|l| (l.line(), l.column())).unwrap_or((1, 1));
        ParseProblem {
            line,
            column,
            path: if path == "." { String::new() } else { path },
            message: bare_message(&inner.to_string()),
        }
    })
}

/// yaml_serde's messages contain " at line L column C" and may start with
/// the path; both are printed separately, so strip them.
fn bare_message(message: &str) -> String {
    let mut message = message.to_owned();
    if let Some(start) = message.find(" at line ") {
        let rest = &message[start + " at line ".len()..];
        let line_digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let after_line = &rest[line_digits..];
        if line_digits > 0 {
            if let Some(column) = after_line.strip_prefix(" column ") {
                let column_digits = column.bytes().take_while(u8::is_ascii_digit).count();
                let end = message.len() - column.len() + column_digits;
                message.replace_range(start..end, "");
            }
        }
    }
    match message.split_once(": ") {
        Some((head, rest)) if !head.contains(' ') && !head.contains('`') => rest.to_owned(),
        _ => message,
    }
}

/// A configuration file (daemon.yaml, executor.yaml) parsed with the
/// positions of its keys, collecting problems as `file:line:column: key: message`.
pub struct ConfigFile<'a, T> {
    /// The typed content.
    pub value: T,
    path: &'a Path,
    map: SourceMap,
    problems: Vec<String>,
}

impl<'a, T: DeserializeOwned> ConfigFile<'a, T> {
    /// Parses `text` (from `path`).
    ///
    /// # Errors
    /// The parse error, located.
    pub fn parse(path: &'a Path, text: &str) -> Result<Self, Vec<String>> {
        let value = parse_yaml(text).map_err(|p| {
            let at = if p.path.is_empty() { String::new() } else { format!("{}: ", p.path) };
            vec![format!("{}:{}:{}: {at}{}", path.display(), p.line, p.column, p.message)]
        })?;
        Ok(Self { value, path, map: SourceMap::build(text), problems: Vec::new() })
    }
}

impl<T> ConfigFile<'_, T> {
    /// Records a problem with the value at `key`.
    pub fn problem(&mut self, key: &str, message: impl std::fmt::Display) {
        let (line, column) = self.map.position(key);
        self.problems.push(format!("{}:{line}:{column}: {key}: {message}", self.path.display()));
    }

    /// The value, or every problem recorded.
    ///
    /// # Errors
    /// The problems, when there are any.
    pub fn finish(self) -> Result<T, Vec<String>> {
        if self.problems.is_empty() {
            Ok(self.value)
        } else {
            Err(self.problems)
        }
    }
}

/// Reads and parses every file of the repository at `repo`.
///
/// # Errors
/// [`LoadError::Io`] when `repo` is not a readable directory;
/// [`LoadError::Invalid`] listing every file that did not parse.
pub fn load(repo: &Path) -> Result<RawRepository, LoadError> {
    if let Err(source) = std::fs::read_dir(repo) {
        return Err(LoadError::Io { path: repo.to_owned(), source });
    }
    let mut reader = Reader { repo, problems: Vec::new() };
    let root = reader.required_yaml::<raw::Root>(
        PathBuf::from("apimon.yaml"),
        "the project settings (project, environments)",
    );

    let mut inventories = BTreeMap::new();
    let inventory_dir = Path::new("inventory");
    for (name, is_dir) in reader.list_dir(inventory_dir) {
        let dir = inventory_dir.join(&name);
        if !is_dir {
            reader.problems.push(Diagnostic::new(
                Location::file(&dir),
                "",
                "unexpected file; expected one directory per environment",
            ));
            continue;
        }
        for (file, _) in reader.list_dir(&dir) {
            if !INVENTORY_FILES.contains(&file.as_str()) {
                reader.problems.push(Diagnostic::new(
                    Location::file(dir.join(&file)),
                    "",
                    format!(
                        "unknown inventory file; expected one of {}",
                        INVENTORY_FILES.join(", ")
                    ),
                ));
            }
        }
        let inventory = RawInventory {
            hosts: reader.optional_yaml(dir.join("hosts.yaml")),
            keypairs: reader.optional_yaml(dir.join("keypairs.yaml")),
            security_groups: reader.optional_yaml(dir.join("security_groups.yaml")),
            networks: reader.optional_yaml(dir.join("networks.yaml")),
            influxdb: reader.optional_yaml(dir.join("influxdb.yaml")),
            grafana: reader.optional_yaml(dir.join("grafana.yaml")),
        };
        inventories.insert(name, inventory);
    }

    let scenarios_dir = Path::new("scenarios");
    let mut scenarios = BTreeMap::new();
    let schedule = reader.optional_yaml::<raw::ScheduleFile>(scenarios_dir.join("schedule.yaml"));
    for (file, is_dir) in reader.list_dir(scenarios_dir) {
        let rel = scenarios_dir.join(&file);
        if is_dir || file == "schedule.yaml" {
            continue;
        }
        if let Some(stem) = file.strip_suffix(".yaml") {
            if let Some(doc) = reader.required_yaml::<raw::Scenario>(rel, "a scenario") {
                scenarios.insert(stem.to_owned(), doc);
            }
        } else if file.ends_with(".yml") {
            reader.problems.push(Diagnostic::new(
                Location::file(&rel),
                "",
                "scenario files end in `.yaml`; rename it so it is not ignored",
            ));
        }
    }
    let scenario_files = read_tree(&mut reader, scenarios_dir);

    let mut dashboards = Vec::new();
    let dashboards_dir = Path::new("dashboards");
    for (folder, is_dir) in reader.list_dir(dashboards_dir) {
        let dir = dashboards_dir.join(&folder);
        if !is_dir {
            reader.problems.push(Diagnostic::new(
                Location::file(&dir),
                "",
                "unexpected file; dashboards live in dashboards/<folder uid>/<name>.json",
            ));
            continue;
        }
        for (file, _) in reader.list_dir(&dir) {
            let rel = dir.join(&file);
            if !file.ends_with(".json") {
                reader.problems.push(Diagnostic::new(
                    Location::file(&rel),
                    "",
                    "unexpected file; expected a dashboard `.json` file",
                ));
                continue;
            }
            let Some(text) = reader.read_text(&rel) else { continue };
            match serde_json::from_str::<serde_json::Value>(&text) {
                Ok(model) => dashboards.push(RawDashboard {
                    map: SourceMap::build(&text),
                    file: rel,
                    folder: folder.clone(),
                    model,
                }),
                Err(error) => reader.problems.push(Diagnostic::new(
                    Location::at(&rel, error.line(), error.column()),
                    "",
                    format!("invalid JSON: {}", bare_message(&error.to_string())),
                )),
            }
        }
    }

    let mut templates = BTreeMap::new();
    let templates_dir = Path::new("templates");
    for (file, is_dir) in reader.list_dir(templates_dir) {
        let rel = templates_dir.join(&file);
        if is_dir {
            continue;
        }
        if let Some(text) = reader.read_text(&rel) {
            templates.insert(file, RawTemplate { file: rel, text });
        }
    }

    match root {
        Some(root) if reader.problems.is_empty() => Ok(RawRepository {
            root,
            inventories,
            scenarios,
            schedule,
            scenario_files,
            dashboards,
            templates,
        }),
        _ => Err(LoadError::Invalid(super::error::Diagnostics::normalized(reader.problems))),
    }
}

/// Every file below `scenarios/<subdir>/`, by path relative to scenarios/.
fn read_tree(reader: &mut Reader<'_>, base: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut pending: Vec<PathBuf> = reader
        .list_dir(base)
        .into_iter()
        .filter(|(_, is_dir)| *is_dir)
        .map(|(name, _)| PathBuf::from(name))
        .collect();
    while let Some(sub) = pending.pop() {
        for (name, is_dir) in reader.list_dir(&base.join(&sub)) {
            let child = sub.join(&name);
            if is_dir {
                pending.push(child);
            } else {
                match std::fs::read(reader.repo.join(base).join(&child)) {
                    Ok(bytes) => {
                        files.insert(child.to_string_lossy().into_owned(), bytes);
                    }
                    Err(error) => reader.problems.push(Diagnostic::new(
                        Location::file(base.join(&child)),
                        "",
                        format!("cannot read: {error}"),
                    )),
                }
            }
        }
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Item {
        name: String,
        size: u32,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct List {
        items: Vec<Item>,
    }

    #[test]
    fn unknown_key_is_reported_with_path_line_and_column() {
        let problem =
            parse_yaml::<List>("items:\n  - name: a\n    sise: 3\n").expect_err("unknown key");
        assert_eq!(problem.path, "items[0].sise");
        assert_eq!((problem.line, problem.column), (3, 5));
        assert!(
            problem.message.starts_with("unknown field `sise`, expected"),
            "{}",
            problem.message
        );
    }

    #[test]
    fn wrong_type_is_reported_with_path_line_and_column() {
        let problem =
            parse_yaml::<List>("items:\n  - name: a\n    size: big\n").expect_err("wrong type");
        assert_eq!(problem.path, "items[0].size");
        assert_eq!(problem.line, 3);
        assert!(problem.message.contains("expected u32"), "{}", problem.message);
    }

    #[test]
    fn position_is_removed_from_parser_messages() {
        assert_eq!(
            bare_message("found unexpected end of stream at line 4 column 1, while scanning"),
            "found unexpected end of stream, while scanning"
        );
        assert_eq!(bare_message("a.b: bad value at line 2 column 3"), "bad value");
    }

    #[test]
    fn line_column_counts_from_one() {
        assert_eq!(line_column("ab\ncd", 4), (2, 2));
        assert_eq!(line_column("ab", 0), (1, 1));
    }
}
