//! The compiled template set: the built-in templates with the
//! repository's overrides, checked before they are compiled (no partials,
//! which could recurse until the stack overflows; block nesting bounded)
//! and rendered into a bounded buffer.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use handlebars::Handlebars;
use serde_json::Value;

use super::{RenderError, BUILT_IN};
use crate::model::{Diagnostic, Diagnostics, Location, TemplateOverride};

/// Deepest nesting of block helpers (`{{#if}}`, `{{#each}}`) in a template.
pub const MAX_BLOCK_DEPTH: usize = 32;
/// Largest output of one template for one host.
pub const MAX_OUTPUT_BYTES: usize = 4 * 1024 * 1024;

/// The compiled template set.
pub struct Templates {
    registry: Handlebars<'static>,
    /// Where each template came from, for error locations.
    origins: BTreeMap<String, PathBuf>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates").field("origins", &self.origins).finish_non_exhaustive()
    }
}

fn built_in_origin(name: &str) -> PathBuf {
    PathBuf::from(format!("(built-in) templates/{name}"))
}

impl Templates {
    /// Compiles the built-in templates with the repository's overrides.
    ///
    /// # Errors
    /// An override with an unknown name, or a syntax error (file, line,
    /// column).
    pub fn new(overrides: &BTreeMap<String, TemplateOverride>) -> Result<Self, Diagnostics> {
        let mut registry = Handlebars::new();
        registry.set_strict_mode(true);
        // Output is YAML/TOML/INI, not HTML: escaping is the template's job
        // (via the `json` helper), never the engine's.
        registry.register_escape_fn(handlebars::no_escape);
        registry.register_helper("json", Box::new(json_helper));
        let mut problems = Vec::new();
        let mut origins = BTreeMap::new();
        for (name, override_) in overrides {
            if !BUILT_IN.iter().any(|(known, _)| known == name) {
                let known: Vec<&str> = BUILT_IN.iter().map(|(n, _)| *n).collect();
                problems.push(Diagnostic::new(
                    Location::file(&override_.file),
                    "",
                    format!("unknown template name; expected one of: {}", known.join(", ")),
                ));
            }
        }
        for (name, built_in) in BUILT_IN {
            let (origin, text) = match overrides.get(name) {
                Some(o) => (o.file.clone(), o.text.as_str()),
                None => (built_in_origin(name), built_in),
            };
            if let Some((line, column, message)) = unsafe_construct(text) {
                problems.push(Diagnostic::new(Location::at(&origin, line, column), "", message));
                origins.insert(name.to_owned(), origin);
                continue;
            }
            if let Err(error) = registry.register_template_string(name, text) {
                let (line, column) = error.pos().unwrap_or((1, 1));
                problems.push(Diagnostic::new(
                    Location::at(&origin, line, column),
                    "",
                    format!("template syntax error: {}", error.reason()),
                ));
            }
            origins.insert(name.to_owned(), origin);
        }
        if problems.is_empty() {
            Ok(Self { registry, origins })
        } else {
            Err(Diagnostics::normalized(problems))
        }
    }

    /// Renders template `name` for `host`.
    ///
    /// # Errors
    /// [`RenderError::Template`] naming template, position and variable.
    pub fn render(&self, name: &str, host: &str, context: &Value) -> Result<String, RenderError> {
        let mut output = Bounded(Vec::new());
        let rendered = self.registry.render_to_write(name, context, &mut output);
        let text = rendered.and_then(|()| {
            String::from_utf8(output.0).map_err(|e| {
                handlebars::RenderErrorReason::Other(format!("output is not UTF-8: {e}")).into()
            })
        });
        text.map_err(|error| {
            let origin = self.origins.get(name).cloned().unwrap_or_else(|| built_in_origin(name));
            let location = match (error.line_no, error.column_no) {
                (Some(line), Some(column)) => Location::at(origin, line, column),
                _ => Location::file(origin),
            };
            let message = match error.reason() {
                handlebars::RenderErrorReason::MissingVariable(Some(variable)) => {
                    format!("variable `{variable}` is not defined")
                }
                other => other.to_string(),
            };
            RenderError::Template {
                template: name.to_owned(),
                origin: Box::new(location),
                host: host.to_owned(),
                message,
            }
        })
    }
}

