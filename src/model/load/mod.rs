//! Reads a repository's files into raw documents.
//!
//! This stage only parses: each file becomes a [`Document`] holding its
//! typed value and a [`SourceMap`], or a diagnostic naming the place that
//! did not parse. [`files`] reads the files as hostile input (symbolic
//! links, devices, sizes); [`yaml`] parses with positions and refuses
//! documents crafted to be slow. Cross-references are `validate`'s job.

mod files;
mod yaml;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use files::RepoFiles;
use yaml::bare_message;
pub use yaml::{parse_yaml, ConfigFile, ParseProblem, MAX_FLOW_DEPTH};

use super::error::{Diagnostic, LoadError, Location};
use super::raw;
use super::sections::{RawInventory, INVENTORY_FILES};
use super::source_map::SourceMap;

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
    /// Files under runtime/ (collection archives) and apt/ (signing keys),
    /// by path relative to the repository.
    pub runtime_files: BTreeMap<String, Vec<u8>>,
    /// templates/<name> by file name.
    pub templates: BTreeMap<String, RawTemplate>,
    /// The scenario repository apimon.yaml names, as fetched.
    pub scenario_repository: Option<RawScenarioTree>,
    /// health.yaml
    pub health: Document<raw::HealthFile>,
    /// health.yaml as written (the health service gets it as it is).
    pub health_text: Option<String>,
}

/// A scenario repository's files at one commit.
#[derive(Debug, Clone)]
pub struct RawScenarioTree {
    /// The commit they are at.
    pub commit: String,
    /// Every file, by path relative to the repository (hidden ones aside).
    pub files: BTreeMap<String, Vec<u8>>,
}

/// Which commit of a scenario repository is wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pin<'a> {
    /// Exactly this commit.
    Commit(&'a str),
    /// Whatever this branch points at now.
    Branch(&'a str),
}

/// A scenario repository checked out at one commit.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// Directory holding its files.
    pub dir: PathBuf,
    /// The commit.
    pub commit: String,
}

/// Why a scenario repository could not be fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// The pinned commit or the branch does not exist: the repository is wrong.
    Missing(String),
    /// The remote cannot be reached now: try again later.
    Unavailable(String),
    /// The remote refuses these credentials, or its host key is refused:
    /// the same until the credentials or known_hosts change.
    Denied(String),
    /// What the remote holds is refused (a hostile tree, past a limit):
    /// the same pin is refused every time.
    Refused(String),
}

/// Fetches scenario repositories (the caller's git; the model knows none).
pub trait FetchScenarios {
    /// Checks `url` out at `pin`.
    ///
    /// # Errors
    /// As [`FetchError`] says.
    fn fetch(&self, url: &str, pin: Pin<'_>) -> Result<Fetched, FetchError>;
}

/// For callers that cannot fetch: a repository naming a scenario
/// repository fails with [`LoadError::Fetch`].
#[derive(Debug, Clone, Copy)]
pub struct NoFetch;

impl FetchScenarios for NoFetch {
    fn fetch(&self, _url: &str, _pin: Pin<'_>) -> Result<Fetched, FetchError> {
        Err(FetchError::Unavailable("this command does not fetch scenario repositories".to_owned()))
    }
}

/// Collects parse problems while reading.
pub(super) struct Reader {
    files: RepoFiles,
}

impl Reader {
    fn problem(&mut self, location: Location, message: impl Into<String>) {
        self.files.problems.push(Diagnostic::new(location, "", message));
    }

    fn read_text(&mut self, rel: &Path) -> Option<String> {
        let bytes = self.files.read(rel)?;
        match String::from_utf8(bytes) {
            Ok(text) => Some(text),
            Err(error) => {
                let offset = error.utf8_error().valid_up_to();
                let text = String::from_utf8_lossy(&error.as_bytes()[..offset]).into_owned();
                let (line, column) = line_column(&text, offset);
                self.problem(
                    Location::at(rel, line, column),
                    "invalid UTF-8; expected a UTF-8 text file",
                );
                None
            }
        }
    }

    /// Parses `rel`; an absent or empty file gives `T::default()`.
    pub(super) fn optional_yaml<T: DeserializeOwned + Default>(
        &mut self,
        rel: PathBuf,
    ) -> Document<T> {
        let text = if self.files.exists(&rel) { self.read_text(&rel) } else { None };
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
        if !self.files.exists(&rel) {
            let dir = self.files.root().display().to_string();
            let message = format!("file is missing in {dir}; expected {what}");
            self.problem(Location::file(&rel), message);
            return None;
        }
        let text = self.read_text(&rel)?;
        if is_blank_yaml(&text) {
            self.problem(Location::at(&rel, 1, 1), format!("file is empty; expected {what}"));
            return None;
        }
        self.parse(rel, &text)
    }

