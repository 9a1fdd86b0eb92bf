//! Agent identity on the console (SPEC §10): enrollment with a one-time
//! token, renewal over mTLS, and the check every agent request with a
//! client certificate goes through.
//!
//! ```text
//! POST /v1/enroll     {"token", "agent_id", "csr", "hostname"} → {"certificate", "ca", "expires_at"}
//! POST /v1/renew      (mTLS) {"csr"} → a fresh certificate for the presented agent id
//! GET  /v1/identity   (mTLS) {"agent_id", "expires_at"}: lets an agent test a certificate
//! ```
//!
//! A certificate is accepted only if the agent CA signed it (the TLS layer
//! checks that), its agent is enrolled and not revoked, its serial is the
//! agent's current or previous one, and it has not expired: the database is
//! read on every request, so a revocation counts from the next request on,
//! on connections already open too.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rusqlite::Connection;
use thiserror::Error;
use tracing::warn;

use super::admin::ErrorBody;
use super::auth::Limiter;
use super::registry::{self, EnrollRefusal};
use super::reports::is_agent_id;
use crate::clock;
use crate::private_ca::AgentCa;

mod http;

pub use http::{EnrollRequest, Issued, RenewRequest, WhoAmI, enroll, renew, whoami};

/// The largest enrollment or renewal request: a CSR is well under 1 KiB.
pub const MAX_ENROLL_BYTES: usize = 16 * 1024;

/// The longest host name an agent may give.
const MAX_HOSTNAME: usize = 253;

/// Reports stored per agent within [`REPORT_WINDOW`]: an agent reports when
/// its status changes, a handful of times per update; more is a loop or abuse.
pub const MAX_REPORTS_PER_WINDOW: u32 = 60;

/// The window of [`MAX_REPORTS_PER_WINDOW`].
pub const REPORT_WINDOW: Duration = Duration::from_secs(60);

/// Agents whose report rate is tracked at once (bounds the memory; beyond
/// it, after dropping finished windows, further ids are not limited).
const MAX_TRACKED_AGENTS: usize = 100_000;

/// The client certificate of a connection, parsed once after the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCert {
    /// The agent id its common name gives.
    pub agent_id: String,
    /// Its serial number (hex).
    pub serial: String,
    /// When it expires (unix seconds).
    pub not_after: u64,
}

impl PeerCert {
    /// Reads a certificate the TLS layer verified; `None` if it names no agent.
    pub fn parse(der: &[u8]) -> Option<PeerCert> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let agent_id = cert
            .subject()
            .iter_common_name()
            .next()?
            .as_str()
            .ok()?
            .to_string();
        if !is_agent_id(&agent_id) {
            return None;
        }
        Some(PeerCert {
            agent_id,
            serial: hex::encode(cert.raw_serial()),
            not_after: u64::try_from(cert.validity().not_after.timestamp()).unwrap_or(0),
        })
    }
}

/// What a request carries about its client certificate (always present;
/// `None` without one, and on plain HTTP).
#[derive(Debug, Clone)]
pub struct ClientCert(pub Option<Arc<PeerCert>>);

/// Why an agent request was refused; 401 without a certificate, 403 with a
/// certificate that is not good enough, each with a one-line reason.
#[derive(Debug, Error)]
pub enum IdentityError {
    /// No client certificate where one is needed (401).
    #[error("{0}")]
    NoCertificate(String),
    /// A certificate that does not allow this (403).
    #[error("{0}")]
    Refused(String),
    /// An enrollment refused (403).
    #[error("enrollment refused: {0}")]
    Enrollment(EnrollRefusal),
    /// Too many failed enrollments from this address (429).
    #[error("too many failed enrollments from this address; try again later")]
    RateLimited,
    /// Too many reports from one agent (429).
    #[error("{0}")]
    TooManyReports(String),
    /// A malformed request (400).
    #[error("{0}")]
    BadRequest(String),
    /// The console failed (500).
    #[error("{0}")]
    Internal(String),
}

