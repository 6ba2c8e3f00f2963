//! Health expressions: boolean expressions over flags, as the successor's
//! metrics processor writes them (`api_down || (slow && !maintenance)`):
//! flag names, `!`, `&&` (binds tighter), `||` and parentheses. Parsed
//! once at validation, so a misspelled flag is an error with its column,
//! never an expression that is silently false.

use std::collections::BTreeSet;

/// A parsed expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// A flag, true when it fired.
    Flag(String),
    /// `!e`.
    Not(Box<Expr>),
    /// `a && b`.
    And(Box<Expr>, Box<Expr>),
    /// `a || b`.
    Or(Box<Expr>, Box<Expr>),
}

/// An expression that does not parse: what and at which character
/// (1-based, as editors count columns).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} at character {at}")]
pub struct ParseError {
    /// What is wrong.
    pub message: String,
    /// 1-based character position.
    pub at: usize,
}

/// Deepest nesting accepted: a hostile expression must not exhaust the stack.
const MAX_DEPTH: usize = 64;
/// Most tokens: a chain of `||` nests its tree as deep as it is long.
const MAX_TOKENS: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Name(String),
    Not,
    And,
    Or,
    Open,
    Close,
}

fn tokens(text: &str) -> Result<Vec<(Token, usize)>, ParseError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        let at = i + 1;
        let pair = |second: char| chars.get(i + 1) == Some(&second);
        match c {
            c if c.is_whitespace() => i += 1,
            '(' | ')' | '!' => {
                out.push((
                    match c {
                        '(' => Token::Open,
                        ')' => Token::Close,
                        _ => Token::Not,
                    },
                    at,
                ));
                i += 1;
            }
            '&' if pair('&') => {
                out.push((Token::And, at));
                i += 2;
            }
            '|' if pair('|') => {
                out.push((Token::Or, at));
                i += 2;
            }
            c if c.is_ascii_alphanumeric() || c == '_' => {
                let start = i;
                while chars
                    .get(i)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
                {
                    i += 1;
                }
                out.push((Token::Name(chars[start..i].iter().collect()), at));
            }
            other => {
                return Err(ParseError {
                    message: format!(
                    "unexpected `{other}`; expected a flag name, `!`, `&&`, `||` or parentheses"
                ),
                    at,
                })
            }
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<(Token, usize)>,
    next: usize,
    end: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.next).map(|(t, _)| t)
    }

    fn at(&self) -> usize {
        self.tokens.get(self.next).map_or(self.end, |(_, at)| *at)
    }

    fn error(&self, message: &str) -> ParseError {
        ParseError { message: message.to_owned(), at: self.at() }
    }

    fn or(&mut self, depth: usize) -> Result<Expr, ParseError> {
        let mut left = self.and(depth)?;
        while self.peek() == Some(&Token::Or) {
            self.next += 1;
            left = Expr::Or(Box::new(left), Box::new(self.and(depth)?));
        }
        Ok(left)
    }

    fn and(&mut self, depth: usize) -> Result<Expr, ParseError> {
        let mut left = self.unary(depth)?;
        while self.peek() == Some(&Token::And) {
            self.next += 1;
            left = Expr::And(Box::new(left), Box::new(self.unary(depth)?));
        }
        Ok(left)
    }

    fn unary(&mut self, depth: usize) -> Result<Expr, ParseError> {
        if depth > MAX_DEPTH {
            return Err(self.error(&format!("nested deeper than {MAX_DEPTH}")));
        }
        match self.peek().cloned() {
            Some(Token::Not) => {
                self.next += 1;
                Ok(Expr::Not(Box::new(self.unary(depth + 1)?)))
            }
            Some(Token::Open) => {
                self.next += 1;
                let inner = self.or(depth + 1)?;
                if self.peek() != Some(&Token::Close) {
                    return Err(self.error("`(` is not closed; expected `)`"));
                }
                self.next += 1;
                Ok(inner)
            }
            Some(Token::Name(name)) => {
                self.next += 1;
                Ok(Expr::Flag(name))
            }
            Some(_) => Err(self.error("expected a flag name, `!` or `(`")),
            None => Err(self.error("the expression ends early; expected a flag name")),
        }
    }
}