    fn parse<T: DeserializeOwned>(&mut self, rel: PathBuf, text: &str) -> Option<Document<T>> {
        match parse_yaml(text) {
            Ok(value) => Some(Document { map: SourceMap::build(text), file: rel, value }),
            Err(problem) => {
                self.files.problems.push(Diagnostic::new(
                    Location::at(&rel, problem.line, problem.column),
                    problem.path,
                    problem.message,
                ));
                None
            }
        }
    }

    /// `inventory/<env>/`: one directory per environment, known files only.
    fn inventories(&mut self) -> BTreeMap<String, RawInventory> {
        let mut inventories = BTreeMap::new();
        let inventory_dir = Path::new("inventory");
        for (name, is_dir) in self.files.list_dir(inventory_dir) {
            let dir = inventory_dir.join(&name);
            if !is_dir {
                self.problem(
                    Location::file(&dir),
                    "unexpected file; expected one directory per environment",
                );
                continue;
            }
            for (file, _) in self.files.list_dir(&dir) {
                if !INVENTORY_FILES.contains(&file.as_str()) {
                    let message = format!(
                        "unknown inventory file; expected one of {}",
                        INVENTORY_FILES.join(", ")
                    );
                    self.problem(Location::file(dir.join(&file)), message);
                }
            }
            let inventory = RawInventory::read(self, &dir);
            inventories.insert(name, inventory);
        }
        inventories
    }

    /// `scenarios/<name>.yaml` (the schedule aside).
    fn scenarios(&mut self) -> BTreeMap<String, Document<raw::Scenario>> {
        let scenarios_dir = Path::new("scenarios");
        let mut scenarios = BTreeMap::new();
        for (file, is_dir) in self.files.list_dir(scenarios_dir) {
            let rel = scenarios_dir.join(&file);
            if is_dir || file == "schedule.yaml" {
                continue;
            }
            if let Some(stem) = file.strip_suffix(".yaml") {
                if let Some(doc) = self.required_yaml::<raw::Scenario>(rel, "a scenario") {
                    scenarios.insert(stem.to_owned(), doc);
                }
            } else if file.ends_with(".yml") {
                self.problem(
                    Location::file(&rel),
                    "scenario files end in `.yaml`; rename it so it is not ignored",
                );
            }
        }
        scenarios
    }

    /// `dashboards/<folder>/*.json`.
    fn dashboards(&mut self) -> Vec<RawDashboard> {
        let mut dashboards = Vec::new();
        let dashboards_dir = Path::new("dashboards");
        for (folder, is_dir) in self.files.list_dir(dashboards_dir) {
            let dir = dashboards_dir.join(&folder);
            if !is_dir {
                self.problem(
                    Location::file(&dir),
                    "unexpected file; dashboards live in dashboards/<folder uid>/<name>.json",
                );
                continue;
            }
            for (file, _) in self.files.list_dir(&dir) {
                let rel = dir.join(&file);
                if !file.ends_with(".json") {
                    self.problem(
                        Location::file(&rel),
                        "unexpected file; expected a dashboard `.json` file",
                    );
                    continue;
                }
                if let Some(dashboard) = self.dashboard(rel, &folder) {
                    dashboards.push(dashboard);
                }
            }
        }
        dashboards
    }

    fn dashboard(&mut self, rel: PathBuf, folder: &str) -> Option<RawDashboard> {
        let text = self.read_text(&rel)?;
        if let Some((line, column)) = yaml::too_deep(&text) {
            let message =
                format!("nested deeper than {MAX_FLOW_DEPTH} levels; expected a flatter dashboard");
            self.problem(Location::at(&rel, line, column), message);
            return None;
        }
        match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(model) => Some(RawDashboard {
                map: SourceMap::build(&text),
                file: rel,
                folder: folder.to_owned(),
                model,
            }),
            Err(error) => {
                let message = format!("invalid JSON: {}", bare_message(&error.to_string()));
                self.problem(Location::at(&rel, error.line(), error.column()), message);
                None
            }
        }
    }

