//! What the agent gets from the world, passed in (mini-redis's `run(listener,
//! shutdown)` shape): its root, its sockets, its HTTP client, a clock and a
//! random source, and the channels to its background tasks. Production builds
//! them in `agent::run`; unit tests build them by hand under paused time.

use std::sync::Arc;
use std::time::SystemTime;

use bank_layout::Root;
use tokio::sync::{Notify, mpsc, watch};

use crate::agent::checker::CheckOutcome;
use crate::agent::control_socket::Envelope;
use crate::agent::reexec::ExecContext;
use crate::agent::reload::ReloadRequest;
use crate::report::StatusReport;
use crate::supervisor::Listeners;

/// Wall-clock time and randomness. Monotonic time is tokio's `Instant`, which
/// tests pause; wall-clock time (manifest expiry, rollout slots) comes from here.
pub trait Clock: Send + Sync {
    /// The wall-clock time now.
    fn now(&self) -> SystemTime;
    /// A random number in `[0, 1)` (the spread of a release's random delay).
    fn random(&self) -> f64;
}

/// The real clock and `rand`.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    fn random(&self) -> f64 {
        rand::random()
    }
}

/// The resources the agent core owns or uses.
pub struct World {
    /// The data root, locked and recovered.
    pub root: Root,
    /// Stable identity of this machine.
    pub agent_id: String,
    /// Console base URL (the one place it is kept).
    pub console: String,
    /// Sockets handed to every payload generation.
    pub listeners: Listeners,
    /// HTTPS client towards the console and the health endpoint: the latest,
    /// rebuilt after a reload or a certificate renewal.
    pub http: watch::Receiver<reqwest::Client>,
    /// Wall-clock time and randomness.
    pub clock: Arc<dyn Clock>,
    /// What an in-place exec needs (unit tests: the default, which refuses it).
    pub exec: ExecContext,
}

/// The core's links to its background tasks (checker, reporter, control socket).
pub struct Links {
    /// Check outcomes from the checker.
    pub checks: mpsc::Receiver<CheckOutcome>,
    /// Requests from the control socket.
    pub control: mpsc::Receiver<Envelope>,
    /// Wakes the checker for `bankswap check`.
    pub check_now: Arc<Notify>,
    /// The status as last computed, for the reporter and the control socket.
    pub report: watch::Sender<Option<StatusReport>>,
    /// Reloaded configs (SIGHUP), checked already.
    pub reloads: mpsc::Receiver<ReloadRequest>,
}
