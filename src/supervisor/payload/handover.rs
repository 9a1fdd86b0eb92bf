//! A payload generation across an in-place exec of the agent: the state and
//! fds one image hands to the next (`GenerationState`, `GenerationFds`), and
//! `Payload::handover_state` / `Payload::adopt` on either side.

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

use bank_layout::BankId;
use rustix::process::Pid;
use serde::{Deserialize, Serialize};

use super::{MainProcess, Payload, keep};
use crate::supervisor::adopt::{AdoptError, AdoptedChild};
use crate::supervisor::notify::NotifySocket;
use crate::supervisor::{PayloadEvent, SupervisorError, mono, output};

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

impl Payload {
    /// Adopts a generation handed over by the previous agent image of this
    /// process: checks the pid is our child with the same start time, and
    /// takes over its notify socket and output pipes. Must be called within a
    /// Tokio runtime.
    pub fn adopt(state: &GenerationState, fds: GenerationFds) -> Result<Payload, SupervisorError> {
        let child = AdoptedChild::adopt(state.pid, state.start_ticks)?;
        let pid = i32::try_from(state.pid)
            .ok()
            .and_then(Pid::from_raw)
            .ok_or(SupervisorError::Adopt(AdoptError::NotOurs {
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
