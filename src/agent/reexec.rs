//! The agent becoming another binary in place: same pid, so the payload
//! generations stay its children and keep serving. [`Agent::exec_in_place`]
//! is the one primitive (`bankswap agent reexec` and self-update both call
//! it); [`Agent::adopt`] is the new image's side; a self-update's grace,
//! commit and bounce back to the previous build live here too.
//!
//! **Invariant (PR_SET_PDEATHSIG):** a payload's death signal fires when the
//! *thread* that forked it ends, and `execve` ends every thread but the one
//! calling it. The core runs on the main thread (a `current_thread` runtime in
//! `agent::run`), forks every payload from it, and execs only from it; the
//! exec refuses unless the calling thread is the main thread and every live
//! generation was forked by it.
//!
//! This file holds what an exec is asked to do ([`ExecTarget`]); beside it:
//! [`exec`] (the refusals and the one `execve`), [`build_handover`] (the
//! state and fds handed over), [`adopt`] (the receiving image), [`agent_trial`]
//! (the new build's grace, self-probe, commit or bounce back), [`signals`]
//! (stop signals across the exec) and [`hooks`] (the agent slots' records).

mod adopt;
mod agent_trial;
mod build_handover;
mod exec;
pub mod hooks;
mod signals;

use std::path::PathBuf;
use std::time::Duration;

pub use self::adopt::{AdoptPlan, WorldFds, log_start};
pub use self::agent_trial::AgentTrial;
pub use self::signals::{stop_requested, unblock_stop_signals, watch_stop_signals};

/// What to exec, and why.
#[derive(Debug, Clone)]
pub struct ExecTarget {
    /// The executable.
    pub exe: PathBuf,
    /// Why.
    pub purpose: ExecPurpose,
}

/// Why the agent execs in place.
#[derive(Debug, Clone)]
pub enum ExecPurpose {
    /// `bankswap agent reexec`: the new image adopts and carries on.
    Reexec,
    /// A self-update: the new image must adopt and commit within `grace`, or
    /// exec `previous_exe` back.
    SelfUpdate {
        /// The attempt's nonce (the agent-slot marker's).
        attempt: String,
        /// How long the new image has to commit, counted from the exec.
        grace: Duration,
        /// The build to go back to.
        previous_exe: PathBuf,
    },
    /// Back to the previous build: the newer one failed, for `reason`.
    Bounce {
        /// The attempt's nonce.
        attempt: String,
        /// Why.
        reason: String,
    },
}

/// What the exec needs from the process's start: the argv and config path.
#[derive(Debug, Clone, Default)]
pub struct ExecContext {
    /// The `--config` file the agent runs with.
    pub config_path: PathBuf,
    /// The control socket's listening fd, when the agent serves one.
    pub control_fd: Option<std::os::fd::RawFd>,
}
