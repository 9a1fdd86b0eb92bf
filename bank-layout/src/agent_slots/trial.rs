//! The trial marker and the launch guard: beginning an attempt, the new build noting it
//! ran, committing or failing it, marking a release bad, activating without a trial,
//! and counting cold-start launches.

use super::{AgentAttempt, AgentPhase, AgentSlots, AgentState, Interrupted, Launch, SlotId};
use crate::LayoutError;
use crate::state::{add_bad, bounded_note};

impl AgentSlots {
    /// Writes the trial marker: phase trial, `attempt` with `ran = false` and `tries`
    /// counting interrupted attempts of this sequence. Refused during a trial and for
    /// a slot without a build.
    pub fn begin_attempt(&mut self, mut attempt: AgentAttempt) -> Result<(), LayoutError> {
        if self.state.phase == AgentPhase::Trial || self.state.attempt.is_some() {
            return Err(LayoutError::AgentTrialInProgress);
        }
        if self.record(attempt.slot).is_none() {
            return Err(LayoutError::NoAgentBuild { slot: attempt.slot });
        }
        attempt.ran = false;
        attempt.tries = match self.state.interrupted {
            Some(i) if i.sequence == attempt.sequence => i.tries + 1,
            _ => 1,
        };
        self.update(|state| {
            state.phase = AgentPhase::Trial;
            state.attempt = Some(attempt);
        })
    }

    /// Written by the new build once it validated the hand-over: `attempt.ran = true`.
    pub fn note_ran(&mut self, nonce: &str) -> Result<(), LayoutError> {
        self.matching_attempt(nonce)?;
        self.update(|state| {
            if let Some(attempt) = &mut state.attempt {
                attempt.ran = true;
            }
        })
    }

    /// Accepts the build on trial: active = its slot, committed, attempt, pending,
    /// launch and the interrupted count cleared, `highest_sequence` raised, last error
    /// cleared. The nonce must be the attempt's.
    pub fn commit(&mut self, nonce: &str) -> Result<(), LayoutError> {
        let attempt = self.matching_attempt(nonce)?.clone();
        self.update(|state| {
            state.active = Some(attempt.slot);
            state.phase = AgentPhase::Committed;
            state.attempt = None;
            state.pending = None;
            state.launch = None;
            state.interrupted = None;
            state.highest_sequence = state.highest_sequence.max(attempt.sequence);
            state.last_error = None;
        })
    }

    /// Ends the attempt without accepting it: committed (the previous build stays),
    /// `last_error = reason`; with `mark_bad` the version is marked bad and pending
    /// cleared, else the interruption is counted. One write.
    pub fn fail_attempt(&mut self, reason: &str, mark_bad: bool) -> Result<(), LayoutError> {
        let Some(attempt) = self.state.attempt.clone() else {
            return Err(LayoutError::AgentAttemptMismatch {
                reason: "no self-update attempt is in progress".to_owned(),
            });
        };
        self.update(|state| resolve_attempt(state, &attempt, reason, mark_bad))
    }

    /// Marks a release bad that failed before any attempt (its self-test): bad list,
    /// pending cleared if it is that release, last error set. One write.
    pub fn mark_bad(
        &mut self,
        version: &str,
        sequence: u64,
        reason: &str,
    ) -> Result<(), LayoutError> {
        self.update(|state| {
            add_bad(&mut state.bad_versions, version, sequence, reason);
            if state
                .pending
                .as_ref()
                .is_some_and(|p| p.version == version && p.sequence <= sequence)
            {
                state.pending = None;
            }
            state.last_error = Some(bounded_note(reason));
        })
    }

    /// Makes `slot` the committed build in one write, without a trial (offline
    /// `apply`: nobody watches it): the next start of the installed binary runs it.
    pub fn activate_committed(&mut self, slot: SlotId) -> Result<(), LayoutError> {
        if self.state.phase == AgentPhase::Trial {
            return Err(LayoutError::AgentTrialInProgress);
        }
        let Some(build) = self.record(slot) else {
            return Err(LayoutError::NoAgentBuild { slot });
        };
        let sequence = build.sequence;
        self.update(|state| {
            state.active = Some(slot);
            state.phase = AgentPhase::Committed;
            state.pending = None;
            state.launch = None;
            state.interrupted = None;
            state.highest_sequence = state.highest_sequence.max(sequence);
            state.last_error = None;
        })
    }

    /// The launcher execs `slot` at a cold start: counts the launch; returns the count.
    pub fn note_launch(&mut self, slot: SlotId) -> Result<u32, LayoutError> {
        let count = match self.state.launch {
            Some(launch) if launch.slot == slot => launch.count.saturating_add(1),
            _ => 1,
        };
        self.update(|state| state.launch = Some(Launch { slot, count }))?;
        Ok(count)
    }

    /// The launched build serves: the crash-loop count is cleared.
    pub fn launch_ok(&mut self) -> Result<(), LayoutError> {
        self.update(|state| state.launch = None)
    }

    /// The installed binary runs from now on (`active = None`), e.g. because a package
    /// upgrade installed a newer one; `reason` is kept as the last note.
    pub fn use_installed(&mut self, reason: &str) -> Result<(), LayoutError> {
        self.update(|state| {
            state.active = None;
            state.launch = None;
            state.last_error = Some(bounded_note(reason));
        })
    }

    /// The attempt, if its nonce is `nonce`.
    fn matching_attempt(&self, nonce: &str) -> Result<&AgentAttempt, LayoutError> {
        match &self.state.attempt {
            Some(attempt) if attempt.nonce == nonce => Ok(attempt),
            Some(_) => Err(LayoutError::AgentAttemptMismatch {
                reason: "the attempt in agent/state.json has another nonce".to_owned(),
            }),
            None => Err(LayoutError::AgentAttemptMismatch {
                reason: "no self-update attempt is in progress".to_owned(),
            }),
        }
    }
}

/// Ends `attempt` in `state`: committed, no attempt, `last_error = reason`; marked bad
/// (pending cleared) or its interruption counted.
pub(super) fn resolve_attempt(
    state: &mut AgentState,
    attempt: &AgentAttempt,
    reason: &str,
    bad: bool,
) {
    state.phase = AgentPhase::Committed;
    state.attempt = None;
    state.last_error = Some(bounded_note(reason));
    if bad {
        add_bad(
            &mut state.bad_versions,
            &attempt.version,
            attempt.sequence,
            reason,
        );
        state.pending = None;
        state.interrupted = None;
    } else if !attempt.ran {
        state.interrupted = Some(Interrupted {
            sequence: attempt.sequence,
            tries: attempt.tries,
        });
    }
}
