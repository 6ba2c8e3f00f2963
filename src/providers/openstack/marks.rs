//! apimon's ownership marks on OpenStack resources: Neutron tags and
//! Nova/Cinder metadata `apimon:managed=true` and `apimon:env=<env>`; and
//! how observation names what it finds (twins, names taken by another
//! environment).

use std::collections::{BTreeMap, BTreeSet};

use super::client::OpenstackError;

/// Server metadata key marking resources apimon owns.
pub const MANAGED_KEY: &str = "apimon:managed";
/// Server metadata key naming the environment.
pub const ENV_KEY: &str = "apimon:env";

/// The environment apimon's marks name, when they say apimon manages it.
fn marked_env<'a>(managed: Option<&str>, env: Option<&'a str>) -> Option<&'a str> {
    (managed == Some("true")).then_some(env).flatten()
}

fn tag_value<'a>(tags: &'a [String], key: &str) -> Option<&'a str> {
    tags.iter().find_map(|t| t.strip_prefix(key).and_then(|rest| rest.strip_prefix('=')))
}

/// The environment whose apimon Neutron tags `tags` carries, if any.
pub(crate) fn tags_env(tags: &[String]) -> Option<&str> {
    marked_env(tag_value(tags, MANAGED_KEY), tag_value(tags, ENV_KEY))
}

/// The environment whose apimon marks Nova or Cinder `metadata` carries, if any.
pub(crate) fn metadata_env(metadata: &BTreeMap<String, String>) -> Option<&str> {
    marked_env(
        metadata.get(MANAGED_KEY).map(String::as_str),
        metadata.get(ENV_KEY).map(String::as_str),
    )
}

/// The environment an `apimon:env` Neutron tag names, with or without
/// `apimon:managed`: a half-stripped mark still says whose it was, so it
/// is never taken over (adopted) by another environment.
pub(crate) fn tags_claim(tags: &[String]) -> Option<&str> {
    tag_value(tags, ENV_KEY)
}

/// As [`tags_claim`], for Nova or Cinder metadata.
pub(crate) fn metadata_claim(metadata: &BTreeMap<String, String>) -> Option<&str> {
    metadata.get(ENV_KEY).map(String::as_str)
}

/// Whether Neutron tags mark a resource as apimon's in `env`.
pub(crate) fn is_owned_tags(tags: &[String], env: &str) -> bool {
    tags_env(tags) == Some(env)
}

/// Whether Nova or Cinder metadata marks a resource as apimon's in `env`.
pub(crate) fn is_owned_metadata(metadata: &BTreeMap<String, String>, env: &str) -> bool {
    metadata_env(metadata) == Some(env)
}

/// The Neutron tags apimon puts on what it creates in `env`.
pub(crate) fn ownership_tags(env: &str) -> Vec<String> {
    vec![format!("{MANAGED_KEY}=true"), format!("{ENV_KEY}={env}")]
}

/// The metadata apimon puts on the servers and volumes it creates in `env`.
pub(crate) fn ownership_metadata(env: &str) -> [(String, String); 2] {
    [(MANAGED_KEY.to_owned(), "true".to_owned()), (ENV_KEY.to_owned(), env.to_owned())]
}

/// The name a resource is observed under. The oldest owned resource of a
/// name keeps it; a younger owned twin (left by a create that was retried
/// after its answer was lost, say) is observed as `<name>~<id>`, and so
/// pruned like any leftover instead of haunting the index.
#[derive(Default)]
pub(super) struct Claims(BTreeSet<String>);

impl Claims {
    pub(super) fn name(&mut self, name: &str, id: &str, owned: bool) -> String {
        if owned && !self.0.insert(name.to_owned()) {
            format!("{name}~{}", id.get(..8).unwrap_or(id))
        } else {
            name.to_owned()
        }
    }
}

/// A declared name taken by a resource apimon marked for another
/// environment (`marked`: the environment its marks name; environments
/// sharing a project): taking it over would make the two fight forever.
pub(super) fn refuse_foreign(
    what: &str,
    name: &str,
    env: &str,
    marked: Option<&str>,
) -> Result<(), OpenstackError> {
    match marked.filter(|other| *other != env) {
        None => Ok(()),
        Some(other) => Err(OpenstackError::Failed {
            resource: format!("{what} {name}"),
            message: format!(
                "the name is taken by environment `{other}` (marked apimon:env={other}) in the same project; give it another name in one of the two environments"
            ),
        }),
    }
}

/// Oldest first, so the same resource keeps a name from one plan to the next.
pub(super) fn oldest_first<T>(items: &mut [T], key: impl Fn(&T) -> (&str, &str)) {
    items.sort_by(|a, b| key(a).cmp(&key(b)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ownership_needs_both_marks_and_the_right_environment() {
        let tags = ownership_tags("outside");
        assert!(is_owned_tags(&tags, "outside"));
        assert!(!is_owned_tags(&tags, "inside"));
        assert!(!is_owned_tags(&tags[..1], "outside"));
        let metadata: BTreeMap<String, String> =
            ownership_metadata("outside").into_iter().collect();
        assert!(is_owned_metadata(&metadata, "outside"));
        assert!(!is_owned_metadata(&metadata, "inside"));
        assert!(!is_owned_metadata(&BTreeMap::new(), "outside"));
    }

    #[test]
    fn another_environments_marks_are_recognised() {
        let tags = |env: &str| vec!["apimon:managed=true".to_owned(), format!("apimon:env={env}")];
        assert_eq!(tags_env(&tags("inside")), Some("inside"));
        assert!(refuse_foreign("network", "net", "outside", tags_env(&tags("inside"))).is_err());
        assert!(refuse_foreign("network", "net", "outside", tags_env(&tags("outside"))).is_ok());
        assert_eq!(tags_env(&["apimon:env=inside".to_owned()]), None);
        assert_eq!(tags_env(&[]), None);
        let metadata: BTreeMap<String, String> = ownership_metadata("inside").into_iter().collect();
        assert_eq!(metadata_env(&metadata), Some("inside"));
        let refused =
            refuse_foreign("network", "net", "outside", Some("inside")).expect_err("refused");
        assert!(refused
            .to_string()
            .starts_with("network net: the name is taken by environment `inside`"));
    }
}
