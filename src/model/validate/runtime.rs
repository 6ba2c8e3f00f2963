//! `runtime:` in apimon.yaml: pinned pip requirements (no pip options
//! smuggled in), collection archives that exist under `runtime/`, and the
//! runtime's id, a hash of all of it.

use sha2::{Digest, Sha256};

use super::checks::{is_http_url, names_list};
use super::Check;
use crate::model::load::RawRepository;
use crate::model::{CollectionArchive, Runtime, DEFAULT_INTERPRETER};

/// A pip requirement apimon passes on as one argument: a project name
/// first, no option (`-…`), no whitespace or control characters, and a
/// version constraint (a runtime that is not pinned changes under you).
fn check_requirement(requirement: &str) -> Result<(), String> {
    let first = requirement.chars().next();
    if !first.is_some_and(|c| c.is_ascii_alphanumeric()) {
        return Err(format!(
            "invalid requirement `{requirement}`; expected a project name first, like ansible-core==2.17.7"
        ));
    }
    if requirement.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("invalid requirement `{requirement}`; expected no spaces"));
    }
    if !["==", "~=", "===", "@"].iter().any(|pin| requirement.contains(pin)) {
        return Err(format!(
            "requirement `{requirement}` is not pinned; expected a version, like {requirement}==1.2.3"
        ));
    }
    Ok(())
}

pub(super) fn check(check: &mut Check, repo: &RawRepository) -> Option<Runtime> {
    let doc = &repo.root;
    let raw = doc.value.runtime.as_ref()?;
    let mut hash = Sha256::new();
    if raw.python.is_empty() {
        check.error(
            doc,
            "runtime.python",
            "no Python packages; expected at least ansible-core, pinned, like ansible-core==2.17.7",
        );
    }
    for (i, requirement) in raw.python.iter().enumerate() {
        if let Err(message) = check_requirement(requirement) {
            check.error(doc, &format!("runtime.python[{i}]"), message);
        }
        hash.update(format!("python\0{requirement}\n"));
    }
    if let Some(url) = &raw.index_url {
        if !is_http_url(url) {
            check.error(
                doc,
                "runtime.index_url",
                format!("invalid URL `{url}`; expected http:// or https://"),
            );
        }
        hash.update(format!("index\0{url}\n"));
    }
    let interpreter = raw.interpreter.clone().unwrap_or_else(|| DEFAULT_INTERPRETER.to_owned());
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+".contains(c);
    if !interpreter.starts_with('/') || !interpreter.chars().all(plain) {
        check.error(
            doc,
            "runtime.interpreter",
            format!("`{interpreter}` is not an absolute path of letters, digits and `/._-+`; expected e.g. /usr/bin/python3"),
        );
    }
    hash.update(format!("interpreter\0{interpreter}\n"));
    let mut collections = Vec::new();
    for (i, path) in raw.collections.iter().enumerate() {
        let key = format!("runtime.collections[{i}]");
        let path = path.trim_start_matches("./");
        if !path.ends_with(".tar.gz") {
            check.error(doc, &key, format!("`{path}` is not a collection archive; expected a .tar.gz built by `ansible-galaxy collection build` or downloaded from a Galaxy server"));
            continue;
        }
        let Some(content) = repo.runtime_files.get(path) else {
            let known = repo.runtime_files.keys().map(String::as_str);
            check.error(doc, &key, format!("`{path}` does not exist; {}", names_list(known)));
            continue;
        };
        let sha256 = crate::digest::sha256_hex(content);
        hash.update(format!("collection\0{path}\0{sha256}\n"));
        collections.push(CollectionArchive {
            path: path.to_owned(),
            sha256,
            content: std::sync::Arc::new(content.clone()),
        });
    }
    let id = hex::encode(hash.finalize())[..16].to_owned();
    Some(Runtime {
        id,
        python: raw.python.clone(),
        collections,
        index_url: raw.index_url.clone(),
        interpreter,
    })
}

#[cfg(test)]
mod tests {
    use super::check_requirement;

    macro_rules! requirements {
        ($($name:ident: $text:expr => $ok:expr,)*) => {$(
            #[test]
            fn $name() {
                assert_eq!(check_requirement($text).is_ok(), $ok, "{}", $text);
            }
        )*};
    }

    requirements! {
        exact_pin: "ansible-core==2.17.7" => true,
        compatible_pin: "openstacksdk~=4.14.0" => true,
        extras_and_pin: "openstacksdk[metrics]==4.14.0" => true,
        unpinned: "openstacksdk" => false,
        lower_bound_only: "openstacksdk>=4" => false,
        an_option: "--index-url=https://evil.test" => false,
        a_file: "-r/etc/shadow==1" => false,
        with_space: "ansible-core== 2.17" => false,
        empty: "" => false,
    }
}
