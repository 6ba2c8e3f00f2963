//! The executor's own availability zone, a `zone` tag on every point it
//! writes: so one environment probed from two zones is two series, and a
//! failure seen from one zone is told from one seen from everywhere. From
//! executor.yaml (the host's declared `availability_zone`), or asked of
//! the cloud's metadata service (Nova's answer about this server) when the
//! zone was left to Nova.

use std::time::Duration;

/// Most bytes of the metadata document read.
const MAX_METADATA: usize = 256 * 1024;

/// The zone in Nova's `meta_data.json` at `url`, if it answers in time.
pub async fn from_metadata(url: &str, timeout: Duration) -> Option<String> {
    let http = reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .ok()?;
    let response = http.get(url).send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    let body = crate::httpbody::read_limited(response, MAX_METADATA).await.ok()?;
    let document: serde_json::Value = serde_json::from_slice(&body).ok()?;
    document
        .get("availability_zone")
        .and_then(serde_json::Value::as_str)
        .filter(|z| is_zone_name(z))
        .map(str::to_owned)
}

pub use crate::model::is_zone_name;

/// Most bytes of a zone file read.
const MAX_ZONE_FILE: u64 = 1024;

/// The zone in the file apimon wrote (`/etc/apimon/zone`): `None` when it
/// is empty (the cloud could not say) or holds no zone name.
///
/// # Errors
/// The file cannot be read (missing, not a regular file, too large).
pub fn from_file(path: &std::path::Path) -> Result<Option<String>, crate::fsutil::ReadError> {
    let text = crate::fsutil::read_text_limited(path, MAX_ZONE_FILE)?;
    let zone = text.trim();
    Ok(is_zone_name(zone).then(|| zone.to_owned()))
}

/// `line` with the tag `zone=<zone>` after its series key, unless it has
/// one (a point that says its zone keeps it).
pub fn tagged(line: String, zone: &str) -> String {
    let Some(end) = series_end(&line) else { return line };
    if has_zone(&line[..end]) {
        return line;
    }
    let mut out = String::with_capacity(line.len() + zone.len() + 6);
    out.push_str(&line[..end]);
    out.push_str(",zone=");
    out.push_str(&super::lineproto::escape_tag(zone));
    out.push_str(&line[end..]);
    out
}

/// Where the series key (measurement and tags) ends: the first space
/// that no backslash escapes.
fn series_end(line: &str) -> Option<usize> {
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b' ' => return Some(i),
            _ => i += 1,
        }
    }
    None
}

/// Whether the series key has a `zone` tag.
fn has_zone(key: &str) -> bool {
    key.match_indices(",zone=").any(|(at, _)| !key[..at].ends_with('\\'))
}

/// How long the metadata service may take to say the zone.
const ZONE_LOOKUP: Duration = Duration::from_secs(3);

/// Fills in the zone when executor.yaml gives none: from the zone file
/// apimon wrote (Nova's answer when it applied the server), else from the
/// metadata service when executor.yaml names one; a lookup that fails
/// keeps `previous` (a hiccup must not change every series and restart the
/// writer).
pub(super) async fn resolve(config: &mut super::config::Config, previous: Option<&str>) {
    if config.results.zone.is_some() {
        return;
    }
    if let Some(file) = &config.zone_file {
        match from_file(file) {
            Ok(Some(zone)) => {
                config.results.zone = Some(zone);
                return;
            }
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(file = %file.display(), error = %error, previous = ?previous, "The zone file cannot be read.");
                config.results.zone = previous.map(str::to_owned);
                return;
            }
        }
    }
    if let Some(url) = &config.zone_metadata_url {
        match from_metadata(url, ZONE_LOOKUP).await {
            Some(zone) => {
                tracing::info!(zone = %zone, "Availability zone from the metadata service.");
                config.results.zone = Some(zone);
            }
            None => {
                tracing::warn!(url = %url, previous = ?previous, "The metadata service did not say the zone.");
                config.results.zone = previous.map(str::to_owned);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_zone_goes_after_the_series_key() {
        assert_eq!(
            tagged("apimon_scenario,environment=outside result=\"x y\" 5".into(), "eu-de-01"),
            "apimon_scenario,environment=outside,zone=eu-de-01 result=\"x y\" 5"
        );
        assert_eq!(tagged("m,a=b\\ c f=1i 5".into(), "z 1"), "m,a=b\\ c,zone=z\\ 1 f=1i 5");
    }

    #[test]
    fn a_point_that_names_its_zone_keeps_it() {
        let line = "m,zone=own f=1i 5".to_owned();
        assert_eq!(tagged(line.clone(), "other"), line);
        crate::executor::lineproto::parse(&tagged("m,a=b f=1i 5".into(), "z")).expect("valid");
    }
}
