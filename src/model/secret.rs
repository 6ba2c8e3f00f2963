//! Secrets: `{secret: NAME}` in the repository, resolved only on the
//! machine that applies, and never printed.
//!
//! [`Sensitive`] wraps every resolved value. Its `Debug`, `Display` and
//! `Serialize` all print `(sensitive)`, so a secret cannot leak through a
//! log line, a plan (human or JSON) or an error by accident; code that
//! really needs the value calls [`Sensitive::expose`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Serialize, Serializer};

/// What every secret prints as.
pub const REDACTED: &str = "(sensitive)";

/// A value that must never be shown.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Sensitive<T>(T);

impl<T> Sensitive<T> {
    /// Wraps a secret value.
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// The value itself: only for the code that sends it where it belongs.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Sensitive<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl<T> fmt::Display for Sensitive<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl<T> Serialize for Sensitive<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

/// Loading the secrets file failed. No variant ever carries a secret value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file cannot be read.
    #[error("cannot read secrets file {path}")]
    Read {
        /// The secrets file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Group or others may read the file.
    #[error(
        "secrets file {path} has mode {mode:04o}; it must be 0600 or stricter (run: chmod 600 {path})"
    )]
    TooOpen {
        /// The secrets file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file is not a YAML mapping of names to strings. The parser's own
    /// message is dropped because it may quote the value.
    #[error("{path}:{line}:{column}: expected a mapping of secret names to string values (or to {{value: …, hosts: [...], environments: [...], endpoints: [...]}})")]
    Syntax {
        /// The secrets file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
    },
    /// A pinned secret that cannot be enforced.
    #[error("{path}: secret `{name}` is pinned with no hosts, or to a value shorter than {min} characters (a pin is checked by looking for the value)", min = MIN_PINNED_LENGTH)]
    Pin {
        /// The secrets file.
        path: PathBuf,
        /// The secret.
        name: String,
    },
    /// A secret recorded for nothing: an empty list, or no list at all.
    #[error("{path}: secret `{name}` has an empty `{key}` (or `value` alone); expected at least one entry, or a plain string for a secret usable anywhere")]
    EmptyScope {
        /// The secrets file.
        path: PathBuf,
        /// The secret.
        name: String,
        /// The empty key.
        key: &'static str,
    },
}

/// The kind of endpoint a use of a secret authenticates to (or `other`:
/// a password an InfluxDB user is created with, a value a file carries).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    /// The environment's InfluxDB.
    Influxdb,
    /// The environment's Grafana.
    Grafana,
    /// A monitored cloud's Keystone.
    Cloud,
    /// The daemon's or the scenario repository's git server.
    Git,
    /// Anything else: a user's password, a value rendered into a file.
    Other,
}

impl Endpoint {
    /// As the secrets file names it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Influxdb => "influxdb",
            Self::Grafana => "grafana",
            Self::Cloud => "cloud",
            Self::Git => "git",
            Self::Other => "other",
        }
    }
}

/// What the operator's secrets file records about a secret besides its
/// value: the hosts it may reach, the environments that may use it, the
/// kinds of endpoint it is for. `None`: no limit of that sort. The
/// repository never says this; a commit cannot widen it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// Host names or addresses (lowercase) it may be written or sent to.
    pub hosts: Option<std::collections::BTreeSet<String>>,
    /// Environments that may use it.
    pub environments: Option<std::collections::BTreeSet<String>>,
    /// Kinds of endpoint it may be used for.
    pub endpoints: Option<std::collections::BTreeSet<Endpoint>>,
}

impl Scope {
    /// The entry of a secrets file holding `value` with this scope.
    pub fn entry(&self, value: &str) -> yaml_serde::Value {
        if self == &Self::default() {
            return value.into();
        }
        let list = |items: Vec<String>| {
            yaml_serde::Value::Sequence(items.into_iter().map(Into::into).collect())
        };
        let mut entry = yaml_serde::Mapping::new();
        entry.insert("value".into(), value.into());
        if let Some(hosts) = &self.hosts {
            entry.insert("hosts".into(), list(hosts.iter().cloned().collect()));
        }
        if let Some(environments) = &self.environments {
            entry.insert("environments".into(), list(environments.iter().cloned().collect()));
        }
        if let Some(endpoints) = &self.endpoints {
            let names = endpoints.iter().map(|e| e.name().to_owned()).collect();
            entry.insert("endpoints".into(), list(names));
        }
        yaml_serde::Value::Mapping(entry)
    }
}

