//! How a release was staged (full or delta, bytes downloaded and saved, why):
//! logged, kept in the root's [`LAST_STAGING_FILE`] for `status`'s
//! `last_staging`, and read back.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use bank_layout::DeltaPlan;
use tracing::{info, warn};

use crate::report::LastStaging;

/// The file in the root that keeps how the last release was staged
/// (`status`'s `last_staging`), written once a staging succeeded.
pub const LAST_STAGING_FILE: &str = "last-staging.json";

/// The largest [`LAST_STAGING_FILE`] read: a version, numbers and a reason.
const MAX_LAST_STAGING_BYTES: u64 = 64 * 1024;

/// How `version` was staged: `reason` is `None` for a delta, why for the full artifact.
pub fn outcome(
    version: &str,
    downloaded_bytes: u64,
    full_bytes: u64,
    reason: Option<String>,
) -> LastStaging {
    LastStaging {
        version: version.to_owned(),
        path: if reason.is_some() { "full" } else { "delta" }.to_owned(),
        downloaded_bytes,
        full_bytes,
        saved_bytes: full_bytes.saturating_sub(downloaded_bytes),
        reason,
    }
}

/// Logs that `version` was built from the running bank's files and the fetched
/// objects of `delta` (online and from a bundle alike).
pub fn log_delta_staged(version: &str, delta: &DeltaPlan) {
    info!(
        version,
        objects = delta.fetch.len(),
        reused = delta.reused_files,
        "staged {version} from {} reused files and {} objects",
        delta.reused_files,
        delta.fetch.len()
    );
}

/// Logs how a release was staged (logfmt fields `path`, `downloaded`,
/// `full`, `saved`, `reason`) and keeps it in `root` for `status`. A failed
/// write is logged only: the staging itself succeeded.
pub fn record_staging(root: &Path, staged: &LastStaging) {
    let version = staged.version.as_str();
    let (downloaded, full, saved) = (
        staged.downloaded_bytes,
        staged.full_bytes,
        staged.saved_bytes,
    );
    match &staged.reason {
        None => info!(
            version,
            path = "delta",
            downloaded,
            full,
            saved,
            "staged {version} via delta: downloaded {downloaded} of {full} bytes, saved {saved}"
        ),
        Some(reason) => info!(
            version,
            path = "full",
            downloaded,
            full,
            saved,
            reason = %reason,
            "staged {version} via the full artifact: downloaded {downloaded} of {full} bytes"
        ),
    }
    let written = serde_json::to_vec(staged)
        .map_err(io::Error::other)
        .and_then(|bytes| bank_layout::write_atomic(&root.join(LAST_STAGING_FILE), &bytes));
    if let Err(e) = written {
        warn!(error = %e, "cannot keep how the release was staged for status");
    }
}

/// How the last release was staged into `root`, if one was since this was kept.
pub fn last_staging(root: &Path) -> Option<LastStaging> {
    let mut bytes = Vec::new();
    File::open(root.join(LAST_STAGING_FILE))
        .and_then(|f| f.take(MAX_LAST_STAGING_BYTES).read_to_end(&mut bytes))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}
