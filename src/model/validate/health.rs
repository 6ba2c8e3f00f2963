//! `health.yaml`: every template's query uses only known placeholders and
//! groups by a tag; every flag names a template, services and declared
//! environments; every expression parses and names flags that exist (the
//! successor's production rules referenced a misspelled flag nothing
//! caught); weights are 0, 1 or 2; durations parse.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::checks::names_list;
use super::Check;
use crate::model::health::expression::Expr;
use crate::model::health::{Flag, FlagTemplate, Health, HealthExpression, PLACEHOLDERS};
use crate::model::influxql::{self, Token};
use crate::model::load::Document;
use crate::model::raw;

/// The checked rules, or `None` when the file declares none.
pub(super) fn check(
    check: &mut Check,
    doc: &Document<raw::HealthFile>,
    environments: &BTreeSet<&str>,
) -> Option<Health> {
    let file = &doc.value;
    if file.flag_templates.is_empty() && file.flags.is_empty() && file.expressions.is_empty() {
        return None;
    }
    let settings = &file.settings;
    let secs = Duration::from_secs;
    let interval =
        check.duration(doc, "settings.interval", settings.interval.as_deref(), secs(60), "60s");
    let window_from = check.duration(
        doc,
        "settings.window_from",
        settings.window_from.as_deref(),
        secs(300),
        "5m",
    );
    let window_to =
        check.duration(doc, "settings.window_to", settings.window_to.as_deref(), secs(120), "2m");
    if window_to >= window_from {
        check.error(doc, "settings.window_to", format!("the window ends {} s ago, not after it starts ({} s ago); expected window_to below window_from", window_to.as_secs(), window_from.as_secs()));
    }
    let resolve_after = settings.resolve_after.unwrap_or(2);
    if resolve_after == 0 {
        check.error(doc, "settings.resolve_after", "0; expected at least 1 ok evaluation");
    }
    let templates = check_templates(check, doc);
    let flags = check_flags(check, doc, &templates, environments);
    let expressions = check_expressions(check, doc, &flags);
    let (listen, allow_from) = super::health_routes::check_page(check, doc);
    let routes = super::health_routes::check_routes(check, doc, environments);
    let windows = super::health_routes::check_windows(check, doc, environments);
    Some(Health {
        interval,
        window_from,
        window_to,
        resolve_after,
        templates,
        flags,
        expressions,
        routes,
        windows,
        hosts: file.hosts.clone(),
        listen,
        allow_from,
        page_url: file.page.as_ref().and_then(|p| p.url.clone()),
    })
}

fn check_templates(
    check: &mut Check,
    doc: &Document<raw::HealthFile>,
) -> BTreeMap<String, FlagTemplate> {
    let mut templates = BTreeMap::new();
    for (name, template) in &doc.value.flag_templates {
        let path = format!("flag_templates.{name}");
        for placeholder in unknown_placeholders(&template.query) {
            check.error(
                doc,
                &format!("{path}.query"),
                format!(
                    "unknown placeholder `{placeholder}`; expected {}",
                    PLACEHOLDERS.join(", ")
                ),
            );
        }
        match influxql::tokens(&template.query) {
            Err(error) => {
                check.error(doc, &format!("{path}.query"), format!("invalid InfluxQL: {error}"))
            }
            Ok(tokens) => {
                let grouped = tokens.windows(2).any(|w| {
                    influxql::is_keyword(&w[0], "GROUP") && influxql::is_keyword(&w[1], "BY")
                });
                if !grouped {
                    check.error(doc, &format!("{path}.query"), "no GROUP BY; expected the query grouped by the service tag (one value per service)");
                }
                if tokens.iter().any(|t| matches!(t, Token::Punct(p) if p == ";")) {
                    check.error(
                        doc,
                        &format!("{path}.query"),
                        "`;` would start a second statement; expected one SELECT",
                    );
                }
                if !tokens.first().is_some_and(|t| influxql::is_keyword(t, "SELECT")) {
                    check.error(doc, &format!("{path}.query"), "expected a SELECT");
                }
            }
        }
        if !template.threshold.is_finite() {
            check.error(doc, &format!("{path}.threshold"), "expected a finite number");
        }
        templates.insert(
            name.clone(),
            FlagTemplate {
                query: template.query.clone(),
                op: template.op,
                threshold: template.threshold,
            },
        );
    }
    templates
}

/// `$words` of `query` that are not placeholders.
fn unknown_placeholders(query: &str) -> BTreeSet<String> {
    let mut unknown = BTreeSet::new();
    for (at, _) in query.match_indices('$') {
        let word: String = query[at..]
            .chars()
            .skip(1)
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let placeholder = format!("${word}");
        // `$` ending a regex (`/^a$/`) is no placeholder.
        if !word.is_empty() && !PLACEHOLDERS.contains(&placeholder.as_str()) {
            unknown.insert(placeholder);
        }
    }
    unknown
}

