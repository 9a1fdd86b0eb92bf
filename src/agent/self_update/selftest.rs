//! Both sides of `bankswap --self-test` (design §9): the child checks that this
//! build can run here — it prints its version, the hand-over schemas it reads,
//! parses the config and reads the root and the agent slots without their lock —
//! and prints one JSON line; the parent ([`qualify()`]) runs a staged build that
//! way under a timeout before anything is replaced, and judges the answer.
//!
//! The child takes no lock, writes nothing, binds nothing, opens no network
//! connection and starts no runtime.
//!
//! This file holds the answer's types; the child's side is in [`checks`], the
//! parent's (running the build, the timeout, the verdict) in [`qualify`](mod@qualify).

mod checks;
mod qualify;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use self::checks::child;
pub use self::qualify::{qualify, qualify_blocking};

/// The `self_test` value of the answer this build prints and understands.
pub const SELF_TEST_SCHEMA: u32 = 1;

/// Hand-over schemas this build reads. The hand-over itself (`agent::handover`)
/// is written on the `suexec` branch; the integrator points this at its
/// `HANDOVER_SCHEMAS` when both are merged.
pub const HANDOVER_SCHEMAS: &[u32] = &[1];

/// Most stdout bytes of a self-test read: the answer is one line of ~400 bytes.
pub const MAX_SELF_TEST_OUTPUT: u64 = 16 * 1024;

/// One check of the self-test.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// `config`, `root` or `agent_slots`.
    pub name: String,
    /// Whether it passed.
    pub ok: bool,
    /// What was found, or why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The one JSON line a self-test prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelfTestReport {
    /// [`SELF_TEST_SCHEMA`].
    pub self_test: u32,
    /// Whether every check passed.
    pub ok: bool,
    /// `CARGO_PKG_VERSION` of the build.
    pub build_version: String,
    /// `--expect-version`, echoed (a copy of a build cannot know its release version).
    pub release_version: Option<String>,
    /// The platform the build runs on.
    pub platform: String,
    /// Hand-over schemas it reads.
    pub handover_schemas: Vec<u32>,
    /// The checks, in order.
    pub checks: Vec<Check>,
}

/// What the child checks: a config (whose root is read), or a root alone (an
/// offline `apply` without a config).
#[derive(Debug, Clone)]
pub enum Target {
    /// `--config FILE`.
    Config(PathBuf),
    /// `--root DIR`.
    Root(PathBuf),
}
