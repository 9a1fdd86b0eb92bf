//! The identity endpoints of the console: `POST /v1/enroll`, `POST
//! /v1/renew` and `GET /v1/identity` (the wire types and the handlers; the
//! rules they apply live in the parent module).

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::{Extension, Json};
use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::clock;
use crate::console::registry::{self, EnrollRefusal};
use crate::console::reports::is_agent_id;
use crate::console::routes::AppState;
use crate::private_ca::{AgentCa, IssuedCert};

use super::{ClientCert, IdentityError, MAX_HOSTNAME};

/// What an agent sends to enroll.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// The enrollment token, in clear.
    pub token: String,
    /// The agent id the certificate will name.
    pub agent_id: String,
    /// A PEM certificate signing request made with the agent's own key.
    pub csr: String,
    /// The agent's host name, for `console agents`.
    #[serde(default)]
    pub hostname: Option<String>,
}

/// What an agent sends to renew: a request for a new key.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    /// A PEM certificate signing request made with the agent's new key.
    pub csr: String,
}

/// A certificate the console issued.
#[derive(Debug, Serialize, Deserialize)]
pub struct Issued {
    /// The agent id it names.
    pub agent_id: String,
    /// The client certificate, PEM.
    pub certificate: String,
    /// The agent CA certificate, PEM.
    pub ca: String,
    /// When the certificate expires (unix seconds).
    pub expires_at: u64,
}

/// `POST /v1/enroll`.
pub async fn enroll(
    State(state): State<AppState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> Result<Json<Issued>, IdentityError> {
    let identity = state.identity.clone();
    let now = clock::now_seconds();
    if identity.limiter.is_limited(remote.ip(), now) {
        warn!(remote = %remote, "enrollment rate limited");
        return Err(IdentityError::RateLimited);
    }
    let request: EnrollRequest = serde_json::from_slice(&body).map_err(|e| {
        IdentityError::BadRequest(format!(
            "the enrollment is not {{\"token\", \"agent_id\", \"csr\"}} JSON: {e}"
        ))
    })?;
    if !is_agent_id(&request.agent_id) {
        return Err(IdentityError::BadRequest(format!(
            "agent id `{}` is not 1-64 of [A-Za-z0-9_-]",
            request.agent_id
        )));
    }
    let hostname = request
        .hostname
        .filter(|h| h.len() <= MAX_HOSTNAME && h.bytes().all(|b| b.is_ascii_graphic()));
    let agent_id = request.agent_id.clone();
    let lifetime = identity.cert_lifetime;
    let outcome = identity
        .with_db(move |db, ca| {
            enroll_in_db(
                db,
                ca,
                &request.token,
                &agent_id,
                hostname.as_deref(),
                &request.csr,
                lifetime,
                now,
            )
        })
        .await??;
    match outcome {
        Ok(issued) => {
            info!(agent_id = %request.agent_id, remote = %remote, expires_at = issued.not_after, "agent enrolled");
            Ok(Json(Issued {
                agent_id: request.agent_id,
                certificate: issued.pem,
                ca: identity.ca.cert_pem.clone(),
                expires_at: issued.not_after,
            }))
        }
        Err(refusal) => {
            identity.limiter.fail(remote.ip(), now);
            warn!(agent_id = %request.agent_id, remote = %remote, reason = %refusal, "enrollment refused");
            Err(IdentityError::Enrollment(refusal))
        }
    }
}

/// The token check, the signature and the agent row, in one transaction:
/// a refused enrollment writes nothing.
#[allow(clippy::too_many_arguments)]
fn enroll_in_db(
    db: &mut Connection,
    ca: &AgentCa,
    token: &str,
    agent_id: &str,
    hostname: Option<&str>,
    csr: &str,
    lifetime: Duration,
    now: SystemTime,
) -> Result<Result<IssuedCert, EnrollRefusal>, IdentityError> {
    let db_error = |e: rusqlite::Error| IdentityError::internal("cannot record the enrollment", e);
    // IMMEDIATE: the write lock up front, so the token read and its update
    // never race another writer (a deferred transaction would fail at once).
    let tx = db
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(db_error)?;
    if let Err(refusal) = registry::spend_enrollment_token(&tx, token, now).map_err(db_error)? {
        return Ok(Err(refusal));
    }
    let issued = ca
        .sign_csr(csr, agent_id, lifetime, now)
        .map_err(|e| IdentityError::BadRequest(format!("the CSR is not usable: {e}")))?;
    if let Err(refusal) = registry::record_enrollment(
        &tx,
        agent_id,
        hostname,
        &issued.serial,
        issued.not_after,
        now,
    )
    .map_err(db_error)?
    {
        return Ok(Err(refusal));
    }
    tx.commit().map_err(db_error)?;
    Ok(Ok(issued))
}

/// `POST /v1/renew`: a fresh certificate for the agent the presented one names.
pub async fn renew(
    State(state): State<AppState>,
    Extension(ClientCert(peer)): Extension<ClientCert>,
    body: Bytes,
) -> Result<Json<Issued>, IdentityError> {
    let identity = state.identity.clone();
    let Some(peer) = peer else {
        return Err(IdentityError::NoCertificate(
            "renewal needs the agent's current client certificate".into(),
        ));
    };
    identity.check(&peer).await?;
    let request: RenewRequest = serde_json::from_slice(&body).map_err(|e| {
        IdentityError::BadRequest(format!("the renewal is not {{\"csr\"}} JSON: {e}"))
    })?;
    let lifetime = identity.cert_lifetime;
    let agent_id = peer.agent_id.clone();
    let issued = identity
        .with_db(move |db, ca| {
            let issued = ca
                .sign_csr(&request.csr, &agent_id, lifetime, clock::now_seconds())
                .map_err(|e| IdentityError::BadRequest(format!("the CSR is not usable: {e}")))?;
            match registry::record_renewal(db, &agent_id, &issued.serial, issued.not_after) {
                Ok(true) => Ok(issued),
                Ok(false) => Err(IdentityError::Refused(format!(
                    "agent {agent_id} is revoked or forgotten"
                ))),
                Err(e) => Err(IdentityError::internal("cannot record the renewal", e)),
            }
        })
        .await??;
    info!(agent_id = %peer.agent_id, expires_at = issued.not_after, "certificate renewed");
    Ok(Json(Issued {
        agent_id: peer.agent_id.clone(),
        certificate: issued.pem,
        ca: identity.ca.cert_pem.clone(),
        expires_at: issued.not_after,
    }))
}

/// What `GET /v1/identity` answers.
#[derive(Debug, Serialize, Deserialize)]
pub struct WhoAmI {
    /// The agent id of the presented certificate.
    pub agent_id: String,
    /// When it expires (unix seconds).
    pub expires_at: u64,
}

/// `GET /v1/identity`: 200 if the presented certificate is accepted.
pub async fn whoami(
    State(state): State<AppState>,
    Extension(ClientCert(peer)): Extension<ClientCert>,
) -> Result<Json<WhoAmI>, IdentityError> {
    let Some(peer) = peer else {
        return Err(IdentityError::NoCertificate(
            "no client certificate presented".into(),
        ));
    };
    state.identity.check(&peer).await?;
    Ok(Json(WhoAmI {
        agent_id: peer.agent_id.clone(),
        expires_at: peer.not_after,
    }))
}
