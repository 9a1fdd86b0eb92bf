//! The moves of the bank state machine, each one crash-safe write of `state.json`:
//! activate (on trial or committed), commit, rollback (marking the version left bad or
//! not), mark bad.

use super::Root;
use crate::state::marked_bad;
use crate::{BankId, LayoutError, Phase, State};

/// What [`Root::rollback_marking_bad`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolledBack {
    /// The bank active now.
    pub to: BankId,
    /// The bank left.
    pub from: BankId,
    /// The version left, now marked bad (`None` if the bank left held no release).
    pub left: Option<String>,
}

impl Root {
    /// Makes `bank` active on trial: `trial_started = now`, `pending` cleared,
    /// `highest_sequence` raised to the bank's sequence, `product` pinned if unset.
    /// The bank must hold a record ([`LayoutError::NoRecord`]).
    pub fn activate(&mut self, bank: BankId, now: u64) -> Result<(), LayoutError> {
        self.switch_to(bank, Some(now))
    }

    /// Makes `bank` active and committed in one write, for an update whose health
    /// nobody watches (an offline `apply`): a crash leaves the old version or the
    /// new one committed, never a trial that no supervisor would end.
    pub fn activate_committed(&mut self, bank: BankId) -> Result<(), LayoutError> {
        self.switch_to(bank, None)
    }

    /// One state write making `bank` active; on trial since `trial_started` if given.
    fn switch_to(&mut self, bank: BankId, trial_started: Option<u64>) -> Result<(), LayoutError> {
        let record = self
            .bank_record(bank)
            .ok_or(LayoutError::NoRecord { bank })?;
        let mut state = self.state.clone();
        state.active = bank;
        state.phase = if trial_started.is_some() {
            Phase::Trial
        } else {
            Phase::Committed
        };
        state.trial_started = trial_started;
        state.pending = None;
        state.highest_sequence = state.highest_sequence.max(record.sequence);
        if state.product.is_none() {
            state.product = Some(record.product.clone());
        }
        self.persist(state)
    }

    /// Accepts the active bank: phase committed, `trial_started` cleared.
    pub fn commit(&mut self) -> Result<(), LayoutError> {
        let mut state = self.state.clone();
        state.phase = Phase::Committed;
        state.trial_started = None;
        self.persist(state)
    }

    /// Swaps back to the idle bank, committed; returns it. The idle bank must hold a
    /// release ([`LayoutError::NoPrevious`]) not marked bad. Needs no network: the files
    /// are there. Use [`Root::rollback_marking_bad`] to mark the version left bad in
    /// the same write.
    pub fn rollback(&mut self) -> Result<BankId, LayoutError> {
        let state = self.rolled_back_state()?;
        let target = state.active;
        self.persist(state)?;
        Ok(target)
    }

    /// Swaps back to the idle bank and marks the version left bad (`reason`), in one
    /// `state.json` write: a crash leaves neither or both, so the agent never
    /// re-installs a version an admin rolled back.
    pub fn rollback_marking_bad(&mut self, reason: &str) -> Result<RolledBack, LayoutError> {
        let from = self.state.active;
        let mut state = self.rolled_back_state()?;
        let left = self
            .bank_record(from)
            .map(|r| (r.version.clone(), r.sequence));
        if let Some((version, sequence)) = &left {
            state.add_bad(version, *sequence, reason);
        }
        let to = state.active;
        self.persist(state)?;
        Ok(RolledBack {
            to,
            from,
            left: left.map(|(version, _)| version),
        })
    }

    /// The state after a rollback to the idle bank, or why there is none.
    fn rolled_back_state(&self) -> Result<State, LayoutError> {
        let target = self.idle_bank();
        let Some(record) = self.bank_record(target) else {
            return Err(LayoutError::NoPrevious);
        };
        // After an automatic rollback the other bank holds the version that failed:
        // swapping back into it would undo the very protection that put it aside.
        if let Some(bad) = marked_bad(&self.state.bad_versions, &record.version, record.sequence) {
            return Err(LayoutError::PreviousMarkedBad {
                bank: target,
                version: bad.version.clone(),
                reason: bad.reason.clone(),
            });
        }
        let mut state = self.state.clone();
        state.active = target;
        state.phase = Phase::Committed;
        state.trial_started = None;
        Ok(state)
    }

    /// Marks `version` bad at or below `sequence` (an existing mark of that version is
    /// raised to the higher sequence and takes the new reason). At most
    /// [`MAX_BAD_VERSIONS`](crate::MAX_BAD_VERSIONS) are kept, the newest.
    pub fn mark_bad(
        &mut self,
        version: &str,
        sequence: u64,
        reason: &str,
    ) -> Result<(), LayoutError> {
        let mut state = self.state.clone();
        state.add_bad(version, sequence, reason);
        self.persist(state)
    }
}
