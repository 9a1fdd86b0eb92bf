//! A payload process this agent image did not spawn: handed over by the
//! previous image of the same process (an in-place exec), so it is still our
//! child. It is waited for through a pidfd and reaped with `waitpid(pid)`;
//! tokio reaps only the children it spawned (by pid), so it never races us.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use rustix::process::{Pid, PidfdFlags, WaitOptions};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// Where the kernel lists processes.
const PROC: &str = "/proc";

/// The longest `/proc/PID/stat` read (the line is a few hundred bytes; the
/// command name in it is at most 16).
const MAX_STAT_BYTES: usize = 4096;

/// Why a handed-over pid cannot be adopted.
#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    /// The process is gone (reaped by someone else) or cannot be opened.
    #[error("pid {pid}: {source}")]
    Open {
        /// The pid handed over.
        pid: u32,
        /// The system's error.
        source: io::Error,
    },
    /// The process exists but is not the one handed over.
    #[error("pid {pid} is not the payload handed over: {why}")]
    NotOurs {
        /// The pid handed over.
        pid: u32,
        /// What differs (parent, process group or start time).
        why: String,
    },
}

/// What `/proc/PID/stat` says about a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// Its parent's pid (field 4).
    pub ppid: u32,
    /// Its process group (field 5).
    pub pgrp: u32,
    /// When it started, in clock ticks after boot (field 22): stable for the
    /// life of the process, so a reused pid is told apart.
    pub start_ticks: u64,
}

/// Reads `/proc/PID/stat`. The command name (field 2) may hold spaces and
/// parentheses, so the fields are counted after its last `)`.
pub fn proc_stat(pid: u32) -> io::Result<ProcStat> {
    let text = std::fs::read(format!("{PROC}/{pid}/stat"))?;
    let text = &text[..text.len().min(MAX_STAT_BYTES)];
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "unreadable /proc stat line");
    let close = text.iter().rposition(|&b| b == b')').ok_or_else(bad)?;
    let rest = std::str::from_utf8(&text[close + 1..]).map_err(|_| bad())?;
    // After the name: state(3) ppid(4) pgrp(5) … starttime(22).
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).copied().ok_or_else(bad);
    Ok(ProcStat {
        ppid: field(4)?.parse().map_err(|_| bad())?,
        pgrp: field(5)?.parse().map_err(|_| bad())?,
        start_ticks: field(22)?.parse().map_err(|_| bad())?,
    })
}

/// A handed-over child of this process.
#[derive(Debug)]
pub(super) struct AdoptedChild {
    /// Its pid.
    pid: Pid,
    /// Its pidfd, readable once it has exited.
    pidfd: AsyncFd<OwnedFd>,
    /// Its exit status, once reaped.
    status: Option<ExitStatus>,
}

impl AdoptedChild {
    /// Opens a pidfd (which pins the process), then checks it is ours and the
    /// one handed over: parent is this process, it leads its own process group,
    /// and it started at `start_ticks`. A zombie qualifies (it is reaped at the
    /// first `wait`). Must be called within a Tokio runtime.
    pub(super) fn adopt(pid: u32, start_ticks: u64) -> Result<AdoptedChild, AdoptError> {
        let open = |source: io::Error| AdoptError::Open { pid, source };
        let raw = i32::try_from(pid)
            .ok()
            .and_then(Pid::from_raw)
            .ok_or_else(|| open(io::Error::from(io::ErrorKind::InvalidInput)))?;
        let fd =
            rustix::process::pidfd_open(raw, PidfdFlags::NONBLOCK).map_err(|e| open(e.into()))?;
        let stat = proc_stat(pid).map_err(open)?;
        let not_ours = |why: String| AdoptError::NotOurs { pid, why };
        if stat.ppid != std::process::id() {
            return Err(not_ours(format!(
                "its parent is {}, not this agent ({})",
                stat.ppid,
                std::process::id()
            )));
        }
        if stat.pgrp != pid {
            return Err(not_ours(format!(
                "it is in process group {}, not its own",
                stat.pgrp
            )));
        }
        if stat.start_ticks != start_ticks {
            return Err(not_ours(format!(
                "it started at tick {}, the one handed over at {start_ticks}",
                stat.start_ticks
            )));
        }
        // SAFETY: an OwnedFd is open and keeps the same file description until
        // dropped, and `AsyncFd` owns it for its whole life.
        let pidfd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map_err(|e| open(e.into()))?;
        Ok(AdoptedChild {
            pid: raw,
            pidfd,
            status: None,
        })
    }

