//! The control protocol (`ROOT/control.sock`, owner-only): `status`, `rollback`
//! and `check` talk to the running agent through it. One JSON request line in,
//! one JSON response line out. The agent serves it (`agent/control_socket.rs`);
//! [`request`] is the client.

mod client;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use client::{Answer, request, request_or_hangup};

use crate::report::StatusReport;

/// The socket's file name inside the root.
pub const SOCKET_FILE: &str = "control.sock";

/// What a client asks.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Request {
    /// The status report.
    Status,
    /// Swap back to the other bank now.
    Rollback,
    /// Check for a release now.
    Check,
    /// Start the active bank's payload again with the running config (a
    /// reloaded `[payload]` and `[[listen]]` apply), overlapped like a swap.
    #[serde(rename = "restart-payload")]
    RestartPayload,
    /// Exec `binary` (default: the running executable) in place, handing over
    /// the running payload. On success the connection ends with the old image.
    Reexec {
        /// The executable.
        binary: Option<PathBuf>,
        /// As a self-update with this grace (ms): the new image must commit in
        /// time or exec the previous build back.
        grace_ms: Option<u64>,
    },
}

/// The agent's answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct Response {
    /// Whether the request was carried out.
    pub ok: bool,
    /// A one-line message (what happened, or the error).
    pub message: String,
    /// The status after the request.
    pub status: Option<StatusReport>,
}

/// The socket path of a root.
pub fn socket_path(root: &Path) -> PathBuf {
    root.join(SOCKET_FILE)
}
