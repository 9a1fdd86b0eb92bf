//! The console's HTTP surface: the router, its shared state, and the channel
//! endpoints (manifest with ETag and push, signature).
//!
//! ```text
//! GET  /                                              the fleet page (page.rs; admins only)
//! GET  /assets/{fleet.js,fleet.css}                   the page's script and style (page.rs)
//! GET  /v1/channels                                   each channel's current and previous release (page.rs; admins only)
//! GET  /v1/channels/{channel}/release.json[?wait=S]   the manifest; held with If-None-Match
//! GET  /v1/channels/{channel}/release.json[?wait=S][&agent_id=ID]   the manifest; held with If-None-Match
//! GET  /v1/channels/{channel}/release.json.minisig    its signature
//! GET  /v1/channels/{channel}/keys.json[.minisig]     the key rotation record, if any, and its signature
//! GET  /v1/channels/{channel}/history/{seq}.json      a past manifest (+ `.minisig`), for `--rollback-to`
//! GET  /v1/artifacts/{sha256}.{tar.zst,tar.gz,tar}     archives, with Range (artifacts.rs)
//! GET  /v1/delta/{sha256}.index.json, objects/{sha256}.zst   delta updates, with Range
//! POST /v1/agents/{agent_id}/report                   an agent's report (reports.rs)
//! GET  /v1/fleet                                      the latest report of every agent (reports.rs; admins only)
//! GET  /v1/rollouts, POST /v1/rollouts/{channel}/{pause|resume|abort}   rollouts (rollout_http.rs; admins only)
//! POST /v1/suspensions/{channel}/{suspend|resume}   channel suspension (rollout_http.rs; admins only)
//! PUT  /v1/admin/channels/{channel}/{rollout|rollback}  a plan, a prepared signed rollback (rollout_http.rs)
//! *    /v1/admin/...                                  uploads from `publish --console` (admin.rs)
//! POST /v1/enroll, /v1/renew; GET /v1/identity         agent certificates (identity.rs)
//! GET|POST /login, POST /logout, POST /agents/{id}/…  admins in a browser (auth.rs)
//! ```
//!
//! Channel files and artifacts need no client certificate unless
//! `--require-client-cert`; then they need an accepted one (401/403 otherwise).
//!
//! Names taken from the path are checked before they touch the file system;
//! anything else is a 404.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::admin::{self, Admin};
use super::auth::{self, AdminAuth};
use super::identity::{self, ClientCert, Identity, IdentityError, PeerCert};
use super::push::{self, MAX_MANIFEST_BYTES, Release, Watcher};
use super::rollout_engine::{Rollouts, Serve};
use super::store::Store;
use super::{artifacts, page, reports, rollout_http};
use crate::channel::{ChannelDir, MAX_SIGNATURE_BYTES, signature_path};
use crate::config::check_channel;

/// Manifests may be cached, but must be revalidated: that is how agents poll.
const REVALIDATE: &str = "no-cache";

/// The media type of manifests.
const JSON: &str = "application/json";

/// The media type of minisign signatures (four lines of text).
const SIGNATURE: &str = "text/plain; charset=utf-8";

/// What every request handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The console data folder (what `publish --to` writes).
    pub data: PathBuf,
    /// Wakes held requests when a manifest changes.
    pub watcher: Watcher,
    /// The fleet database.
    pub store: Store,
    /// Cancelled on shutdown: held requests end at once.
    pub stop: CancellationToken,
    /// Upload settings; `None` when uploads are disabled (admin routes answer 404).
    pub admin: Option<Arc<Admin>>,
    /// Admin tokens, sessions, failed-login limits.
    pub auth: Arc<AdminAuth>,
    /// Agent certificates: enrollment, renewal, the checks.
    pub identity: Arc<Identity>,
    /// When the fleet page marks an agent stale (`--stale-after`).
    pub stale_after: Duration,
    /// Rollouts in waves: who is served which release, and the gate (SPEC §11).
    pub rollouts: Rollouts,
}

