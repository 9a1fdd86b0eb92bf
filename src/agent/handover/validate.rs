//! The checks of a parsed hand-over against the reader (pid, boot, nonce,
//! age, root, target executable), its bounds, and its fd set against the
//! environment.

use std::io;
use std::os::fd::RawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::{
    Handover, HandoverError, MAX_GENERATIONS, MAX_HANDOVER_AGE, MAX_TEXT, Purpose, Role, boot_id,
    millis, refuse,
};
use crate::agent::inherit::{HandoverEnv, MAX_HANDOVER_FDS};
use crate::supervisor::{MAX_LISTENERS, MAX_PENDING_EVENTS, MAX_PENDING_TEXT, mono};

/// What the reader checks a hand-over against: facts about itself.
#[derive(Debug, Clone)]
pub struct Reader {
    /// Its pid.
    pub pid: u32,
    /// This boot.
    pub boot_id: String,
    /// `CLOCK_MONOTONIC` now, ms.
    pub mono_now_ms: u64,
    /// Its config's root.
    pub root: PathBuf,
    /// Its `--config`.
    pub config: PathBuf,
    /// `(st_dev, st_ino)` of `/proc/self/exe`.
    pub exe: (u64, u64),
}

impl Reader {
    /// This process, running with `config` (whose root is `root`).
    pub fn this_process(root: &Path, config: &Path) -> io::Result<Reader> {
        let exe = std::fs::metadata("/proc/self/exe")?;
        Ok(Reader {
            pid: std::process::id(),
            boot_id: boot_id()?,
            mono_now_ms: mono::now_ms(),
            root: root.to_path_buf(),
            config: config.to_path_buf(),
            exe: (exe.dev(), exe.ino()),
        })
    }
}

/// Checks a parsed hand-over against the reader and the environment.
pub fn validate(h: &Handover, env: &HandoverEnv, me: &Reader) -> Result<(), HandoverError> {
    if h.pid != me.pid {
        return Err(refuse(
            "pid",
            format!("written by pid {}, read by {}", h.pid, me.pid),
        ));
    }
    if h.boot_id != me.boot_id {
        return Err(refuse("boot", "written in another boot"));
    }
    if h.nonce != env.nonce {
        return Err(refuse("nonce", "does not match BANKSWAP_HANDOVER_NONCE"));
    }
    let age = me.mono_now_ms.saturating_sub(h.written_at_mono_ms);
    if age > millis(MAX_HANDOVER_AGE) || h.written_at_mono_ms > me.mono_now_ms {
        return Err(refuse(
            "age",
            format!("written {age} ms ago (limit {MAX_HANDOVER_AGE:?})"),
        ));
    }
    if h.root != me.root || h.config != me.config {
        return Err(refuse(
            "root",
            format!(
                "written for root {} and config {}, this agent runs {} and {}",
                h.root.display(),
                h.config.display(),
                me.root.display(),
                me.config.display()
            ),
        ));
    }
    if (h.to.dev, h.to.ino) != me.exe {
        return Err(refuse(
            "target",
            format!(
                "written for {}, which this executable is not",
                h.to.exe.display()
            ),
        ));
    }
    check_bounds(h)?;
    check_fd_set(h, env)
}

/// Every string, list and count within its bound.
fn check_bounds(h: &Handover) -> Result<(), HandoverError> {
    let text = |what: &'static str, s: &str| {
        if s.len() > MAX_TEXT {
            Err(refuse(what, format!("longer than {MAX_TEXT} bytes")))
        } else {
            Ok(())
        }
    };
    for agent in [&h.from, &h.to] {
        text("version", &agent.version)?;
        text("path", &agent.exe.to_string_lossy())?;
    }
    text("path", &h.root.to_string_lossy())?;
    text("path", &h.config.to_string_lossy())?;
    match &h.purpose {
        Purpose::Reexec => {}
        Purpose::SelfUpdate {
            attempt,
            previous_exe,
            ..
        } => {
            text("attempt", attempt)?;
            text("path", &previous_exe.to_string_lossy())?;
        }
        Purpose::Bounce { attempt, reason } => {
            text("attempt", attempt)?;
            text("reason", reason)?;
        }
    }
    if h.listeners.len() > MAX_LISTENERS {
        return Err(refuse(
            "listeners",
            format!("{} is more than {MAX_LISTENERS}", h.listeners.len()),
        ));
    }
    if h.generations.len() > MAX_GENERATIONS {
        return Err(refuse(
            "generations",
            format!("{} is more than {MAX_GENERATIONS}", h.generations.len()),
        ));
    }
    let current = h
        .generations
        .iter()
        .filter(|g| g.role == Role::Current)
        .count();
    if current > 1 || h.generations.len() > current + 1 {
        return Err(refuse(
            "generations",
            "at most one serving and one draining",
        ));
    }
    if h.trial.is_none() && h.generations.iter().any(|g| g.role == Role::TrialDraining) {
        return Err(refuse(
            "generations",
            "a trial's draining generation without a trial",
        ));
    }
    for g in &h.generations {
        let s = &g.state;
        text("version", &s.version)?;
        text("notify", &s.notify_name)?;
        if semver::Version::parse(&s.version).is_err() {
            return Err(refuse(
                "version",
                format!("{:?} is not a version", s.version),
            ));
        }
        if s.pid <= 1 {
            return Err(refuse(
                "pid",
                format!("generation pid {} is not a payload", s.pid),
            ));
        }
        if s.pending.len() > MAX_PENDING_EVENTS {
            return Err(refuse("events", "too many queued events"));
        }
        for e in &s.pending {
            if let crate::supervisor::PendingEvent::Status(t) = e
                && t.len() > MAX_PENDING_TEXT
            {
                return Err(refuse("events", "a status text is too long"));
            }
        }
    }
    if let Some(t) = &h.trial {
        text("version", &t.version)?;
        text("reason", t.last_failure.as_deref().unwrap_or(""))?;
    }
    if let Some(streak) = &h.restarts.streak {
        text("reason", &streak.last_exit)?;
        text("time", &streak.since)?;
    }
    Ok(())
}

/// The fds named in the JSON are distinct, each listed with its identity,
/// and that list is exactly `BANKSWAP_HANDOVER_FDS`.
fn check_fd_set(h: &Handover, env: &HandoverEnv) -> Result<(), HandoverError> {
    let mut listed: Vec<RawFd> = h.fds.iter().map(|f| f.fd).collect();
    listed.sort_unstable();
    if listed.windows(2).any(|w| w[0] == w[1]) {
        return Err(refuse("fds", "an fd is listed twice"));
    }
    if listed.len() + 1 > MAX_HANDOVER_FDS {
        return Err(refuse("fds", "too many"));
    }
    if listed != env.fds {
        return Err(refuse(
            "fds",
            "the fds in the JSON differ from BANKSWAP_HANDOVER_FDS",
        ));
    }
    let mut used = vec![h.lock_fd, h.control_fd];
    used.extend(h.listeners.iter().map(|l| l.fd));
    for g in &h.generations {
        used.push(g.state.notify_fd);
        used.extend(g.state.stdout_fd);
        used.extend(g.state.stderr_fd);
    }
    used.sort_unstable();
    if used.windows(2).any(|w| w[0] == w[1]) {
        return Err(refuse("fds", "one fd has two roles"));
    }
    if used != listed {
        return Err(refuse(
            "fds",
            "the listed fds are not exactly the ones used",
        ));
    }
    Ok(())
}
