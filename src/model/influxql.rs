//! Just enough InfluxQL lexing for two jobs: checking that a fragment the
//! repository gives (a continuous query's field list or condition) stays a
//! fragment, and comparing a statement apimon sent with the text InfluxDB
//! stores for it. InfluxDB re-prints what it parses (keywords upper case,
//! quotes only where needed, durations shortest, spaces around operators),
//! so the two compare as token lists, not as text.

use super::InfluxDuration;

/// One token, in a form both spellings of the same statement share.
#[derive(Debug, Clone, PartialEq)]
pub enum Token {
    /// A keyword, upper case.
    Keyword(String),
    /// A reserved word of InfluxQL written bare where it is no syntax
    /// (`duration`, `name`, `key`): InfluxDB refuses it as an identifier.
    Reserved(String),
    /// An identifier, quoted or bare, without its quotes.
    Ident(String),
    /// A function name, lower case (InfluxDB's functions are).
    Function(String),
    /// A `'string'`, as written between the quotes.
    Str(String),
    /// A `/regex/`, as written between the slashes.
    Regex(String),
    /// A duration literal, in nanoseconds.
    Duration(u64),
    /// A number.
    Number(f64),
    /// An operator or punctuation.
    Punct(String),
    /// A `-- …` or `/* … */` comment (InfluxDB skips them; a fragment may
    /// not hold one).
    Comment,
}

/// A fragment that is not InfluxQL apimon can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LexError {
    /// A quote or regex without its end.
    #[error("unterminated {what} starting at character {at}")]
    Unterminated {
        /// `string`, `identifier` or `regex`.
        what: &'static str,
        /// Character offset of its start.
        at: usize,
    },
}

/// Words InfluxDB prints upper case; any other bare word is an identifier.
/// (InfluxDB 1.x's `fill`, `tz` and `not` are no keywords: identifiers
/// or calls.)
const KEYWORDS: &[&str] = &[
    "ALL",
    "AND",
    "AS",
    "ASC",
    "BEGIN",
    "BY",
    "CONTINUOUS",
    "CREATE",
    "DELETE",
    "DESC",
    "DISTINCT",
    "DROP",
    "END",
    "EVERY",
    "FALSE",
    "FOR",
    "FROM",
    "GRANT",
    "GROUP",
    "INTO",
    "LIMIT",
    "OFFSET",
    "ON",
    "OR",
    "ORDER",
    "QUERY",
    "RESAMPLE",
    "REVOKE",
    "SELECT",
    "SET",
    "SLIMIT",
    "SOFFSET",
    "TRUE",
    "WHERE",
    "WITH",
];

/// InfluxQL's other reserved words: bare, they are no identifier.
const RESERVED: &[&str] = &[
    "ALTER",
    "ANALYZE",
    "ANY",
    "CARDINALITY",
    "DATABASE",
    "DATABASES",
    "DEFAULT",
    "DESTINATIONS",
    "DIAGNOSTICS",
    "DURATION",
    "EXACT",
    "EXPLAIN",
    "FIELD",
    "GRANTS",
    "GROUPS",
    "IN",
    "INF",
    "INSERT",
    "KEY",
    "KEYS",
    "KILL",
    "MEASUREMENT",
    "MEASUREMENTS",
    "NAME",
    "PASSWORD",
    "POLICY",
    "POLICIES",
    "PRIVILEGES",
    "QUERIES",
    "READ",
    "REPLICATION",
    "RETENTION",
    "SERIES",
    "SHOW",
    "SHARD",
    "SHARDS",
    "STATS",
    "SUBSCRIPTION",
    "SUBSCRIPTIONS",
    "TAG",
    "TO",
    "USER",
    "USERS",
    "VALUES",
    "WRITE",
];

/// Operators of two characters.
const PAIRS: &[&str] = &["=~", "!~", "!=", "<>", "<=", ">=", "::"];

