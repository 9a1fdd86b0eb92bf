//! [`Root`]: a locked data root and the state machine over its two banks.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::atomic::write_atomic;
use crate::recover::{Recovery, recover, wipe_bank};
use crate::stage::{StageSpec, stream_into};
use crate::{
    BadVersion, BankId, BankRecord, LOCK_FILE, LayoutError, Phase, RECORD_FILE, STATE_FILE, State,
};

/// A data root, opened and locked by this process.
///
/// The in-memory state always equals `state.json` on disk: every change is written with
/// [`write_atomic`] first and applied in memory only once durable.
#[derive(Debug)]
pub struct Root {
    /// The root folder.
    dir: PathBuf,
    /// `ROOT/lock`, locked exclusively; the lock lives as long as this handle.
    _lock: File,
    /// The content of `state.json`.
    state: State,
    /// The valid record of each bank (index: [`BankId::index`]); `None` = no release.
    records: [Option<BankRecord>; 2],
}

impl Root {
    /// Creates the layout if missing, takes the exclusive lock (`ROOT/lock`,
    /// `File::try_lock`), and recovers (see [`Recovery`]). A corrupt `state.json` is
    /// [`LayoutError::CorruptState`] and leaves everything on disk as it was.
    pub fn open(dir: &Path) -> Result<(Root, Vec<Recovery>), LayoutError> {
        fs::create_dir_all(dir).map_err(LayoutError::at(dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(LayoutError::at(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(LayoutError::Locked {
                    root: dir.to_path_buf(),
                });
            }
            Err(TryLockError::Error(e)) => return Err(LayoutError::io(&lock_path, e)),
        }
        let recovered = recover(dir)?;
        let root = Root {
            dir: dir.to_path_buf(),
            _lock: lock,
            state: recovered.state,
            records: recovered.records,
        };
        Ok((root, recovered.notes))
    }

    /// Reads `state.json` without the lock and without recovery (for `status`).
    pub fn read_state(dir: &Path) -> Result<State, LayoutError> {
        let path = dir.join(STATE_FILE);
        match State::read(&path)? {
            Some(state) => Ok(state),
            None => Err(LayoutError::io(&path, io::ErrorKind::NotFound.into())),
        }
    }

    /// The root folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The current state (equal to `state.json`).
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The bank the supervisor runs.
    pub fn active_bank(&self) -> BankId {
        self.state.active
    }

    /// Where the next release is staged: the other bank (the fallback), or Bank1 on an empty root.
    pub fn idle_bank(&self) -> BankId {
        // An empty root runs nothing from either bank: the first release fills Bank1.
        if self.records.iter().all(Option::is_none) {
            return BankId::Bank1;
        }
        self.state.active.other()
    }

    /// The folder of `bank`.
    pub fn bank_dir(&self, bank: BankId) -> PathBuf {
        self.dir.join(bank.dir_name())
    }

    /// The record of `bank`, if it holds a complete release.
    pub fn bank_record(&self, bank: BankId) -> Option<&BankRecord> {
        self.records[bank.index()].as_ref()
    }

    /// Stages a release into the idle bank: removes its record (durably), empties it,
    /// stream-extracts `source` while hashing it on another thread, enforces the size,
    /// the digest and the archive rules, syncs the bank, then writes its record.
    /// `progress` gets the compressed bytes read so far, about every MiB.
    ///
    /// On error the idle bank is wiped and `state.json` is untouched (its listed version
    /// for the idle bank is corrected at the next state change or open). Refused with
    /// [`LayoutError::TrialInProgress`] during a trial: the idle bank is the fallback.
    pub fn stage(
        &mut self,
        source: impl Read + Send,
        spec: StageSpec<'_>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<BankId, LayoutError> {
        if self.state.phase == Phase::Trial {
            return Err(LayoutError::TrialInProgress);
        }
        let bank = self.idle_bank();
        let dir = self.bank_dir(bank);
        // A bank folder deleted by hand is re-created rather than breaking updates.
        match fs::create_dir(&dir) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                return Err(LayoutError::io(&dir, e));
            }
            _ => {}
        }
        // The record goes first: from here on a crash leaves a visibly incomplete bank.
        self.records[bank.index()] = None;
        wipe_bank(&dir)?;
        match self.fill_bank(bank, &dir, source, spec, progress) {
            Ok(()) => Ok(bank),
            Err(e) => {
                self.records[bank.index()] = None;
                // Best effort: if the wipe fails too, the bank has no record and is
                // wiped at the next open; the first error is the one to report.
                let _ = wipe_bank(&dir);
                Err(e)
            }
        }
    }

    /// The fallible part of [`Root::stage`], after the idle bank was emptied.
    fn fill_bank(
        &mut self,
        bank: BankId,
        dir: &Path,
        source: impl Read + Send,
        spec: StageSpec<'_>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), LayoutError> {
        let sha256 = stream_into(dir, source, &spec, progress)?;
        let record = BankRecord {
            sha256,
            ..spec.record
        };
        let path = dir.join(RECORD_FILE);
        let bytes = record.to_bytes().map_err(LayoutError::at(&path))?;
        write_atomic(&path, &bytes).map_err(LayoutError::at(&path))?;
        self.records[bank.index()] = Some(record);
        self.persist(self.state.clone())
    }

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
    /// release ([`LayoutError::NoPrevious`]). Needs no network: the files are there.
    pub fn rollback(&mut self) -> Result<BankId, LayoutError> {
        let target = self.idle_bank();
        let Some(record) = self.bank_record(target) else {
            return Err(LayoutError::NoPrevious);
        };
        // After an automatic rollback the other bank holds the version that failed:
        // swapping back into it would undo the very protection that put it aside.
        if let Some(bad) = self
            .state
            .bad_versions
            .iter()
            .find(|b| b.version == record.version && b.sequence >= record.sequence)
        {
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
        self.persist(state)?;
        Ok(target)
    }

    /// Marks `version` bad at or below `sequence` (an existing mark of that version is
    /// raised to the higher sequence and takes the new reason).
    pub fn mark_bad(
        &mut self,
        version: &str,
        sequence: u64,
        reason: &str,
    ) -> Result<(), LayoutError> {
        let mut state = self.state.clone();
        match state.bad_versions.iter_mut().find(|b| b.version == version) {
            Some(bad) => {
                bad.sequence = bad.sequence.max(sequence);
                reason.clone_into(&mut bad.reason);
            }
            None => state.bad_versions.push(BadVersion {
                version: version.to_owned(),
                sequence,
                reason: reason.to_owned(),
            }),
        }
        self.persist(state)
    }

    /// Changes the state with `f` and writes it crash-safely. The bank versions and
    /// `highest_sequence` are then brought in line with the bank records, and `schema`
    /// is kept: `f` cannot make `state.json` contradict the banks.
    pub fn update_state(&mut self, f: impl FnOnce(&mut State)) -> Result<(), LayoutError> {
        let mut state = self.state.clone();
        f(&mut state);
        self.persist(state)
    }

    /// Syncs `state` with the records, writes it (if it changed) and adopts it.
    fn persist(&mut self, mut state: State) -> Result<(), LayoutError> {
        state.schema = crate::STATE_SCHEMA;
        state.sync_with(&self.records);
        if state == self.state {
            return Ok(());
        }
        let path = self.dir.join(STATE_FILE);
        let bytes = state.to_bytes().map_err(LayoutError::at(&path))?;
        write_atomic(&path, &bytes).map_err(LayoutError::at(&path))?;
        self.state = state;
        Ok(())
    }
}