impl Expr {
    /// Parses `text`.
    ///
    /// # Errors
    /// Not an expression: the problem and its character position.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let tokens = tokens(text)?;
        let end = text.chars().count() + 1;
        if let Some((_, at)) = tokens.get(MAX_TOKENS) {
            return Err(ParseError {
                message: format!("longer than {MAX_TOKENS} names and operators"),
                at: *at,
            });
        }
        let mut parser = Parser { tokens, next: 0, end };
        let expr = parser.or(0)?;
        if parser.next < parser.tokens.len() {
            return Err(parser.error("unexpected text after the expression; expected `&&` or `||`"));
        }
        Ok(expr)
    }

    /// The flags it names.
    pub fn flags(&self) -> BTreeSet<&str> {
        let mut out = BTreeSet::new();
        self.collect(&mut out);
        out
    }

    fn collect<'a>(&'a self, out: &mut BTreeSet<&'a str>) {
        match self {
            Self::Flag(name) => {
                out.insert(name);
            }
            Self::Not(inner) => inner.collect(out),
            Self::And(a, b) | Self::Or(a, b) => {
                a.collect(out);
                b.collect(out);
            }
        }
    }

    /// Its value when `fired` says which flags fired.
    pub fn holds(&self, fired: &dyn Fn(&str) -> bool) -> bool {
        match self {
            Self::Flag(name) => fired(name),
            Self::Not(inner) => !inner.holds(fired),
            Self::And(a, b) => a.holds(fired) && b.holds(fired),
            Self::Or(a, b) => a.holds(fired) || b.holds(fired),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! holds {
        ($($name:ident: $text:expr, $fired:expr => $want:expr;)*) => {$(
            #[test]
            fn $name() {
                let fired: &[&str] = &$fired;
                let expr = Expr::parse($text).unwrap_or_else(|e| panic!("{}: {e}", $text));
                assert_eq!(expr.holds(&|f| fired.contains(&f)), $want, "{}", $text);
            }
        )*};
    }

    holds! {
        a_flag_is_true_when_it_fired: "down", ["down"] => true;
        and_binds_tighter_than_or: "a || b && c", ["a"] => true;
        and_binds_tighter_than_or_the_other_way: "a && b || c", ["a"] => false;
        parentheses_group: "(a || b) && c", ["a"] => false;
        not_negates: "slow && !down", ["slow"] => true;
        double_negation: "!!slow", ["slow"] => true;
        names_with_dots_and_dashes: "api.success-rate_low", ["api.success-rate_low"] => true;
    }

    macro_rules! rejects {
        ($($name:ident: $text:expr => $message:expr, $at:expr;)*) => {$(
            #[test]
            fn $name() {
                let error = Expr::parse($text).expect_err($text);
                assert!(error.message.contains($message), "{}: {error}", $text);
                assert_eq!(error.at, $at, "{}: {error}", $text);
            }
        )*};
    }

    rejects! {
        an_unclosed_parenthesis_says_so: "(a || b" => "is not closed", 8;
        a_single_ampersand_is_no_operator: "a & b" => "unexpected `&`", 3;
        a_dangling_operator_ends_early: "a ||" => "ends early", 5;
        two_names_need_an_operator: "a b" => "unexpected text", 3;
        an_empty_expression_names_no_flag: "" => "ends early", 1;
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        let text = format!("{}a{}", "(".repeat(100), ")".repeat(100));
        assert!(Expr::parse(&text).expect_err("deep").message.contains("nested deeper"));
        let nots = format!("{}a", "!".repeat(10_000));
        assert!(Expr::parse(&nots).is_err());
        let chain = vec!["a"; 100_000].join(" || ");
        assert!(Expr::parse(&chain).expect_err("long").message.contains("longer than"));
    }

    #[test]
    fn the_flags_it_names_are_listed() {
        let expr = Expr::parse("a || (b && !c) || a").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(expr.flags().into_iter().collect::<Vec<_>>(), ["a", "b", "c"]);
    }
}