/// `{{json value}}`: the value as JSON, which is also a valid YAML and TOML
/// scalar, so strings are always quoted and escaped correctly.
fn json_helper(
    helper: &handlebars::Helper<'_>,
    _: &Handlebars<'_>,
    _: &handlebars::Context,
    _: &mut handlebars::RenderContext<'_, '_>,
    out: &mut dyn handlebars::Output,
) -> handlebars::HelperResult {
    let param = helper
        .param(0)
        .ok_or_else(|| handlebars::RenderErrorReason::ParamNotFoundForIndex("json", 0))?;
    if param.is_value_missing() {
        let path = param.relative_path().cloned();
        return Err(handlebars::RenderErrorReason::MissingVariable(path).into());
    }
    let text = serde_json::to_string(param.value())
        .map_err(|e| handlebars::RenderErrorReason::Other(e.to_string()))?;
    out.write(&text)?;
    Ok(())
}

/// A buffer that refuses to grow past [`MAX_OUTPUT_BYTES`].
struct Bounded(Vec<u8>);

impl Write for Bounded {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + bytes.len() > MAX_OUTPUT_BYTES {
            return Err(std::io::Error::other(format!(
                "the output grows past {MAX_OUTPUT_BYTES} bytes"
            )));
        }
        self.0.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The first construct apimon does not compile, with its 1-based line and
/// column: a partial (`{{> name}}`, `{{#> name}}`, `{{#*inline}}`), which
/// can call itself until the stack overflows, or blocks nested deeper than
/// [`MAX_BLOCK_DEPTH`], which overflow the parser's. One linear pass.
fn unsafe_construct(text: &str) -> Option<(usize, usize, String)> {
    let mut depth = 0usize;
    let mut rest = text;
    let mut offset = 0;
    while let Some(start) = rest.find("{{") {
        let open = &rest[start + 2..];
        let tag = open.trim_start_matches(['{', '~']).trim_start();
        let at = || {
            let before = &text[..offset + start];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            (line, column)
        };
        if tag.starts_with('>') || tag.starts_with("#>") || tag.starts_with("#*") {
            let (line, column) = at();
            return Some((line, column, "partials and inline templates are not supported in apimon templates; write the text out".to_owned()));
        }
        if tag.starts_with('#') {
            depth += 1;
            if depth > MAX_BLOCK_DEPTH {
                let (line, column) = at();
                return Some((
                    line,
                    column,
                    format!("blocks nested deeper than {MAX_BLOCK_DEPTH} levels"),
                ));
            }
        } else if tag.starts_with('/') {
            depth = depth.saturating_sub(1);
        }
        offset += start + 2;
        rest = &rest[start + 2..];
    }
    None
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// The built-in templates with `name` overridden by `text`.
    pub(crate) fn templates_with(name: &str, text: &str) -> Result<Templates, Diagnostics> {
        let overrides = BTreeMap::from([(
            name.to_owned(),
            TemplateOverride {
                file: PathBuf::from(format!("templates/{name}")),
                text: text.to_owned(),
            },
        )]);
        Templates::new(&overrides)
    }

    #[test]
    fn a_recursive_partial_is_refused_before_it_can_run() {
        let problems = templates_with(
            "influxdb.conf.hbs",
            "ok\n{{#*inline \"x\"}}a{{> x}}{{/inline}}{{> x}}\n",
        )
        .expect_err("refused");
        let text = problems.to_string();
        assert!(text.starts_with("templates/influxdb.conf.hbs:2:1: partials"), "{text}");
    }

    #[test]
    fn deep_blocks_are_refused() {
        let text = "{{#if a}}".repeat(10_000);
        let problems = templates_with("influxdb.conf.hbs", &text).expect_err("refused");
        assert!(problems.to_string().contains("nested deeper than 32"), "{problems}");
    }

    #[test]
    fn output_is_bounded() {
        let templates = templates_with(
            "telegraf.conf.hbs",
            "{{#each a}}{{#each @root.a}}{{#each @root.a}}0123456789{{/each}}{{/each}}{{/each}}",
        )
        .expect("compiles");
        let list: Vec<u32> = (0..200).collect();
        let error = templates
            .render("telegraf.conf.hbs", "h", &serde_json::json!({ "a": list }))
            .expect_err("too big");
        assert!(error.to_string().contains("bytes"), "{error}");
    }
}
