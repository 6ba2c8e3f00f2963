//! A small client for InfluxDB 1.x's HTTP API: `POST /query` with InfluxQL.
//!
//! InfluxDB reports a failed statement as HTTP 200 with `results[].error`;
//! this client turns that into an error. Several statements go into one
//! request (separated by `;`) so observation needs few round trips.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::model::Sensitive;

/// Talking to InfluxDB failed.
#[derive(Debug, thiserror::Error)]
pub enum InfluxdbError {
    /// No connection, or it broke (refused, reset, timeout).
    #[error("cannot reach InfluxDB at {url}")]
    Connect {
        /// Base URL.
        url: String,
        /// Cause.
        #[source]
        source: reqwest::Error,
    },
    /// The credentials were rejected.
    #[error("InfluxDB at {url} rejected the credentials of user `{user}` (HTTP {status}); check its password secret")]
    Unauthorized {
        /// Base URL.
        url: String,
        /// User name.
        user: String,
        /// 401 or 403.
        status: u16,
    },
    /// An unexpected HTTP status.
    #[error("InfluxDB at {url} answered HTTP {status}: {message}")]
    Http {
        /// Base URL.
        url: String,
        /// Status code.
        status: u16,
        /// InfluxDB's `error` text, with secrets removed.
        message: String,
    },
    /// A statement failed (HTTP 200 with `results[].error`).
    #[error("InfluxDB at {url} refused a statement: {message}")]
    Statement {
        /// Base URL.
        url: String,
        /// InfluxDB's message, with secrets removed.
        message: String,
    },
    /// The answer was not InfluxDB's JSON.
    #[error("InfluxDB at {url} answered something that is not a query result")]
    Decode {
        /// Base URL.
        url: String,
        /// Cause.
        #[source]
        source: reqwest::Error,
    },
    /// The answer is not what InfluxDB 1.x sends.
    #[error("InfluxDB at {url} answered something apimon cannot read: {message}")]
    Answer {
        /// Base URL.
        url: String,
        /// What was wrong.
        message: String,
    },
    /// The client could not be set up (CA file).
    #[error("cannot set up the InfluxDB client for {url}: {message}")]
    Setup {
        /// Base URL.
        url: String,
        /// What failed.
        message: String,
    },
}

impl InfluxdbError {
    /// Worth retrying: the server was unreachable or failed on its side.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Connect { .. } => true,
            Self::Http { status, .. } => *status >= 500,
            _ => false,
        }
    }

    /// InfluxDB has authentication on and no user yet.
    pub fn needs_first_admin(&self) -> bool {
        matches!(self, Self::Http { status: 403, message, .. } if message_says_bootstrap(message))
    }
}

fn message_says_bootstrap(message: &str) -> bool {
    message.contains("create admin user first")
}

/// Who a request authenticates as.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// User name.
    pub user: String,
    /// Password.
    pub password: Sensitive<String>,
}

/// One statement's result.
#[derive(Debug, Default, Deserialize)]
pub struct StatementResult {
    /// Series returned.
    #[serde(default)]
    pub series: Vec<Series>,
    /// Error text.
    pub error: Option<String>,
}

/// One series: columns and rows.
#[derive(Debug, Default, Deserialize)]
pub struct Series {
    /// The series' name (`SHOW CONTINUOUS QUERIES`: the database).
    #[serde(default)]
    pub name: String,
    /// Its tags (`GROUP BY` a tag).
    #[serde(default)]
    pub tags: std::collections::BTreeMap<String, String>,
    /// Column names.
    #[serde(default)]
    pub columns: Vec<String>,
    /// Rows.
    #[serde(default)]
    pub values: Vec<Vec<Value>>,
}

impl Series {
    /// The value of `column` in each row.
    pub fn column<'a>(&'a self, column: &str) -> impl Iterator<Item = &'a Value> + 'a {
        let index = self.columns.iter().position(|c| c == column);
        self.values.iter().filter_map(move |row| index.and_then(|i| row.get(i)))
    }

    /// Rows as (column → value) lookups.
    pub fn rows(&self) -> impl Iterator<Item = Row<'_>> {
        self.values.iter().map(|values| Row { columns: &self.columns, values })
    }
}

/// One row of a series.
pub struct Row<'a> {
    columns: &'a [String],
    values: &'a [Value],
}

