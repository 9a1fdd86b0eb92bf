//! The fds an agent image hands to the next one of the same process, and the
//! environment that says where they are (like systemd's `LISTEN_FDS` /
//! `LISTEN_PID`): each fd is named by `(fd, dev, ino)` and checked again after
//! the exec; exactly the listed fds lose `FD_CLOEXEC` for the exec, and get it
//! back at once in the new image.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use rustix::io::FdFlags;
use serde::{Deserialize, Serialize};

/// The writer's pid: every `BANKSWAP_HANDOVER_*` variable is ignored unless it
/// equals the reader's own pid (a leaked environment never adopts anything).
pub const ENV_PID: &str = "BANKSWAP_HANDOVER_PID";
/// Where the hand-over JSON is: `fd:N` (a sealed memfd).
pub const ENV_STATE: &str = "BANKSWAP_HANDOVER_STATE";
/// Every other fd whose `FD_CLOEXEC` was cleared, ascending, comma-separated.
pub const ENV_FDS: &str = "BANKSWAP_HANDOVER_FDS";
/// 32 hex digits, equal to the hand-over's `nonce`.
pub const ENV_NONCE: &str = "BANKSWAP_HANDOVER_NONCE";
/// Only on an exec back to the previous build: why the new one failed (one line).
pub const ENV_BOUNCE: &str = "BANKSWAP_HANDOVER_BOUNCE";

/// Every hand-over variable: removed from the environment the next image and
/// every payload gets, and set afresh for an exec.
pub const ENV_VARS: [&str; 5] = [ENV_PID, ENV_STATE, ENV_FDS, ENV_NONCE, ENV_BOUNCE];

/// Most fds one hand-over names: the memfd, the root lock, the control socket,
/// every `[[listen]]` socket, and three per generation (notify socket, stdout,
/// stderr) for at most two generations.
pub const MAX_HANDOVER_FDS: usize = 3 + crate::supervisor::MAX_LISTENERS + 2 * 3;

/// The longest `BANKSWAP_HANDOVER_BOUNCE` value read (a longer one is cut).
pub const MAX_BOUNCE_REASON: usize = 512;

/// One inherited fd and the file it must still be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FdRef {
    /// The fd number (the same in both images).
    pub fd: RawFd,
    /// `st_dev` of what it refers to.
    pub dev: u64,
    /// `st_ino` of what it refers to.
    pub ino: u64,
}

impl FdRef {
    /// Names `fd` by what it refers to now.
    pub fn of(fd: BorrowedFd<'_>) -> io::Result<FdRef> {
        let stat = rustix::fs::fstat(fd)?;
        Ok(FdRef {
            fd: fd.as_raw_fd(),
            dev: stat.st_dev,
            ino: stat.st_ino,
        })
    }
}

/// What the environment of a starting image says about a hand-over.
#[derive(Debug, PartialEq, Eq)]
pub enum Env {
    /// No hand-over (a cold start).
    None,
    /// Variables of another process (a leaked environment): ignored.
    OtherPid(String),
    /// A hand-over for this process.
    Ours(HandoverEnv),
}

/// The hand-over variables of this process, parsed but not yet trusted.
#[derive(Debug, PartialEq, Eq)]
pub struct HandoverEnv {
    /// The memfd holding the JSON.
    pub state_fd: RawFd,
    /// The other inherited fds.
    pub fds: Vec<RawFd>,
    /// The nonce.
    pub nonce: String,
    /// Why a newer build handed back, on a bounce.
    pub bounce: Option<String>,
}

/// Why the hand-over environment is unusable.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct EnvError(pub String);

