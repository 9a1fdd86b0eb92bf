//! The receiving side: the hand-over this process was given read from the
//! environment, validated, and its fds taken over — or, when refused, every
//! named fd closed and the leftover payload groups killed before a cold start.

use std::os::fd::{OwnedFd, RawFd};
use std::path::Path;

use super::memfd::read_json;
use super::validate::{Reader, validate};
use super::{HandedGeneration, Handover, HandoverError, refuse};
use crate::agent::inherit::{self, HandoverEnv};
use crate::supervisor::{GenerationFds, InheritedListener};

/// A validated hand-over and the fds it named, now owned (close-on-exec again).
#[derive(Debug)]
pub struct Received {
    /// The state.
    pub handover: Handover,
    /// Why a newer build handed back (`BANKSWAP_HANDOVER_BOUNCE`), on a bounce.
    pub bounce: Option<String>,
    /// The root's lock.
    pub lock: OwnedFd,
    /// The control socket.
    pub control: OwnedFd,
    /// The `[[listen]]` sockets.
    pub listeners: Vec<(InheritedListener, OwnedFd)>,
    /// The generations and their fds.
    pub generations: Vec<(HandedGeneration, GenerationFds)>,
}

/// Reads the hand-over this process was given, if any. `Ok(None)`: a cold
/// start (no hand-over, or variables of another process). An error says why
/// the hand-over was refused; [`abandon`] then cleans up before a cold start.
/// Runs before the async runtime exists and before anything opens an fd.
pub fn take_from_env(root: &Path, config: &Path) -> Result<Option<Received>, HandoverError> {
    let env = match inherit::read_env(|k| std::env::var(k).ok(), std::process::id())? {
        inherit::Env::None => return Ok(None),
        inherit::Env::OtherPid(pid) => {
            tracing::debug!(pid, "ignoring the hand-over variables of another process");
            return Ok(None);
        }
        inherit::Env::Ours(env) => env,
    };
    let result = receive(&env, root, config);
    // The memfd is read (or refused): close it, whatever happened.
    close_raw(env.state_fd);
    result.map(Some)
}

fn receive(env: &HandoverEnv, root: &Path, config: &Path) -> Result<Received, HandoverError> {
    // SAFETY: F_GETFD only tells whether the number is open.
    if unsafe { libc::fcntl(env.state_fd, libc::F_GETFD) } < 0 {
        return Err(refuse(
            "state fd",
            format!("fd {} is not open", env.state_fd),
        ));
    }
    // SAFETY: an open fd named by our own hand-over environment, owned by
    // nothing else in this image; `try_clone` makes the copy we read from.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(env.state_fd) };
    let state = borrowed
        .try_clone_to_owned()
        .map_err(|e| refuse("state fd", e.to_string()))?;
    let handover = read_json(&state)?;
    let me = Reader::this_process(root, config).map_err(|e| refuse("reader", e.to_string()))?;
    validate(&handover, env, &me)?;
    let by_fd = |fd: RawFd| {
        handover
            .fds
            .iter()
            .find(|f| f.fd == fd)
            .copied()
            .ok_or_else(|| refuse("fds", format!("fd {fd} has no identity")))
    };
    let take = |fd: RawFd| -> Result<OwnedFd, HandoverError> {
        inherit::take_fd(&by_fd(fd)?).map_err(|e| refuse("fds", e.0))
    };
    let lock = take(handover.lock_fd)?;
    let control = take(handover.control_fd)?;
    let mut listeners = Vec::new();
    for l in &handover.listeners {
        listeners.push((l.clone(), take(l.fd)?));
    }
    let mut generations = Vec::new();
    for g in &handover.generations {
        let fds = GenerationFds {
            notify: take(g.state.notify_fd)?,
            stdout: g.state.stdout_fd.map(take).transpose()?,
            stderr: g.state.stderr_fd.map(take).transpose()?,
        };
        generations.push((g.clone(), fds));
    }
    check_roles(&lock, &control)?;
    Ok(Received {
        bounce: env.bounce.clone(),
        handover,
        lock,
        control,
        listeners,
        generations,
    })
}

/// The lock is a regular file; the control socket a listening Unix stream socket.
fn check_roles(lock: &OwnedFd, control: &OwnedFd) -> Result<(), HandoverError> {
    let stat = rustix::fs::fstat(lock).map_err(|e| refuse("lock", e.to_string()))?;
    if stat.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(refuse("lock", "not a regular file"));
    }
    let listening = rustix::net::sockopt::socket_acceptconn(control).unwrap_or(false);
    let unix = rustix::net::sockopt::socket_domain(control)
        .is_ok_and(|d| d == rustix::net::AddressFamily::UNIX);
    if !listening || !unix {
        return Err(refuse("control", "not a listening Unix socket"));
    }
    Ok(())
}

/// After a refused hand-over, before a cold start: closes every fd the
/// environment named (an inherited lock would otherwise block our own fresh
/// open of the root), and kills and reaps every child process group left by
/// the previous image (which we could not adopt), so no orphaned generation
/// serves an old version next to the one the cold start runs.
pub fn abandon() {
    for fd in inherit::named_fds(|k| std::env::var(k).ok(), std::process::id()) {
        close_raw(fd);
    }
    kill_leftover_children();
}

/// Closes an fd number named by our own hand-over environment (open or not).
fn close_raw(fd: RawFd) {
    // SAFETY: only numbers named by this process's hand-over environment
    // reach here, before anything in this image opened an fd of its own.
    unsafe {
        libc::close(fd);
    }
}

/// Kills the process groups led by children of this process, and reaps them.
fn kill_leftover_children() {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = crate::supervisor::proc_stat(pid) else {
            continue;
        };
        if stat.ppid != me || stat.pgrp != pid {
            continue;
        }
        let Some(group) = i32::try_from(pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        else {
            continue;
        };
        tracing::warn!(pid, "killing a payload group the refused hand-over left");
        let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        let _ = rustix::process::waitpid(Some(group), rustix::process::WaitOptions::empty());
    }
}