impl Row<'_> {
    /// The value in `column`.
    pub fn get(&self, column: &str) -> Option<&Value> {
        self.columns.iter().position(|c| c == column).and_then(|i| self.values.get(i))
    }

    /// The string in `column`, or "".
    pub fn str(&self, column: &str) -> &str {
        self.get(column).and_then(Value::as_str).unwrap_or_default()
    }
}

#[derive(Deserialize)]
struct QueryResponse {
    #[serde(default)]
    results: Vec<StatementResult>,
    error: Option<String>,
}

/// The HTTP client for one InfluxDB.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    url: String,
    /// Where requests go: `url`, or the tunnel's forwarder.
    base: String,
    requests: Arc<AtomicUsize>,
}

impl Client {
    /// A client for `url`; `ca_file` adds a trusted CA (PEM). Certificate
    /// verification is always on.
    ///
    /// # Errors
    /// The CA file cannot be read or parsed.
    pub fn new(
        url: &str,
        ca_file: Option<&Path>,
        timeout: Duration,
        forward: Option<&crate::providers::tunnel::Forward>,
    ) -> Result<Self, InfluxdbError> {
        let setup = |message: String| InfluxdbError::Setup { url: url.to_owned(), message };
        let mut builder = reqwest::Client::builder().timeout(timeout).connect_timeout(timeout);
        if let Some(path) = ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| setup(format!("cannot read CA file {}: {e}", path.display())))?;
            let certificate = reqwest::Certificate::from_pem(&pem).map_err(|e| {
                setup(format!("CA file {} is not a PEM certificate: {e}", path.display()))
            })?;
            builder = builder.add_root_certificate(certificate);
        }
        let (builder, base) = crate::providers::tunnel::configure(builder, url, forward)
            .map_err(|e| setup(e.to_string()))?;
        let http = builder.build().map_err(|e| setup(e.to_string()))?;
        Ok(Self {
            http,
            url: url.trim_end_matches('/').to_owned(),
            base,
            requests: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// Base URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// HTTP requests sent so far (shared by clones).
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }

    /// Runs `statements` in one request. `credentials: None` sends no
    /// authentication (only for creating the first admin). Any text in
    /// `secrets` is removed from error messages.
    ///
    /// # Errors
    /// Unreachable, rejected credentials, an HTTP error, or the first
    /// failed statement.
    pub async fn query(
        &self,
        statements: &[String],
        credentials: Option<&Credentials>,
        secrets: &[&str],
    ) -> Result<Vec<StatementResult>, InfluxdbError> {
        self.query_db(None, statements, credentials, secrets).await
    }

    /// As [`Self::query`], with `database` as the default database (for
    /// statements that name measurements without it).
    ///
    /// # Errors
    /// As [`Self::query`].
    pub async fn query_in(
        &self,
        database: &str,
        statements: &[String],
        credentials: Option<&Credentials>,
        secrets: &[&str],
    ) -> Result<Vec<StatementResult>, InfluxdbError> {
        self.query_db(Some(database), statements, credentials, secrets).await
    }

    async fn query_db(
        &self,
        database: Option<&str>,
        statements: &[String],
        credentials: Option<&Credentials>,
        secrets: &[&str],
    ) -> Result<Vec<StatementResult>, InfluxdbError> {
        let endpoint = format!("{}/query", self.base);
        let mut form = vec![("q", statements.join(";\n"))];
        if let Some(database) = database {
            form.push(("db", database.to_owned()));
        }
        let mut request = self.http.post(&endpoint).form(&form);
        if let Some(credentials) = credentials {
            request = request.basic_auth(&credentials.user, Some(credentials.password.expose()));
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        let response = request
            .send()
            .await
            .map_err(|source| InfluxdbError::Connect { url: self.url.clone(), source })?;
        let status = response.status().as_u16();
        if status >= 500 {
            let text = response.text().await.unwrap_or_default();
            return Err(InfluxdbError::Http {
                url: self.url.clone(),
                status,
                message: redact(&text, secrets),
            });
        }
        let body: QueryResponse = response.json().await.map_err(|source| {
            if source.is_timeout() || source.is_connect() || source.is_body() {
                InfluxdbError::Connect { url: self.url.clone(), source }
            } else {
                InfluxdbError::Decode { url: self.url.clone(), source }
            }
        })?;
        if let Some(message) = body.error {
            let message = redact(&message, secrets);
            return Err(match (status, credentials) {
                (401, Some(c)) => InfluxdbError::Unauthorized {
                    url: self.url.clone(),
                    user: c.user.clone(),
                    status,
                },
                (403, Some(c)) if !message_says_bootstrap(&message) => {
                    InfluxdbError::Unauthorized {
                        url: self.url.clone(),
                        user: c.user.clone(),
                        status,
                    }
                }
                _ => InfluxdbError::Http { url: self.url.clone(), status, message },
            });
        }
        if let Some(message) = body.results.iter().find_map(|r| r.error.as_deref()) {
            return Err(InfluxdbError::Statement {
                url: self.url.clone(),
                message: redact(message, secrets),
            });
        }
        Ok(body.results)
    }

    /// Whether `credentials` log in (HTTP 200 rather than 401).
    ///
    /// # Errors
    /// Unreachable or an unexpected answer.
    pub async fn can_login(&self, credentials: &Credentials) -> Result<bool, InfluxdbError> {
        match self
            .query(
                &["SHOW DATABASES".to_owned()],
                Some(credentials),
                &[credentials.password.expose()],
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(InfluxdbError::Unauthorized { .. }) => Ok(false),
            Err(error) => Err(error),
        }
    }
}

/// Removes every non-empty secret from `text`.
fn redact(text: &str, secrets: &[&str]) -> String {
    secrets
        .iter()
        .filter(|s| !s.is_empty())
        .fold(text.to_owned(), |text, secret| text.replace(secret, crate::model::secret::REDACTED))
}

/// `"name"` with InfluxQL escaping.
pub fn identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
}