/// The tokens of `text`.
///
/// # Errors
/// A string, quoted identifier or regex that does not end.
pub fn tokens(text: &str) -> Result<Vec<Token>, LexError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        let token = match c {
            '-' if chars.get(i + 1) == Some(&'-') => {
                while chars.get(i).is_some_and(|c| *c != '\n') {
                    i += 1;
                }
                Token::Comment
            }
            '/' if chars.get(i + 1) == Some(&'*') => {
                i += 2;
                while i < chars.len() && !(chars[i] == '*' && chars.get(i + 1) == Some(&'/')) {
                    i += 1;
                }
                i = (i + 2).min(chars.len());
                Token::Comment
            }
            '\'' => Token::Str(quoted(&chars, &mut i, '\'', "string")?),
            '"' => Token::Ident(quoted(&chars, &mut i, '"', "identifier")?),
            '/' if regex_may_follow(out.last()) => {
                Token::Regex(quoted(&chars, &mut i, '/', "regex")?)
            }
            c if c.is_ascii_digit() || (c == '.' && next_is_digit(&chars, i)) => {
                number_or_duration(&chars, &mut i)
            }
            c if c.is_alphabetic() || c == '_' => {
                while chars.get(i).is_some_and(|c| c.is_alphanumeric() || *c == '_') {
                    i += 1;
                }
                word(chars[start..i].iter().collect(), chars.get(i) == Some(&'('))
            }
            _ => {
                let pair: String = chars[i..chars.len().min(i + 2)].iter().collect();
                let len = if PAIRS.contains(&pair.as_str()) { 2 } else { 1 };
                i += len;
                let text: String = chars[start..i].iter().collect();
                // InfluxDB prints `<>` as `!=`.
                Token::Punct(if text == "<>" { "!=".to_owned() } else { text })
            }
        };
        out.push(token);
    }
    Ok(out)
}

