//! The rollout routes (SPEC §11): the admins' view and actions, and the
//! uploads of `publish --waves --console`.
//!
//! ```text
//! GET  /v1/rollouts                                  every rollout (admins: bearer or session)
//! POST /v1/rollouts/{channel}/{pause|resume|abort}   an action; `rollback=true` (form field or
//!                                                    query) with abort publishes the prepared rollback;
//!                                                    a session needs its CSRF token (`csrf=`)
//! POST /v1/suspensions/{channel}/{suspend|resume}    suspend a channel's admissions, or lift it
//!                                                    (admins, as the actions; answers /v1/rollouts)
//! PUT  /v1/admin/channels/{channel}/rollout          a plan (bearer, uploads enabled)
//! PUT  /v1/admin/channels/{channel}/rollback         a prepared signed rollback {"manifest", "signature"}
//! ```
//!
//! A browser session's action answers 303 to `/` (a plain form), unless it
//! asks for JSON (`Accept: application/json`); the CLI gets the rollout as JSON.

use std::net::SocketAddr;
use std::sync::{Arc, PoisonError};

use axum::body::Bytes;
use axum::extract::rejection::{FormRejection, PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, DefaultBodyLimit, Form, Path, Query, State};
use axum::http::header::{ACCEPT, LOCATION};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::put;
use axum::{Extension, Json, Router};
use serde::Deserialize;
use signing::{Expectations, verify_release};
use tracing::info;

use super::accept::{self, MAX_RELEASE_UPLOAD_BYTES, ReleaseUpload};
use super::admin::{Admin, AdminError, channel_of};
use super::auth::{AdminUser, check_csrf_value};
use super::push::MAX_MANIFEST_BYTES;
use super::rollout::{MAX_PLAN_BYTES, PLAN_FILE, Plan, ROLLBACK_FILE};
use super::rollout_engine::{Action, ActionError};
use super::routes::AppState;
use crate::channel::{ChannelDir, MAX_SIGNATURE_BYTES, read_capped, signature_path};
use crate::clock;

/// `GET /v1/rollouts`.
pub async fn list(State(state): State<AppState>) -> Response {
    let rollouts = state.rollouts.clone();
    // A plan written by `publish --to` shows before any agent asks.
    let _ = tokio::task::spawn_blocking(move || rollouts.refresh_all()).await;
    Json(state.rollouts.view()).into_response()
}

/// The fields of an action form (all optional for a bearer request).
#[derive(Debug, Default, Deserialize)]
pub struct ActionForm {
    /// The session's CSRF token.
    #[serde(default)]
    csrf: String,
    /// With abort: publish the prepared rollback.
    #[serde(default)]
    rollback: Option<String>,
}

/// The query of an action (the CLI's way to ask for the rollback).
#[derive(Debug, Default, Deserialize)]
pub struct ActionQuery {
    /// With abort: publish the prepared rollback.
    #[serde(default)]
    rollback: Option<String>,
}

/// `true`, `1`, `on`, `yes` (a checkbox, a flag).
fn is_yes(value: Option<&str>) -> bool {
    matches!(value, Some("true" | "1" | "on" | "yes"))
}

/// `POST /v1/rollouts/{channel}/{action}`.
pub async fn act(
    State(state): State<AppState>,
    Extension(user): Extension<AdminUser>,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<ActionQuery>, QueryRejection>,
    headers: HeaderMap,
    form: Result<Form<ActionForm>, FormRejection>,
) -> Result<Response, AdminError> {
    let form = form.map(|Form(f)| f).unwrap_or_default();
    let (channel, action) = checked_action(&user, &form, path, "rollout")?;
    let action = Action::parse(&action).ok_or_else(|| {
        AdminError::BadRequest(format!(
            "no rollout action `{action}` (pause, resume, abort)"
        ))
    })?;
    let query = query.map(|Query(q)| q).unwrap_or_default();
    let rollback = is_yes(form.rollback.as_deref()) || is_yes(query.rollback.as_deref());
    if rollback && action != Action::Abort {
        return Err(AdminError::BadRequest(
            "rollback goes with abort only".into(),
        ));
    }
    // A plan written by `publish --to` a moment ago counts.
    let rollouts = state.rollouts.clone();
    let _ = tokio::task::spawn_blocking(move || rollouts.refresh_all()).await;
    let mut view = state
        .rollouts
        .act(&channel, action, &user.name)
        .map_err(|e| match e {
            ActionError::NoRollout(_)
            | ActionError::WrongState { .. }
            | ActionError::Suspension(_) => AdminError::Refused(e.to_string()),
        })?;
    info!(admin = %user.name, channel = %channel, action = action.as_str(), rollback, "rollout action");
    // An action is on disk before it is answered.
    let rollouts = state.rollouts.clone();
    let _ = tokio::task::spawn_blocking(move || rollouts.save_dirty_blocking()).await;
    if rollback {
        let published = publish_rollback(&state, &channel).await?;
        state.rollouts.note(
            &channel,
            format!(
                "rollback to {} published as sequence {} by {}",
                published.version, published.sequence, user.name
            ),
        );
        if let Some(updated) = state.rollouts.view_of(&channel) {
            view = updated;
        }
    }
    if user.csrf.is_some() && !wants_json(&headers) {
        return Ok((StatusCode::SEE_OTHER, [(LOCATION, "/".to_string())]).into_response());
    }
    Ok(Json(view).into_response())
}

