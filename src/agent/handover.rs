//! The hand-over: the supervisor's state, passed from one agent image to the
//! next in the same process by an in-place exec (`bankswap agent reexec`, and
//! self-update). Versioned, bounded (≤ [`MAX_HANDOVER_BYTES`]),
//! `deny_unknown_fields` JSON in a sealed memfd; every inherited fd is named
//! in it by `(fd, dev, ino)` (`inherit.rs`). The reader trusts nothing: any
//! check that fails is one `error: hand-over: <what>: <why>` line and a cold
//! start that leaves the banks alone.
//!
//! This file holds the bounds, the error and small helpers; beside it:
//! [`wire`] (the JSON types), [`memfd`] (writing and reading the sealed
//! memfd), [`validate`] (every check against the reader) and [`receive`] (the
//! new image taking the hand-over and its fds, or abandoning it).

mod memfd;
mod receive;
mod validate;
mod wire;

use std::io;
use std::os::fd::AsFd;
use std::time::Duration;

pub use self::memfd::write_memfd;
pub use self::receive::{Received, abandon, take_from_env};
pub use self::wire::{
    AgentRef, HandedGeneration, Handover, Purpose, RestartsState, Role, TrialState,
};
use crate::agent::inherit::{EnvError, FdRef};

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

/// This boot's id.
pub fn boot_id() -> io::Result<String> {
    Ok(std::fs::read_to_string(BOOT_ID)?.trim().to_owned())
}

/// A fresh nonce: 32 hex digits.
pub fn new_nonce() -> String {
    format!("{:032x}", rand::random::<u128>())
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
    use std::io::Write;
    use std::os::fd::{OwnedFd, RawFd};

    use bank_layout::BankId;
    use rustix::fs::MemfdFlags;

    use super::memfd::{parse, read_json};
    use super::validate::{Reader, validate};
    use super::*;
    use crate::agent::inherit::HandoverEnv;
    use crate::supervisor::{
        BoundState, GenerationState, InheritedListener, MAX_PENDING_EVENTS, PendingEvent,
    };

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
