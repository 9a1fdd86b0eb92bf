//! The self-update's records in the agent slots (`bank_layout::AgentSlots`:
//! `note_ran`, `commit`, `fail_attempt`); without slots (self-update off,
//! `bankswap agent reexec --self-update-grace`) they only log. A failed write
//! is logged: the next cold start resolves the attempt from what is on disk.

use bank_layout::AgentSlots;
use tracing::{error, info, warn};

/// The new build has run (its attempt is no longer "killed before it ran").
pub fn note_ran(slots: Option<&mut AgentSlots>, attempt: &str) {
    info!(attempt, "agent self-update: the new build runs");
    if let Some(slots) = slots
        && let Err(e) = slots.note_ran(attempt)
    {
        error!(attempt, error = %e, "agent self-update: could not record that the new build ran");
    }
}

/// The new build proved itself.
pub fn commit(slots: Option<&mut AgentSlots>, attempt: &str) {
    info!(attempt, "agent self-update: committing the new build");
    if let Some(slots) = slots
        && let Err(e) = slots.commit(attempt)
    {
        error!(attempt, error = %e, "agent self-update: could not commit the new build");
    }
}

/// The new build failed: mark its version bad, with the reason.
pub fn mark_bad(slots: Option<&mut AgentSlots>, attempt: &str, reason: &str) {
    warn!(
        attempt,
        reason, "agent self-update: marking the new build bad"
    );
    if let Some(slots) = slots
        && let Err(e) = slots.fail_attempt(reason, true)
    {
        error!(attempt, error = %e, "agent self-update: could not record the failed attempt");
    }
}
