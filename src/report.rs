//! What an agent says about itself: the `status --json` object ([`StatusReport`])
//! and the report it POSTs to its console ([`WireReport`]), one type each, shared
//! by `status`, the agent, the control socket and the console.
//!
//! Here: the parts of a status report (last staging, certificate, reload,
//! pending release, bad versions, restarts; the last two are in the wire
//! report too); `report/status.rs`: [`StatusReport`], built from a root's
//! state and printed as text; `report/wire.rs`: [`WireReport`].

mod status;
mod wire;

use serde::{Deserialize, Serialize};

pub use self::status::StatusReport;
pub use self::wire::WireReport;

/// How a release was staged: `status`'s `last_staging`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastStaging {
    /// The version staged.
    pub version: String,
    /// `delta` (the changed files' objects) or `full` (the whole artifact).
    pub path: String,
    /// Bytes downloaded for it: the index, the objects and, in full, the
    /// artifact (offline: read from the bundle).
    pub downloaded_bytes: u64,
    /// The full artifact's size.
    pub full_bytes: u64,
    /// `full_bytes - downloaded_bytes`, or 0 when that is negative.
    pub saved_bytes: u64,
    /// Why the full artifact was taken (null for a delta).
    pub reason: Option<String>,
}

/// The agent's client certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateReport {
    /// When it expires (RFC 3339).
    pub not_after: String,
    /// `valid`, `renewal due` (the agent renews it by itself) or `expired`.
    pub state: String,
    /// What to do, when the agent cannot fix it by itself.
    pub hint: Option<String>,
}

/// The last reload of the config, and when each change applies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadReport {
    /// When (RFC 3339).
    pub at: String,
    /// `applied` or `refused` (the running config stays).
    pub outcome: String,
    /// Why it was refused.
    pub error: Option<String>,
    /// Keys applied at once.
    pub applied: Vec<String>,
    /// Keys that judge the next trial.
    pub next_trial: Vec<String>,
    /// Keys used when the payload next starts (the next swap).
    pub next_swap: Vec<String>,
    /// Keys that wait for a restart of the agent.
    pub restart: Vec<String>,
}

/// A payload's streak of failures: exits, watchdog expiries, failed starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartsReport {
    /// Failures in the streak.
    pub count: u32,
    /// The last one, e.g. `1.0.0 exited (exit status: 3)`.
    pub last_exit: String,
    /// When the streak began (RFC 3339).
    pub since: String,
}

/// A pending release.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingReport {
    /// Its version.
    pub version: String,
    /// Its sequence.
    pub sequence: u64,
    /// When the swap may start (RFC 3339).
    pub not_before: String,
    /// The download, while it is staged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<crate::progress::ProgressReport>,
}

impl From<&bank_layout::Pending> for PendingReport {
    /// A release recorded as pending (of the payload or of the agent), not yet downloading.
    fn from(p: &bank_layout::Pending) -> PendingReport {
        PendingReport {
            version: p.version.clone(),
            sequence: p.sequence,
            not_before: crate::clock::rfc3339(crate::clock::from_unix(p.not_before)),
            progress: None,
        }
    }
}

/// A version marked bad.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BadReport {
    /// The version.
    pub version: String,
    /// Bad at or below this sequence.
    pub sequence: u64,
    /// Why.
    pub reason: String,
}

impl From<&bank_layout::BadVersion> for BadReport {
    fn from(b: &bank_layout::BadVersion) -> BadReport {
        BadReport {
            version: b.version.clone(),
            sequence: b.sequence,
            reason: b.reason.clone(),
        }
    }
}
