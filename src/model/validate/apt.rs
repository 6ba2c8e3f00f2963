//! `apt_repositories:` in apimon.yaml: each a name usable in file names,
//! an http(s) URI, a suite and components apt accepts, a signing key that
//! exists under `apt/` and looks like one, and package names.

use std::collections::BTreeMap;

use super::checks::{is_http_url, names_list};
use super::Check;
use crate::model::load::RawRepository;
use crate::model::AptRepository;

/// A token apt takes as a suite, component or package name (no spaces, no
/// characters that would break the deb822 entry or a shell word).
fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+' | '/'))
}

pub(super) fn check(check: &mut Check, repo: &RawRepository) -> Vec<AptRepository> {
    let doc = &repo.root;
    let mut repositories = Vec::new();
    for (name, raw) in &doc.value.apt_repositories {
        let path = format!("apt_repositories.{name}");
        if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            || name.is_empty()
        {
            check.error(
                doc,
                &path,
                format!(
                    "invalid repository name `{name}`; expected lowercase letters, digits and `-`"
                ),
            );
        }
        if !is_http_url(&raw.uri) || raw.uri.contains(char::is_whitespace) {
            check.error(
                doc,
                &format!("{path}.uri"),
                format!("invalid URI `{}`; expected http:// or https://", raw.uri),
            );
        }
        if !is_token(&raw.suite) {
            check.error(doc, &format!("{path}.suite"), format!("invalid suite `{}`", raw.suite));
        }
        if raw.components.is_empty() {
            check.error(
                doc,
                &format!("{path}.components"),
                "no components; expected at least one, like main",
            );
        }
        for (i, component) in raw.components.iter().enumerate() {
            if !is_token(component) {
                check.error(
                    doc,
                    &format!("{path}.components[{i}]"),
                    format!("invalid component `{component}`"),
                );
            }
        }
        for (role, packages) in &raw.packages {
            for (i, package) in packages.iter().enumerate() {
                if !is_token(package) || package.starts_with('-') {
                    check.error(
                        doc,
                        &format!("{path}.packages.{}[{i}]", role.as_str()),
                        format!("invalid package name `{package}`"),
                    );
                }
            }
        }
        let key_path = raw.key.trim_start_matches("./");
        let extension = if key_path.ends_with(".asc") {
            "asc"
        } else if key_path.ends_with(".gpg") {
            "gpg"
        } else {
            check.error(doc, &format!("{path}.key"), format!("`{key_path}` is not a key file; expected an armored .asc or a binary .gpg key under apt/"));
            continue;
        };
        let Some(key) = repo.runtime_files.get(key_path).filter(|_| key_path.starts_with("apt/"))
        else {
            let known = repo.runtime_files.keys().filter(|k| k.starts_with("apt/"));
            check.error(
                doc,
                &format!("{path}.key"),
                format!("`{key_path}` does not exist; {}", names_list(known.map(String::as_str))),
            );
            continue;
        };
        let armored = key.starts_with(b"-----BEGIN PGP PUBLIC KEY BLOCK-----");
        if (extension == "asc") != armored {
            check.error(doc, &format!("{path}.key"), format!("`{key_path}` is not an OpenPGP public key of its kind: an .asc file starts with -----BEGIN PGP PUBLIC KEY BLOCK-----, a .gpg file is a binary keyring"));
            continue;
        }
        let keyring = format!("/etc/apt/keyrings/apimon-{name}.{extension}");
        let sources = format!(
            "# Written by apimon (apt_repositories.{name} in apimon.yaml).\nTypes: deb\nURIs: {}\nSuites: {}\nComponents: {}\nSigned-By: {keyring}\n",
            raw.uri,
            raw.suite,
            raw.components.join(" ")
        );
        let packages: BTreeMap<_, _> =
            raw.packages.iter().map(|(role, list)| (*role, list.clone())).collect();
        repositories.push(AptRepository {
            name: name.clone(),
            sources,
            keyring,
            key: std::sync::Arc::new(key.clone()),
            packages,
        });
    }
    repositories
}

#[cfg(test)]
mod tests {
    use super::is_token;

    #[test]
    fn tokens_are_what_apt_and_a_shell_word_accept() {
        assert!(is_token("stable") && is_token("jammy-updates") && is_token("g++"));
        assert!(
            !is_token("") && !is_token("main contrib") && !is_token("a;b") && !is_token("$(x)")
        );
    }
}
