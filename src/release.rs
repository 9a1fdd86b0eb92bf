//! A release's way onto a root, shared by `apply` and the agent: open the root,
//! [`verify`] a manifest with what the root knows, [`stage_release`] its archive
//! into the idle bank (or [`stage_delta`] its changed files, issue 14), and [`roll_back`] (swap back and mark the version left bad).
//!
//! Here: opening the root. `verify.rs` holds the verification,
//! `trusted_time.rs` the latest known time expiry is checked against,
//! `stage.rs` the plan and the staging, `bundle.rs` the offline bundle, and
//! `rollback.rs` the rollback.

mod bundle;
pub mod last_staging;
mod rollback;
mod stage;
mod trusted_time;
mod verify;

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use bank_layout::Root;
use tracing::warn;

pub use self::bundle::{OBJECTS_DIR, stage_bundle};
pub use self::rollback::{ADMIN_REASON, roll_back};
pub use self::stage::{StagePlan, stage_delta, stage_release};
pub use self::trusted_time::{CLOCK_SKEW_WARNING, clock_warning, effective_now};
pub use self::verify::{Known, marks, verify, verify_against, verify_known, verify_with};

/// Opens the root (lock + recovery) and logs what recovery did.
pub fn open_root(dir: &Path) -> anyhow::Result<Root> {
    let (root, recoveries) = Root::open(dir).with_context(|| format!("root {}", dir.display()))?;
    for note in recoveries {
        warn!(root = %dir.display(), "recovered: {note}");
    }
    Ok(root)
}

/// Opens the root like [`open_root`], but when another process holds its lock,
/// looks again until `wait` has passed: a short-lived command (an offline
/// `rollback`) must not keep the agent from starting. A second agent holds the
/// lock for good and is still refused, with the holder named.
pub fn open_root_waiting(dir: &Path, wait: Duration) -> anyhow::Result<Root> {
    let (root, recoveries) =
        Root::open_waiting(dir, wait).with_context(|| format!("root {}", dir.display()))?;
    for note in recoveries {
        warn!(root = %dir.display(), "recovered: {note}");
    }
    Ok(root)
}
