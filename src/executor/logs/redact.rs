//! Keeps the secrets the executor knows out of a log before it leaves the
//! host: the passwords and application-credential secrets of its clouds
//! file, the results password, the log container's key.

use std::path::Path;

/// Shorter values are not replaced: they would blank ordinary words.
const MIN_SECRET: usize = 4;

/// What stands in for a secret.
const MASK: &str = "***";

/// The secrets to replace, longest first (a secret that contains another
/// is replaced whole).
#[derive(Debug, Default)]
pub struct Redactor(Vec<String>);

impl Redactor {
    /// A redactor of `secrets` (too short ones are ignored).
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Self {
        let mut redactor = Self::default();
        redactor.extend(secrets);
        redactor
    }

    /// Adds `secrets`.
    pub fn extend(&mut self, secrets: impl IntoIterator<Item = String>) {
        let secrets: Vec<String> =
            secrets.into_iter().filter(|s| s.chars().count() >= MIN_SECRET).collect();
        // As a JSON string shows it too (Ansible prints results as JSON).
        let escaped: Vec<String> = secrets
            .iter()
            .filter_map(|s| serde_json::to_string(s).ok())
            .map(|quoted| quoted[1..quoted.len() - 1].to_owned())
            .collect();
        self.0.extend(secrets);
        self.0.extend(escaped);
        self.0.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
        self.0.dedup();
    }

    /// `text` with every secret replaced by `***`.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for secret in &self.0 {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), MASK);
            }
        }
        out
    }
}

/// Every `password`, `application_credential_secret` and `token` value in
/// the clouds file at `path` (all entries: a playbook may use any); `None`
/// when it cannot be read (then nothing may be uploaded).
pub fn clouds_file_secrets(path: &Path) -> Option<Vec<String>> {
    let text = crate::fsutil::read_text_limited(path, crate::fsutil::MAX_CONFIG_BYTES).ok()?;
    let document = yaml_serde::from_str::<yaml_serde::Value>(&text).ok()?;
    let mut found = Vec::new();
    collect(&document, &mut found, 0);
    Some(found)
}

fn collect(value: &yaml_serde::Value, found: &mut Vec<String>, depth: usize) {
    if depth > 32 {
        return;
    }
    match value {
        yaml_serde::Value::Mapping(map) => {
            for (key, value) in map {
                let secret_key = matches!(
                    key.as_str(),
                    Some("password" | "application_credential_secret" | "token")
                );
                match value {
                    yaml_serde::Value::String(text) if secret_key => found.push(text.clone()),
                    _ => collect(value, found, depth + 1),
                }
            }
        }
        yaml_serde::Value::Sequence(items) => {
            for item in items {
                collect(item, found, depth + 1);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_secret_is_masked_and_short_values_are_left() {
        let redactor =
            Redactor::new(["hunter22".to_owned(), "hunter22-long".to_owned(), "abc".to_owned()]);
        assert_eq!(
            redactor.redact("pw=hunter22 other=hunter22-long word=abc"),
            "pw=*** other=*** word=abc"
        );
        let quoted = Redactor::new(["pa\"ss\\wd".to_owned()]);
        assert_eq!(quoted.redact(r#"{"password": "pa\"ss\\wd"}"#), r#"{"password": "***"}"#);
    }

    #[test]
    fn the_clouds_file_gives_its_passwords_and_secrets() {
        let dir = tempfile::tempdir().unwrap_or_else(|_| unreachable!());
        let path = dir.path().join("clouds.yaml");
        let text = "clouds:\n  a:\n    auth: {username: u, password: secret-one}\n  b:\n    auth: {application_credential_id: i, application_credential_secret: secret-two}\n";
        std::fs::write(&path, text).unwrap_or_else(|_| unreachable!());
        assert_eq!(clouds_file_secrets(&path).unwrap_or_default(), ["secret-one", "secret-two"]);
        assert!(clouds_file_secrets(&dir.path().join("missing.yaml")).is_none());
    }
}
