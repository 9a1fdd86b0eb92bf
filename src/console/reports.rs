//! Agent reports (SPEC §4): `POST /v1/agents/{agent_id}/report` stores an
//! agent's latest state; `GET /v1/fleet` lists every agent's latest report.
//!
//! A report is stored only from the agent whose client certificate names
//! the id of the path (SPEC §10); without a certificate only with
//! `--allow-anonymous-reports`, and never for an enrolled id. Either way a
//! refused report writes nothing.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use tracing::{debug, warn};

use super::identity::ClientCert;
use super::routes::AppState;
use super::store::FleetEntry;
use crate::clock;
use crate::report::WireReport;

/// The largest report accepted: a report is a handful of short strings and a
/// pending release (~1 KiB); 16 KiB leaves room for long error messages.
pub const MAX_REPORT_BYTES: usize = 16 * 1024;

/// The longest agent id: agent ids are random tokens, far shorter.
const MAX_AGENT_ID: usize = 64;

/// `POST /v1/agents/{agent_id}/report` → 204 once stored.
pub async fn report(
    State(state): State<AppState>,
    agent_id: Result<Path<String>, PathRejection>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    Extension(ClientCert(peer)): Extension<ClientCert>,
    body: Bytes,
) -> Response {
    let Ok(Path(agent_id)) = agent_id else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if !is_agent_id(&agent_id) {
        return StatusCode::NOT_FOUND.into_response();
    }
    if let Err(refused) = state
        .identity
        .authorize_report(peer.as_deref(), &agent_id)
        .await
    {
        debug!(agent_id = %agent_id, remote = %remote, reason = %refused, "report refused");
        return refused.into_response();
    }
    let report: WireReport = match serde_json::from_slice(&body) {
        Ok(report) => report,
        Err(e) => {
            debug!(agent_id = %agent_id, error = %e, "malformed report");
            return (StatusCode::BAD_REQUEST, format!("malformed report: {e}\n")).into_response();
        }
    };
    let entry = FleetEntry {
        agent_id,
        version: report.version,
        bank: report.bank,
        phase: report.phase,
        // JSON null and an absent field both mean "nothing pending".
        pending: report.pending.filter(|p| !p.is_null()),
        last_error: report.last_error,
        reported_at: clock::unix(clock::now_seconds()),
        remote: Some(remote.to_string()),
        previous_version: report.previous_version,
        sequence: report.sequence,
        last_error_kind: report.last_error_kind,
        restarts: report.restarts,
        agent_version: report.agent_version,
    };
    debug!(agent_id = %entry.agent_id, version = ?entry.version, "report");
    match state.store.save(entry).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => {
            warn!(error = %e, "cannot store a report");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// `GET /v1/fleet`: the latest report of every agent, as a JSON array.
pub async fn fleet(State(state): State<AppState>) -> Response {
    match state.store.list().await {
        Ok(entries) => Json(entries).into_response(),
        Err(e) => {
            warn!(error = %e, "cannot read the fleet");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// 1-64 of `[A-Za-z0-9_-]`.
pub fn is_agent_id(id: &str) -> bool {
    (1..=MAX_AGENT_ID).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_ids_are_plain_tokens() {
        assert!(is_agent_id("a1B2_c-3"));
        assert!(is_agent_id(&"x".repeat(64)));
        assert!(!is_agent_id(&"x".repeat(65)));
        assert!(!is_agent_id(""));
        assert!(!is_agent_id("../x"));
        assert!(!is_agent_id("a.b"));
    }
}
