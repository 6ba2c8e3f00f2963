//! A pinned apimon release (`apimon_binary:` in apimon.yaml): downloaded
//! once per process and checksum, checked against the sha256 apimon.yaml
//! names — and, with a release key on the applying machine (the trust
//! store's, never the repository's), against its SSH signature (namespace
//! `apimon-release`, by `ssh-keygen -Y verify`) — before any host gets it.
//! The pin alone proves integrity, not who built the file.

use std::path::Path;
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
    /// URL, sha256, signature URL and release key it was checked with.
    key: (String, String, Option<String>, Option<String>),
    fetched: Fetched,
}

/// The SSH signature namespace of apimon releases.
pub const NAMESPACE: &str = "apimon-release";
/// The largest signature accepted.
const MAX_SIGNATURE_BYTES: usize = 64 << 10;

static CACHE: tokio::sync::Mutex<Option<Cached>> = tokio::sync::Mutex::const_new(None);

/// The file at `url`, whose sha256 must be `sha256`, and which `key` (a
/// release key, when installed) must have signed: the signature is at
/// `signature_url`.
///
/// # Errors
/// Unreachable or stalled (transient), not 200, too large, another file
/// than apimon.yaml names, or not signed by the release key (permanent).
pub(super) async fn fetch(
    url: &str,
    sha256: &str,
    signature_url: Option<&str>,
    key: Option<&Path>,
) -> Result<Arc<Vec<u8>>, HostError> {
    let error = |message: String, transient: bool| HostError::Download {
        url: crate::url::redact_url(url),
        message,
        transient,
    };
    let key_text = match key {
        None => None,
        Some(path) => Some(
            crate::fsutil::read_text_limited(path, MAX_SIGNATURE_BYTES as u64)
                .map_err(|e| {
                    error(format!("cannot read the release key {}: {e}", path.display()), false)
                })?
                .trim()
                .to_owned(),
        ),
    };
    let identity =
        (url.to_owned(), sha256.to_owned(), signature_url.map(str::to_owned), key_text.clone());
    let mut cache = CACHE.lock().await;
    if let Some(cached) = cache.as_ref().filter(|c| c.key == identity) {
        return match &cached.fetched {
            Fetched::Checked(bytes) => Ok(Arc::clone(bytes)),
            Fetched::Refused(message) => Err(error(message.clone(), false)),
        };
    }
    let checked = match download(url, sha256).await {
        Ok(bytes) => match &key_text {
            None => Ok(bytes),
            Some(key) => signed(&bytes, signature_url, key).await.map(|()| bytes),
        },
        Err(failure) => Err(failure),
    };
    let fetched = match checked {
        Ok(bytes) => Fetched::Checked(Arc::new(bytes)),
        Err((message, true)) => return Err(error(message, true)),
        Err((message, false)) => Fetched::Refused(message),
    };
    let result = match &fetched {
        Fetched::Checked(bytes) => Ok(Arc::clone(bytes)),
        Fetched::Refused(message) => Err(error(message.clone(), false)),
    };
    *cache = Some(Cached { key: identity, fetched });
    result
}

/// Whether the signature at `signature_url` is `key`'s over `bytes`; the
/// error says whether trying again may help.
async fn signed(
    bytes: &[u8],
    signature_url: Option<&str>,
    key: &str,
) -> Result<(), (String, bool)> {
    let Some(signature_url) = signature_url else {
        return Err((
            "a release key is installed and apimon_binary has no signature_url: only signed releases are installed; nothing was installed".to_owned(),
            false,
        ));
    };
    let signature =
        get(signature_url, MAX_SIGNATURE_BYTES).await.map_err(|(message, transient)| {
            (format!("signature {signature_url}: {message}"), transient)
        })?;
    let dir = crate::fsutil::PrivateTempDir::new("apimon-release")
        .map_err(|e| (format!("cannot make a temporary directory: {e}"), true))?;
    let signers = dir.path().join("allowed_signers");
    let signature_file = dir.path().join("release.sig");
    let written =
        std::fs::write(&signers, format!("{NAMESPACE} namespaces=\"{NAMESPACE}\" {key}\n"))
            .and_then(|()| std::fs::write(&signature_file, &signature));
    written.map_err(|e| (format!("cannot write the signature to check: {e}"), true))?;
    let mut child = tokio::process::Command::new("ssh-keygen")
        .args(["-Y", "verify", "-I", NAMESPACE, "-n", NAMESPACE, "-f"])
        .arg(&signers)
        .arg("-s")
        .arg(&signature_file)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            (format!("cannot run ssh-keygen to check the release's signature: {e}"), false)
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        use tokio::io::AsyncWriteExt;
        stdin.write_all(bytes).await.map_err(|e| (format!("ssh-keygen: {e}"), true))?;
    }
    let output = child.wait_with_output().await.map_err(|e| (format!("ssh-keygen: {e}"), true))?;
    if output.status.success() {
        return Ok(());
    }
    let said = String::from_utf8_lossy(&output.stderr);
    let said: String = said.lines().next().unwrap_or_default().chars().take(200).collect();
    Err((format!("not signed by the release key ({said}); nothing was installed"), false))
}

/// Downloads and checks; the error says whether trying again may help.
async fn download(url: &str, sha256: &str) -> Result<Vec<u8>, (String, bool)> {
    let bytes = get(url, MAX_BYTES).await?;
    let got = crate::digest::sha256_hex(&bytes);
    if got != sha256 {
        return Err((
            format!("downloaded a file with sha256 {got}, not the {sha256} apimon.yaml names; nothing was installed"),
            false,
        ));
    }
    Ok(bytes)
}

/// The body at `url`, at most `limit` bytes.
async fn get(url: &str, limit: usize) -> Result<Vec<u8>, (String, bool)> {
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
        if bytes.len() + chunk.len() > limit {
            return Err((format!("larger than {limit} bytes"), false));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}
