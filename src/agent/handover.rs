//! The hand-over: the supervisor's state, passed from one agent image to the
//! next in the same process by an in-place exec (`bankswap agent reexec`, and
//! self-update). Versioned, bounded (≤ [`MAX_HANDOVER_BYTES`]),
//! `deny_unknown_fields` JSON in a sealed memfd; every inherited fd is named
//! in it by `(fd, dev, ino)` (`inherit.rs`). The reader trusts nothing: any
//! check that fails is one `error: hand-over: <what>: <why>` line and a cold
//! start that leaves the banks alone.

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::fs::{MemfdFlags, SealFlags};
use serde::{Deserialize, Serialize};

use crate::agent::inherit::{self, EnvError, FdRef, HandoverEnv, MAX_HANDOVER_FDS};
use crate::report::RestartsReport;
use crate::supervisor::{
    GenerationFds, GenerationState, InheritedListener, MAX_LISTENERS, MAX_PENDING_EVENTS,
    MAX_PENDING_TEXT, mono,
};

/// The hand-over format this build writes.
pub const HANDOVER_SCHEMA: u32 = 1;
/// Schemas this build reads.
pub const HANDOVER_SCHEMAS: &[u32] = &[1];
/// Largest hand-over read or written. The worst case is about 53 KiB: 64
/// listeners × (255-byte name + 108-byte path + fields), a few 4 KiB paths,
/// two generations × [`MAX_PENDING_EVENTS`] × [`MAX_PENDING_TEXT`].
pub const MAX_HANDOVER_BYTES: usize = 64 * 1024;
/// A hand-over older than this (`CLOCK_MONOTONIC`) is refused: exec and start take well under a second.
pub const MAX_HANDOVER_AGE: Duration = Duration::from_secs(30);
/// Generations handed over: the serving one and one left draining.
pub const MAX_GENERATIONS: usize = 2;
/// Longest path, version, name or reason in a hand-over.
const MAX_TEXT: usize = 4096;
/// Where the kernel names this boot: `CLOCK_MONOTONIC` values mean something only within it.
const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

/// The supervisor's state, handed from one agent image to the next in the same process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Handover {
    /// [`HANDOVER_SCHEMA`] of the writer.
    pub schema: u32,
    /// The writer's pid: must be the reader's.
    pub pid: u32,
    /// The boot both run in.
    pub boot_id: String,
    /// Fresh per exec; equal to `BANKSWAP_HANDOVER_NONCE`.
    pub nonce: String,
    /// When it was written (absolute monotonic ms).
    pub written_at_mono_ms: u64,
    /// The data root; must be the reader's.
    pub root: PathBuf,
    /// The `--config` file both images run with.
    pub config: PathBuf,
    /// Who wrote it.
    pub from: AgentRef,
    /// Who must read it: `/proc/self/exe` of the reader must be this file.
    pub to: AgentRef,
    /// Why the exec happens.
    pub purpose: Purpose,
    /// Every inherited fd but the memfd, with its identity.
    pub fds: Vec<FdRef>,
    /// The fd holding the root's lock.
    pub lock_fd: RawFd,
    /// The control socket's listening fd.
    pub control_fd: RawFd,
    /// The `[[listen]]` sockets, in config order.
    pub listeners: Vec<InheritedListener>,
    /// The running generations (≤ [`MAX_GENERATIONS`]).
    pub generations: Vec<HandedGeneration>,
    /// With no generation running: when the next start is due (absolute monotonic ms).
    pub restart_at_mono_ms: Option<u64>,
    /// A payload trial in progress.
    pub trial: Option<TrialState>,
    /// Restart backoff.
    pub restarts: RestartsState,
    /// Whether the console answered the last check.
    pub console_up: Option<bool>,
    /// When the console was last asked (unix seconds).
    pub last_check_unix: Option<u64>,
    /// The notify socket counter, so names stay unique in this process.
    pub next_notify_generation: u64,
}

/// One agent build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentRef {
    /// Its version.
    pub version: String,
    /// The executable's path.
    pub exe: PathBuf,
    /// The executable's `st_dev`.
    pub dev: u64,
    /// The executable's `st_ino`.
    pub ino: u64,
}

/// Why an agent image execs another in place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum Purpose {
    /// `bankswap agent reexec`: nothing to prove, nothing to commit.
    Reexec,
    /// A self-update: the new image must adopt, serve its control socket and
    /// commit before the deadline, or exec `previous_exe` back.
    SelfUpdate {
        /// The attempt's nonce (the agent-slot marker's).
        attempt: String,
        /// The build to go back to.
        previous_exe: PathBuf,
        /// The end of the grace (absolute monotonic ms).
        deadline_mono_ms: u64,
    },
    /// An exec back to the previous build: the newer one failed.
    Bounce {
        /// The attempt's nonce.
        attempt: String,
        /// Why.
        reason: String,
    },
}