    /// `templates/<name>`.
    fn templates(&mut self) -> BTreeMap<String, RawTemplate> {
        let mut templates = BTreeMap::new();
        let templates_dir = Path::new("templates");
        for (file, is_dir) in self.files.list_dir(templates_dir) {
            let rel = templates_dir.join(&file);
            if is_dir {
                continue;
            }
            if let Some(text) = self.read_text(&rel) {
                templates.insert(file, RawTemplate { file: rel, text });
            }
        }
        templates
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

/// Reads and parses every file of the repository at `repo`.
///
/// # Errors
/// [`LoadError::Io`] when `repo` is not a readable directory;
/// [`LoadError::Invalid`] listing every file that did not parse.
pub fn load(repo: &Path) -> Result<RawRepository, LoadError> {
    let io = |source| LoadError::Io { path: repo.to_owned(), source };
    std::fs::read_dir(repo).map_err(io)?;
    let mut reader = Reader { files: RepoFiles::new(repo).map_err(io)? };
    let root = reader.required_yaml::<raw::Root>(
        PathBuf::from("apimon.yaml"),
        "the project settings (project, environments)",
    );
    let inventories = reader.inventories();
    let schedule =
        reader.optional_yaml::<raw::ScheduleFile>(PathBuf::from("scenarios/schedule.yaml"));
    let scenarios = reader.scenarios();
    let scenario_files = reader.files.tree(Path::new("scenarios"));
    let dashboards = reader.dashboards();
    let mut runtime_files = BTreeMap::new();
    for base in ["runtime", "apt"] {
        for (path, bytes) in reader.files.all_files(Path::new(base)) {
            runtime_files.insert(format!("{base}/{path}"), bytes);
        }
    }
    let templates = reader.templates();
    let health = reader.optional_yaml::<raw::HealthFile>(PathBuf::from("health.yaml"));
    let health_text = if reader.files.exists(Path::new("health.yaml")) {
        reader.read_text(Path::new("health.yaml"))
    } else {
        None
    };
    match root {
        Some(root) if reader.files.problems.is_empty() => Ok(RawRepository {
            root,
            inventories,
            scenarios,
            schedule,
            scenario_files,
            dashboards,
            runtime_files,
            templates,
            scenario_repository: None,
            health,
            health_text,
        }),
        _ => Err(LoadError::Invalid(super::error::Diagnostics::normalized(reader.files.problems))),
    }
}

/// Fetches the scenario repository `raw` names, if any, with `fetcher`
/// and reads its files as hostile as the main repository's; `raw` must
/// have passed [`super::validate::check_scenario_repository`].
///
/// # Errors
/// [`LoadError::Fetch`] when the remote cannot be reached; [`LoadError::Invalid`]
/// when the pin does not exist or a file cannot be read.
pub fn fetch_scenario_repository(
    raw: &mut RawRepository,
    fetcher: &dyn FetchScenarios,
) -> Result<(), LoadError> {
    let Some(spec) = &raw.root.value.scenario_repository else { return Ok(()) };
    let (pin, key) = match (&spec.commit, &spec.branch) {
        (Some(commit), _) => (Pin::Commit(commit), "scenario_repository.commit"),
        (None, Some(branch)) => (Pin::Branch(branch), "scenario_repository.branch"),
        (None, None) => (Pin::Branch("main"), "scenario_repository"),
    };
    let url = crate::url::redact_url(&spec.url);
    let fetched = match fetcher.fetch(&spec.url, pin) {
        Ok(fetched) => fetched,
        Err(FetchError::Unavailable(message)) => {
            let kind = crate::error::FailureKind::Transient;
            return Err(LoadError::Fetch { url, message, kind });
        }
        Err(FetchError::Denied(message)) => {
            let kind = crate::error::FailureKind::Permanent;
            return Err(LoadError::Fetch { url, message, kind });
        }
        Err(FetchError::Missing(message) | FetchError::Refused(message)) => {
            let diagnostic = Diagnostic::new(raw.root.at(key), key, message);
            return Err(LoadError::Invalid(super::error::Diagnostics(vec![diagnostic])));
        }
    };
    let mut files = RepoFiles::new(&fetched.dir)
        .map_err(|source| LoadError::Io { path: fetched.dir.clone(), source })?;
    let tree = files.all_files(Path::new(""));
    if !files.problems.is_empty() {
        // Their paths are the scenario repository's: say so.
        let label =
            format!("scenario_repository@{}", &fetched.commit[..fetched.commit.len().min(12)]);
        let problems = files
            .problems
            .into_iter()
            .map(|mut d| {
                d.location.file = Path::new(&label).join(&d.location.file);
                d
            })
            .collect();
        return Err(LoadError::Invalid(super::error::Diagnostics::normalized(problems)));
    }
    raw.scenario_repository = Some(RawScenarioTree { commit: fetched.commit, files: tree });
    Ok(())
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
        assert!(
            problem.message.contains("expected a whole number from 0 to 4294967295"),
            "{}",
            problem.message
        );
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
