//! A pinned apimon release (`apimon_binary:` in apimon.yaml): downloaded
//! once per process and checksum, checked against the sha256 apimon.yaml
//! names before any host gets it.

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::HostError;

/// The largest release accepted.
const MAX_BYTES: usize = 512 << 20;

/// A release downloaded and checked.
struct Downloaded {
    url: String,
    sha256: String,
    bytes: Arc<Vec<u8>>,
}

/// The last release downloaded: every executor and the bastion of one
/// apply get the same file.
static CACHE: tokio::sync::Mutex<Option<Downloaded>> = tokio::sync::Mutex::const_new(None);

/// The file at `url`, whose sha256 must be `sha256`.
///
/// # Errors
/// Unreachable, not 200, too large, or another file than apimon.yaml names.
pub(super) async fn fetch(url: &str, sha256: &str) -> Result<Arc<Vec<u8>>, HostError> {
    let mut cache = CACHE.lock().await;
    if let Some(cached) = cache.as_ref().filter(|c| c.url == url && c.sha256 == sha256) {
        return Ok(Arc::clone(&cached.bytes));
    }
    let error = |message: String, transient: bool| HostError::Download {
        url: crate::source::git::redact_url(url),
        message,
        transient,
    };
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(15))
        .timeout(Duration::from_secs(600))
        .build()
        .map_err(|e| error(e.to_string(), false))?;
    let mut response = client.get(url).send().await.map_err(|e| error(e.to_string(), true))?;
    let status = response.status();
    if !status.is_success() {
        return Err(error(format!("answered {status}"), status.is_server_error()));
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| error(e.to_string(), true))? {
        if bytes.len() + chunk.len() > MAX_BYTES {
            return Err(error(format!("larger than {MAX_BYTES} bytes"), false));
        }
        bytes.extend_from_slice(&chunk);
    }
    let got = hex::encode(Sha256::digest(&bytes));
    if got != sha256 {
        return Err(error(
            format!("downloaded a file with sha256 {got}, not the {sha256} apimon.yaml names; nothing was installed"),
            false,
        ));
    }
    let bytes = Arc::new(bytes);
    *cache = Some(Downloaded {
        url: url.to_owned(),
        sha256: sha256.to_owned(),
        bytes: Arc::clone(&bytes),
    });
    Ok(bytes)
}
