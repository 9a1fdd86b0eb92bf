//! The index fetch of a delta staging: exactly the size and digest the
//! verified manifest announces, or why not (unavailable: the full artifact
//! will do; forged: the release is refused).

use sha2::{Digest, Sha256};

use crate::agent::fetch::{describe, read_capped};
use crate::config::Timeouts;

/// Why the index did not come.
#[derive(Debug)]
pub(super) enum IndexFailure {
    /// The host has none, or it could not be fetched: the full artifact will do.
    Unavailable(String),
    /// It is not the index the manifest signed: the release is refused.
    Forged(String),
}

/// GETs the index: exactly `size` bytes hashing to `sha256`, or why not.
pub(super) async fn fetch_index(
    http: &reqwest::Client,
    url: &str,
    size: u64,
    sha256: &str,
    timeouts: &Timeouts,
) -> Result<Vec<u8>, IndexFailure> {
    let unavailable = |why: String| IndexFailure::Unavailable(format!("{url}: {why}"));
    let response = http
        .get(url)
        .timeout(timeouts.download)
        .send()
        .await
        .map_err(|e| unavailable(describe(&e)))?;
    if !response.status().is_success() {
        return Err(unavailable(format!(
            "the host answered {}",
            response.status()
        )));
    }
    let body = read_capped(response, size)
        .await
        .map_err(|e| unavailable(describe(&e)))?;
    if body.len() as u64 > size {
        return Err(IndexFailure::Forged(format!(
            "{url} is larger than the {size} bytes the manifest announces"
        )));
    }
    let actual = hex::encode(Sha256::digest(&body));
    if body.len() as u64 != size || actual != sha256 {
        return Err(IndexFailure::Forged(format!(
            "{url} does not match the manifest: {} bytes with sha256 {actual}, expected {size} bytes with sha256 {sha256}",
            body.len()
        )));
    }
    Ok(body)
}
