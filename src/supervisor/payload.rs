//! One running payload generation: started in its own process group, watched
//! through its notify socket, its watchdog and its exit, and stopped (or, as a
//! last resort, killed on drop) with its whole group.

use std::collections::VecDeque;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

use rustix::process::{Pid, Signal};
use tokio::process::Child;
use tokio::time::Instant;

use super::group::ProcessGroup;
use super::notify::{self, Datagram, Message, NotifySocket};
use super::{Listeners, PayloadEvent, PayloadSpec, SupervisorError, output, spawn, user};

/// How often `stop` checks whether the rest of the process group is gone
/// (each check may read `/proc`, so not much more often).
const GROUP_POLL_INTERVAL: Duration = Duration::from_millis(20);

/// One running payload generation.
#[derive(Debug)]
pub struct Payload {
    /// The release version, logged with everything about this generation.
    version: String,
    /// The main process's pid, which is also its process group id.
    pid: Pid,
    /// The main process.
    child: Child,
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
        output::forward(child.stdout.take(), &spec.version, "stdout");
        output::forward(child.stderr.take(), &spec.version, "stderr");
        let pid = group.as_raw_pid();
        tracing::info!(version = %spec.version, bank = %spec.bank, pid, "running");
        Ok(Payload {
            version: spec.version.clone(),
            pid: group,
            child,
            notify,
            notify_works: true,
            watchdog: spec.watchdog,
            watchdog_deadline: None,
            pending: VecDeque::new(),
            exited: None,
            stop_timeout: spec.stop_timeout,
        })
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

    /// Records the exit and kills what is left of the group: leftovers would
    /// keep the sockets and serve an old version next to the next generation.
    fn on_exit(&mut self, status: io::Result<ExitStatus>) {
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
    /// whole group. Tokio reaps the dropped child in the background.
    fn drop(&mut self) {
        if self.exited.is_none() {
            tracing::warn!(version = %self.version, pid = self.pid(), "dropped while running; killing its process group");
            self.signal_group(Signal::KILL);
        }
    }
}

/// Sleeps until `deadline`, or forever when there is none.
pub async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
