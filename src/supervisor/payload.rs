//! One running payload generation: started in its own process group, watched
//! through its notify socket, its watchdog and its exit, and stopped (or, as a
//! last resort, killed on drop) with its whole group. This file holds the
//! generation and its events; `start.rs` spawns it, `stop.rs` stops and
//! signals it, `handover.rs` carries it across an in-place exec of the agent.

mod handover;
mod start;
mod stop;

use std::collections::VecDeque;
use std::io;
use std::os::fd::OwnedFd;
use std::process::ExitStatus;
use std::time::Duration;

use rustix::process::Pid;
use tokio::process::Child;
use tokio::time::Instant;

pub use self::handover::{
    GenerationFds, GenerationState, MAX_PENDING_EVENTS, MAX_PENDING_TEXT, PendingEvent,
};
use super::PayloadEvent;
use super::adopt::AdoptedChild;
use super::notify::{self, Datagram, Message, NotifySocket};

/// One running payload generation.
#[derive(Debug)]
pub struct Payload {
    /// The release version, logged with everything about this generation.
    version: String,
    /// The main process's pid, which is also its process group id.
    pid: Pid,
    /// The main process.
    child: MainProcess,
    /// When the main process started (`/proc/PID/stat` field 22): its identity
    /// across an in-place exec of the agent.
    start_ticks: u64,
    /// The thread that forked it: its `PR_SET_PDEATHSIG` fires when that thread
    /// ends, so the agent may exec in place only from this very thread.
    forked_by: i32,
    /// Copies of the stdout and stderr read ends (close-on-exec), kept so they
    /// can be inherited by the next agent image: without them the payload
    /// would die of SIGPIPE at its next line after an in-place exec.
    kept_output: [Option<OwnedFd>; 2],
    /// This generation's `NOTIFY_SOCKET`.
    notify: NotifySocket,
    /// False once the notify socket failed; it is not read again.
    notify_works: bool,
    /// The watchdog interval, if one is configured.
    watchdog: Option<Duration>,
    /// When the watchdog fires: armed by the first `WATCHDOG=1`, pushed back
    /// by every later one, cleared when it fires or the payload exits.
    watchdog_deadline: Option<Instant>,
    /// Events from one datagram not yet returned by `next_event`.
    pending: VecDeque<PayloadEvent>,
    /// The main process's exit status, once it has been reaped.
    exited: Option<ExitStatus>,
    /// Time between SIGTERM and SIGKILL in `stop`.
    stop_timeout: Duration,
}

/// The main process: spawned by this agent image, or handed over by the
/// previous image of the same process.
#[derive(Debug)]
enum MainProcess {
    /// Spawned here; tokio reaps it.
    Spawned(Child),
    /// Handed over; reaped through its pidfd.
    Adopted(AdoptedChild),
}

impl MainProcess {
    /// Waits for the exit. Cancel-safe in both arms.
    async fn wait(&mut self) -> io::Result<ExitStatus> {
        match self {
            MainProcess::Spawned(child) => child.wait().await,
            MainProcess::Adopted(child) => child.wait().await,
        }
    }
}

/// What woke `next_event`.
enum Wake {
    /// A datagram (or an error) on the notify socket.
    Notify(io::Result<Datagram>),
    /// The main process exited.
    Exit(io::Result<ExitStatus>),
    /// The watchdog deadline passed.
    Watchdog,
}

impl Payload {
    /// The thread that forked the main process (the process's own pid for an
    /// adopted generation).
    pub fn forked_by(&self) -> i32 {
        self.forked_by
    }

    /// The main process's pid (also its process group id).
    pub fn pid(&self) -> u32 {
        self.pid.as_raw_nonzero().get().unsigned_abs()
    }

    /// The version this generation runs.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Cancel-safe; after Exited it returns Exited again.
    ///
    /// Events of one datagram come in order; a datagram queued before the exit
    /// is reported before `Exited`.
    pub async fn next_event(&mut self) -> PayloadEvent {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return event;
            }
            if let Some(status) = self.exited {
                return PayloadEvent::Exited(status);
            }
            let deadline = self.watchdog_deadline;
            // Every branch is cancel-safe, and all state changes happen below,
            // after the select, without awaiting.
            let wake = tokio::select! {
                biased;
                received = self.notify.recv(), if self.notify_works => Wake::Notify(received),
                status = self.child.wait() => Wake::Exit(status),
                () = sleep_until(deadline) => Wake::Watchdog,
            };
            match wake {
                Wake::Notify(Ok(datagram)) => self.on_datagram(&datagram),
                Wake::Notify(Err(err)) => {
                    tracing::warn!(version = %self.version, %err, "notify socket failed; readiness and watchdog messages are no longer read");
                    self.notify_works = false;
                }
                Wake::Exit(status) => self.on_exit(status),
                Wake::Watchdog => {
                    self.watchdog_deadline = None;
                    tracing::warn!(version = %self.version, pid = self.pid(), "watchdog expired");
                    return PayloadEvent::WatchdogExpired;
                }
            }
        }
    }

    /// Acts on a datagram from a process of the payload's group; drops any other.
    fn on_datagram(&mut self, datagram: &Datagram) {
        let Some(sender) = datagram.sender.filter(|&pid| self.is_in_group(pid)) else {
            tracing::debug!(version = %self.version, sender = ?datagram.sender, "dropping a notify datagram from outside the payload's process group");
            return;
        };
        for message in notify::parse(&datagram.text) {
            match message {
                Message::Ready => self.pending.push_back(PayloadEvent::Ready),
                Message::Status(text) => self.pending.push_back(PayloadEvent::Status(text)),
                Message::Stopping => self.pending.push_back(PayloadEvent::Stopping),
                Message::Watchdog => {
                    self.watchdog_deadline =
                        self.watchdog.map(|interval| Instant::now() + interval);
                }
                Message::WatchdogTrigger if self.watchdog.is_some() => {
                    self.watchdog_deadline = None;
                    self.pending.push_back(PayloadEvent::WatchdogExpired);
                }
                Message::WatchdogTrigger => {}
            }
        }
        tracing::trace!(version = %self.version, sender = sender.as_raw_pid(), "notify datagram");
    }

    /// The main process itself (even after it exited: it is not reaped yet
    /// while its datagram is read), or a process whose group is the payload's.
    /// A sender that exited before this check cannot be verified and is dropped.
    fn is_in_group(&self, sender: Pid) -> bool {
        sender == self.pid || rustix::process::getpgid(Some(sender)) == Ok(self.pid)
    }
}

/// A close-on-exec copy of `fd`, `None` when the system is out of fds.
fn keep(fd: std::os::fd::BorrowedFd<'_>) -> Option<OwnedFd> {
    rustix::io::fcntl_dupfd_cloexec(fd, 3).ok()
}

/// Sleeps until `deadline`, or forever when there is none.
pub async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
