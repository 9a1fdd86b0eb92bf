//! The one place that reads the test-only switch of self-update (design §12.3).
//!
//! `BANKSWAP_TEST_AGENT_FAULT=<fault>@<version>` makes the build running as
//! release `<version>` (or self-testing as `--expect-version <version>`)
//! misbehave, so that a *copy* of the test binary published as `<version>`
//! fails while the same bytes running as another version do not. Faults:
//!
//! - `self-test-fail`: `--self-test` prints `ok: false` and exits 1.
//! - `no-commit`: the new image of a self-update never probes itself, so it
//!   misses its grace and execs the previous build back (read in `reexec.rs`).
//!
//! Harmless in production: it can only make an update fail.

/// The environment variable of the switch.
pub const AGENT_FAULT_VAR: &str = "BANKSWAP_TEST_AGENT_FAULT";

/// Whether `fault` is switched on for `version`.
pub fn armed(fault: &str, version: Option<&str>) -> bool {
    let Some(version) = version else { return false };
    let Ok(value) = std::env::var(AGENT_FAULT_VAR) else {
        return false;
    };
    value
        .split_once('@')
        .is_some_and(|(f, v)| f == fault && v == version)
}