/// Reads the hand-over variables from `get` (the process environment in
/// production), checking their shape only. The fds they name are numbers
/// here; nothing is opened, closed or trusted yet.
pub fn read_env(get: impl Fn(&str) -> Option<String>, own_pid: u32) -> Result<Env, EnvError> {
    let Some(pid) = get(ENV_PID) else {
        return Ok(Env::None);
    };
    if pid.trim() != own_pid.to_string() {
        return Ok(Env::OtherPid(pid));
    }
    let bad = |what: &str, why: &str| EnvError(format!("{what}: {why}"));
    let state = get(ENV_STATE).ok_or_else(|| bad(ENV_STATE, "missing"))?;
    let state_fd = state
        .strip_prefix("fd:")
        .and_then(|n| n.parse::<RawFd>().ok())
        .filter(|&fd| fd >= 3)
        .ok_or_else(|| bad(ENV_STATE, "must be fd:N with N >= 3"))?;
    let listed = get(ENV_FDS).unwrap_or_default();
    let mut fds = Vec::new();
    for part in listed.split(',').filter(|p| !p.is_empty()) {
        let fd = part
            .parse::<RawFd>()
            .ok()
            .filter(|&fd| fd >= 3)
            .ok_or_else(|| bad(ENV_FDS, "must be fd numbers >= 3, comma-separated"))?;
        if fds.last().is_some_and(|&last| last >= fd) {
            return Err(bad(ENV_FDS, "must be ascending, each once"));
        }
        fds.push(fd);
    }
    if fds.len() + 1 > MAX_HANDOVER_FDS {
        return Err(bad(ENV_FDS, "names too many fds"));
    }
    if fds.contains(&state_fd) {
        return Err(bad(ENV_FDS, "names the state fd"));
    }
    let nonce = get(ENV_NONCE).ok_or_else(|| bad(ENV_NONCE, "missing"))?;
    if nonce.len() != 32 || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad(ENV_NONCE, "must be 32 hex digits"));
    }
    let bounce = get(ENV_BOUNCE).map(|reason| {
        let line = reason.lines().next().unwrap_or("");
        cut(line, MAX_BOUNCE_REASON)
    });
    Ok(Env::Ours(HandoverEnv {
        state_fd,
        fds,
        nonce,
        bounce,
    }))
}

/// Every fd number the hand-over variables of this process name (the state
/// fd and the list), read leniently: after a refused hand-over these are
/// closed, whatever else was wrong with the variables. Empty for another pid.
pub fn named_fds(get: impl Fn(&str) -> Option<String>, own_pid: u32) -> Vec<RawFd> {
    if get(ENV_PID).is_none_or(|pid| pid.trim() != own_pid.to_string()) {
        return Vec::new();
    }
    let state = get(ENV_STATE).unwrap_or_default();
    let listed = get(ENV_FDS).unwrap_or_default();
    state
        .strip_prefix("fd:")
        .into_iter()
        .chain(listed.split(','))
        .filter_map(|n| n.trim().parse::<RawFd>().ok())
        .filter(|&fd| fd >= 3)
        .take(MAX_HANDOVER_FDS)
        .collect()
}