impl IdentityError {
    fn internal(what: &str, error: impl std::fmt::Display) -> IdentityError {
        warn!(error = %error, "{what}");
        IdentityError::Internal(format!("{what}: {error}"))
    }
}

impl IntoResponse for IdentityError {
    fn into_response(self) -> Response {
        let status = match self {
            IdentityError::NoCertificate(_) => StatusCode::UNAUTHORIZED,
            IdentityError::Refused(_) | IdentityError::Enrollment(_) => StatusCode::FORBIDDEN,
            IdentityError::RateLimited | IdentityError::TooManyReports(_) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            IdentityError::BadRequest(_) => StatusCode::BAD_REQUEST,
            IdentityError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let body = Json(ErrorBody {
            error: self.to_string(),
        });
        (status, body).into_response()
    }
}

/// The console's identity settings and state.
pub struct Identity {
    /// The identity tables (a second connection to the fleet database).
    db: Mutex<Connection>,
    /// Signs agent certificates.
    ca: AgentCa,
    /// How long issued certificates live (`--cert-lifetime`).
    pub cert_lifetime: Duration,
    /// Whether channel files and artifacts need a certificate (`--require-client-cert`).
    pub require_client_cert: bool,
    /// Whether reports without a certificate are stored for ids that never
    /// enrolled (`--allow-anonymous-reports`).
    pub allow_anonymous_reports: bool,
    /// Failed enrollments per address.
    limiter: Limiter,
    /// Agent id → (start of its window, reports in it).
    report_counts: Mutex<HashMap<String, (Instant, u32)>>,
}

impl Identity {
    /// The identity state of a console serving `data`.
    pub fn new(
        db: Connection,
        ca: AgentCa,
        cert_lifetime: Duration,
        require_client_cert: bool,
        allow_anonymous_reports: bool,
    ) -> Identity {
        Identity {
            db: Mutex::new(db),
            ca,
            cert_lifetime,
            require_client_cert,
            allow_anonymous_reports,
            limiter: Limiter::default(),
            report_counts: Mutex::new(HashMap::new()),
        }
    }

