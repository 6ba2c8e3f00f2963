//! Content digests: one definition of the hex sha256 that files,
//! fingerprints and checksums are compared by.

use sha2::{Digest, Sha256};

/// Hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}
