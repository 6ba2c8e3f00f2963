//! What the sweeper may delete: never a resource carrying apimon's
//! platform marks, never one younger than the age, and then either one
//! whose name carries the job id of a finished run of this executor, or
//! (in a dedicated project) anything.

use std::collections::BTreeSet;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde_json::Value;

/// Which leftovers a sweeper takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Select {
    /// Names that carry a finished run's job id.
    JobIds,
    /// Everything old enough: the project is the scenarios' alone.
    Project,
}

/// Hex digits of a job id a name must carry (playbooks may cut it short).
pub const JOB_PREFIX: usize = 8;

/// The job ids a name may carry: the first [`JOB_PREFIX`] digits of every
/// run in `runs_dir` (`<scenario>/<start>-<job id>`), but those running.
pub fn finished_jobs(runs_dir: &Path, running: &BTreeSet<String>) -> BTreeSet<String> {
    let mut jobs = BTreeSet::new();
    let Ok(scenarios) = std::fs::read_dir(runs_dir) else { return jobs };
    for scenario in scenarios.filter_map(Result::ok) {
        if scenario.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let Ok(runs) = std::fs::read_dir(scenario.path()) else { continue };
        for run in runs.filter_map(Result::ok) {
            let name = run.file_name().to_string_lossy().into_owned();
            let Some((_, job)) = name.rsplit_once('-') else { continue };
            if job.len() == 32
                && job.bytes().all(|b| b.is_ascii_hexdigit())
                && !running.contains(job)
            {
                jobs.insert(job[..JOB_PREFIX].to_ascii_lowercase());
            }
        }
    }
    jobs
}

/// Whether `name` carries one of `jobs`: a run of at least
/// [`JOB_PREFIX`] hex digits whose start is a job's.
pub fn carries_job(name: &str, jobs: &BTreeSet<String>) -> bool {
    let bytes = name.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_hexdigit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_hexdigit() {
            i += 1;
        }
        if i - start >= JOB_PREFIX
            && jobs.contains(&name[start..start + JOB_PREFIX].to_ascii_lowercase())
        {
            return true;
        }
    }
    false
}

/// Whether `item` carries apimon's platform marks: Neutron tags or
/// Nova/Cinder metadata naming an environment, or a description that
/// says apimon made it.
pub fn is_platform(item: &Value) -> bool {
    use crate::providers::openstack::marks::{ENV_KEY, MANAGED_KEY};
    let tagged = item.get("tags").and_then(Value::as_array).is_some_and(|tags| {
        tags.iter().filter_map(Value::as_str).any(|t| {
            t.starts_with(&format!("{ENV_KEY}=")) || t.starts_with(&format!("{MANAGED_KEY}="))
        })
    });
    let marked = item
        .get("metadata")
        .and_then(Value::as_object)
        .is_some_and(|m| m.contains_key(ENV_KEY) || m.contains_key(MANAGED_KEY));
    tagged || marked
}

/// When `item` was created (`created_at`, or Nova's `created`).
pub fn created(item: &Value) -> Option<DateTime<Utc>> {
    let text = item.get("created_at").or_else(|| item.get("created")).and_then(Value::as_str)?;
    DateTime::parse_from_rfc3339(text).map(|t| t.with_timezone(&Utc)).ok().or_else(|| {
        // Cinder and Nova keypairs omit the zone: `2026-12-07T19:00:00.000000`.
        chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
            .ok()
            .map(|t| t.and_utc())
    })
}

/// Whether `item` (named `name`) is a leftover to delete at `now`.
pub fn is_leftover(
    item: &Value,
    name: &str,
    select: Select,
    jobs: &BTreeSet<String>,
    older_than: DateTime<Utc>,
) -> bool {
    if is_platform(item) || created(item).is_none_or(|at| at > older_than) {
        return false;
    }
    match select {
        Select::JobIds => carries_job(name, jobs),
        Select::Project => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn jobs() -> BTreeSet<String> {
        ["5f0c2d9e".to_owned()].into()
    }

    macro_rules! carries {
        ($($name:ident: $text:expr => $want:expr;)*) => {$(
            #[test]
            fn $name() {
                assert_eq!(carries_job($text, &jobs()), $want, "{}", $text);
            }
        )*};
    }

    carries! {
        a_whole_job_id_in_a_name_is_found: "apimon-5f0c2d9e8a7b4c1d9e0f1a2b3c4d5e6f-net" => true;
        a_job_id_cut_to_twelve_digits_is_found: "scenario2-5f0c2d9e8a7b-server" => true;
        upper_case_is_the_same_id: "S-5F0C2D9E8A7B" => true;
        seven_digits_are_not_enough: "x-5f0c2d9-y" => false;
        another_jobs_id_is_not_this_one: "apimon-aaaaaaaa8a7b4c1d-net" => false;
        the_prefix_must_start_the_hex_run: "apimon-a5f0c2d9e8a7b-net" => false;
    }

    #[test]
    fn platform_marks_and_youth_protect_a_resource() {
        let old = "2026-01-01T00:00:00Z";
        let cutoff = DateTime::parse_from_rfc3339("2026-06-01T00:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default();
        let plain = json!({"created_at": old});
        assert!(is_leftover(&plain, "n-5f0c2d9e8a7b", Select::JobIds, &jobs(), cutoff));
        let tagged = json!({"created_at": old, "tags": ["apimon:env=outside"]});
        assert!(!is_leftover(&tagged, "n-5f0c2d9e8a7b", Select::Project, &jobs(), cutoff));
        let marked = json!({"created": old, "metadata": {"apimon:managed": "true"}});
        assert!(!is_leftover(&marked, "n-5f0c2d9e8a7b", Select::Project, &jobs(), cutoff));
        let young = json!({"created_at": "2026-07-01T00:00:00Z"});
        assert!(!is_leftover(&young, "n-5f0c2d9e8a7b", Select::Project, &jobs(), cutoff));
        let undated = json!({});
        assert!(!is_leftover(&undated, "n-5f0c2d9e8a7b", Select::Project, &jobs(), cutoff));
        let cinder = json!({"created_at": "2026-01-01T00:00:00.000000"});
        assert!(is_leftover(&cinder, "other", Select::Project, &jobs(), cutoff));
    }
}
