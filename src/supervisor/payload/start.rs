//! Starting a payload generation: the spawn in its own process group, with its
//! notify socket, sockets, user and output forwarding.

use std::collections::VecDeque;
use std::io;
use std::os::fd::AsFd;

use rustix::process::Pid;

use super::{MainProcess, Payload, keep};
use crate::supervisor::adopt::proc_stat;
use crate::supervisor::notify::NotifySocket;
use crate::supervisor::{Listeners, PayloadSpec, SupervisorError, output, spawn, user};

impl Payload {
    /// Spawns in its own process group with PR_SET_PDEATHSIG, env BANKSWAP_VERSION/BANK/BANK_DIR,
    /// LISTEN_FDS/LISTEN_FDNAMES/LISTEN_PID (fds from 3) and NOTIFY_SOCKET; pipes stdout/stderr
    /// into tracing with the version as a field; logs `running version=<v> bank=<BankN> pid=<pid>`.
    ///
    /// Must be called within a Tokio runtime, from a worker thread (see `PR_SET_PDEATHSIG`
    /// in `spawn.rs`).
    pub fn start(spec: &PayloadSpec, listeners: &Listeners) -> Result<Payload, SupervisorError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(SupervisorError::NoRuntime {
                command: spec.command.clone(),
            });
        }
        let identity = match &spec.user {
            Some(name) => user::resolve(name)?,
            None => None,
        };
        let notify = NotifySocket::bind()?;
        let mut command = spawn::command(spec, listeners, notify.env_value(), identity)?;
        let spawn_error = |source| SupervisorError::Spawn {
            command: spec.command.clone(),
            source,
        };
        let mut child = command.spawn().map_err(spawn_error)?;
        // A child that has not been waited for always has a pid, and pids fit an i32.
        let raw_pid = child.id();
        let Some(group) = raw_pid.and_then(|id| Pid::from_raw(i32::try_from(id).ok()?)) else {
            return Err(spawn_error(io::Error::other("the new process has no pid")));
        };
        let kept_output = [
            child.stdout.as_ref().and_then(|s| keep(s.as_fd())),
            child.stderr.as_ref().and_then(|s| keep(s.as_fd())),
        ];
        output::forward(child.stdout.take(), &spec.version, "stdout");
        output::forward(child.stderr.take(), &spec.version, "stderr");
        let pid = group.as_raw_pid();
        // Read at once: the process cannot be reaped (so its pid reused) before we wait.
        let start_ticks = proc_stat(pid.unsigned_abs()).map_or(0, |s| s.start_ticks);
        tracing::info!(version = %spec.version, bank = %spec.bank, pid, "running");
        Ok(Payload {
            version: spec.version.clone(),
            pid: group,
            child: MainProcess::Spawned(child),
            start_ticks,
            forked_by: current_thread(),
            kept_output,
            notify,
            notify_works: true,
            watchdog: spec.watchdog,
            watchdog_deadline: None,
            pending: VecDeque::new(),
            exited: None,
            stop_timeout: spec.stop_timeout,
        })
    }
}

/// The calling thread's id.
fn current_thread() -> i32 {
    // SAFETY: gettid has no preconditions and cannot fail.
    unsafe { libc::gettid() }
}