/// `'text'` with InfluxQL escaping.
pub fn string_literal(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Nanoseconds as an InfluxQL duration literal (0 is INF).
pub fn duration_literal(ns: u64) -> String {
    const UNITS: [(&str, u64); 7] = [
        ("w", 604_800_000_000_000),
        ("d", 86_400_000_000_000),
        ("h", 3_600_000_000_000),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("u", 1_000),
    ];
    if ns == 0 {
        return "INF".to_owned();
    }
    UNITS
        .iter()
        .find(|(_, unit)| ns.is_multiple_of(*unit))
        .map_or_else(|| format!("{ns}ns"), |(name, unit)| format!("{}{name}", ns / unit))
}

/// Parses a Go duration as InfluxDB prints it (`672h0m0s`, `0s`) to ns.
pub fn parse_go_duration(text: &str) -> Option<u64> {
    let mut total: u64 = 0;
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(|b| b.is_ascii_digit() || *b == b'.').count();
        let number = &rest[..digits];
        rest = &rest[digits..];
        let (unit, ns) = [
            ("ns", 1u64),
            ("us", 1_000),
            ("µs", 1_000),
            ("ms", 1_000_000),
            ("s", 1_000_000_000),
            ("m", 60_000_000_000),
            ("h", 3_600_000_000_000),
        ]
        .into_iter()
        .find(|(unit, _)| rest.starts_with(unit))?;
        rest = &rest[unit.len()..];
        let value: u64 = match number.split_once('.') {
            None => number.parse::<u64>().ok()?.checked_mul(ns)?,
            Some((whole, fraction)) => {
                let whole: u64 = whole.parse().ok()?;
                let scale = 10u64.checked_pow(u32::try_from(fraction.len()).ok()?)?;
                let fraction: u64 = fraction.parse().ok()?;
                whole.checked_mul(ns)?.checked_add(fraction.checked_mul(ns)? / scale)?
            }
        };
        total = total.checked_add(value)?;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse() {
        assert_eq!(parse_go_duration("672h0m0s"), Some(672 * 3_600_000_000_000));
        assert_eq!(parse_go_duration("0s"), Some(0));
        assert_eq!(parse_go_duration("1h30m"), Some(5_400_000_000_000));
        assert_eq!(parse_go_duration("1.5s"), Some(1_500_000_000));
        assert_eq!(parse_go_duration("x"), None);
    }

    #[test]
    fn durations_print_in_the_largest_exact_unit() {
        assert_eq!(duration_literal(4 * 604_800_000_000_000), "4w");
        assert_eq!(duration_literal(36 * 3_600_000_000_000), "36h");
        assert_eq!(duration_literal(0), "INF");
    }

    #[test]
    fn literals_are_escaped() {
        assert_eq!(identifier(r#"a"b"#), r#""a\"b""#);
        assert_eq!(string_literal("it's"), r"'it\'s'");
        assert_eq!(string_literal(r"back\slash"), r"'back\\slash'");
    }

    #[test]
    fn secrets_are_removed_from_messages() {
        assert_eq!(
            redact("bad token hunter2 near", &["hunter2", ""]),
            "bad token (sensitive) near"
        );
    }
}