    /// Waits for the exit and reaps it. Cancel-safe: the reap happens in a step
    /// that does not await; after the exit it returns the status again.
    pub(super) async fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            if let Some(status) = self.status {
                return Ok(status);
            }
            if let Some(status) = self.try_wait()? {
                return Ok(status);
            }
            let mut ready = self.pidfd.readable().await?;
            if let Some(status) = reap(self.pid)? {
                self.status = Some(status);
                return Ok(status);
            }
            ready.clear_ready();
        }
    }

    /// Reaps the child if it has exited.
    pub(super) fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = reap(self.pid)?;
        }
        Ok(self.status)
    }
}

/// `waitpid(pid, WNOHANG)`: the exit status if `pid` has exited.
fn reap(pid: Pid) -> io::Result<Option<ExitStatus>> {
    match rustix::process::waitpid(Some(pid), WaitOptions::NOHANG) {
        Ok(Some((_, status))) => Ok(Some(ExitStatus::from_raw(status.as_raw()))),
        Ok(None) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use std::process::{Command, Stdio};
    use std::time::Duration;

    use super::*;

    fn child(script: &str) -> std::process::Child {
        use std::os::unix::process::CommandExt;
        Command::new("/bin/sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap()
    }

    #[test]
    fn proc_stat_reads_parent_group_and_start_time() {
        let mut c = child("exec sleep 30");
        let stat = proc_stat(c.id()).unwrap();
        assert_eq!(stat.ppid, std::process::id());
        assert_eq!(stat.pgrp, c.id());
        assert!(stat.start_ticks > 0);
        c.kill().unwrap();
        c.wait().unwrap();
    }

    #[tokio::test]
    async fn adopted_child_exit_status_is_reported() {
        let c = child("read _ < /dev/null; exit 7");
        let start = proc_stat(c.id()).unwrap().start_ticks;
        let mut adopted = AdoptedChild::adopt(c.id(), start).unwrap();
        std::mem::forget(c); // std must not reap it: the adopted side does
        let status = tokio::time::timeout(Duration::from_secs(10), adopted.wait())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(status.code(), Some(7));
        // Again after the exit: the same status, no second reap.
        assert_eq!(adopted.wait().await.unwrap().code(), Some(7));
    }

    #[tokio::test]
    async fn adopted_zombie_is_reaped_at_once() {
        let c = child("exit 42");
        let pid = c.id();
        let start = proc_stat(pid).unwrap().start_ticks;
        std::mem::forget(c);
        // Wait until it is a zombie (state Z), without reaping it.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
            if stat
                .rsplit(')')
                .next()
                .unwrap()
                .trim_start()
                .starts_with('Z')
            {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "no zombie");
            std::thread::yield_now();
        }
        let mut adopted = AdoptedChild::adopt(pid, start).unwrap();
        let status = tokio::time::timeout(Duration::from_secs(10), adopted.wait())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(status.code(), Some(42));
    }

    #[tokio::test]
    async fn wrong_start_time_or_foreign_process_is_refused() {
        let mut c = child("exec sleep 30");
        let start = proc_stat(c.id()).unwrap().start_ticks;
        let err = AdoptedChild::adopt(c.id(), start + 1).unwrap_err();
        assert!(err.to_string().contains("started at tick"), "{err}");
        // pid 1 is nobody's child here.
        let err = AdoptedChild::adopt(1, 0).unwrap_err();
        assert!(
            matches!(err, AdoptError::NotOurs { .. } | AdoptError::Open { .. }),
            "{err}"
        );
        c.kill().unwrap();
        c.wait().unwrap();
    }
}
