//! Uploads from `publish --console` (SPEC §4 "publishing"): the admin token,
//! the keys the console re-verifies uploaded releases against, the JSON
//! errors of the admin API, its routes, and the history listing.
//!
//! ```text
//! PUT /v1/admin/artifacts/{sha256}.tar.zst     an archive, streamed, checked against its name (upload.rs)
//! PUT /v1/admin/channels/{channel}/release     {"manifest", "signature"}: re-verified, then published (accept.rs)
//! GET /v1/admin/channels/{channel}/history     the channel's sequence, its releases, the trusted keys
//! ```
//!
//! Uploads are enabled only by `--trust`; otherwise every admin route
//! answers 404. Each admin request needs `Authorization: Bearer <token>` with
//! an admin token (auth.rs), checked (in constant time) before any of its
//! body is read.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path as UrlPath, Request, State};
use axum::http::StatusCode;
use axum::http::header::WWW_AUTHENTICATE;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use signing::{Manifest, PublicKey};
use thiserror::Error;
use tracing::warn;

use super::accept::{self, MAX_RELEASE_UPLOAD_BYTES};
use super::routes::AppState;
use super::upload;
use crate::channel::{ChannelDir, read_capped};
use crate::config::{check_channel, load_public_key};
use crate::error::UsageError;

/// The shortest admin token accepted: 16 characters of a random token are
/// far beyond guessing over the network.
pub const MIN_TOKEN_CHARS: usize = 16;

/// The largest token file read: a token is one short line.
const MAX_TOKEN_FILE_BYTES: u64 = 4 * 1024;

/// What the console needs to accept uploads (the admin tokens are auth.rs's).
pub struct Admin {
    /// Keys whose signatures uploaded releases must carry.
    pub trusted_keys: Vec<PublicKey>,
    /// Held while a release is checked and written: two uploads never both
    /// pass the sequence check with the same sequence.
    pub publishing: std::sync::Mutex<()>,
}

impl Admin {
    /// Reads the `--trust` keys (configuration errors exit 2).
    pub fn load(trust: &[String]) -> anyhow::Result<Admin> {
        let trusted_keys = trust
            .iter()
            .map(|k| load_public_key(k, Path::new(".")))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| UsageError::new(format!("--trust: {e}")))?;
        if trusted_keys.is_empty() {
            return Err(UsageError::new("uploads need --trust KEY.pub").into());
        }
        Ok(Admin {
            trusted_keys,
            publishing: std::sync::Mutex::new(()),
        })
    }
}

/// Reads a token file: its first line, trimmed, at least [`MIN_TOKEN_CHARS`]
/// visible ASCII characters. `flag` names the file's flag in errors.
pub fn read_token_file(path: &Path, flag: &str) -> Result<String, UsageError> {
    let bytes = read_capped(path, MAX_TOKEN_FILE_BYTES)
        .map_err(|e| UsageError::new(format!("{flag} {}: {e}", path.display())))?;
    let text = String::from_utf8_lossy(&bytes);
    let token = text.lines().next().unwrap_or("").trim().to_string();
    check_token(&token).map_err(|e| UsageError::new(format!("{flag} {}: {e}", path.display())))?;
    Ok(token)
}

/// A token must be usable in an HTTP header and long enough not to be guessed.
pub fn check_token(token: &str) -> Result<(), String> {
    if token.len() < MIN_TOKEN_CHARS {
        return Err(format!(
            "the token is shorter than {MIN_TOKEN_CHARS} characters"
        ));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("the token must be visible ASCII characters without spaces".into());
    }
    Ok(())
}

/// Why the admin API refused a request; each variant picks the HTTP status,
/// and the message is the one-line reason `publish` shows.
#[derive(Debug, Error)]
pub enum AdminError {
    /// The console was started without `--admin-token-file` and `--trust` (404).
    #[error(
        "uploads are disabled on this console: start it with --trust KEY.pub and an admin token (--admin-token-file FILE or `console admin-token create`)"
    )]
    Disabled,
    /// No `Authorization: Bearer` header (401).
    #[error("missing admin token (no `Authorization: Bearer` header)")]
    NoToken,
    /// A token that is not an admin token (401).
    #[error("wrong admin token")]
    WrongToken,
    /// Too many failed tokens from this address lately (429).
    #[error("too many failed admin tokens from this address; try again later")]
    RateLimited,
    /// Authenticated, but the request is not allowed: a forged CSRF token (403).
    #[error("{0}")]
    Forbidden(String),
    /// A malformed request: bad name, bad JSON, malformed manifest (400).
    #[error("{0}")]
    BadRequest(String),
    /// A release whose sequence is not above the channel's (409).
    #[error(
        "sequence {sequence} is not above the channel's current sequence {current} (a replay, or another publish came first)"
    )]
    Replayed {
        /// The uploaded release's sequence.
        sequence: u64,
        /// The channel's current sequence.
        current: u64,
    },
    /// A body over its cap (413).
    #[error("{what} is larger than the {limit}-byte limit")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// The cap, in bytes.
        limit: u64,
    },
    /// Well-formed but refused: untrusted signature, wrong channel, expired,
    /// missing artifact, bytes that do not match their name (422).
    #[error("{0}")]
    Refused(String),
    /// The console failed (500); logged with its cause.
    #[error("{0}")]
    Internal(String),
}

