//! The one place that reads the test-only switch of self-update (design §12.3).
//!
//! `BANKSWAP_TEST_AGENT_FAULT=<fault>@<version>[,<fault>@<version>…]` makes
//! the self-update to release `<version>` misbehave: in the new image, the
//! build running as `<version>` (or self-testing as `--expect-version
//! <version>`); in the old image, its update *to* `<version>`. A *copy* of the
//! test binary published as `<version>` thus fails while the same bytes
//! running as another version do not. Faults:
//!
//! - `self-test-fail`: `--self-test` prints `ok: false` and exits 1.
//! - `no-commit`: the new image never probes itself, so it misses its grace
//!   and execs the previous build back (the process and the payload survive).
//! - `exit-at-once`: the new image exits with [`EXIT_AT_ONCE_STATUS`] as soon
//!   as it has recorded that it runs (`attempt.ran` in `agent/state.json`),
//!   before adopting anything. The process ends, and the payload with it (its
//!   PR_SET_PDEATHSIG); the next start (systemd `Restart=always`) finds the
//!   attempt that ran, marks the version bad and runs the previous build,
//!   which starts the payload afresh. A build that dies before it records
//!   `ran` cannot be told from a kill just before the exec: that one is
//!   retried, up to `MAX_ATTEMPT_TRIES` times.
//! - `crash-after-adopt`: the new image aborts (SIGABRT: no unwinding, no
//!   panic hook, like a segfault) once it adopted the payload and logged its
//!   start line, before it commits. Same recovery as `exit-at-once`.
//! - `stop-before-replace`, `stop-before-exec`, `stop-before-commit`: the
//!   agent logs `test switch: stopping at <point>` and stops itself
//!   (SIGSTOP) at that point, so a test can SIGKILL it exactly there, waiting
//!   for state `T` in `/proc/PID/stat` instead of sleeping. `before-replace`:
//!   the old image, the build staged and qualified, before the trial marker is
//!   written; `before-exec`: the old image, after the marker, right before the
//!   exec; `before-commit`: the new image, after it adopted the payload,
//!   before it commits.
//!
//! Harmless in production: it can only make an update fail. The payload never
//! sees it (`supervisor/spawn.rs` strips it).

use tracing::warn;

/// The environment variable of the switch.
pub const AGENT_FAULT_VAR: &str = "BANKSWAP_TEST_AGENT_FAULT";

/// Exit status of a new image that `exit-at-once` ends.
pub const EXIT_AT_ONCE_STATUS: i32 = 71;

/// Whether `fault` is switched on for `version`.
pub fn armed(fault: &str, version: Option<&str>) -> bool {
    let Some(version) = version else { return false };
    let Ok(value) = std::env::var(AGENT_FAULT_VAR) else {
        return false;
    };
    names(&value, fault, version)
}

/// Whether the switch's value `value` names `fault` for `version`.
fn names(value: &str, fault: &str, version: &str) -> bool {
    value
        .split(',')
        .filter_map(|item| item.trim().split_once('@'))
        .any(|(f, v)| f == fault && v == version)
}

/// `exit-at-once`: ends the process here when armed for `version`.
pub fn exit_at_once(version: &str) {
    if armed("exit-at-once", Some(version)) {
        warn!(version, "test switch: exiting at once");
        crate::logging::flush();
        std::process::exit(EXIT_AT_ONCE_STATUS);
    }
}

/// `crash-after-adopt`: aborts the process here when armed for `version`.
pub fn crash_after_adopt(version: &str) {
    if armed("crash-after-adopt", Some(version)) {
        warn!(version, "test switch: crashing after adopting");
        crate::logging::flush();
        std::process::abort();
    }
}

/// `stop-<point>`: stops the process here (SIGSTOP) when armed for `version`;
/// it carries on if it is continued (SIGCONT), but a test kills it.
pub fn stop_at(point: &str, version: &str) {
    if armed(&format!("stop-{point}"), Some(version)) {
        warn!(point, version, "test switch: stopping at {point}");
        crate::logging::flush();
        // SAFETY: raise(2) has no preconditions; SIGSTOP stops the whole process.
        unsafe {
            libc::raise(libc::SIGSTOP);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::names;

    #[test]
    fn the_switch_names_faults_by_version_in_a_list() {
        let value = "no-commit@1.0.0, stop-before-exec@2.0.0";
        assert!(names(value, "no-commit", "1.0.0"));
        assert!(names(value, "stop-before-exec", "2.0.0"));
        assert!(!names(value, "no-commit", "2.0.0"));
        assert!(!names(value, "exit-at-once", "1.0.0"));
        assert!(!names("garbage", "garbage", ""));
    }
}