    /// Runs `work` on the identity tables, off the async threads.
    async fn with_db<T: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce(&mut Connection, &AgentCa) -> T + Send + 'static,
    ) -> Result<T, IdentityError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut db = this.db.lock().unwrap_or_else(PoisonError::into_inner);
            work(&mut db, &this.ca)
        })
        .await
        .map_err(|e| IdentityError::internal("the identity database task failed", e))
    }

    /// Whether `peer` is a good certificate of an enrolled, unrevoked agent.
    pub async fn check(self: &Arc<Self>, peer: &PeerCert) -> Result<(), IdentityError> {
        let id = peer.agent_id.clone();
        let record = self
            .with_db(move |db, _| registry::agent(db, &id))
            .await?
            .map_err(|e| IdentityError::internal("cannot read the agents", e))?;
        let now = clock::unix(clock::now_seconds());
        let Some(record) = record else {
            return Err(IdentityError::Refused(format!(
                "agent {} is not enrolled on this console (forgotten?): enroll it with a new token",
                peer.agent_id
            )));
        };
        if record.revoked_at.is_some() {
            return Err(IdentityError::Refused(format!(
                "agent {} is revoked",
                peer.agent_id
            )));
        }
        if peer.not_after <= now {
            return Err(IdentityError::Refused(format!(
                "the certificate of agent {} expired at {}: enroll again with a new token \
                 (`console token create`, then enrollment_token_file)",
                peer.agent_id,
                clock::rfc3339(clock::from_unix(peer.not_after))
            )));
        }
        if peer.serial != record.cert_serial && record.prev_serial.as_ref() != Some(&peer.serial) {
            return Err(IdentityError::Refused(format!(
                "this certificate of agent {} was replaced: use the newest one",
                peer.agent_id
            )));
        }
        Ok(())
    }

    /// May a report for `agent_id` be stored, from a client with `peer`?
    pub async fn authorize_report(
        self: &Arc<Self>,
        peer: Option<&PeerCert>,
        agent_id: &str,
    ) -> Result<(), IdentityError> {
        self.authorize_sender(peer, agent_id).await?;
        self.count_report(agent_id, Instant::now())
    }

    /// Counts a report of `agent_id`; refuses it past the rate limit.
    fn count_report(&self, agent_id: &str, now: Instant) -> Result<(), IdentityError> {
        let mut counts = self
            .report_counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if counts.len() >= MAX_TRACKED_AGENTS && !counts.contains_key(agent_id) {
            counts.retain(|_, (since, _)| now.duration_since(*since) < REPORT_WINDOW);
            if counts.len() >= MAX_TRACKED_AGENTS {
                return Ok(());
            }
        }
        let entry = counts.entry(agent_id.to_string()).or_insert((now, 0));
        if now.duration_since(entry.0) >= REPORT_WINDOW {
            *entry = (now, 0);
        }
        if entry.1 >= MAX_REPORTS_PER_WINDOW {
            return Err(IdentityError::TooManyReports(format!(
                "agent {agent_id} sent more than {MAX_REPORTS_PER_WINDOW} reports in {REPORT_WINDOW:?}; \
                 this one is dropped"
            )));
        }
        entry.1 += 1;
        Ok(())
    }

    /// Whether the sender may report for `agent_id` at all.
    async fn authorize_sender(
        self: &Arc<Self>,
        peer: Option<&PeerCert>,
        agent_id: &str,
    ) -> Result<(), IdentityError> {
        match peer {
            Some(peer) if peer.agent_id != agent_id => Err(IdentityError::Refused(format!(
                "the client certificate names agent {}, not {agent_id}",
                peer.agent_id
            ))),
            Some(peer) => {
                self.check(peer).await?;
                let id = peer.agent_id.clone();
                self.with_db(move |db, _| registry::touch(db, &id, clock::now_seconds()))
                    .await?
                    .map_err(|e| IdentityError::internal("cannot record the report", e))
            }
            None if !self.allow_anonymous_reports => Err(IdentityError::NoCertificate(
                "reports need the agent's client certificate (enroll the agent with \
                 `enrollment_token_file`)"
                    .into(),
            )),
            None => {
                let id = agent_id.to_string();
                let enrolled = self
                    .with_db(move |db, _| registry::is_enrolled(db, &id))
                    .await?
                    .map_err(|e| IdentityError::internal("cannot read the agents", e))?;
                if enrolled {
                    Err(IdentityError::NoCertificate(format!(
                        "agent {agent_id} is enrolled: its reports need its client certificate"
                    )))
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Revokes an agent (the page's button); `false` if no such agent.
    pub async fn revoke(self: &Arc<Self>, agent_id: &str) -> Result<bool, IdentityError> {
        let id = agent_id.to_string();
        self.with_db(move |db, _| registry::revoke(db, &id, clock::now_seconds()))
            .await?
            .map_err(|e| IdentityError::internal("cannot revoke the agent", e))
    }

    /// Forgets an agent; `false` if no such agent.
    pub async fn forget(self: &Arc<Self>, agent_id: &str) -> Result<bool, IdentityError> {
        let id = agent_id.to_string();
        self.with_db(move |db, _| registry::forget(db, &id))
            .await?
            .map_err(|e| IdentityError::internal("cannot forget the agent", e))
    }

    /// Every enrolled agent.
    pub async fn agents(self: &Arc<Self>) -> Result<Vec<registry::AgentRecord>, IdentityError> {
        self.with_db(|db, _| registry::agents(db))
            .await?
            .map_err(|e| IdentityError::internal("cannot read the agents", e))
    }
}
