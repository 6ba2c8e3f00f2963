//! A pinned apimon release (`apimon_binary:` in apimon.yaml): downloaded
//! once per process and checksum, checked against the sha256 apimon.yaml
//! names before any host gets it.

use std::sync::Arc;
use std::time::Duration;

use super::HostError;

/// The largest release accepted.
const MAX_BYTES: usize = 512 << 20;

/// What became of the last release asked for: every executor and the
/// bastion of one apply get the same file, and a file that is not the one
/// apimon.yaml names is refused once, not downloaded again for each host.
enum Fetched {
    Checked(Arc<Vec<u8>>),
    Refused(String),
}

struct Cached {
    url: String,
    sha256: String,
    fetched: Fetched,
}

static CACHE: tokio::sync::Mutex<Option<Cached>> = tokio::sync::Mutex::const_new(None);

/// The file at `url`, whose sha256 must be `sha256`.
///
/// # Errors
/// Unreachable or stalled (transient), not 200, too large, or another file
/// than apimon.yaml names (permanent).
pub(super) async fn fetch(url: &str, sha256: &str) -> Result<Arc<Vec<u8>>, HostError> {
    let error = |message: String, transient: bool| HostError::Download {
        url: crate::url::redact_url(url),
        message,
        transient,
    };
    let mut cache = CACHE.lock().await;
    if let Some(cached) = cache.as_ref().filter(|c| c.url == url && c.sha256 == sha256) {
        return match &cached.fetched {
            Fetched::Checked(bytes) => Ok(Arc::clone(bytes)),
            Fetched::Refused(message) => Err(error(message.clone(), false)),
        };
    }
    let fetched = match download(url, sha256).await {
        Ok(bytes) => Fetched::Checked(Arc::new(bytes)),
        Err((message, true)) => return Err(error(message, true)),
        Err((message, false)) => Fetched::Refused(message),
    };
    let result = match &fetched {
        Fetched::Checked(bytes) => Ok(Arc::clone(bytes)),
        Fetched::Refused(message) => Err(error(message.clone(), false)),
    };
    *cache = Some(Cached { url: url.to_owned(), sha256: sha256.to_owned(), fetched });
    result
}

/// Downloads and checks; the error says whether trying again may help.
async fn download(url: &str, sha256: &str) -> Result<Vec<u8>, (String, bool)> {
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(15))
        // A stalled transfer fails; a slow one that moves does not.
        .read_timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| (e.to_string(), false))?;
    let mut response = client.get(url).send().await.map_err(|e| (e.to_string(), true))?;
    let status = response.status();
    if !status.is_success() {
        let transient = status.is_server_error()
            || status == reqwest::StatusCode::REQUEST_TIMEOUT
            || status == reqwest::StatusCode::TOO_MANY_REQUESTS;
        return Err((format!("answered {status}"), transient));
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| (e.to_string(), true))? {
        // A long download is progress, not a stalled daemon (its watchdog).
        crate::progress::tick();
        if bytes.len() + chunk.len() > MAX_BYTES {
            return Err((format!("larger than {MAX_BYTES} bytes"), false));
        }
        bytes.extend_from_slice(&chunk);
    }
    let got = crate::digest::sha256_hex(&bytes);
    if got != sha256 {
        return Err((
            format!("downloaded a file with sha256 {got}, not the {sha256} apimon.yaml names; nothing was installed"),
            false,
        ));
    }
    Ok(bytes)
}