/// `POST /v1/suspensions/{channel}/{suspend|resume}` (`console channel
/// suspend|resume`): answers every rollout with the suspensions (JSON), or
/// 303 to `/` for a browser form.
pub async fn suspend(
    State(state): State<AppState>,
    Extension(user): Extension<AdminUser>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    form: Result<Form<ActionForm>, FormRejection>,
) -> Result<Response, AdminError> {
    let form = form.map(|Form(f)| f).unwrap_or_default();
    let (channel, action) = checked_action(&user, &form, path, "channel")?;
    let on = match action.as_str() {
        "suspend" => true,
        "resume" => false,
        _ => {
            return Err(AdminError::BadRequest(format!(
                "no channel action `{action}` (suspend, resume)"
            )));
        }
    };
    let rollouts = state.rollouts.clone();
    let by = user.name.clone();
    let name = channel.clone();
    tokio::task::spawn_blocking(move || {
        rollouts.refresh_all();
        rollouts.suspend(&name, on, &by)
    })
    .await
    .map_err(|e| AdminError::internal("cannot suspend the channel", e))?
    .map_err(|e| AdminError::Refused(e.to_string()))?;
    info!(admin = %user.name, channel = %channel, suspended = on, "channel suspension");
    let rollouts = state.rollouts.clone();
    let _ = tokio::task::spawn_blocking(move || rollouts.save_dirty_blocking()).await;
    if user.csrf.is_some() && !wants_json(&headers) {
        return Ok((StatusCode::SEE_OTHER, [(LOCATION, "/".to_string())]).into_response());
    }
    Ok(Json(state.rollouts.view()).into_response())
}

/// The CSRF check of an action form, then the `{channel}/{action}` of its
/// path with the channel checked; `what` names the action kind in the error.
fn checked_action(
    user: &AdminUser,
    form: &ActionForm,
    path: Result<Path<(String, String)>, PathRejection>,
    what: &str,
) -> Result<(String, String), AdminError> {
    check_csrf_value(user, &form.csrf)?;
    let Ok(Path((channel, action))) = path else {
        return Err(AdminError::BadRequest(format!("bad {what} action URL")));
    };
    Ok((channel_of(Ok(Path(channel)))?, action))
}

/// Whether the request asks for JSON (a script), not a page (a form).
fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"))
}

/// Publishes the channel's prepared rollback, re-verified like an upload.
async fn publish_rollback(
    state: &AppState,
    channel: &str,
) -> Result<accept::Published, AdminError> {
    let admin = state.admin.clone().ok_or_else(|| {
        AdminError::Refused(
            "the rollout is aborted, but its rollback was not published: the console re-verifies \
             a rollback against its --trust keys, and was started without --trust"
                .into(),
        )
    })?;
    let dir = ChannelDir::new(&state.data, channel);
    let channel = channel.to_string();
    tokio::task::spawn_blocking(move || {
        let _publishing = admin
            .publishing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let path = dir.dir().join(ROLLBACK_FILE);
        let read = |path: &std::path::Path, limit: u64| {
            read_capped(path, limit).map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    AdminError::Refused(format!(
                        "the rollout is aborted, but channel {channel} has no prepared rollback \
                         (publish --waves prepares one when the channel had a release)"
                    ))
                } else {
                    AdminError::internal("cannot read the prepared rollback", e)
                }
            })
        };
        let manifest = read(&path, MAX_MANIFEST_BYTES)?;
        let signature = read(&signature_path(&path), MAX_SIGNATURE_BYTES)?;
        let upload = ReleaseUpload {
            manifest: String::from_utf8(manifest)
                .map_err(|_| AdminError::Refused("the prepared rollback is not UTF-8".into()))?,
            signature: String::from_utf8_lossy(&signature).into_owned(),
        };
        accept::accept(
            &dir,
            &channel,
            &admin.trusted_keys,
            &upload,
            clock::now_seconds(),
        )
    })
    .await
    .map_err(|e| AdminError::internal("cannot publish the rollback", e))?
}