/// Where secret values come from: a file, then the environment.
#[derive(Debug, Clone, Default)]
pub struct SecretStore {
    from_file: BTreeMap<String, Sensitive<String>>,
    from_env: BTreeMap<String, Sensitive<String>>,
    /// What the file records about secrets besides their values.
    scopes: BTreeMap<String, Scope>,
}

/// A secrets file entry: the value, or the value and what it is for.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Entry {
    Plain(String),
    Scoped(ScopedEntry),
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ScopedEntry {
    value: String,
    hosts: Option<Vec<String>>,
    environments: Option<Vec<String>>,
    endpoints: Option<Vec<Endpoint>>,
}

impl ScopedEntry {
    /// The value and its scope, if the entry can be enforced.
    fn check(self, path: &Path, name: &str) -> Result<(String, Scope), SecretError> {
        let empty =
            |key| SecretError::EmptyScope { path: path.to_owned(), name: name.to_owned(), key };
        if let Some(hosts) = &self.hosts {
            if self.value.chars().count() < MIN_PINNED_LENGTH || hosts.is_empty() {
                return Err(SecretError::Pin { path: path.to_owned(), name: name.to_owned() });
            }
        }
        if self.environments.as_ref().is_some_and(Vec::is_empty) {
            return Err(empty("environments"));
        }
        if self.endpoints.as_ref().is_some_and(Vec::is_empty) {
            return Err(empty("endpoints"));
        }
        if self.hosts.is_none() && self.environments.is_none() && self.endpoints.is_none() {
            return Err(empty("hosts"));
        }
        let scope = Scope {
            hosts: self.hosts.map(|h| h.iter().map(|h| h.to_ascii_lowercase()).collect()),
            environments: self.environments.map(|e| e.into_iter().collect()),
            endpoints: self.endpoints.map(|e| e.into_iter().collect()),
        };
        Ok((self.value, scope))
    }
}

/// The shortest value a pin is enforced for: a pinned value is looked for
/// in what is rendered for other hosts, and a short one would be found by
/// chance.
pub const MIN_PINNED_LENGTH: usize = 8;

/// The environment variable that may hold secret `name`.
pub fn env_var_name(name: &str) -> String {
    format!("APIMON_SECRET_{}", name.to_ascii_uppercase())
}

impl SecretStore {
    /// Reads the secrets file (if any) and takes `APIMON_SECRET_*` from `env`.
    ///
    /// # Errors
    /// The file is unreadable, readable by group or others, or not a
    /// mapping of names to strings.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, SecretError> {
        let (from_file, scopes) = match file {
            Some(path) => Self::read_file(path)?,
            None => (BTreeMap::new(), BTreeMap::new()),
        };
        let from_env = env
            .into_iter()
            .filter_map(|(key, value)| {
                let name = key.strip_prefix("APIMON_SECRET_")?.to_ascii_lowercase();
                Some((name, Sensitive::new(value)))
            })
            .collect();
        Ok(Self { from_file, from_env, scopes })
    }

    #[allow(clippy::type_complexity)]
    fn read_file(
        path: &Path,
    ) -> Result<(BTreeMap<String, Sensitive<String>>, BTreeMap<String, Scope>), SecretError> {
        let read_error = |source| SecretError::Read { path: path.to_owned(), source };
        let metadata = std::fs::metadata(path).map_err(read_error)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = metadata.permissions().mode() & 0o7777;
            if mode & 0o077 != 0 {
                return Err(SecretError::TooOpen { path: path.to_owned(), mode });
            }
        }
        let text = crate::fsutil::read_text_limited(path, crate::fsutil::MAX_CONFIG_BYTES)
            .map_err(|e| read_error(e.into()))?;
        if text.trim().is_empty() {
            return Ok((BTreeMap::new(), BTreeMap::new()));
        }
        let entries: BTreeMap<String, Entry> = yaml_serde::from_str(&text).map_err(|error| {
            let (line, column) = error.location().map(|l| (l.line(), l.column())).unwrap_or((1, 1));
            SecretError::Syntax { path: path.to_owned(), line, column }
        })?;
        let mut values = BTreeMap::new();
        let mut scopes = BTreeMap::new();
        for (name, entry) in entries {
            match entry {
                Entry::Plain(value) => {
                    values.insert(name, Sensitive::new(value));
                }
                Entry::Scoped(entry) => {
                    let (value, scope) = entry.check(path, &name)?;
                    scopes.insert(name.clone(), scope);
                    values.insert(name, Sensitive::new(value));
                }
            }
        }
        Ok((values, scopes))
    }

    /// What the file records about secret `name`, if more than its value.
    pub fn scope(&self, name: &str) -> Option<&Scope> {
        self.scopes.get(name)
    }

    /// The hosts secret `name` is pinned to, if the file pins it.
    pub fn pins(&self, name: &str) -> Option<&std::collections::BTreeSet<String>> {
        self.scopes.get(name)?.hosts.as_ref()
    }

    /// Every pinned secret: name, value, hosts.
    pub fn pinned(
        &self,
    ) -> impl Iterator<Item = (&str, &Sensitive<String>, &std::collections::BTreeSet<String>)> {
        self.scopes.iter().filter_map(|(name, scope)| {
            Some((name.as_str(), self.from_file.get(name)?, scope.hosts.as_ref()?))
        })
    }

    /// A digest of every value: tells whether the secrets changed without
    /// keeping them.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut digest = Sha256::new();
        for (source, values) in [("file", &self.from_file), ("env", &self.from_env)] {
            for (name, value) in values {
                digest.update(format!("{source}\0{name}\0").as_bytes());
                digest.update(value.expose().as_bytes());
                digest.update(b"\n");
            }
        }
        hex::encode(digest.finalize())
    }

    /// The value of secret `name`: the file wins over the environment.
    pub fn get(&self, name: &str) -> Option<&Sensitive<String>> {
        self.from_file.get(name).or_else(|| self.from_env.get(name))
    }
}