/// The console's routes.
pub fn router(state: AppState) -> Router {
    let channels = Router::new()
        .route("/v1/channels/{channel}/release.json", get(manifest))
        .route(
            "/v1/channels/{channel}/release.json.minisig",
            get(signature),
        )
        .route("/v1/channels/{channel}/keys.json", get(rotation_record))
        .route(
            "/v1/channels/{channel}/keys.json.minisig",
            get(rotation_signature),
        )
        .route("/v1/artifacts/{name}", get(artifacts::artifact))
        .route("/v1/delta/{*rest}", get(artifacts::delta_file))
        .route("/v1/channels/{channel}/history/{file}", get(history_file))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_agent_cert,
        ));
    let admins = Router::new()
        .route("/", get(page::index))
        .route("/v1/fleet", get(reports::fleet))
        .route("/v1/channels", get(page::channels))
        .route("/logout", post(auth::logout))
        .route("/agents/{agent_id}/{action}", post(auth::agent_action))
        .route("/v1/rollouts", get(rollout_http::list))
        .route("/v1/rollouts/{channel}/{action}", post(rollout_http::act))
        .route(
            "/v1/suspensions/{channel}/{action}",
            post(rollout_http::suspend),
        )
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_admin,
        ));
    let identity_limit = DefaultBodyLimit::max(identity::MAX_ENROLL_BYTES);
    Router::new()
        .merge(channels)
        .merge(admins)
        .route(
            "/v1/agents/{agent_id}/report",
            post(reports::report).layer(DefaultBodyLimit::max(reports::MAX_REPORT_BYTES)),
        )
        .route("/v1/enroll", post(identity::enroll).layer(identity_limit))
        .route("/v1/renew", post(identity::renew).layer(identity_limit))
        .route("/v1/identity", get(identity::whoami))
        .route("/login", get(auth::login_form).post(auth::login))
        .route("/assets/{name}", get(page::asset))
        .merge(admin::routes(state.clone()))
        .merge(rollout_http::upload_routes())
        .with_state(state)
}

/// With `--require-client-cert`, channel files and artifacts are served
/// only to agents presenting an accepted certificate.
async fn require_agent_cert(
    State(state): State<AppState>,
    axum::Extension(ClientCert(peer)): axum::Extension<ClientCert>,
    request: axum::extract::Request,
    next: middleware::Next,
) -> Response {
    if !state.identity.require_client_cert {
        return next.run(request).await;
    }
    let Some(peer) = peer else {
        return IdentityError::NoCertificate(
            "this console serves releases only to enrolled agents (--require-client-cert)".into(),
        )
        .into_response();
    };
    match state.identity.check(&peer).await {
        Ok(()) => next.run(request).await,
        Err(refused) => refused.into_response(),
    }
}

/// The query of a manifest request.
#[derive(Debug, Deserialize)]
pub struct ManifestQuery {
    /// Seconds to hold the request while the client's `If-None-Match` is current.
    wait: Option<u64>,
    /// The asking agent's id, for a rollout's admission when it has no
    /// client certificate (one that has one is known by its certificate).
    agent_id: Option<String>,
}

/// The agent a channel request is from: its certificate's id, else the
/// `agent_id` it gave (if well-formed), else nobody.
fn agent_of(peer: Option<&PeerCert>, given: Option<String>) -> Option<String> {
    match peer {
        Some(peer) => Some(peer.agent_id.clone()),
        None => given.filter(|id| reports::is_agent_id(id)),
    }
}

/// `GET /v1/channels/{channel}/release.json`: the manifest; with a matching
/// `If-None-Match` a 304, held up to `?wait=` seconds for a new release.
/// While a release rolls out, an agent not admitted gets the previous one
/// (rollout_engine.rs), and a held request is answered when a publish or a
/// newly opened wave changes what this agent gets.
async fn manifest(
    State(state): State<AppState>,
    axum::Extension(ClientCert(peer)): axum::Extension<ClientCert>,
    channel: Result<Path<String>, PathRejection>,
    query: Result<Query<ManifestQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let Some((name, dir)) = channel_dir(&state, channel) else {
        return status_only(StatusCode::NOT_FOUND);
    };
    let Ok(Query(query)) = query else {
        return status_only(StatusCode::BAD_REQUEST);
    };
    let agent = agent_of(peer.as_deref(), query.agent_id);
    let held = EntityTags::from_headers(&headers);
    // Header values share the connection's read buffer: dropped before a long
    // wait, the buffer is reused instead of reallocated (8 KiB per held agent).
    drop(headers);
    let until = query
        .wait
        .map(|s| Instant::now() + Duration::from_secs(s).min(state.watcher.max_wait()));
    // Subscribe before reading: a publish between the read and the wait still wakes us.
    let mut receiver = match (&held, until) {
        (Some(_), Some(_)) => Some(state.watcher.subscribe(&name, dir.manifest())),
        _ => None,
    };
    let mut admissions = state.rollouts.subscribe();
    let mut current = match load(dir.manifest(), MAX_MANIFEST_BYTES).await {
        Some(Ok(release)) => Arc::new(release),
        Some(Err(status)) => return status_only(status),
        None => return status_only(StatusCode::NOT_FOUND),
    };
    loop {
        let served = match state.rollouts.serve(&name, agent.as_deref(), &current) {
            Serve::Current => current.clone(),
            Serve::Previous(previous) => previous.manifest,
            Serve::Missing => return status_only(StatusCode::NOT_FOUND),
        };
        if !held.as_ref().is_some_and(|tags| tags.matches(&served.etag)) {
            return release_response(&served, JSON);
        }
        let (Some(receiver), Some(until)) = (receiver.as_mut(), until) else {
            return not_modified(&served.etag);
        };
        debug!(channel = %name, etag = %served.etag, "holding the request until the manifest changes");
        match push::wait_for_news(receiver, &mut admissions, until, &state.stop).await {
            Some(Some(latest)) => current = latest,
            Some(None) => {}
            None => return not_modified(&served.etag),
        }
    }
}

