//! `PUT /v1/admin/channels/{channel}/release`: a release signed on the
//! admin's machine, re-verified by the console before it is published.
//!
//! The body is `{"manifest": "<exact manifest text>", "signature": "<minisig
//! text>"}`. The console checks it with the agents' own rules
//! ([`signing::verify_release`]) against its `--trust` keys, refuses a
//! sequence that is not above the channel's, checks that the artifact it
//! names is on the console with the announced size, and then writes the
//! channel's files exactly as `publish --to` does ([`ChannelDir::write_release`]).
//! The push watcher sees the new manifest and releases held requests.

use std::sync::{Arc, PoisonError};
use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use signing::{Artifact, Expectations, Manifest, PublicKey, ReleaseError, verify_release};
use tracing::info;

use super::admin::{Admin, AdminError, channel_of};
use super::artifacts::checked_name;
use super::routes::AppState;
use crate::channel::ChannelDir;
use crate::clock;

/// The largest release upload: a manifest (64 KiB cap) and a signature
/// (16 KiB cap) as JSON strings, with room for escaping.
pub const MAX_RELEASE_UPLOAD_BYTES: usize = 128 * 1024;

/// What `publish --console` sends.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseUpload {
    /// The manifest, byte for byte as signed.
    pub manifest: String,
    /// The minisign signature of exactly those bytes.
    pub signature: String,
}

/// What an accepted release answers (201).
#[derive(Debug, Serialize, Deserialize)]
pub struct Published {
    /// The channel.
    pub channel: String,
    /// The release's sequence, now the channel's.
    pub sequence: u64,
    /// The payload version.
    pub version: String,
}

/// Verifies and publishes an uploaded release.
pub async fn put_release(
    State(state): State<AppState>,
    Extension(admin): Extension<Arc<Admin>>,
    channel: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AdminError> {
    let channel = channel_of(channel)?;
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            AdminError::TooLarge {
                what: "the release upload",
                limit: MAX_RELEASE_UPLOAD_BYTES as u64,
            }
        } else {
            AdminError::BadRequest(format!("cannot read the release upload: {e}"))
        }
    })?;
    let upload: ReleaseUpload = serde_json::from_slice(&body).map_err(|e| {
        AdminError::BadRequest(format!(
            "the release upload is not {{\"manifest\": ..., \"signature\": ...}} JSON: {e}"
        ))
    })?;
    let data = state.data.clone();
    let now = clock::now_seconds();
    let accepted = tokio::task::spawn_blocking(move || {
        // One publish at a time: the sequence check and the write belong
        // together. Taken on this thread, so it holds until the write ends
        // even if the client goes away meanwhile.
        let _publishing = admin
            .publishing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let dir = ChannelDir::new(&data, &channel);
        accept(&dir, &channel, &admin.trusted_keys, &upload, now)
    })
    .await
    .map_err(|e| AdminError::internal("cannot publish the release", e))??;
    info!(
        channel = %accepted.channel,
        sequence = accepted.sequence,
        version = %accepted.version,
        "release uploaded"
    );
    Ok((StatusCode::CREATED, Json(accepted)).into_response())
}

/// The checks and the write, on a blocking thread (also how `rollout abort
/// --rollback` publishes the prepared rollback, rollout_http.rs).
pub(super) fn accept(
    dir: &ChannelDir,
    channel: &str,
    trusted_keys: &[PublicKey],
    upload: &ReleaseUpload,
    now: SystemTime,
) -> Result<Published, AdminError> {
    let current = dir
        .current_sequence()
        .map_err(|e| AdminError::internal("cannot read the channel", e))?;
    let expect = Expectations {
        trusted_keys,
        revoked_keys: &[],
        product: None,
        channel,
        highest_sequence: current,
        running_version: None,
        marked_bad: &signing::nothing_marked_bad,
        now,
    };
    let manifest = upload.manifest.as_bytes();
    let verified = verify_release(manifest, upload.signature.as_bytes(), &expect)
        .map_err(|e| refusal(e, current))?;
    let Manifest {
        sequence,
        version,
        artifact,
        ..
    } = verified.manifest;
    // An agent may see the current release again (equal is fine there); an
    // upload of the current sequence is a replay.
    if sequence <= current {
        return Err(AdminError::Replayed { sequence, current });
    }
    check_artifact(dir, &artifact)?;
    dir.write_release(sequence, manifest, upload.signature.as_bytes())
        .map_err(|e| AdminError::internal("cannot write the release", format!("{e:#}")))?;
    Ok(Published {
        channel: channel.to_string(),
        sequence,
        version: version.to_string(),
    })
}

/// The status of each verification failure.
fn refusal(error: ReleaseError, current: u64) -> AdminError {
    match error {
        ReleaseError::TooLarge { limit, .. } => AdminError::TooLarge {
            what: "the manifest",
            limit: limit as u64,
        },
        ReleaseError::Replayed { sequence, .. } => AdminError::Replayed { sequence, current },
        ReleaseError::MalformedSignature { .. } | ReleaseError::Malformed { .. } => {
            AdminError::BadRequest(format!("release refused: {error}"))
        }
        other => AdminError::Refused(format!("release refused: {other}")),
    }
}

/// A relative artifact must be on the console, named by its sha256, with the
/// announced size; an absolute URL (a CDN) is the admin's business.
fn check_artifact(dir: &ChannelDir, artifact: &Artifact) -> Result<(), AdminError> {
    if artifact.path.starts_with("https://") || artifact.path.starts_with("http://") {
        return Ok(());
    }
    let named = artifact
        .path
        .strip_prefix("artifacts/")
        .and_then(checked_name);
    if named != Some(artifact.sha256.as_str()) {
        return Err(AdminError::Refused(format!(
            "release refused: artifact path `{}` is not artifacts/{}.<format>",
            artifact.path, artifact.sha256
        )));
    }
    let path = dir.artifact(&artifact.path);
    match std::fs::metadata(&path) {
        Ok(meta) if meta.is_file() && meta.len() == artifact.size => Ok(()),
        Ok(meta) => Err(AdminError::Refused(format!(
            "release refused: artifact {} is {} bytes on the console, the manifest says {}",
            artifact.path,
            meta.len(),
            artifact.size
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(AdminError::Refused(format!(
            "release refused: artifact {} is not on the console (upload it first)",
            artifact.path
        ))),
        Err(e) => Err(AdminError::internal(
            "cannot read the artifact",
            format!("{}: {e}", path.display()),
        )),
    }
}