/// How secrets are filled in while rendering and planning.
#[derive(Debug, Clone)]
pub enum Secrets {
    /// Every secret renders as `(sensitive)`: for `plan --offline`,
    /// `render` and `validate`, which must work without credentials.
    Redacted,
    /// Real values, for planning against and applying to live systems.
    Resolved(SecretStore),
}

impl Secrets {
    /// Whether secret `name` may go to `host` (a host name or address):
    /// always, unless the secrets file pins it to other hosts.
    pub fn allows(&self, name: &str, host: &str) -> bool {
        match self {
            Self::Redacted => true,
            Self::Resolved(store) => {
                store.pins(name).is_none_or(|hosts| hosts.contains(&host.to_ascii_lowercase()))
            }
        }
    }

    /// Whether environment `env` (`None`: a project-wide setting) may use
    /// secret `name` for `endpoint`: always, unless the secrets file
    /// records it for other environments or kinds of endpoint.
    pub fn allows_use(&self, name: &str, env: Option<&str>, endpoint: Endpoint) -> bool {
        let Self::Resolved(store) = self else { return true };
        let Some(scope) = store.scope(name) else { return true };
        let env_ok = match (&scope.environments, env) {
            (None, _) => true,
            (Some(envs), Some(env)) => envs.contains(env),
            (Some(_), None) => false,
        };
        env_ok && scope.endpoints.as_ref().is_none_or(|kinds| kinds.contains(&endpoint))
    }

    /// The value to use for secret `name`, or `None` when it is missing.
    pub fn value(&self, name: &str) -> Option<Sensitive<String>> {
        match self {
            Self::Redacted => Some(Sensitive::new(REDACTED.to_owned())),
            Self::Resolved(store) => store.get(name).cloned(),
        }
    }

