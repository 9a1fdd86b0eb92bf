//! The wire type: [`Handover`] and its parts, as the JSON both images agree
//! on (`deny_unknown_fields` throughout).

use std::os::fd::RawFd;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::agent::inherit::FdRef;
use crate::report::RestartsReport;
use crate::supervisor::{GenerationState, InheritedListener};

/// The supervisor's state, handed from one agent image to the next in the same process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Handover {
    /// [`HANDOVER_SCHEMA`] of the writer.
    pub schema: u32,
    /// The writer's pid: must be the reader's.
    pub pid: u32,
    /// The boot both run in.
    pub boot_id: String,
    /// Fresh per exec; equal to `BANKSWAP_HANDOVER_NONCE`.
    pub nonce: String,
    /// When it was written (absolute monotonic ms).
    pub written_at_mono_ms: u64,
    /// The data root; must be the reader's.
    pub root: PathBuf,
    /// The `--config` file both images run with.
    pub config: PathBuf,
    /// Who wrote it.
    pub from: AgentRef,
    /// Who must read it: `/proc/self/exe` of the reader must be this file.
    pub to: AgentRef,
    /// Why the exec happens.
    pub purpose: Purpose,
    /// Every inherited fd but the memfd, with its identity.
    pub fds: Vec<FdRef>,
    /// The fd holding the root's lock.
    pub lock_fd: RawFd,
    /// The control socket's listening fd.
    pub control_fd: RawFd,
    /// The `[[listen]]` sockets, in config order.
    pub listeners: Vec<InheritedListener>,
    /// The running generations (≤ [`MAX_GENERATIONS`]).
    pub generations: Vec<HandedGeneration>,
    /// With no generation running: when the next start is due (absolute monotonic ms).
    pub restart_at_mono_ms: Option<u64>,
    /// A payload trial in progress.
    pub trial: Option<TrialState>,
    /// Restart backoff.
    pub restarts: RestartsState,
    /// Whether the console answered the last check.
    pub console_up: Option<bool>,
    /// When the console was last asked (unix seconds).
    pub last_check_unix: Option<u64>,
    /// The notify socket counter, so names stay unique in this process.
    pub next_notify_generation: u64,
}

/// One agent build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentRef {
    /// Its version.
    pub version: String,
    /// The executable's path.
    pub exe: PathBuf,
    /// The executable's `st_dev`.
    pub dev: u64,
    /// The executable's `st_ino`.
    pub ino: u64,
}

/// Why an agent image execs another in place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum Purpose {
    /// `bankswap agent reexec`: nothing to prove, nothing to commit.
    Reexec,
    /// A self-update: the new image must adopt, serve its control socket and
    /// commit before the deadline, or exec `previous_exe` back.
    SelfUpdate {
        /// The attempt's nonce (the agent-slot marker's).
        attempt: String,
        /// The build to go back to.
        previous_exe: PathBuf,
        /// The end of the grace (absolute monotonic ms).
        deadline_mono_ms: u64,
    },
    /// An exec back to the previous build: the newer one failed.
    Bounce {
        /// The attempt's nonce.
        attempt: String,
        /// Why.
        reason: String,
    },
}

/// A running generation and its place in the core.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandedGeneration {
    /// Serving, or left draining.
    pub role: Role,
    /// The generation itself.
    pub state: GenerationState,
}

/// A generation's place in the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum Role {
    /// The active bank's generation.
    Current,
    /// Left by an admin rollback, stopped at `due_mono_ms` at the latest.
    Draining {
        /// When it is stopped.
        due_mono_ms: u64,
    },
    /// The previous version, serving until the trial's verdict.
    TrialDraining,
}

/// A payload trial in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrialState {
    /// The version on trial.
    pub version: String,
    /// Its sequence.
    pub sequence: u64,
    /// The end of its grace (absolute monotonic ms).
    pub deadline_mono_ms: u64,
    /// The next probe (absolute monotonic ms).
    pub next_probe_mono_ms: u64,
    /// It sent `READY=1`.
    pub ready: bool,
    /// Failures so far.
    pub failures: u32,
    /// The last failure.
    pub last_failure: Option<String>,
}

/// Restart backoff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestartsState {
    /// The next restart delay, ms.
    pub delay_ms: u64,
    /// When the current generation started (absolute monotonic ms).
    pub started_at_mono_ms: u64,
    /// The current failure streak.
    pub streak: Option<RestartsReport>,
}
