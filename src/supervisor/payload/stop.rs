//! Stopping a payload generation: SIGTERM, the stop timeout, SIGKILL to its
//! whole process group, reaping, and the kill on drop as a last resort.

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

use rustix::process::Signal;
use tokio::time::Instant;

use super::{MainProcess, Payload};
use crate::supervisor::group::ProcessGroup;

/// How often `stop` checks whether the rest of the process group is gone
/// (each check may read `/proc`, so not much more often).
const GROUP_POLL_INTERVAL: Duration = Duration::from_millis(20);

impl Payload {
    /// SIGTERM to the group, `stop_timeout`, then SIGKILL to the group; always reaps.
    ///
    /// Processes of the group that outlive the main process get what is left of
    /// `stop_timeout`, then SIGKILL.
    pub async fn stop(mut self) -> ExitStatus {
        let deadline = Instant::now() + self.stop_timeout;
        let status = match self.exited {
            Some(status) => status,
            None => {
                self.signal_group(Signal::TERM);
                let status = match tokio::time::timeout_at(deadline, self.child.wait()).await {
                    Ok(status) => status,
                    Err(_elapsed) => {
                        tracing::warn!(version = %self.version, pid = self.pid(), timeout = ?self.stop_timeout, "did not stop in time; killing its process group");
                        self.signal_group(Signal::KILL);
                        // SIGKILL cannot be ignored: this wait ends.
                        self.child.wait().await
                    }
                };
                self.reaped(status)
            }
        };
        if !self.group_gone_by(deadline).await {
            self.signal_group(Signal::KILL);
        }
        tracing::info!(version = %self.version, pid = self.pid(), %status, "stopped");
        status
    }

    /// Records the exit and kills what is left of the group: leftovers would
    /// keep the sockets and serve an old version next to the next generation.
    pub(super) fn on_exit(&mut self, status: io::Result<ExitStatus>) {
        let status = self.reaped(status);
        self.signal_group(Signal::KILL);
        tracing::info!(version = %self.version, pid = self.pid(), %status, "exited");
    }

    /// Stores the exit status; a failed wait is recorded as a SIGKILL after
    /// making it one, so the caller never sees a process that might still run.
    fn reaped(&mut self, status: io::Result<ExitStatus>) -> ExitStatus {
        let status = status.unwrap_or_else(|err| {
            tracing::error!(version = %self.version, pid = self.pid(), %err, "cannot wait for the payload; killing its process group");
            self.signal_group(Signal::KILL);
            ExitStatus::from_raw(libc::SIGKILL)
        });
        self.watchdog_deadline = None;
        self.exited = Some(status);
        status
    }

    /// Sends `signal` to the payload's process group.
    fn signal_group(&self, signal: Signal) {
        if let Err(err) = ProcessGroup(self.pid).signal(signal) {
            tracing::warn!(version = %self.version, pid = self.pid(), %err, ?signal, "cannot signal the process group");
        }
    }

    /// Waits until no live process of the group is left, or `deadline`.
    async fn group_gone_by(&self, deadline: Instant) -> bool {
        loop {
            if !ProcessGroup(self.pid).has_live_members() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(GROUP_POLL_INTERVAL).await;
        }
    }
}

impl Drop for Payload {
    /// The last resort when a payload is dropped without `stop`: SIGKILL to the
    /// whole group. Tokio reaps a dropped spawned child in the background; an
    /// adopted one is reaped here if it is already gone (else at the next
    /// agent start, as a zombie costs nothing but a pid).
    fn drop(&mut self) {
        if self.exited.is_none() {
            tracing::warn!(version = %self.version, pid = self.pid(), "dropped while running; killing its process group");
            self.signal_group(Signal::KILL);
        }
        if let MainProcess::Adopted(child) = &mut self.child {
            let _ = child.try_wait();
        }
    }
}