    /// The value of `value`: its secret's ([`Self::value`]) or the plain
    /// text written in the repository.
    pub fn resolve(&self, value: &super::raw::MaybeSecret) -> Option<Sensitive<String>> {
        match value {
            super::raw::MaybeSecret::Secret(name) => self.value(name),
            super::raw::MaybeSecret::Plain(text) => Some(Sensitive::new(text.clone())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_secrets(text: &str, mode: u32) -> (tempfile::TempDir, PathBuf) {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("secrets.yaml");
        std::fs::write(&path, text).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        (dir, path)
    }

    #[test]
    fn sensitive_never_prints_or_serializes_its_value() {
        let secret = Sensitive::new("hunter2".to_owned());
        assert_eq!(format!("{secret}"), REDACTED);
        assert_eq!(format!("{secret:?}"), REDACTED);
        assert_eq!(serde_json::to_string(&secret).expect("json"), "\"(sensitive)\"");
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn secrets_file_readable_by_others_is_rejected() {
        let (_dir, path) = write_secrets("a: b\n", 0o644);
        let error = SecretStore::load(Some(&path), []).expect_err("too open");
        assert!(error.to_string().contains("mode 0644"), "{error}");
        assert!(error.to_string().contains("0600 or stricter"), "{error}");
    }

    #[test]
    fn secrets_file_syntax_error_names_the_place_but_not_the_value() {
        let (_dir, path) = write_secrets("good: x\nbad: [hunter2\n", 0o600);
        let error = SecretStore::load(Some(&path), []).expect_err("bad yaml").to_string();
        assert!(error.contains("secrets.yaml:"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
    }

    #[test]
    fn file_values_win_over_environment_values() {
        let (_dir, path) = write_secrets("db_password: from-file\n", 0o600);
        let env = [
            ("APIMON_SECRET_DB_PASSWORD".to_owned(), "from-env".to_owned()),
            ("APIMON_SECRET_TOKEN".to_owned(), "tok".to_owned()),
            ("PATH".to_owned(), "/bin".to_owned()),
        ];
        let store = SecretStore::load(Some(&path), env).expect("load");
        assert_eq!(store.get("db_password").map(|s| s.expose().as_str()), Some("from-file"));
        assert_eq!(store.get("token").map(|s| s.expose().as_str()), Some("tok"));
        assert!(store.get("path").is_none());
    }

    #[test]
    fn a_secret_may_be_recorded_for_environments_and_kinds_of_endpoint() {
        let (_dir, path) = write_secrets(
            "plain: p\nscoped: {value: v, environments: [outside], endpoints: [influxdb, git]}\n",
            0o600,
        );
        let secrets = Secrets::Resolved(SecretStore::load(Some(&path), []).expect("load"));
        let allows = |env, endpoint| secrets.allows_use("scoped", env, endpoint);
        assert!(
            allows(Some("outside"), Endpoint::Influxdb) && allows(Some("outside"), Endpoint::Git)
        );
        assert!(!allows(Some("inside"), Endpoint::Influxdb), "another environment");
        assert!(!allows(Some("outside"), Endpoint::Grafana), "another endpoint");
        assert!(!allows(None, Endpoint::Git), "project-wide, though recorded for one environment");
        assert!(secrets.allows_use("plain", Some("inside"), Endpoint::Cloud));
        assert!(Secrets::Redacted.allows_use("scoped", Some("inside"), Endpoint::Other));
        let Secrets::Resolved(store) = &secrets else { unreachable!() };
        let entry = store.scope("scoped").expect("recorded").entry("v");
        let text = yaml_serde::to_string(&entry).expect("yaml");
        assert_eq!(text, "value: v\nenvironments:\n- outside\nendpoints:\n- influxdb\n- git\n");
    }

    #[test]
    fn a_secret_may_be_pinned_to_hosts_with_a_value_long_enough_to_look_for() {
        let (_dir, path) = write_secrets(
            "plain: hunter2\npinned: {value: long-enough-value, hosts: [InfluxDB.internal, 192.168.10.30]}\n",
            0o600,
        );
        let store = SecretStore::load(Some(&path), []).expect("load");
        assert_eq!(store.get("pinned").map(|s| s.expose().as_str()), Some("long-enough-value"));
        let secrets = Secrets::Resolved(store);
        assert!(
            secrets.allows("pinned", "influxdb.internal")
                && secrets.allows("pinned", "192.168.10.30")
        );
        assert!(!secrets.allows("pinned", "evil.test"));
        assert!(secrets.allows("plain", "anywhere"), "unpinned: anywhere");
        assert!(Secrets::Redacted.allows("pinned", "evil.test"));
        for bad in ["x: {value: short, hosts: [a]}\n", "x: {value: long-enough-value, hosts: []}\n"]
        {
            let (_dir, path) = write_secrets(bad, 0o600);
            let error = SecretStore::load(Some(&path), []).expect_err("unenforceable").to_string();
            assert!(error.contains("secret `x` is pinned"), "{error}");
        }
        for (bad, key) in [
            ("x: {value: whatever}\n", "hosts"),
            ("x: {value: whatever, environments: []}\n", "environments"),
            ("x: {value: whatever, endpoints: []}\n", "endpoints"),
        ] {
            let (_dir, path) = write_secrets(bad, 0o600);
            let error = SecretStore::load(Some(&path), []).expect_err("empty record").to_string();
            assert!(error.contains(&format!("secret `x` has an empty `{key}`")), "{error}");
        }
        let (_dir, path) = write_secrets("x: {value: v, endpoints: [influx]}\n", 0o600);
        let error = SecretStore::load(Some(&path), []).expect_err("unknown kind").to_string();
        assert!(error.contains("secrets.yaml:1:"), "{error}");
        let (_dir, path) = write_secrets("x: {value: long-enough-value, host: [a]}\n", 0o600);
        let error = SecretStore::load(Some(&path), []).expect_err("typo").to_string();
        assert!(
            error.contains("secrets.yaml:1:") && !error.contains("long-enough-value"),
            "{error}"
        );
    }
}