/// A running generation and its place in the core.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandedGeneration {
    /// Serving, or left draining.
    pub role: Role,
    /// The generation itself.
    pub state: GenerationState,
}

/// A generation's place in the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum Role {
    /// The active bank's generation.
    Current,
    /// Left by an admin rollback, stopped at `due_mono_ms` at the latest.
    Draining {
        /// When it is stopped.
        due_mono_ms: u64,
    },
    /// The previous version, serving until the trial's verdict.
    TrialDraining,
}

/// A payload trial in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrialState {
    /// The version on trial.
    pub version: String,
    /// Its sequence.
    pub sequence: u64,
    /// The end of its grace (absolute monotonic ms).
    pub deadline_mono_ms: u64,
    /// The next probe (absolute monotonic ms).
    pub next_probe_mono_ms: u64,
    /// It sent `READY=1`.
    pub ready: bool,
    /// Failures so far.
    pub failures: u32,
    /// The last failure.
    pub last_failure: Option<String>,
}

/// Restart backoff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestartsState {
    /// The next restart delay, ms.
    pub delay_ms: u64,
    /// When the current generation started (absolute monotonic ms).
    pub started_at_mono_ms: u64,
    /// The current failure streak.
    pub streak: Option<RestartsReport>,
}

/// Why a hand-over was refused.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {why}")]
pub struct HandoverError {
    /// What was being read.
    pub what: &'static str,
    /// What is wrong.
    pub why: String,
}

fn refuse(what: &'static str, why: impl Into<String>) -> HandoverError {
    HandoverError {
        what,
        why: why.into(),
    }
}

impl From<EnvError> for HandoverError {
    fn from(e: EnvError) -> HandoverError {
        refuse("environment", e.0)
    }
}

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

/// This boot's id.
pub fn boot_id() -> io::Result<String> {
    Ok(std::fs::read_to_string(BOOT_ID)?.trim().to_owned())
}

/// A fresh nonce: 32 hex digits.
pub fn new_nonce() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Serializes `handover` into a sealed memfd (close-on-exec until the exec
/// clears it), refusing one larger than [`MAX_HANDOVER_BYTES`].
pub fn write_memfd(handover: &Handover) -> Result<OwnedFd, HandoverError> {
    let bytes = serde_json::to_vec(handover).map_err(|e| refuse("writing", e.to_string()))?;
    if bytes.len() > MAX_HANDOVER_BYTES {
        return Err(refuse(
            "writing",
            format!(
                "{} bytes is over the limit of {MAX_HANDOVER_BYTES}",
                bytes.len()
            ),
        ));
    }
    let io_err = |e: io::Error| refuse("memfd", e.to_string());
    let fd = rustix::fs::memfd_create(
        "bankswap-handover",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )
    .map_err(|e| io_err(e.into()))?;
    let mut file = std::fs::File::from(fd);
    file.write_all(&bytes).map_err(io_err)?;
    let fd = OwnedFd::from(file);
    rustix::fs::fcntl_add_seals(
        &fd,
        SealFlags::WRITE | SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL,
    )
    .map_err(|e| io_err(e.into()))?;
    Ok(fd)
}

/// Reads and parses the hand-over JSON from `fd` (bounded; the shape only).
pub fn read_json(fd: &OwnedFd) -> Result<Handover, HandoverError> {
    let stat = rustix::fs::fstat(fd).map_err(|e| refuse("state fd", e.to_string()))?;
    if stat.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(refuse("state fd", "not a regular file or memfd"));
    }
    let size = usize::try_from(stat.st_size).unwrap_or(usize::MAX);
    if size > MAX_HANDOVER_BYTES {
        return Err(refuse(
            "state fd",
            format!("{size} bytes is over the limit of {MAX_HANDOVER_BYTES}"),
        ));
    }
    let copy = fd
        .try_clone()
        .map_err(|e| refuse("state fd", e.to_string()))?;
    let mut file = std::fs::File::from(copy);
    file.seek(SeekFrom::Start(0))
        .map_err(|e| refuse("state fd", e.to_string()))?;
    let mut bytes = Vec::new();
    file.take(MAX_HANDOVER_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| refuse("state fd", e.to_string()))?;
    if bytes.len() > MAX_HANDOVER_BYTES {
        return Err(refuse("state fd", "grew past the limit while read"));
    }
    parse(&bytes)
}