impl AdminError {
    /// The HTTP status of this refusal.
    pub fn status(&self) -> StatusCode {
        match self {
            AdminError::Disabled => StatusCode::NOT_FOUND,
            AdminError::NoToken | AdminError::WrongToken => StatusCode::UNAUTHORIZED,
            AdminError::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            AdminError::Forbidden(_) => StatusCode::FORBIDDEN,
            AdminError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AdminError::Replayed { .. } => StatusCode::CONFLICT,
            AdminError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            AdminError::Refused(_) => StatusCode::UNPROCESSABLE_ENTITY,
            AdminError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A 500 for a failure of the console itself, logged.
    pub fn internal(what: &str, error: impl std::fmt::Display) -> AdminError {
        warn!(error = %error, "{what}");
        AdminError::Internal(format!("{what}: {error}"))
    }
}

/// The body of every admin error: `{"error": "<one line>"}`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Why the request was refused.
    pub error: String,
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = Json(ErrorBody {
            error: self.to_string(),
        });
        if status == StatusCode::UNAUTHORIZED {
            (status, [(WWW_AUTHENTICATE, "Bearer")], body).into_response()
        } else {
            (status, body).into_response()
        }
    }
}

/// What `GET /v1/admin/channels/{channel}/history` answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct History {
    /// The channel.
    pub channel: String,
    /// The channel's current sequence: a new release must be higher.
    pub sequence: u64,
    /// Ids of the keys the console accepts releases from (minisign's hex).
    pub trusted_keys: Vec<String>,
    /// Every release in the channel's history, by ascending sequence.
    pub releases: Vec<HistoryEntry>,
}

/// One release of a channel's history.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// Its sequence (its file is `/v1/channels/{channel}/history/{sequence}.json`).
    pub sequence: u64,
    /// The payload version.
    pub version: String,
    /// The product.
    pub product: String,
}

/// The admin routes, behind the token check.
pub fn routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/v1/admin/artifacts/{name}", put(upload::put_artifact))
        .route("/v1/admin/delta/{*rest}", put(upload::put_delta_file))
        .route(
            "/v1/admin/channels/{channel}/release",
            put(accept::put_release).layer(DefaultBodyLimit::max(MAX_RELEASE_UPLOAD_BYTES)),
        )
        .route("/v1/admin/channels/{channel}/history", get(history))
        .route_layer(middleware::from_fn_with_state(state, require_admin))
}

/// 404 unless uploads are enabled, 401 without the token; otherwise hands
/// the handler the [`Admin`] settings.
async fn require_admin(
    State(state): State<AppState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(admin) = state.admin.clone() else {
        return AdminError::Disabled.into_response();
    };
    if let Err(refused) = state.auth.bearer(request.headers(), remote).await {
        warn!(path = %request.uri().path(), reason = %refused, "admin request refused");
        return refused.into_response();
    }
    request.extensions_mut().insert(admin);
    next.run(request).await
}

/// The channel named in an admin URL, checked.
pub fn channel_of(channel: Result<UrlPath<String>, PathRejection>) -> Result<String, AdminError> {
    let UrlPath(channel) =
        channel.map_err(|e| AdminError::BadRequest(format!("bad channel in the URL: {e}")))?;
    check_channel(&channel).map_err(AdminError::BadRequest)?;
    Ok(channel)
}

/// `GET /v1/admin/channels/{channel}/history`: what `publish --console`
/// needs to pick the next sequence and find a version for `--rollback-to`.
async fn history(
    State(state): State<AppState>,
    Extension(admin): Extension<Arc<Admin>>,
    channel: Result<UrlPath<String>, PathRejection>,
) -> Result<Json<History>, AdminError> {
    let channel = channel_of(channel)?;
    let dir = ChannelDir::new(&state.data, &channel);
    let trusted_keys = admin
        .trusted_keys
        .iter()
        .map(|k| k.key_id().to_string())
        .collect();
    let listed = tokio::task::spawn_blocking(move || list_history(&dir))
        .await
        .map_err(|e| AdminError::internal("cannot list the history", e))?;
    let (sequence, releases) =
        listed.map_err(|e| AdminError::internal("cannot list the history", e))?;
    Ok(Json(History {
        channel,
        sequence,
        trusted_keys,
        releases,
    }))
}

/// The current sequence and every readable history entry of a channel.
fn list_history(dir: &ChannelDir) -> std::io::Result<(u64, Vec<HistoryEntry>)> {
    let limit = signing::MAX_MANIFEST_BYTES as u64;
    let mut releases = Vec::new();
    for sequence in dir.history_sequences()? {
        let path = dir.history_manifest(sequence);
        match Manifest::from_json(&read_capped(&path, limit)?) {
            Ok(m) => releases.push(HistoryEntry {
                sequence,
                version: m.version.to_string(),
                product: m.product,
            }),
            Err(e) => warn!(path = %path.display(), error = %e, "unreadable history entry skipped"),
        }
    }
    Ok((dir.current_sequence()?, releases))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_visible_ascii() {
        assert!(check_token("0123456789abcdef").is_ok());
        assert!(check_token("short").is_err());
        assert!(check_token("0123456789 abcdef").is_err());
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "0123456789abcdef\nignored\n").unwrap();
        assert_eq!(read_token_file(&file, "--f").unwrap(), "0123456789abcdef");
        std::fs::write(&file, "\n").unwrap();
        assert!(read_token_file(&file, "--f").is_err());
    }
}
