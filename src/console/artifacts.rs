//! `GET /v1/artifacts/{name}`: payload archives streamed from disk, with HTTP
//! Range so that an agent resumes an interrupted download (SPEC §4).
//!
//! The name is content-addressed (`<sha256>.tar.zst|.tar.gz|.tar`) and checked
//! before it is joined to a path, so `..` and friends never reach the disk.
//! `GET /v1/delta/...` serves the file indexes and objects of delta updates
//! (issue 14) the same way.

use std::io::SeekFrom;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::header::{
    ACCEPT_RANGES, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, RANGE,
};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;
use tracing::warn;

use super::routes::AppState;
use crate::channel::ChannelDir;

/// Bytes read from disk per body chunk: large enough that a 256 MiB archive is
/// a few thousand chunks, small enough that a slow client holds little memory.
const CHUNK_BYTES: usize = 128 * 1024;

/// The archive formats a manifest may name (SPEC §4 `artifact.format`).
const FORMATS: [&str; 3] = [".tar.zst", ".tar.gz", ".tar"];

/// Archives are content-addressed: a name always means the same bytes.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// Serves one archive, whole or the one byte range asked for.
pub async fn artifact(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Response {
    let Ok(Path(name)) = name else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let Some(digest) = checked_name(&name).map(str::to_string) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    // Artifacts are shared by every channel of a data folder; any channel name resolves them.
    let path = ChannelDir::new(&state.data, "").artifact(&format!("artifacts/{name}"));
    serve(path, &digest, &headers).await
}

/// `GET /v1/delta/{sha256}.index.json` and `/v1/delta/objects/{sha256}.zst`:
/// the file indexes and objects of delta updates (issue 14), content-addressed
/// like the archives and served the same way, with Range.
pub async fn delta_file(
    State(state): State<AppState>,
    rest: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Response {
    let Ok(Path(rest)) = rest else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let digest = match rest.strip_prefix("objects/") {
        Some(object) => object.strip_suffix(".zst"),
        None => rest.strip_suffix(".index.json"),
    };
    let Some(digest) = digest
        .filter(|d| signing::is_sha256_hex(d))
        .map(str::to_string)
    else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let path = ChannelDir::new(&state.data, "").artifact(&format!("delta/{rest}"));
    serve(path, &digest, &headers).await
}

/// Serves the content-addressed file `path` (digest `digest`), whole or the
/// one byte range asked for.
async fn serve(path: std::path::PathBuf, digest: &str, headers: &HeaderMap) -> Response {
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return StatusCode::NOT_FOUND.into_response();
        }
        Err(e) => return server_error(&path, &e),
    };
    let total = match file.metadata().await {
        Ok(meta) if meta.is_file() => meta.len(),
        Ok(_) => return StatusCode::NOT_FOUND.into_response(),
        Err(e) => return server_error(&path, &e),
    };
    let range = headers
        .get(RANGE)
        .and_then(|v| v.to_str().ok())
        .map(|v| parse_range(v, total));
    let (status, start, len) = match range {
        None | Some(ByteRange::Ignored) => (StatusCode::OK, 0, total),
        Some(ByteRange::Unsatisfiable) => {
            let headers = [
                (CONTENT_RANGE, format!("bytes */{total}")),
                (ACCEPT_RANGES, "bytes".into()),
            ];
            return (StatusCode::RANGE_NOT_SATISFIABLE, headers).into_response();
        }
        Some(ByteRange::Satisfiable { start, end }) => {
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
    };
    if start > 0
        && let Err(e) = file.seek(SeekFrom::Start(start)).await
    {
        return server_error(&path, &e);
    }
    let body = Body::from_stream(ReaderStream::with_capacity(file.take(len), CHUNK_BYTES));
    let mut response = (
        status,
        [
            (CONTENT_TYPE, "application/octet-stream".to_string()),
            (CONTENT_LENGTH, len.to_string()),
            (ACCEPT_RANGES, "bytes".to_string()),
            (ETAG, format!("\"{digest}\"")),
            (CACHE_CONTROL, IMMUTABLE.to_string()),
        ],
        body,
    )
        .into_response();
    if status == StatusCode::PARTIAL_CONTENT {
        let value = format!("bytes {start}-{}/{total}", start + len - 1);
        if let Ok(value) = value.parse() {
            response.headers_mut().insert(CONTENT_RANGE, value);
        }
    }
    response
}

/// The sha256 of a well-formed artifact name (`<64 lower-case hex><format>`).
pub fn checked_name(name: &str) -> Option<&str> {
    let digest = FORMATS.iter().find_map(|ext| name.strip_suffix(ext))?;
    let plain = digest.len() == 64
        && digest
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    plain.then_some(digest)
}

/// 500, logged with the file.
fn server_error(path: &std::path::Path, e: &std::io::Error) -> Response {
    warn!(path = %path.display(), error = %e, "cannot serve artifact");
    StatusCode::INTERNAL_SERVER_ERROR.into_response()
}

/// What a `Range` header asks of a file of a known size (RFC 9110 §14).
#[derive(Debug, PartialEq, Eq)]
enum ByteRange {
    /// Not one plain byte range (other unit, several ranges, malformed): send it all.
    Ignored,
    /// Bytes `start..=end`, inside the file.
    Satisfiable {
        /// First byte.
        start: u64,
        /// Last byte (inclusive).
        end: u64,
    },
    /// Starts at or past the end: 416.
    Unsatisfiable,
}

/// Parses `bytes=N-`, `bytes=N-M` and `bytes=-SUFFIX` against `total` bytes.
fn parse_range(header: &str, total: u64) -> ByteRange {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return ByteRange::Ignored;
    };
    if spec.contains(',') {
        return ByteRange::Ignored;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return ByteRange::Ignored;
    };
    let number = |s: &str| -> Option<u64> {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (number(first), last.trim().is_empty()) {
        // bytes=-N: the last N bytes.
        (None, false) if first.trim().is_empty() => match number(last) {
            Some(0) => ByteRange::Unsatisfiable,
            Some(_) if total == 0 => ByteRange::Unsatisfiable,
            Some(n) => ByteRange::Satisfiable {
                start: total.saturating_sub(n),
                end: total - 1,
            },
            None => ByteRange::Ignored,
        },
        (Some(start), _) if start >= total => ByteRange::Unsatisfiable,
        // bytes=N-: from N to the end.
        (Some(start), true) => ByteRange::Satisfiable {
            start,
            end: total - 1,
        },
        // bytes=N-M: M past the end means the end.
        (Some(start), false) => match number(last) {
            Some(end) if end >= start => ByteRange::Satisfiable {
                start,
                end: end.min(total - 1),
            },
            _ => ByteRange::Ignored,
        },
        _ => ByteRange::Ignored,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_rfc_9110() {
        use ByteRange::{Ignored, Satisfiable, Unsatisfiable};
        assert_eq!(
            parse_range("bytes=0-", 10),
            Satisfiable { start: 0, end: 9 }
        );
        assert_eq!(
            parse_range("bytes=3-5", 10),
            Satisfiable { start: 3, end: 5 }
        );
        assert_eq!(
            parse_range("bytes=3-500", 10),
            Satisfiable { start: 3, end: 9 }
        );
        assert_eq!(
            parse_range("bytes=-4", 10),
            Satisfiable { start: 6, end: 9 }
        );
        assert_eq!(
            parse_range("bytes=-40", 10),
            Satisfiable { start: 0, end: 9 }
        );
        assert_eq!(parse_range("bytes=10-", 10), Unsatisfiable);
        assert_eq!(parse_range("bytes=0-", 0), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 10), Unsatisfiable);
        assert_eq!(parse_range("bytes=5-3", 10), Ignored);
        assert_eq!(parse_range("bytes=0-1,4-5", 10), Ignored);
        assert_eq!(parse_range("items=0-1", 10), Ignored);
        assert_eq!(parse_range("bytes=+1-2", 10), Ignored);
        assert_eq!(parse_range("bytes=x", 10), Ignored);
    }

    #[test]
    fn only_content_addressed_names_pass() {
        let digest = "a".repeat(64);
        assert_eq!(
            checked_name(&format!("{digest}.tar.zst")),
            Some(digest.as_str())
        );
        assert_eq!(
            checked_name(&format!("{digest}.tar")),
            Some(digest.as_str())
        );
        assert_eq!(checked_name(&format!("{}.tar.gz", "A".repeat(64))), None);
        assert_eq!(checked_name("../../etc/passwd"), None);
        assert_eq!(checked_name(&format!("{digest}.zip")), None);
        assert_eq!(checked_name(&format!("../{}.tar", "a".repeat(61))), None);
    }
}
