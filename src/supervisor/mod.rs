//! The supervisor's process layer: the `[[listen]]` sockets, one payload
//! generation at a time (spawn, readiness over `NOTIFY_SOCKET`, watchdog,
//! output, stop), and nothing else.
//!
//! **Architecture Invariant:** this module knows no network peer, no bank
//! state machine and no release: the agent core (`src/agent/`) decides what
//! to start and when; the supervisor only runs it and reports what happened.
//!
//! The payload sees the systemd protocols, so any service written for socket
//! activation and `sd_notify` runs unchanged:
//!
//! - `LISTEN_FDS`, `LISTEN_FDNAMES`, `LISTEN_PID`: the listeners, from fd 3;
//! - `NOTIFY_SOCKET`: `READY=1`, `STATUS=…`, `STOPPING=1`, `WATCHDOG=1`;
//! - `WATCHDOG_USEC` when a watchdog is configured;
//! - `BANKSWAP_VERSION`, `BANKSWAP_BANK`, `BANKSWAP_BANK_DIR`.

mod adopt;
mod error;
mod group;
mod listeners;
pub mod mono;
mod notify;
mod output;
mod payload;
mod socket;
mod spawn;
mod user;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use bank_layout::BankId;

pub use adopt::proc_stat;
pub use error::SupervisorError;
#[cfg(test)]
pub use listeners::BoundState;
pub use listeners::{InheritedListener, Listeners, MAX_LISTENERS};
pub use notify::{next_generation, set_next_generation};
pub use payload::{
    GenerationFds, GenerationState, MAX_PENDING_EVENTS, MAX_PENDING_TEXT, Payload, PendingEvent,
    sleep_until,
};

/// Everything needed to start one payload generation.
#[derive(Debug, Clone)]
pub struct PayloadSpec {
    /// The release version, given as `BANKSWAP_VERSION` and logged with every line.
    pub version: String,
    /// The bank the release is installed in, given as `BANKSWAP_BANK`.
    pub bank: BankId,
    /// The bank folder: the working directory and `BANKSWAP_BANK_DIR`.
    pub bank_dir: PathBuf,
    /// Absolute path of the executable (bank_dir joined with the manifest's command).
    pub command: PathBuf,
    /// Arguments after the command.
    pub args: Vec<String>,
    /// Extra environment; the variables above and the socket protocol's win on a clash.
    pub env: BTreeMap<String, String>,
    /// Run as this user (needs root, unless it is the agent's own user).
    pub user: Option<String>,
    /// Time between SIGTERM and SIGKILL when stopping.
    pub stop_timeout: Duration,
    /// Once the payload has sent `WATCHDOG=1`, it must send it again at least this often.
    pub watchdog: Option<Duration>,
}

/// Something a running payload did, as reported by [`Payload::next_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayloadEvent {
    /// It sent `READY=1`.
    Ready,
    /// It sent `STATUS=<text>`.
    Status(String),
    /// It sent `STOPPING=1`.
    Stopping,
    /// It sent `WATCHDOG=1` once and then not again within the watchdog interval
    /// (or it sent `WATCHDOG=trigger`).
    WatchdogExpired,
    /// The main process exited (what remained of its process group was killed).
    Exited(ExitStatus),
}
