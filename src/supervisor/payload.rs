//! One running payload generation: started in its own process group, watched
//! through its notify socket, its watchdog and its exit, and stopped (or, as a
//! last resort, killed on drop) with its whole group.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

use bank_layout::BankId;
use rustix::process::{Pid, Signal};
use serde::{Deserialize, Serialize};
use tokio::process::Child;
use tokio::time::Instant;

use super::adopt::{AdoptedChild, proc_stat};
use super::group::ProcessGroup;
use super::notify::{self, Datagram, Message, NotifySocket};
use super::{Listeners, PayloadEvent, PayloadSpec, SupervisorError, mono, output, spawn, user};

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

/// A running generation as handed from one agent image to the next: what the
/// new image needs to adopt it. Deadlines are absolute `CLOCK_MONOTONIC`
/// milliseconds ([`mono`]), so the time the exec took counts against them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerationState {
    /// The release version.
    pub version: String,
    /// Its bank.
    pub bank: BankId,
    /// The main process's pid (and process group id).
    pub pid: u32,
    /// Its start time in clock ticks after boot.
    pub start_ticks: u64,
    /// Its `NOTIFY_SOCKET` value (`@` and the abstract name).
    pub notify_name: String,
    /// The notify socket's fd.
    pub notify_fd: RawFd,
    /// Whether the notify socket still works.
    pub notify_works: bool,
    /// The stdout read end's fd, if the pipe is still open.
    pub stdout_fd: Option<RawFd>,
    /// The stderr read end's fd, if the pipe is still open.
    pub stderr_fd: Option<RawFd>,
    /// The watchdog interval in ms.
    pub watchdog_ms: Option<u64>,
    /// When the watchdog fires (absolute monotonic ms).
    pub watchdog_deadline_mono_ms: Option<u64>,
    /// SIGTERM to SIGKILL in `stop`, in ms.
    pub stop_timeout_ms: u64,
    /// Events read but not yet returned by `next_event`.
    pub pending: Vec<PendingEvent>,
}

/// A queued payload event, as handed over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum PendingEvent {
    /// `READY=1`.
    Ready,
    /// `STATUS=…` (cut to [`MAX_PENDING_TEXT`]).
    Status(String),
    /// `STOPPING=1`.
    Stopping,
    /// The watchdog expired.
    WatchdogExpired,
}

/// Queued events carried per generation in a hand-over; older ones are dropped.
pub const MAX_PENDING_EVENTS: usize = 8;

/// A carried `STATUS=` text is cut to this many bytes (it is informational).
pub const MAX_PENDING_TEXT: usize = 512;

/// The fds of a handed-over generation, taken over by the new image.
#[derive(Debug)]
pub struct GenerationFds {
    /// The notify socket.
    pub notify: OwnedFd,
    /// The stdout read end.
    pub stdout: Option<OwnedFd>,
    /// The stderr read end.
    pub stderr: Option<OwnedFd>,
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

    /// Adopts a generation handed over by the previous agent image of this
    /// process: checks the pid is our child with the same start time, and
    /// takes over its notify socket and output pipes. Must be called within a
    /// Tokio runtime.
    pub fn adopt(state: &GenerationState, fds: GenerationFds) -> Result<Payload, SupervisorError> {
        let child = AdoptedChild::adopt(state.pid, state.start_ticks)?;
        let pid = i32::try_from(state.pid)
            .ok()
            .and_then(Pid::from_raw)
            .ok_or(SupervisorError::Adopt(super::adopt::AdoptError::NotOurs {
                pid: state.pid,
                why: "not a pid".to_owned(),
            }))?;
        let notify = NotifySocket::from_inherited(fds.notify, state.notify_name.clone())?;
        let mut kept_output = [None, None];
        for ((slot, fd), stream) in kept_output
            .iter_mut()
            .zip([fds.stdout, fds.stderr])
            .zip(["stdout", "stderr"])
        {
            let Some(fd) = fd else { continue };
            let reader = keep(fd.as_fd())
                .and_then(|copy| tokio::net::unix::pipe::Receiver::from_owned_fd(copy).ok());
            output::forward(reader, &state.version, stream);
            *slot = Some(fd);
        }
        let pending = state
            .pending
            .iter()
            .map(|e| match e {
                PendingEvent::Ready => PayloadEvent::Ready,
                PendingEvent::Status(text) => PayloadEvent::Status(text.clone()),
                PendingEvent::Stopping => PayloadEvent::Stopping,
                PendingEvent::WatchdogExpired => PayloadEvent::WatchdogExpired,
            })
            .collect();
        tracing::info!(version = %state.version, bank = %state.bank, pid = state.pid, "adopted");
        Ok(Payload {
            version: state.version.clone(),
            pid,
            child: MainProcess::Adopted(child),
            start_ticks: state.start_ticks,
            // Its forking task was this process's main thread, which survived the exec.
            forked_by: pid_of_self(),
            kept_output,
            notify,
            notify_works: state.notify_works,
            watchdog: state.watchdog_ms.map(Duration::from_millis),
            watchdog_deadline: state.watchdog_deadline_mono_ms.map(mono::to_instant),
            pending,
            exited: None,
            stop_timeout: Duration::from_millis(state.stop_timeout_ms),
        })
    }

    /// This generation as the next agent image needs it, or `None` once its
    /// exit was seen (the core then no longer holds it as running).
    pub fn handover_state(&self, bank: BankId) -> Option<GenerationState> {
        if self.exited.is_some() {
            return None;
        }
        let pending = self
            .pending
            .iter()
            .filter_map(|e| match e {
                PayloadEvent::Ready => Some(PendingEvent::Ready),
                PayloadEvent::Status(text) => Some(PendingEvent::Status(cut(text))),
                PayloadEvent::Stopping => Some(PendingEvent::Stopping),
                PayloadEvent::WatchdogExpired => Some(PendingEvent::WatchdogExpired),
                PayloadEvent::Exited(_) => None,
            })
            .rev()
            .take(MAX_PENDING_EVENTS)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        Some(GenerationState {
            version: self.version.clone(),
            bank,
            pid: self.pid(),
            start_ticks: self.start_ticks,
            notify_name: self.notify.env_value().to_owned(),
            notify_fd: self.notify.raw_fd(),
            notify_works: self.notify_works,
            stdout_fd: self.kept_output[0].as_ref().map(AsRawFd::as_raw_fd),
            stderr_fd: self.kept_output[1].as_ref().map(AsRawFd::as_raw_fd),
            watchdog_ms: self.watchdog.map(millis),
            watchdog_deadline_mono_ms: self.watchdog_deadline.map(mono::from_instant),
            stop_timeout_ms: millis(self.stop_timeout),
            pending,
        })
    }

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

/// A close-on-exec copy of `fd`, `None` when the system is out of fds.
fn keep(fd: std::os::fd::BorrowedFd<'_>) -> Option<OwnedFd> {
    rustix::io::fcntl_dupfd_cloexec(fd, 3).ok()
}

/// The calling thread's id.
fn current_thread() -> i32 {
    // SAFETY: gettid has no preconditions and cannot fail.
    unsafe { libc::gettid() }
}

/// This process's pid, as the thread id of its main thread.
fn pid_of_self() -> i32 {
    rustix::process::getpid().as_raw_pid()
}

/// A duration in whole milliseconds, saturating.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `text` cut to [`MAX_PENDING_TEXT`] bytes at a character boundary.
fn cut(text: &str) -> String {
    let mut end = text.len().min(MAX_PENDING_TEXT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
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

/// Sleeps until `deadline`, or forever when there is none.
pub async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