/// `text` cut to at most `max` bytes at a character boundary.
pub fn cut(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// Takes ownership of an inherited fd after checking it is open and still the
/// file named by `expected`, and sets `FD_CLOEXEC` on it again (so a payload
/// restarted later does not inherit it).
///
/// The caller guarantees `expected.fd` was inherited and is owned by nobody
/// else in this process (it names only fds listed in the hand-over
/// environment, read once at start before anything else opens an fd).
pub fn take_fd(expected: &FdRef) -> Result<OwnedFd, EnvError> {
    let raw = expected.fd;
    // SAFETY: F_GETFD on any number is harmless; it only tells whether it is open.
    if unsafe { libc::fcntl(raw, libc::F_GETFD) } < 0 {
        return Err(EnvError(format!("fd {raw} is not open")));
    }
    // SAFETY: the fd is open, was inherited for the hand-over and is owned by
    // nothing else in this image (see above).
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let stat = rustix::fs::fstat(&fd).map_err(|e| EnvError(format!("fd {raw}: {e}")))?;
    if stat.st_dev != expected.dev || stat.st_ino != expected.ino {
        // Not ours to close: it is not what the hand-over named.
        std::mem::forget(fd);
        return Err(EnvError(format!(
            "fd {raw} is not the file handed over (device/inode differ)"
        )));
    }
    rustix::io::fcntl_setfd(&fd, FdFlags::CLOEXEC)
        .map_err(|e| EnvError(format!("fd {raw}: {e}")))?;
    Ok(fd)
}

/// Clears `FD_CLOEXEC` on every fd of `fds` (for the exec); on a failure the
/// ones already cleared get it back.
pub fn clear_cloexec(fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    for (done, fd) in fds.iter().enumerate() {
        if let Err(e) = rustix::io::fcntl_setfd(fd, FdFlags::empty()) {
            restore_cloexec(&fds[..done]);
            return Err(e.into());
        }
    }
    Ok(())
}

/// Sets `FD_CLOEXEC` again (after a failed exec).
pub fn restore_cloexec(fds: &[BorrowedFd<'_>]) {
    for fd in fds {
        let _ = rustix::io::fcntl_setfd(fd, FdFlags::CLOEXEC);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::os::fd::AsFd;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    const NONCE: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn no_pid_is_a_cold_start_and_another_pid_is_ignored() {
        assert_eq!(read_env(env(&[]), 42).unwrap(), Env::None);
        let other = read_env(env(&[(ENV_PID, "41"), (ENV_STATE, "fd:0")]), 42).unwrap();
        assert_eq!(other, Env::OtherPid("41".into()));
    }

    #[test]
    fn a_well_formed_environment_is_read() {
        let got = read_env(
            env(&[
                (ENV_PID, "42"),
                (ENV_STATE, "fd:9"),
                (ENV_FDS, "3,4,7"),
                (ENV_NONCE, NONCE),
                (ENV_BOUNCE, "agent 2.0.0 missed its grace\nsecond line"),
            ]),
            42,
        )
        .unwrap();
        assert_eq!(
            got,
            Env::Ours(HandoverEnv {
                state_fd: 9,
                fds: vec![3, 4, 7],
                nonce: NONCE.into(),
                bounce: Some("agent 2.0.0 missed its grace".into()),
            })
        );
    }

    #[test]
    fn hostile_environments_are_refused_with_the_variable_named() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[(ENV_PID, "42")], "BANKSWAP_HANDOVER_STATE: missing"),
            (&[(ENV_PID, "42"), (ENV_STATE, "fd:0")], "N >= 3"),
            (&[(ENV_PID, "42"), (ENV_STATE, "file:/etc/passwd")], "fd:N"),
            (
                &[(ENV_PID, "42"), (ENV_STATE, "fd:9"), (ENV_FDS, "4,3")],
                "ascending",
            ),
            (
                &[(ENV_PID, "42"), (ENV_STATE, "fd:9"), (ENV_FDS, "3,x")],
                "fd numbers",
            ),
            (
                &[(ENV_PID, "42"), (ENV_STATE, "fd:9"), (ENV_FDS, "9")],
                "state fd",
            ),
            (
                &[(ENV_PID, "42"), (ENV_STATE, "fd:9"), (ENV_NONCE, "zz")],
                "32 hex",
            ),
        ];
        for (vars, needle) in cases {
            let err = read_env(env(vars), 42).unwrap_err();
            assert!(err.to_string().contains(needle), "{vars:?}: {err}");
        }
        let many: Vec<String> = (3..3 + MAX_HANDOVER_FDS as i32)
            .map(|n| n.to_string())
            .collect();
        let many = many.join(",");
        let err = read_env(
            env(&[(ENV_PID, "42"), (ENV_STATE, "fd:2000"), (ENV_FDS, &many)]),
            42,
        )
        .unwrap_err();
        assert!(err.to_string().contains("too many"), "{err}");
    }

    #[test]
    fn a_refused_environment_still_names_its_fds_for_closing() {
        let vars = env(&[(ENV_PID, "42"), (ENV_STATE, "fd:9"), (ENV_FDS, "7,4,x,1,5")]);
        assert_eq!(named_fds(&vars, 42), vec![9, 7, 4, 5]);
        assert_eq!(named_fds(&vars, 43), Vec::<RawFd>::new());
    }

    #[test]
    fn an_fd_must_be_open_and_the_same_file() {
        let file = tempfile::tempfile().unwrap();
        let other = tempfile::tempfile().unwrap();
        let mut wrong = FdRef::of(other.as_fd()).unwrap();
        wrong.fd = file.as_raw_fd();
        let err = take_fd(&wrong).unwrap_err();
        assert!(
            err.to_string().contains("not the file handed over"),
            "{err}"
        );
        // Still open: a refused fd is not closed.
        assert!(file.metadata().is_ok());

        let closed = FdRef {
            fd: 4000,
            dev: 0,
            ino: 0,
        };
        assert!(
            take_fd(&closed)
                .unwrap_err()
                .to_string()
                .contains("not open")
        );

        let right = FdRef::of(file.as_fd()).unwrap();
        clear_cloexec(&[file.as_fd()]).unwrap();
        let flags = rustix::io::fcntl_getfd(&file).unwrap();
        assert!(!flags.contains(FdFlags::CLOEXEC));
        let owned = take_fd(&right).unwrap();
        assert!(
            rustix::io::fcntl_getfd(&owned)
                .unwrap()
                .contains(FdFlags::CLOEXEC)
        );
        std::mem::forget(file); // `owned` now owns the number
    }
}