/// `GET /v1/channels/{channel}/release.json.minisig`: the signature, with its
/// own ETag; during a rollout, the one of the manifest this agent is served.
async fn signature(
    State(state): State<AppState>,
    axum::Extension(ClientCert(peer)): axum::Extension<ClientCert>,
    channel: Result<Path<String>, PathRejection>,
    query: Result<Query<ManifestQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let Some((name, dir)) = channel_dir(&state, channel) else {
        return status_only(StatusCode::NOT_FOUND);
    };
    let agent = agent_of(peer.as_deref(), query.ok().and_then(|Query(q)| q.agent_id));
    let served = match load(dir.manifest(), MAX_MANIFEST_BYTES).await {
        Some(Ok(manifest)) => state.rollouts.serve(&name, agent.as_deref(), &manifest),
        _ => Serve::Current,
    };
    let current = match served {
        Serve::Current => match load(dir.signature(), MAX_SIGNATURE_BYTES).await {
            Some(Ok(release)) => Arc::new(release),
            Some(Err(status)) => return status_only(status),
            None => return status_only(StatusCode::NOT_FOUND),
        },
        Serve::Previous(previous) => previous.signature,
        Serve::Missing => return status_only(StatusCode::NOT_FOUND),
    };
    match EntityTags::from_headers(&headers) {
        Some(tags) if tags.matches(&current.etag) => not_modified(&current.etag),
        _ => release_response(&current, SIGNATURE),
    }
}

/// `GET /v1/channels/{channel}/keys.json`: the channel's key rotation record
/// (SPEC §13), as `publish --rotate-key/--revoke --to DATA` wrote it; 404 if none.
async fn rotation_record(
    State(state): State<AppState>,
    channel: Result<Path<String>, PathRejection>,
) -> Response {
    let Some((_, dir)) = channel_dir(&state, channel) else {
        return status_only(StatusCode::NOT_FOUND);
    };
    plain_file(dir.keys(), signing::MAX_ROTATION_BYTES as u64, JSON).await
}

/// `GET /v1/channels/{channel}/keys.json.minisig`: the record's signature.
async fn rotation_signature(
    State(state): State<AppState>,
    channel: Result<Path<String>, PathRejection>,
) -> Response {
    let Some((_, dir)) = channel_dir(&state, channel) else {
        return status_only(StatusCode::NOT_FOUND);
    };
    plain_file(dir.keys_signature(), MAX_SIGNATURE_BYTES, SIGNATURE).await
}

/// A channel file as it is on disk (200), or a 404 if absent.
async fn plain_file(path: PathBuf, limit: u64, content_type: &'static str) -> Response {
    match load(path, limit).await {
        Some(Ok(file)) => release_response(&file, content_type),
        Some(Err(status)) => status_only(status),
        None => status_only(StatusCode::NOT_FOUND),
    }
}

