//! `PUT /v1/admin/artifacts/{sha256}.tar.zst`: an archive uploaded by
//! `publish --console`, streamed into a temporary file next to the
//! artifacts (never held in memory), hashed on the way, and renamed into
//! place only when its bytes hash to its name.
//!
//! An artifact that is already there is not rewritten: the upload is hashed
//! without being stored, and answered 200 when it matches.

use std::path::PathBuf;
use std::pin::Pin;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::header::CONTENT_LENGTH;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper::body::Body as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};
use tracing::info;

use super::admin::AdminError;
use super::artifacts::checked_name;
use super::routes::AppState;
use crate::channel::ChannelDir;

/// The largest archive accepted. A payload of a few hundred MiB is usual
/// (SPEC §8 measures 256 MiB); 4 GiB bounds what one upload can put on the
/// console's disk.
pub const MAX_ARTIFACT_BYTES: u64 = 4 * 1024 * 1024 * 1024;

/// Buffer between the request body and the temporary file: few, large writes.
const WRITE_BUFFER_BYTES: usize = 1024 * 1024;

/// Mode of stored artifacts: world-readable (they are public, served to agents).
const ARTIFACT_MODE: u32 = 0o644;

/// What a successful artifact upload answers.
#[derive(Debug, Serialize, Deserialize)]
pub struct StoredArtifact {
    /// The artifact's path relative to `v1/`, as a manifest names it.
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
    /// False when the console already had it (nothing was written).
    pub stored: bool,
}

/// Streams an upload into `v1/artifacts/`, checking size and digest.
pub async fn put_artifact(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AdminError> {
    let Path(name) = name.map_err(|e| AdminError::BadRequest(format!("bad artifact URL: {e}")))?;
    let digest = checked_name(&name).map(str::to_string).ok_or_else(|| {
        AdminError::BadRequest(format!(
            "artifact name `{name}` is not <sha256 in lower-case hex>.tar.zst (or .tar.gz, .tar)"
        ))
    })?;
    let announced = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > MAX_ARTIFACT_BYTES) {
        return Err(too_large());
    }
    let dir = ChannelDir::new(&state.data, "").artifacts();
    let target = dir.join(&name);
    if tokio::fs::metadata(&target)
        .await
        .is_ok_and(|m| m.is_file())
    {
        let (actual, size) = copy_hashed(body, &mut tokio::io::sink()).await?;
        check_digest(&name, &digest, &actual)?;
        return Ok(stored(StatusCode::OK, &name, size, false));
    }
    let (temp, file) = temp_file(dir, target).await?;
    let mut writer = BufWriter::with_capacity(WRITE_BUFFER_BYTES, file);
    let (actual, size) = copy_hashed(body, &mut writer).await?;
    writer
        .flush()
        .await
        .map_err(|e| AdminError::internal("cannot write the artifact", e))?;
    let file = writer.into_inner();
    file.sync_all()
        .await
        .map_err(|e| AdminError::internal("cannot write the artifact", e))?;
    drop(file);
    // A mismatch drops `temp`, which removes the file.
    check_digest(&name, &digest, &actual)?;
    // The one crash-safe write (bank_layout::AtomicFile): rename over, fsync the folder.
    tokio::task::spawn_blocking(move || temp.commit())
        .await
        .map_err(|e| AdminError::internal("cannot store the artifact", e))?
        .map_err(|e| AdminError::internal("cannot store the artifact", e))?;
    info!(artifact = %name, size, "artifact uploaded");
    Ok(stored(StatusCode::CREATED, &name, size, true))
}

/// A new temporary file for `target` in `dir` (created if needed), and an async handle
/// on it. Its name starts with a dot, so no artifact URL ever names it; dropped
/// uncommitted, it is removed.
async fn temp_file(
    dir: PathBuf,
    target: PathBuf,
) -> Result<(bank_layout::AtomicFile, tokio::fs::File), AdminError> {
    let made = tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&dir)?;
        let mut temp = bank_layout::AtomicFile::new(&target, ARTIFACT_MODE)?;
        let file = temp.file().try_clone()?;
        Ok::<_, std::io::Error>((temp, file))
    })
    .await
    .map_err(|e| AdminError::internal("cannot create the upload file", e))?;
    let (temp, file) =
        made.map_err(|e| AdminError::internal("cannot create the upload file", e))?;
    Ok((temp, tokio::fs::File::from_std(file)))
}

/// Copies the body into `out` while hashing it; refuses past [`MAX_ARTIFACT_BYTES`].
/// Returns the sha256 hex and the size.
async fn copy_hashed<W: AsyncWrite + Unpin>(
    mut body: Body,
    out: &mut W,
) -> Result<(String, u64), AdminError> {
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = next_chunk(&mut body).await? {
        size += chunk.len() as u64;
        if size > MAX_ARTIFACT_BYTES {
            return Err(too_large());
        }
        hasher.update(&chunk);
        out.write_all(&chunk)
            .await
            .map_err(|e| AdminError::internal("cannot write the artifact", e))?;
    }
    Ok((hex::encode(hasher.finalize()), size))
}

/// The next data chunk of a body (trailers skipped); `None` at its end.
async fn next_chunk(body: &mut Body) -> Result<Option<Bytes>, AdminError> {
    loop {
        let frame = std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await;
        match frame {
            None => return Ok(None),
            Some(Err(e)) => {
                return Err(AdminError::BadRequest(format!("the upload broke off: {e}")));
            }
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    return Ok(Some(data));
                }
            }
        }
    }
}

/// 422 unless the bytes hash to the name.
fn check_digest(name: &str, expected: &str, actual: &str) -> Result<(), AdminError> {
    if actual == expected {
        Ok(())
    } else {
        Err(AdminError::Refused(format!(
            "artifact {name}: the uploaded bytes hash to {actual}, not to the name's sha256"
        )))
    }
}

fn too_large() -> AdminError {
    AdminError::TooLarge {
        what: "the artifact",
        limit: MAX_ARTIFACT_BYTES,
    }
}

fn stored(status: StatusCode, name: &str, size: u64, stored: bool) -> Response {
    let body = StoredArtifact {
        path: format!("artifacts/{name}"),
        size,
        stored,
    };
    (status, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bodies_are_hashed_as_they_are_copied() {
        let mut out = Vec::new();
        let (digest, size) = copy_hashed(Body::from("hello"), &mut out).await.unwrap();
        assert_eq!(size, 5);
        assert_eq!(out, b"hello");
        assert_eq!(digest, hex::encode(Sha256::digest(b"hello")));
        assert!(matches!(
            check_digest("x.tar", &"0".repeat(64), &digest),
            Err(AdminError::Refused(_))
        ));
    }
}
