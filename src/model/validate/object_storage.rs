//! `inventory/<env>/object_storage.yaml`: container names Swift and URLs
//! take as they are, each declared once.

use super::SectionCheck;
use crate::model::{raw, Sections};

/// Whether Swift, a URL path and a log line all take `name` as it is.
fn is_container_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// Checks the containers; invalid ones are left out of the result.
pub(in crate::model) fn check(cx: &mut SectionCheck<'_>, _: &Sections) -> Vec<raw::Container> {
    let (check, doc) = (&mut *cx.check, &cx.inventory.object_storage);
    let containers = &doc.value.containers;
    check.unique(
        doc,
        "container",
        containers
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.as_str(), format!("containers[{i}].name"))),
    );
    let mut checked = Vec::new();
    for (i, container) in containers.iter().enumerate() {
        if is_container_name(&container.name) {
            checked.push(container.clone());
        } else {
            check.error(
                doc,
                &format!("containers[{i}].name"),
                format!(
                    "invalid container name `{}`; expected 1 to 63 of letters, digits, `-`, `_` and `.`, not starting with `.`",
                    container.name
                ),
            );
        }
    }
    checked
}

#[cfg(test)]
mod tests {
    use super::is_container_name;

    macro_rules! names {
        ($($name:ident: $text:expr => $valid:expr,)+) => {$(
            #[test]
            fn $name() {
                assert_eq!(is_container_name($text), $valid, "{:?}", $text);
            }
        )+};
    }

    names! {
        plain: "apimon-logs" => true,
        dots_and_underscores: "logs_2026.v1" => true,
        empty: "" => false,
        slash: "logs/a" => false,
        leading_dot: ".hidden" => false,
        space: "my logs" => false,
        percent: "logs%2f" => false,
        too_long: &"a".repeat(64) => false,
        longest: &"a".repeat(63) => true,
        non_ascii: "lögs" => false,
    }
}
