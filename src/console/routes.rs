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
//!
//! Here: the router, its state and the client-certificate layer;
//! `routes/channel.rs`: the channel endpoints; `routes/etag.rs`: `If-None-Match`.

mod channel;
mod etag;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio_util::sync::CancellationToken;

use self::channel::{history_file, manifest, rotation_record, rotation_signature, signature};
use super::admin::{self, Admin};
use super::auth::{self, AdminAuth};
use super::identity::{self, ClientCert, Identity, IdentityError};
use super::push::Watcher;
use super::rollout_engine::Rollouts;
use super::store::Store;
use super::{artifacts, page, reports, rollout_http};

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