/// Parses hand-over JSON: unknown fields and unknown schemas are refused.
pub fn parse(bytes: &[u8]) -> Result<Handover, HandoverError> {
    #[derive(Deserialize)]
    struct SchemaOnly {
        schema: u32,
    }
    // The schema first, so an unknown one is named as such rather than as a field error.
    let schema = serde_json::from_slice::<SchemaOnly>(bytes)
        .map_err(|e| refuse("JSON", e.to_string()))?
        .schema;
    if !HANDOVER_SCHEMAS.contains(&schema) {
        return Err(refuse(
            "schema",
            format!("{schema} is not one this build reads ({HANDOVER_SCHEMAS:?})"),
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| refuse("JSON", e.to_string()))
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

/// A duration in whole milliseconds, saturating.
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The fds of `h` (for clearing `FD_CLOEXEC`), borrowed from their owners.
pub fn identities(fds: &[std::os::fd::BorrowedFd<'_>]) -> io::Result<Vec<FdRef>> {
    fds.iter().map(|fd| FdRef::of(fd.as_fd())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::{BoundState, PendingEvent};
    use bank_layout::BankId;

    const NONCE: &str = "00112233445566778899aabbccddeeff";

    fn sample() -> Handover {
        let fd = |fd| FdRef {
            fd,
            dev: 1,
            ino: fd as u64,
        };
        Handover {
            schema: HANDOVER_SCHEMA,
            pid: 4242,
            boot_id: "boot".into(),
            nonce: NONCE.into(),
            written_at_mono_ms: 100_000,
            root: "/var/lib/bankswap".into(),
            config: "/etc/bankswap/agent.toml".into(),
            from: AgentRef {
                version: "0.1.0".into(),
                exe: "/usr/bin/bankswap".into(),
                dev: 1,
                ino: 2,
            },
            to: AgentRef {
                version: "0.1.0".into(),
                exe: "/var/lib/bankswap/agent/Slot1/bankswap".into(),
                dev: 1,
                ino: 3,
            },
            purpose: Purpose::Reexec,
            fds: vec![fd(3), fd(4), fd(5), fd(6), fd(7), fd(8)],
            lock_fd: 3,
            control_fd: 4,
            listeners: vec![InheritedListener {
                name: "http".into(),
                fd: 5,
                bound: BoundState::Tcp {
                    addr: "127.0.0.1:8080".parse().unwrap(),
                },
            }],
            generations: vec![HandedGeneration {
                role: Role::Current,
                state: GenerationState {
                    version: "1.0.0".into(),
                    bank: BankId::Bank1,
                    pid: 4300,
                    start_ticks: 12345,
                    notify_name: "@bankswap-notify-4242-0-00".into(),
                    notify_fd: 6,
                    notify_works: true,
                    stdout_fd: Some(7),
                    stderr_fd: Some(8),
                    watchdog_ms: None,
                    watchdog_deadline_mono_ms: None,
                    stop_timeout_ms: 10_000,
                    pending: vec![PendingEvent::Status("warming up".into())],
                },
            }],
            restart_at_mono_ms: None,
            trial: None,
            restarts: RestartsState {
                delay_ms: 100,
                started_at_mono_ms: 9_000,
                streak: None,
            },
            console_up: Some(true),
            last_check_unix: Some(1_800_000_000),
            next_notify_generation: 1,
        }
    }

    fn env_for(h: &Handover) -> HandoverEnv {
        let mut fds: Vec<RawFd> = h.fds.iter().map(|f| f.fd).collect();
        fds.sort_unstable();
        HandoverEnv {
            state_fd: 9,
            fds,
            nonce: NONCE.into(),
            bounce: None,
        }
    }

    fn reader() -> Reader {
        Reader {
            pid: 4242,
            boot_id: "boot".into(),
            mono_now_ms: 100_500,
            root: "/var/lib/bankswap".into(),
            config: "/etc/bankswap/agent.toml".into(),
            exe: (1, 3),
        }
    }

    fn refused(h: &Handover) -> String {
        validate(h, &env_for(h), &reader()).unwrap_err().to_string()
    }

    #[test]
    fn round_trips_through_a_sealed_memfd() {
        let h = sample();
        let fd = write_memfd(&h).unwrap();
        assert_eq!(read_json(&fd).unwrap(), h);
        validate(&h, &env_for(&h), &reader()).unwrap();
        // Sealed: it cannot be changed any more.
        let mut file = std::fs::File::from(fd);
        assert!(file.write_all(b"x").is_err());
    }

    #[test]
    fn refuses_oversized() {
        let mut h = sample();
        h.generations[0].state.notify_name = "x".repeat(MAX_HANDOVER_BYTES);
        let err = write_memfd(&h).unwrap_err().to_string();
        assert!(err.contains("over the limit"), "{err}");

        let fd = rustix::fs::memfd_create("big", MemfdFlags::CLOEXEC).unwrap();
        let mut file = std::fs::File::from(fd);
        file.write_all(&vec![b' '; MAX_HANDOVER_BYTES + 1]).unwrap();
        let err = read_json(&OwnedFd::from(file)).unwrap_err().to_string();
        assert!(err.contains("over the limit"), "{err}");
    }

    #[test]
    fn refuses_garbled_json_unknown_schemas_and_unknown_fields() {
        let err = parse(b"{\"schema\": 1, \"pid\": ").unwrap_err().to_string();
        assert!(err.starts_with("JSON: "), "{err}");
        let err = parse(b"not json").unwrap_err().to_string();
        assert!(err.starts_with("JSON: "), "{err}");
        let err = parse(b"{\"schema\": 2}").unwrap_err().to_string();
        assert!(
            err.starts_with("schema: 2 is not one this build reads"),
            "{err}"
        );

        let mut value = serde_json::to_value(sample()).unwrap();
        value["surprise"] = serde_json::json!(true);
        let err = parse(value.to_string().as_bytes()).unwrap_err().to_string();
        assert!(err.contains("unknown field `surprise`"), "{err}");
        let mut value = serde_json::to_value(sample()).unwrap();
        value["generations"][0]["state"]["extra"] = serde_json::json!(1);
        let err = parse(value.to_string().as_bytes()).unwrap_err().to_string();
        assert!(err.contains("unknown field `extra`"), "{err}");
    }

    #[test]
    fn refuses_other_pid_boot_nonce_root_or_target() {
        let mut h = sample();
        h.pid = 1;
        assert!(refused(&h).starts_with("pid: written by pid 1"));
        let mut h = sample();
        h.boot_id = "other".into();
        assert!(refused(&h).starts_with("boot:"));
        let mut h = sample();
        h.nonce = "ffffffffffffffffffffffffffffffff".into();
        assert!(refused(&h).starts_with("nonce:"));
        let mut h = sample();
        h.root = "/elsewhere".into();
        assert!(refused(&h).starts_with("root:"));
        let mut h = sample();
        h.to.ino = 99;
        assert!(refused(&h).starts_with("target:"));
    }

    #[test]
    fn refuses_stale_or_future_hand_overs() {
        let mut h = sample();
        h.written_at_mono_ms = 100_500 - millis(MAX_HANDOVER_AGE) - 1;
        assert!(refused(&h).starts_with("age:"));
        let mut h = sample();
        h.written_at_mono_ms = 200_000;
        assert!(refused(&h).starts_with("age:"));
    }

    #[test]
    fn the_fd_set_must_match_the_environment_and_the_roles() {
        let h = sample();
        let mut env = env_for(&h);
        env.fds.push(42);
        let err = validate(&h, &env, &reader()).unwrap_err().to_string();
        assert!(err.contains("differ from BANKSWAP_HANDOVER_FDS"), "{err}");

        let mut h = sample();
        h.control_fd = 3; // the lock's
        assert!(refused(&h).contains("two roles"));
        let mut h = sample();
        h.generations[0].state.stderr_fd = None; // fd 8 listed but unused
        assert!(refused(&h).contains("not exactly the ones used"));
        let mut h = sample();
        h.fds.push(h.fds[0]);
        assert!(refused(&h).contains("listed twice"));
    }

    #[test]
    fn refuses_out_of_bounds_contents() {
        let mut h = sample();
        h.generations.push(h.generations[0].clone());
        assert!(refused(&h).starts_with("generations:"));
        let mut h = sample();
        h.generations[0].role = Role::TrialDraining;
        assert!(refused(&h).contains("without a trial"));
        let mut h = sample();
        h.generations[0].state.version = "not-a-version".into();
        assert!(refused(&h).starts_with("version:"));
        let mut h = sample();
        h.generations[0].state.pid = 1;
        assert!(refused(&h).starts_with("pid:"));
        let mut h = sample();
        h.generations[0].state.pending = vec![PendingEvent::Ready; MAX_PENDING_EVENTS + 1];
        assert!(refused(&h).starts_with("events:"));
        let mut h = sample();
        h.from.version = "9".repeat(MAX_TEXT + 1);
        assert!(refused(&h).starts_with("version:"));
        let mut h = sample();
        h.purpose = Purpose::Bounce {
            attempt: NONCE.into(),
            reason: "r".repeat(MAX_TEXT + 1),
        };
        assert!(refused(&h).starts_with("reason:"));
    }
}