/// `GET /v1/channels/{channel}/history/{seq}.json` (and `.json.minisig`): a
/// past release, as `publish --rollback-to` re-signs it. `{seq}` may be
/// zero-padded as on disk (`0000000001.json`) or not (`1.json`).
async fn history_file(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Response {
    let Ok(Path((channel, file))) = path else {
        return status_only(StatusCode::NOT_FOUND);
    };
    let Some((_, dir)) = channel_dir(&state, Ok(Path(channel))) else {
        return status_only(StatusCode::NOT_FOUND);
    };
    let (stem, signature) = match file.strip_suffix(".minisig") {
        Some(stem) => (stem, true),
        None => (file.as_str(), false),
    };
    let Some(sequence) = stem
        .strip_suffix(".json")
        // A u64 has at most 20 digits.
        .filter(|digits| (1..=20).contains(&digits.len()))
        .filter(|digits| digits.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|digits| digits.parse::<u64>().ok())
    else {
        return status_only(StatusCode::NOT_FOUND);
    };
    let manifest = dir.history_manifest(sequence);
    let (path, limit, content_type) = if signature {
        (signature_path(&manifest), MAX_SIGNATURE_BYTES, SIGNATURE)
    } else {
        (manifest, MAX_MANIFEST_BYTES, JSON)
    };
    plain_file(path, limit, content_type).await
}

/// The channel named in the path, if the name is plain (SPEC: `[A-Za-z0-9._-]`, no leading dot).
fn channel_dir(
    state: &AppState,
    channel: Result<Path<String>, PathRejection>,
) -> Option<(String, ChannelDir)> {
    let Path(channel) = channel.ok()?;
    check_channel(&channel).ok()?;
    let dir = ChannelDir::new(&state.data, &channel);
    Some((channel, dir))
}

/// Reads a channel file off the async threads: `None` if absent, a status on failure.
async fn load(path: PathBuf, limit: u64) -> Option<Result<Release, StatusCode>> {
    let read = tokio::task::spawn_blocking(move || {
        push::read_release(&path, limit).map_err(|e| {
            warn!(path = %path.display(), error = %e, "cannot serve channel file");
            StatusCode::INTERNAL_SERVER_ERROR
        })
    })
    .await;
    match read {
        Ok(Ok(release)) => release.map(Ok),
        Ok(Err(status)) => Some(Err(status)),
        Err(_) => Some(Err(StatusCode::INTERNAL_SERVER_ERROR)),
    }
}

/// 200 with the file and its ETag.
fn release_response(release: &Release, content_type: &'static str) -> Response {
    let headers = [
        (CONTENT_TYPE, content_type.to_string()),
        (ETAG, release.etag.clone()),
        (CACHE_CONTROL, REVALIDATE.to_string()),
    ];
    (headers, release.bytes.clone()).into_response()
}

/// 304 with the current ETag.
fn not_modified(etag: &str) -> Response {
    let headers = [
        (ETAG, etag.to_string()),
        (CACHE_CONTROL, REVALIDATE.to_string()),
    ];
    (StatusCode::NOT_MODIFIED, headers).into_response()
}

/// A bare status.
fn status_only(status: StatusCode) -> Response {
    status.into_response()
}

/// The entity tags of an `If-None-Match` header (RFC 9110 §13.1.2: weak comparison).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntityTags {
    /// `*`: matches any current version.
    Any,
    /// The listed tags, quoted, without `W/`.
    List(Vec<String>),
}

impl EntityTags {
    /// Parses every `If-None-Match` header of a request; `None` if there is none.
    pub fn from_headers(headers: &HeaderMap) -> Option<EntityTags> {
        let mut tags = Vec::new();
        for value in headers.get_all(IF_NONE_MATCH) {
            let Ok(value) = value.to_str() else { continue };
            for tag in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                if tag == "*" {
                    return Some(EntityTags::Any);
                }
                tags.push(tag.strip_prefix("W/").unwrap_or(tag).to_string());
            }
        }
        (!tags.is_empty()).then_some(EntityTags::List(tags))
    }

    /// Whether `etag` (quoted) is one of these.
    pub fn matches(&self, etag: &str) -> bool {
        match self {
            EntityTags::Any => true,
            EntityTags::List(tags) => tags.iter().any(|t| t == etag),
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn tags(values: &[&str]) -> Option<EntityTags> {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(IF_NONE_MATCH, HeaderValue::from_str(v).unwrap());
        }
        EntityTags::from_headers(&headers)
    }

    #[test]
    fn if_none_match_lists_weak_tags_and_star() {
        assert_eq!(tags(&[]), None);
        let list = tags(&["\"a\", W/\"b\"", "\"c\""]).unwrap();
        assert!(list.matches("\"a\"") && list.matches("\"b\"") && list.matches("\"c\""));
        assert!(!list.matches("\"d\""));
        assert!(tags(&["*"]).unwrap().matches("\"anything\""));
    }
}