/// The upload routes of `publish --waves --console` (bearer, uploads enabled).
pub fn upload_routes() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/admin/channels/{channel}/rollout",
            put(put_plan).layer(DefaultBodyLimit::max(MAX_PLAN_BYTES as usize)),
        )
        .route(
            "/v1/admin/channels/{channel}/rollback",
            put(put_rollback).layer(DefaultBodyLimit::max(MAX_RELEASE_UPLOAD_BYTES)),
        )
}

/// The upload settings, after the bearer check (as every `/v1/admin/` route).
async fn uploader(
    state: &AppState,
    headers: &HeaderMap,
    remote: SocketAddr,
) -> Result<Arc<Admin>, AdminError> {
    let admin = state.admin.clone().ok_or(AdminError::Disabled)?;
    state.auth.bearer(headers, remote).await?;
    Ok(admin)
}

/// `PUT /v1/admin/channels/{channel}/rollout`: the plan of the next release,
/// uploaded before it (so no agent outside the first wave is ever served it).
async fn put_plan(
    State(state): State<AppState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    channel: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AdminError> {
    uploader(&state, &headers, remote).await?;
    let channel = channel_of(channel)?;
    let plan: Plan = serde_json::from_slice(&body)
        .map_err(|e| AdminError::BadRequest(format!("the rollout plan is not valid JSON: {e}")))?;
    plan.validate()
        .map_err(|e| AdminError::BadRequest(format!("rollout plan: {e}")))?;
    let dir = ChannelDir::new(&state.data, &channel);
    let written = tokio::task::spawn_blocking(move || {
        let current = dir
            .current_sequence()
            .map_err(|e| AdminError::internal("cannot read the channel", e))?;
        if plan.sequence <= current {
            return Err(AdminError::Replayed {
                sequence: plan.sequence,
                current,
            });
        }
        std::fs::create_dir_all(dir.dir())
            .map_err(|e| AdminError::internal("cannot write the plan", e))?;
        let bytes = serde_json::to_vec_pretty(&plan)
            .map_err(|e| AdminError::internal("cannot write the plan", e))?;
        bank_layout::write_atomic(&dir.dir().join(PLAN_FILE), &bytes)
            .map_err(|e| AdminError::internal("cannot write the plan", e))?;
        Ok(plan)
    })
    .await
    .map_err(|e| AdminError::internal("cannot write the plan", e))??;
    info!(channel = %channel, sequence = written.sequence, waves = ?written.waves, "rollout plan uploaded");
    Ok((StatusCode::CREATED, Json(written)).into_response())
}

/// `PUT /v1/admin/channels/{channel}/rollback`: a signed rollback, checked
/// now (trusted signature, channel, a sequence above the channel's) and
/// kept until `abort --rollback` publishes it (checked again then).
async fn put_rollback(
    State(state): State<AppState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    channel: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AdminError> {
    let admin = uploader(&state, &headers, remote).await?;
    let channel = channel_of(channel)?;
    let upload: ReleaseUpload = serde_json::from_slice(&body).map_err(|e| {
        AdminError::BadRequest(format!(
            "the rollback upload is not {{\"manifest\": ..., \"signature\": ...}} JSON: {e}"
        ))
    })?;
    let dir = ChannelDir::new(&state.data, &channel);
    let name = channel.clone();
    let sequence = tokio::task::spawn_blocking(move || {
        let current = dir
            .current_sequence()
            .map_err(|e| AdminError::internal("cannot read the channel", e))?;
        let expect = Expectations {
            trusted_keys: &admin.trusted_keys,
            revoked_keys: &[],
            product: None,
            channel: &name,
            highest_sequence: current,
            running_version: None,
            marked_bad: &signing::nothing_marked_bad,
            now: clock::now_seconds(),
        };
        let verified = verify_release(
            upload.manifest.as_bytes(),
            upload.signature.as_bytes(),
            &expect,
        )
        .map_err(|e| AdminError::Refused(format!("rollback refused: {e}")))?;
        let sequence = verified.manifest.sequence;
        if sequence <= current {
            return Err(AdminError::Replayed { sequence, current });
        }
        let path = dir.dir().join(ROLLBACK_FILE);
        std::fs::create_dir_all(dir.dir())
            .and_then(|()| {
                bank_layout::write_atomic(&signature_path(&path), upload.signature.as_bytes())
            })
            .and_then(|()| bank_layout::write_atomic(&path, upload.manifest.as_bytes()))
            .map_err(|e| AdminError::internal("cannot store the rollback", e))?;
        Ok(sequence)
    })
    .await
    .map_err(|e| AdminError::internal("cannot store the rollback", e))??;
    info!(channel = %channel, sequence, "prepared rollback uploaded");
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({"channel": channel, "sequence": sequence})),
    )
        .into_response())
}
