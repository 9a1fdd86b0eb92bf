//! The one rollback: swap back to the other bank and mark the version left
//! bad, in one state write.

use std::fmt;

use bank_layout::{BankId, LayoutError, Root};

/// Why an admin's rollback (offline or through the agent) marks the version left bad.
pub const ADMIN_REASON: &str = "rolled back by an admin";

/// What a rollback did.
#[derive(Debug, Clone)]
pub struct RolledBack {
    /// The bank left.
    pub from: BankId,
    /// The bank now active.
    pub to: BankId,
    /// The version left in `from`, now marked bad (none on a bank without a release).
    pub left: Option<String>,
    /// The version now running.
    pub running: Option<String>,
}

impl fmt::Display for RolledBack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let running = self.running.as_deref().unwrap_or("none");
        write!(f, "rolled back to {running} in {}", self.to)?;
        if let Some(left) = &self.left {
            write!(f, "; {left} stays in {}, marked bad", self.from)?;
        }
        Ok(())
    }
}

/// The one rollback: swaps back to the other bank and marks the version left
/// bad with `reason`, in one state write (a crash cannot forget the mark), so that
/// it is not installed again until a higher sequence re-publishes it. Refused, with
/// nothing changed, when the other bank holds no good release.
pub fn roll_back(root: &mut Root, reason: &str) -> Result<RolledBack, LayoutError> {
    let done = root.rollback_marking_bad(reason)?;
    Ok(RolledBack {
        from: done.from,
        to: done.to,
        left: done.left,
        running: root.state().version_of(done.to).map(str::to_string),
    })
}
