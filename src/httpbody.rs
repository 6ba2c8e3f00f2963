//! Reading an HTTP answer's body with a bound: a hostile or broken server
//! must not fill the process's memory.

/// The body of `response`, at most `limit` bytes.
///
/// # Errors
/// The transfer failed, or the body is larger than `limit`.
pub async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| crate::error::chain(&e))? {
        if body.len() + chunk.len() > limit {
            return Err(format!("the answer is larger than {limit} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
