//! Parsing YAML (and JSON, which is YAML) with positions: every problem
//! is located at its line and column with the key path, and documents
//! crafted to be slow to parse are refused in linear time.

use std::path::Path;

use serde::de::DeserializeOwned;

use super::super::source_map::SourceMap;

/// Deepest nesting of flow collections (`[`, `{`) apimon parses.
pub const MAX_FLOW_DEPTH: usize = 64;

/// Where flow collections first nest deeper than [`MAX_FLOW_DEPTH`]
/// (1-based line and column), ignoring quoted strings and comments.
pub fn too_deep(text: &str) -> Option<(usize, usize)> {
    let (mut depth, mut line, mut column) = (0usize, 1usize, 0usize);
    let (mut quote, mut comment, mut escaped, mut previous) = (None, false, false, '\n');
    for c in text.chars() {
        column += 1;
        if c == '\n' {
            (line, column, comment) = (line + 1, 0, false);
        } else if comment {
        } else if let Some(open) = quote {
            if escaped {
                escaped = false;
            } else if open == '"' && c == '\\' {
                escaped = true;
            } else if c == open {
                quote = None;
            }
        } else {
            match c {
                '"' | '\''
                    if matches!(previous, ' ' | '\t' | '\n' | '[' | '{' | ',' | ':' | '-') =>
                {
                    quote = Some(c)
                }
                '#' if matches!(previous, ' ' | '\t' | '\n') => comment = true,
                '[' | '{' => {
                    depth += 1;
                    if depth > MAX_FLOW_DEPTH {
                        return Some((line, column));
                    }
                }
                ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        previous = c;
    }
    None
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
/// Flow collections nested deeper than [`MAX_FLOW_DEPTH`] are refused
/// first, in one linear pass: the parser takes quadratic time on them.
pub fn parse_yaml<T: DeserializeOwned>(text: &str) -> Result<T, ParseProblem> {
    if let Some((line, column)) = too_deep(text) {
        return Err(ParseProblem {
            line,
            column,
            path: String::new(),
            message: format!("collections nested deeper than {MAX_FLOW_DEPTH} levels; expected a flatter document"),
        });
    }
    let deserializer = yaml_serde::Deserializer::from_str(text);
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        let (line, column) = inner.location().map(|l| (l.line(), l.column())).unwrap_or((1, 1));
        ParseProblem {
            line,
            column,
            path: if path == "." { String::new() } else { path },
            message: plain_words(&bare_message(&inner.to_string())),
        }
    })
}

/// serde's Rust-speak in words a newcomer reads: `expected u32` names its
/// range, and an enum given a list or a mapping (an unterminated `[` or `{`
/// swallows what follows) says so.
pub(super) fn plain_words(message: &str) -> String {
    const NUMBERS: [(&str, &str); 8] = [
        ("expected u8", "expected a whole number from 0 to 255"),
        ("expected u16", "expected a whole number from 0 to 65535"),
        ("expected u32", "expected a whole number from 0 to 4294967295"),
        ("expected u64", "expected a whole number from 0"),
        ("expected usize", "expected a whole number from 0"),
        ("expected i32", "expected a whole number"),
        ("expected i64", "expected a whole number"),
        ("expected f64", "expected a number"),
    ];
    let mut message = message.to_owned();
    for (rust, words) in NUMBERS {
        if let Some(start) = message.find(rust) {
            let end = start + rust.len();
            let whole_word =
                message[end..].chars().next().is_none_or(|c| !c.is_ascii_alphanumeric());
            if whole_word {
                message.replace_range(start..end, words);
            }
        }
    }
    if message.contains("expected a YAML tag starting with '!'") {
        let what = if message.contains("sequence") { "a list" } else { "a mapping" };
        return format!(
            "{what} where one word was expected (is a `[` or `{{` left open on this line?)"
        );
    }
    message
}

/// yaml_serde's messages contain " at line L column C" and may start with
/// the path; both are printed separately, so strip them.
pub(super) fn bare_message(message: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_type_names_become_words() {
        assert_eq!(
            plain_words("invalid type: string \"x\", expected u32"),
            "invalid type: string \"x\", expected a whole number from 0 to 4294967295"
        );
        assert_eq!(
            plain_words("invalid value: integer `-1`, expected u16"),
            "invalid value: integer `-1`, expected a whole number from 0 to 65535"
        );
        assert_eq!(
            plain_words("invalid type: sequence, expected a YAML tag starting with '!'"),
            "a list where one word was expected (is a `[` or `{` left open on this line?)"
        );
        assert_eq!(plain_words("expected u32x"), "expected u32x", "whole words only");
    }

    #[test]
    fn deep_flow_nesting_is_refused_in_linear_time() {
        let text = format!("keypairs: {}", "[".repeat(100_000));
        let problem = parse_yaml::<yaml_serde::Value>(&text).expect_err("too deep");
        assert!(problem.message.contains("nested deeper than 64"), "{}", problem.message);
        assert_eq!((problem.line, problem.column), (1, 11 + MAX_FLOW_DEPTH));
    }

    #[test]
    fn brackets_in_strings_and_comments_do_not_count() {
        let text = format!(
            "a: \"{}\"\nb: '{}' # {}\nc: [[1], {{x: [2]}}]\n",
            "[".repeat(100),
            "{".repeat(100),
            "[".repeat(100)
        );
        assert_eq!(too_deep(&text), None);
    }
}