fn check_flags(
    check: &mut Check,
    doc: &Document<raw::HealthFile>,
    templates: &BTreeMap<String, FlagTemplate>,
    environments: &BTreeSet<&str>,
) -> Vec<Flag> {
    let flags = &doc.value.flags;
    check.unique(
        doc,
        "flag",
        flags.iter().enumerate().map(|(i, f)| (f.name.as_str(), format!("flags[{i}].name"))),
    );
    let mut checked = Vec::new();
    for (i, flag) in flags.iter().enumerate() {
        let path = format!("flags[{i}]");
        let Some(template) = templates.get(&flag.template) else {
            let known = names_list(templates.keys().map(String::as_str));
            check.error(
                doc,
                &format!("{path}.template"),
                format!("unknown flag template `{}`; {known}", flag.template),
            );
            continue;
        };
        if flag.services.is_empty() {
            check.error(
                doc,
                &format!("{path}.services"),
                "no services; expected the service types it is computed for",
            );
        }
        let envs: Vec<String> = match &flag.environments {
            Some(named) => {
                for (j, env) in named.iter().enumerate() {
                    if !environments.contains(env.as_str()) {
                        check.error(
                            doc,
                            &format!("{path}.environments[{j}]"),
                            format!(
                                "unknown environment `{env}`; {}",
                                names_list(environments.iter().copied())
                            ),
                        );
                    }
                }
                named.clone()
            }
            None => environments.iter().map(|e| (*e).to_owned()).collect(),
        };
        for env in flag.thresholds.keys() {
            if !envs.contains(env) {
                check.error(
                    doc,
                    &format!("{path}.thresholds.{env}"),
                    format!(
                        "environment `{env}` is not one this flag applies to; {}",
                        names_list(envs.iter().map(String::as_str))
                    ),
                );
            }
        }
        checked.push(Flag {
            name: flag.name.clone(),
            template: flag.template.clone(),
            services: flag.services.clone(),
            environments: envs,
            threshold: flag.threshold.unwrap_or(template.threshold),
            thresholds: flag.thresholds.clone(),
        });
    }
    checked
}

fn check_expressions(
    check: &mut Check,
    doc: &Document<raw::HealthFile>,
    flags: &[Flag],
) -> Vec<HealthExpression> {
    let expressions = &doc.value.expressions;
    check.unique(
        doc,
        "expression",
        expressions
            .iter()
            .enumerate()
            .map(|(i, e)| (e.name.as_str(), format!("expressions[{i}].name"))),
    );
    let names: BTreeSet<&str> = flags.iter().map(|f| f.name.as_str()).collect();
    let mut checked = Vec::new();
    for (i, expression) in expressions.iter().enumerate() {
        let path = format!("expressions[{i}]");
        if expression.weight > 2 {
            check.error(
                doc,
                &format!("{path}.weight"),
                format!("{}; expected 0 (ok), 1 (degraded) or 2 (outage)", expression.weight),
            );
        }
        match Expr::parse(&expression.expression) {
            Err(error) => check.error(
                doc,
                &format!("{path}.expression"),
                format!("invalid expression `{}`: {error}", expression.expression),
            ),
            Ok(expr) => {
                for flag in expr.flags() {
                    if !names.contains(flag) {
                        check.error(
                            doc,
                            &format!("{path}.expression"),
                            format!("unknown flag `{flag}`; {}", names_list(names.iter().copied())),
                        );
                    }
                }
                checked.push(HealthExpression {
                    name: expression.name.clone(),
                    expr,
                    weight: expression.weight,
                });
            }
        }
    }
    checked
}

/// Checks a health.yaml outside a repository (the health service's copy
/// of the repository's) for `environments`: the rules, `None` when it
/// declares none, or every problem as `file:line:column: path: message`.
///
/// # Errors
/// The text is not a health.yaml, or a rule does not check.
pub fn check_file(
    path: &std::path::Path,
    text: &str,
    environments: &[String],
) -> Result<Option<Health>, Vec<String>> {
    let value: raw::HealthFile = crate::model::load::parse_yaml(text).map_err(|p| {
        let at = if p.path.is_empty() { String::new() } else { format!("{}: ", p.path) };
        vec![format!("{}:{}:{}: {at}{}", path.display(), p.line, p.column, p.message)]
    })?;
    let doc = Document {
        file: path.to_owned(),
        value,
        map: crate::model::source_map::SourceMap::build(text),
    };
    let mut check = Check::default();
    let names: BTreeSet<&str> = environments.iter().map(String::as_str).collect();
    let health = self::check(&mut check, &doc, &names);
    if check.problems.is_empty() {
        Ok(health)
    } else {
        let diagnostics = crate::model::Diagnostics::normalized(check.problems);
        Err(diagnostics.to_string().lines().map(str::to_owned).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_three_placeholders_are_known_and_a_regex_end_is_none() {
        let query = "SELECT x FROM m WHERE s =~ /$service/ AND e = '$environment' AND $window AND n =~ /^a$/ AND $servce GROUP BY s";
        assert_eq!(unknown_placeholders(query).into_iter().collect::<Vec<_>>(), ["$servce"]);
    }
}
