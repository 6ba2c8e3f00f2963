//! A database's continuous queries: unique names, policies the database
//! declares (or InfluxDB's own `autogen`), durations that parse, and
//! fragments that stay fragments: the field list and condition are pasted
//! into a statement apimon composes, so they may not end it or add a
//! clause of their own.

use std::collections::BTreeSet;

use super::Check;
use crate::model::influxql::{self, Token};
use crate::model::load::Document;
use crate::model::{raw, ContinuousQuery, InfluxDuration};

/// Keywords that would open a clause apimon writes itself.
const CLAUSES: &[&str] = &[
    "SELECT", "INTO", "FROM", "WHERE", "GROUP", "BEGIN", "END", "LIMIT", "OFFSET", "SLIMIT",
    "SOFFSET", "ORDER",
];

/// The retention policy every InfluxDB database starts with.
const AUTOGEN: &str = "autogen";

pub(super) fn check(
    check: &mut Check,
    doc: &Document<raw::InfluxdbFile>,
    path: &str,
    database: &raw::Database,
) -> Vec<ContinuousQuery> {
    let queries = &database.continuous_queries;
    check.unique(
        doc,
        "continuous query",
        queries
            .iter()
            .enumerate()
            .map(|(j, q)| (q.name.as_str(), format!("{path}.continuous_queries[{j}].name"))),
    );
    let policies: BTreeSet<&str> = database
        .retention_policies
        .iter()
        .map(|rp| rp.name.as_str())
        .chain(std::iter::once(AUTOGEN))
        .collect();
    queries
        .iter()
        .enumerate()
        .filter_map(|(j, q)| {
            check_one(check, doc, &format!("{path}.continuous_queries[{j}]"), q, &policies)
        })
        .collect()
}

fn check_one(
    check: &mut Check,
    doc: &Document<raw::InfluxdbFile>,
    path: &str,
    query: &raw::ContinuousQuery,
    policies: &BTreeSet<&str>,
) -> Option<ContinuousQuery> {
    if !super::checks::is_influx_identifier(&query.name) {
        check.error(
            doc,
            &format!("{path}.name"),
            format!("invalid continuous query name `{}`", query.name),
        );
    }
    for (key, policy) in [("from", &query.from), ("into", &query.into)] {
        if !policies.contains(policy.as_str()) {
            let known: Vec<&str> = policies.iter().copied().collect();
            check.error(doc, &format!("{path}.{key}"), format!("retention policy `{policy}` is not declared for this database; expected one of: {}", known.join(", ")));
        }
    }
    if query.from == query.into {
        check.error(doc, &format!("{path}.into"), "`into` is the policy it reads `from`; a continuous query downsamples into another policy");
    }
    let mut duration = |key: &str, text: Option<&String>| -> Option<Option<InfluxDuration>> {
        let Some(text) = text else { return Some(None) };
        match InfluxDuration::parse(text) {
            Some(d) if !d.is_infinite() => Some(Some(d)),
            _ => {
                check.error(
                    doc,
                    &format!("{path}.{key}"),
                    format!(
                        "invalid duration `{text}`; expected an InfluxQL duration like 1m or 10m"
                    ),
                );
                None
            }
        }
    };
    let interval = duration("interval", Some(&query.interval));
    let every = duration("every", query.every.as_ref());
    let span = duration("for", query.span.as_ref());
    let measurements_ok = check_measurements(check, doc, path, &query.measurements);
    let select_ok = check_fragment(check, doc, &format!("{path}.select"), &query.select);
    let condition_ok = query
        .condition
        .as_ref()
        .is_none_or(|c| check_fragment(check, doc, &format!("{path}.where"), c));
    let mut group_ok = true;
    for (k, tag) in query.group_by.iter().flatten().enumerate() {
        if !is_measurement_name(tag) {
            check.error(
                doc,
                &format!("{path}.group_by[{k}]"),
                format!("invalid tag `{tag}`; expected a tag name"),
            );
            group_ok = false;
        }
    }
    if !(measurements_ok && select_ok && condition_ok && group_ok) {
        return None;
    }
    Some(ContinuousQuery {
        name: query.name.clone(),
        from: query.from.clone(),
        into: query.into.clone(),
        interval: interval??,
        every: every?,
        span: span?,
        measurements: query.measurements.clone(),
        select: query.select.clone(),
        condition: query.condition.clone(),
        group_by: query.group_by.clone(),
    })
}

/// A measurement name or one `/regex/`.
fn check_measurements(
    check: &mut Check,
    doc: &Document<raw::InfluxdbFile>,
    path: &str,
    text: &str,
) -> bool {
    let ok = !text.contains(['\n', '\r'])
        && match influxql::tokens(&format!("FROM {text}")).as_deref() {
            Ok([_, Token::Regex(_)]) => true,
            _ => super::checks::is_influx_identifier(text) || is_measurement_name(text),
        };
    if !ok {
        check.error(doc, &format!("{path}.measurements"), format!("invalid measurements `{text}`; expected a measurement name (like apimon_task) or one /regex/ (like /^openstack_api\\./)"));
    }
    ok
}

/// Measurement names apimon writes contain dots (`openstack_api.compute`).
fn is_measurement_name(text: &str) -> bool {
    !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// A field list or condition: lexes, and opens no clause of its own.
fn check_fragment(
    check: &mut Check,
    doc: &Document<raw::InfluxdbFile>,
    path: &str,
    text: &str,
) -> bool {
    let problem = match influxql::tokens(text) {
        _ if text.contains(['\n', '\r']) => Some("a line break; expected one line".to_owned()),
        Err(error) => Some(error.to_string()),
        Ok(tokens) if tokens.is_empty() => Some("it is empty".to_owned()),
        Ok(tokens) => tokens.iter().find_map(|t| match t {
            Token::Punct(p) if p == ";" => Some("`;` would end the statement".to_owned()),
            Token::Comment => Some("a comment (`--` or `/*`); expected none".to_owned()),
            Token::Reserved(word) => Some(format!(
                "`{}` is an InfluxQL keyword; to name a field or tag, quote it: \"{}\"",
                word.to_ascii_lowercase(),
                word.to_ascii_lowercase()
            )),
            Token::Keyword(k) if CLAUSES.contains(&k.as_str()) => {
                Some(format!("`{k}` opens a clause apimon writes itself"))
            }
            _ => None,
        }),
    };
    if let Some(problem) = &problem {
        check.error(doc, path, format!("invalid InfluxQL fragment `{text}`: {problem}"));
    }
    problem.is_none()
}
