//! `PUT /v1/admin/artifacts/{sha256}.tar.zst`: an archive uploaded by
//! `publish --console`, streamed into a temporary file next to the
//! artifacts (never held in memory), hashed on the way, and renamed into
//! place only when its bytes hash to its name.
//!
//! An artifact that is already there is not rewritten: the upload is hashed
//! without being stored, and answered 200 when it matches.
//!
//! `PUT /v1/admin/delta/{sha256}.index.json` and
//! `/v1/admin/delta/objects/{sha256}.zst`: the file index and objects of
//! delta updates (issue 14), stored the same way under `v1/delta/`, so the
//! console serves what `publish --to` writes for nginx. An index must hash
//! to its name (at most [`MAX_INDEX_BYTES`]); an object is named by the
//! digest of the file it unpacks to, so it is unpacked and hashed (at most
//! [`MAX_OBJECT_UNPACKED_BYTES`]) before it is renamed into place.

use std::io::Write;
use std::path::PathBuf;
use std::pin::Pin;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::header::CONTENT_LENGTH;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bank_layout::MAX_INDEX_BYTES;
use hyper::body::Body as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};
use tracing::info;

use super::admin::AdminError;
use super::artifacts::checked_name;
use super::routes::AppState;
use crate::channel::ChannelDir;

/// The most bytes an uploaded object may unpack to while it is checked: a
/// payload file larger than this is refused (SPEC §8's payloads hold files
/// of a few MiB; a zstd bomb costs at most this much hashing).
pub const MAX_OBJECT_UNPACKED_BYTES: u64 = 16 * 1024 * 1024 * 1024;

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
        let (actual, size) = copy_hashed(
            body,
            &mut tokio::io::sink(),
            MAX_ARTIFACT_BYTES,
            "the artifact",
            &mut std::io::sink(),
        )
        .await?;
        check_digest(&name, &digest, &actual)?;
        return Ok(stored(StatusCode::OK, &name, size, false));
    }
    let (temp, file) = temp_file(dir, target).await?;
    let mut writer = BufWriter::with_capacity(WRITE_BUFFER_BYTES, file);
    let (actual, size) = copy_hashed(
        body,
        &mut writer,
        MAX_ARTIFACT_BYTES,
        "the artifact",
        &mut std::io::sink(),
    )
    .await?;
    flush_and_sync(writer, "cannot write the artifact").await?;
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

/// What a delta upload names: an index or an object, by its digest.
enum DeltaName {
    /// `{sha256}.index.json`: the bytes hash to the digest.
    Index(String),
    /// `objects/{sha256}.zst`: the bytes unpack to a file with the digest.
    Object(String),
}

/// Streams an index or an object into `v1/delta/`, checking its digest.
pub async fn put_delta_file(
    State(state): State<AppState>,
    rest: Result<Path<String>, PathRejection>,
    body: Body,
) -> Result<Response, AdminError> {
    let Path(rest) = rest.map_err(|e| AdminError::BadRequest(format!("bad delta URL: {e}")))?;
    let name = match rest.strip_prefix("objects/") {
        Some(object) => object
            .strip_suffix(".zst")
            .map(|d| DeltaName::Object(d.to_owned())),
        None => rest
            .strip_suffix(".index.json")
            .map(|d| DeltaName::Index(d.to_owned())),
    };
    let name = name
        .filter(|n| match n {
            DeltaName::Index(d) | DeltaName::Object(d) => signing::is_sha256_hex(d),
        })
        .ok_or_else(|| {
            AdminError::BadRequest(format!(
                "delta file `{rest}` is not <sha256>.index.json or objects/<sha256>.zst"
            ))
        })?;
    let target = ChannelDir::new(&state.data, "").artifact(&format!("delta/{rest}"));
    let dir = target
        .parent()
        .map(std::path::Path::to_path_buf)
        .ok_or_else(|| AdminError::BadRequest(format!("bad delta file `{rest}`")))?;
    let existed = tokio::fs::metadata(&target)
        .await
        .is_ok_and(|m| m.is_file());
    let (temp, file) = temp_file(dir, target).await?;
    let mut writer = BufWriter::with_capacity(WRITE_BUFFER_BYTES, file);
    let (limit, what) = match &name {
        DeltaName::Index(_) => (MAX_INDEX_BYTES, "the file index"),
        DeltaName::Object(_) => (MAX_ARTIFACT_BYTES, "the object"),
    };
    // An object is unpacked and hashed as it comes (never held, never re-read).
    let mut unpacked = zstd::stream::write::Decoder::new(UnpackedDigest::default())
        .map_err(|e| AdminError::internal("cannot check the object", e))?;
    let mut index_tap = std::io::sink();
    let tap: &mut (dyn Write + Send) = match &name {
        DeltaName::Index(_) => &mut index_tap,
        DeltaName::Object(_) => &mut unpacked,
    };
    let (actual, size) = copy_hashed(body, &mut writer, limit, what, tap).await?;
    flush_and_sync(writer, "cannot write the delta file").await?;
    // A refusal drops `temp`, which removes the file.
    match &name {
        DeltaName::Index(digest) => check_digest(&rest, digest, &actual)?,
        DeltaName::Object(digest) => {
            unpacked.flush().map_err(not_zstd)?;
            let unpacked = unpacked.into_inner().finish()?;
            check_digest(&rest, digest, &unpacked)?;
        }
    }
    if existed {
        return Ok(stored(
            StatusCode::OK,
            &format!("delta/{rest}"),
            size,
            false,
        ));
    }
    tokio::task::spawn_blocking(move || temp.commit())
        .await
        .map_err(|e| AdminError::internal("cannot store the delta file", e))?
        .map_err(|e| AdminError::internal("cannot store the delta file", e))?;
    info!(file = %rest, size, "delta file uploaded");
    Ok(stored(
        StatusCode::CREATED,
        &format!("delta/{rest}"),
        size,
        true,
    ))
}

