//! The channel endpoints: the manifest (ETag, 304, held with `?wait=`, and
//! during a rollout the release this agent is admitted to), its signature,
//! the key rotation record and the history of past releases.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::AppState;
use super::etag::EntityTags;
use crate::channel::{ChannelDir, MAX_SIGNATURE_BYTES, signature_path};
use crate::config::check_channel;
use crate::console::identity::{ClientCert, PeerCert};
use crate::console::push::{self, MAX_MANIFEST_BYTES, Release};
use crate::console::reports;
use crate::console::rollout_engine::Serve;

/// Manifests may be cached, but must be revalidated: that is how agents poll.
const REVALIDATE: &str = "no-cache";

/// The media type of manifests.
const JSON: &str = "application/json";

/// The media type of minisign signatures (four lines of text).
const SIGNATURE: &str = "text/plain; charset=utf-8";

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
pub(super) async fn manifest(
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
pub(super) async fn signature(
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
pub(super) async fn rotation_record(
    State(state): State<AppState>,
    channel: Result<Path<String>, PathRejection>,
) -> Response {
    let Some((_, dir)) = channel_dir(&state, channel) else {
        return status_only(StatusCode::NOT_FOUND);
    };
    plain_file(dir.keys(), signing::MAX_ROTATION_BYTES as u64, JSON).await
}

/// `GET /v1/channels/{channel}/keys.json.minisig`: the record's signature.
pub(super) async fn rotation_signature(
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
pub(super) async fn history_file(
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