/// Whether `a` and `b` are the same statement as InfluxDB reads them.
/// Text that does not lex is only the same as itself.
pub fn same_statement(a: &str, b: &str) -> bool {
    match (tokens(a), tokens(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// Whether `token` is the keyword `word`.
pub fn is_keyword(token: &Token, word: &str) -> bool {
    matches!(token, Token::Keyword(k) if k == word)
}

fn word(text: String, call: bool) -> Token {
    let upper = text.to_ascii_uppercase();
    if call && !KEYWORDS.contains(&upper.as_str()) {
        Token::Function(text.to_ascii_lowercase())
    } else if KEYWORDS.contains(&upper.as_str()) {
        Token::Keyword(upper)
    } else if RESERVED.contains(&upper.as_str()) {
        Token::Reserved(upper)
    } else {
        Token::Ident(text)
    }
}

/// A `/` starts a regex after a match operator, `FROM`, a comma in a
/// measurement list, the `.` of `db.rp./re/` or a call's `(` (as
/// InfluxDB's parser reads `mean(/re/)`); anywhere else it divides.
fn regex_may_follow(previous: Option<&Token>) -> bool {
    match previous {
        Some(Token::Punct(p)) => matches!(p.as_str(), "=~" | "!~" | "." | "," | "("),
        Some(token) => is_keyword(token, "FROM"),
        None => true,
    }
}

fn next_is_digit(chars: &[char], i: usize) -> bool {
    chars.get(i + 1).is_some_and(char::is_ascii_digit)
}

/// The body of a quoted run starting at `chars[*i]`, backslash escapes
/// kept as written (both spellings keep them alike).
fn quoted(
    chars: &[char],
    i: &mut usize,
    end: char,
    what: &'static str,
) -> Result<String, LexError> {
    let at = *i;
    *i += 1;
    let mut body = String::new();
    loop {
        match chars.get(*i) {
            None => return Err(LexError::Unterminated { what, at }),
            Some('\\') if end != '/' || chars.get(*i + 1) == Some(&'/') => {
                // In identifiers and strings an escape stands for the
                // character; in a regex only `\/` is InfluxQL's own escape.
                if let Some(&next) = chars.get(*i + 1) {
                    if end == '/' {
                        body.push('\\');
                    }
                    body.push(next);
                    *i += 2;
                } else {
                    return Err(LexError::Unterminated { what, at });
                }
            }
            Some(&c) if c == end => {
                *i += 1;
                return Ok(body);
            }
            Some(&c) => {
                body.push(c);
                *i += 1;
            }
        }
    }
}

fn number_or_duration(chars: &[char], i: &mut usize) -> Token {
    let start = *i;
    while chars.get(*i).is_some_and(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == 'µ') {
        *i += 1;
    }
    let text: String = chars[start..*i].iter().collect();
    if let Ok(number) = text.parse::<f64>() {
        // InfluxDB 1.x stores a number with three decimals.
        return Token::Number((number * 1000.0).round() / 1000.0);
    }
    match InfluxDuration::parse(&text) {
        Some(duration) => Token::Duration(duration.as_nanos()),
        None => Token::Ident(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! same {
        ($($name:ident: $a:expr, $b:expr, $same:expr;)*) => {$(
            #[test]
            fn $name() {
                assert_eq!(same_statement($a, $b), $same, "{} vs {}", $a, $b);
            }
        )*};
    }

    same! {
        influxdb_reprints_a_continuous_query_as_the_same_statement:
            r#"CREATE CONTINUOUS QUERY "api_1m" ON "apimon" RESAMPLE EVERY 60s FOR 5m BEGIN select mean("elapsed") as "elapsed", count(elapsed) AS "count", sum(x)/count(x) AS y INTO "apimon"."one-min".:MEASUREMENT FROM "apimon"."autogen"./^openstack_api\./ WHERE status_code =~ /^2/ and "a"='b c' GROUP BY time(60s), * END"#,
            r#"CREATE CONTINUOUS QUERY api_1m ON apimon RESAMPLE EVERY 1m FOR 5m BEGIN SELECT mean(elapsed) AS elapsed, count(elapsed) AS count, sum(x) / count(x) AS y INTO apimon."one-min".:MEASUREMENT FROM apimon.autogen./^openstack_api\./ WHERE status_code =~ /^2/ AND a = 'b c' GROUP BY time(1m), * END"#,
            true;
        a_changed_field_is_another_statement: "SELECT mean(a) FROM m", "SELECT mean(b) FROM m", false;
        a_changed_interval_is_another_statement: "GROUP BY time(1m)", "GROUP BY time(2m)", false;
        identifiers_keep_their_case: "SELECT Elapsed FROM m", "SELECT elapsed FROM m", false;
        a_regex_keeps_its_case: "FROM /^A/", "FROM /^a/", false;
        a_string_keeps_its_spaces: "a = 'b c'", "a = 'bc'", false;
        numbers_compare_by_value: "x > 1.0", "x > 1", true;
        not_equal_is_printed_one_way: "a <> 'x'", "a != 'x'", true;
        fill_and_tz_are_names_not_keywords: "GROUP BY time(1m), tz fill(none)", "GROUP BY time(1m), tz FILL(none)", true;
        unterminated_text_is_only_itself: "a = 'b", "a = 'b", true;
    }

    #[test]
    fn a_slash_divides_except_where_a_regex_may_stand() {
        let lexed = tokens("sum(x) / count(x)").unwrap_or_default();
        assert!(lexed.contains(&Token::Punct("/".into())), "{lexed:?}");
        let lexed = tokens("FROM db.rp./^a\\/b/").unwrap_or_default();
        assert_eq!(lexed.last(), Some(&Token::Regex("^a\\/b".into())));
    }

    #[test]
    fn comments_are_seen_as_influxdb_skips_them() {
        let lexed = tokens("mean(x) AS y /* ' */ INTO").unwrap_or_default();
        assert!(
            lexed.contains(&Token::Comment) && lexed.contains(&Token::Keyword("INTO".into())),
            "{lexed:?}"
        );
        let lexed = tokens("mean(x) -- '\nINTO").unwrap_or_default();
        assert!(
            lexed.contains(&Token::Comment) && lexed.contains(&Token::Keyword("INTO".into())),
            "{lexed:?}"
        );
        let lexed = tokens("mean(/'/)").unwrap_or_default();
        assert!(lexed.contains(&Token::Regex("'".into())), "{lexed:?}");
    }

    #[test]
    fn a_bare_reserved_word_is_told_from_a_quoted_one() {
        let lexed = tokens("mean(duration) AS \"duration\"").unwrap_or_default();
        assert!(lexed.contains(&Token::Reserved("DURATION".into())), "{lexed:?}");
        assert_eq!(lexed.last(), Some(&Token::Ident("duration".into())));
    }

    #[test]
    fn an_unterminated_quote_names_where_it_starts() {
        assert_eq!(tokens("mean(x) AS 'y"), Err(LexError::Unterminated { what: "string", at: 11 }));
    }
}