/// Hashes what an object unpacks to, refusing more than [`MAX_OBJECT_UNPACKED_BYTES`].
#[derive(Default)]
struct UnpackedDigest {
    /// The digest so far.
    hasher: Sha256,
    /// Bytes unpacked so far.
    total: u64,
    /// Set once past the limit.
    too_large: bool,
}

impl Write for UnpackedDigest {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.total += buf.len() as u64;
        if self.total > MAX_OBJECT_UNPACKED_BYTES {
            self.too_large = true;
            return Err(std::io::Error::other(
                "it unpacks to more bytes than a file may have",
            ));
        }
        self.hasher.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl UnpackedDigest {
    /// The sha256 of the unpacked bytes.
    fn finish(self) -> Result<String, AdminError> {
        if self.too_large {
            return Err(AdminError::TooLarge {
                what: "the object unpacked",
                limit: MAX_OBJECT_UNPACKED_BYTES,
            });
        }
        Ok(hex::encode(self.hasher.finalize()))
    }
}

/// An object that does not unpack.
fn not_zstd(e: std::io::Error) -> AdminError {
    AdminError::Refused(format!("not a zstd object: {e}"))
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

/// Flushes `writer` and syncs its file to disk, then closes it; `error` is
/// the message of a failure.
async fn flush_and_sync(
    mut writer: BufWriter<tokio::fs::File>,
    error: &str,
) -> Result<(), AdminError> {
    writer
        .flush()
        .await
        .map_err(|e| AdminError::internal(error, e))?;
    writer
        .into_inner()
        .sync_all()
        .await
        .map_err(|e| AdminError::internal(error, e))
}
/// Copies the body into `out` while hashing it and feeding `tap`; refuses
/// `what` past `limit` bytes. Returns the sha256 hex and the size.
async fn copy_hashed<W: AsyncWrite + Unpin>(
    mut body: Body,
    out: &mut W,
    limit: u64,
    what: &'static str,
    tap: &mut (dyn Write + Send),
) -> Result<(String, u64), AdminError> {
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = next_chunk(&mut body).await? {
        size += chunk.len() as u64;
        if size > limit {
            return Err(AdminError::TooLarge { what, limit });
        }
        hasher.update(&chunk);
        tap.write_all(&chunk).map_err(not_zstd)?;
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
        let (digest, size) = copy_hashed(
            Body::from("hello"),
            &mut out,
            10,
            "the test",
            &mut std::io::sink(),
        )
        .await
        .unwrap();
        assert_eq!(size, 5);
        assert_eq!(out, b"hello");
        assert_eq!(digest, hex::encode(Sha256::digest(b"hello")));
        assert!(matches!(
            check_digest("x.tar", &"0".repeat(64), &digest),
            Err(AdminError::Refused(_))
        ));
    }
}
