//! [`Root`]: a locked data root and the state machine over its two banks.
//!
//! Staging (SPEC §13) never touches a bank until the release is complete. The order,
//! and what a crash at each step leaves (each repaired by [`Root::open`]):
//!
//! 1. the release is extracted into `ROOT/.staging`, hash-verified, its entrypoint
//!    checked, made durable, its record written last (crash: a scratch folder,
//!    removed at open; both banks as they were);
//! 2. the idle bank `ROOT/BankN` is renamed to `ROOT/.retired-BankN` (crash: BankN is
//!    missing and its retired copy whole: it is renamed back at open);
//! 3. `.staging` is renamed to `BankN`, then the root folder is fsynced (crash before
//!    the fsync: the disk may hold either rename or both; every mix is one of the
//!    cases 1, 2 or 4);
//! 4. the retired copy is removed (crash: a leftover, removed at open; BankN holds the
//!    new release with its record, and `state.json`, still listing the old version,
//!    is corrected to the record at open);
//! 5. `state.json` lists the new version (one crash-safe write).

use std::fs::{self, DirBuilder, File, Permissions};
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::atomic::{fsync_dir, write_atomic_mode};
use crate::fsutil::remove_tree;
use crate::recover::{Recovery, recover, view, wipe_bank};
use crate::space::{SpacePlan, plan};
use crate::stage::{StageSpec, stream_into};
use crate::state::marked_bad;
use crate::{BankId, BankRecord, LayoutError, Phase, RECORD_FILE, STATE_FILE, State};

/// The scratch folder a release is staged into, beside the banks (same file system).
pub const SCRATCH_DIR: &str = ".staging";

/// Mode of `state.json` and bank records: the agent's user alone reads them.
pub(crate) const PRIVATE_MODE: u32 = 0o600;

/// Mode of bank folders: the payload user may read and enter them, only the agent writes.
pub(crate) const BANK_DIR_MODE: u32 = 0o755;

/// The name of `bank`'s retired copy while a staged release takes its place.
pub(crate) fn retired_name(bank: BankId) -> String {
    format!(".retired-{bank}")
}

/// A data root, opened and locked by this process.
///
/// The in-memory state always equals `state.json` on disk: every change is written with
/// [`write_atomic`](crate::write_atomic) first and applied in memory only once durable.
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

/// A read-only view of a root, for `status` and other commands that must not lock or
/// write ([`Root::inspect`]).
#[derive(Debug, Clone)]
pub struct Inspection {
    /// The state as [`Root::open`] would find it: `state.json` (or, without one, derived
    /// from the records), with the bank versions taken from the records, so it never
    /// lists a version that is not on disk.
    pub state: State,
    /// The valid record of each bank (Bank1, Bank2).
    pub records: [Option<BankRecord>; 2],
    /// Whether `state.json` exists (false: a new root, or one whose state is rebuilt at
    /// the next open).
    pub has_state_file: bool,
}

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
    /// Creates the layout if missing, takes the exclusive lock (`ROOT/lock`,
    /// `File::try_lock`), and recovers (see [`Recovery`]). A corrupt `state.json` is
    /// [`LayoutError::CorruptState`] and leaves everything on disk as it was.
    pub fn open(dir: &Path) -> Result<(Root, Vec<Recovery>), LayoutError> {
        Root::open_waiting(dir, Duration::ZERO)
    }

    /// [`Root::open`], waiting up to `max_wait` for a lock held by a short-lived
    /// command; when it gives up, [`LayoutError::Locked`] says who holds it.
    pub fn open_waiting(
        dir: &Path,
        max_wait: Duration,
    ) -> Result<(Root, Vec<Recovery>), LayoutError> {
        if !dir.is_dir() {
            DirBuilder::new()
                .recursive(true)
                .mode(BANK_DIR_MODE)
                .create(dir)
                .map_err(LayoutError::at(dir))?;
            fs::set_permissions(dir, Permissions::from_mode(BANK_DIR_MODE))
                .map_err(LayoutError::at(dir))?;
        }
        let lock = crate::lock::take(dir, max_wait)?;
        let recovered = recover(dir)?;
        let root = Root {
            dir: dir.to_path_buf(),
            _lock: lock,
            state: recovered.state,
            records: recovered.records,
        };
        Ok((root, recovered.notes))
    }

    /// Takes over a root whose lock this process already holds on the inherited
    /// descriptor `lock` (an agent image that replaced the previous one in place by
    /// `exec`): `lock` must be the file `dir/lock` (same device and inode) and its
    /// `flock` must be ours (taking it again on the same open file succeeds at once).
    /// Then recovers exactly like [`Root::open`].
    pub fn adopt(dir: &Path, lock: OwnedFd) -> Result<(Root, Vec<Recovery>), LayoutError> {
        let path = dir.join(crate::LOCK_FILE);
        let lock = File::from(lock);
        let held = lock.metadata().map_err(LayoutError::at(&path))?;
        let on_disk = fs::symlink_metadata(&path).map_err(LayoutError::at(&path))?;
        if held.dev() != on_disk.dev() || held.ino() != on_disk.ino() {
            return Err(LayoutError::LockNotOurs {
                root: dir.to_path_buf(),
                reason: "the inherited descriptor is not this root's lock file".to_owned(),
            });
        }
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(LayoutError::LockNotOurs {
                    root: dir.to_path_buf(),
                    reason: "another open file holds the lock".to_owned(),
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(LayoutError::io(&path, e)),
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

    /// The descriptor holding the root's lock, for a hand-over to the next agent image
    /// in this process (see [`Root::adopt`]).
    pub fn lock_fd(&self) -> BorrowedFd<'_> {
        self._lock.as_fd()
    }

    /// A read-only view of the root `dir`: reads `state.json` and the bank records,
    /// never takes the lock, never writes or creates anything. Works on a root without
    /// `state.json` (the view is derived from the records, as the next open would) and
    /// never lists a version that is not on disk. A corrupt `state.json` is
    /// [`LayoutError::CorruptState`].
    pub fn inspect(dir: &Path) -> Result<Inspection, LayoutError> {
        view(dir)
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

    /// What staging `spec` into the idle bank will do with the free space of the root's
    /// file system (bytes and inodes): a scratch copy, in place, or nothing. A caller
    /// shows "in place" (losing the rollback target) before it happens.
    pub fn space_plan(&self, spec: &StageSpec<'_>) -> Result<SpacePlan, LayoutError> {
        let bank = self.idle_bank();
        plan(
            &self.dir,
            &self.bank_dir(bank),
            self.bank_record(bank),
            spec,
        )
    }

    /// Stages a release into the idle bank. Checks the space first ([`Root::space_plan`]),
    /// then stream-extracts `source` into the scratch folder [`SCRATCH_DIR`] while
    /// hashing it on another thread, enforces the size, the digest, the unpacked bounds,
    /// the archive rules and the entrypoint, syncs it and writes its record; only then
    /// does it replace the idle bank (see the module doc for the order). `progress`
    /// gets the compressed bytes read so far, about every MiB.
    ///
    /// On error both banks and `state.json` are as they were (the scratch folder is
    /// removed), so `rollback` still works — except for an allowed in-place staging,
    /// which gave up the idle bank first. Refused with [`LayoutError::TrialInProgress`]
    /// during a trial: the idle bank is the fallback.
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
        match self.space_plan(&spec)? {
            SpacePlan::Scratch { .. } => {}
            SpacePlan::InPlace {
                needed,
                free,
                idle,
                loses,
            } => {
                if loses.is_some() && !spec.allow_in_place {
                    return Err(LayoutError::InPlaceOnly {
                        root: self.dir.clone(),
                        needed,
                        free,
                        idle,
                    });
                }
                // The only way this release fits: the idle bank goes first, its record
                // first of all, and `state.json` stops listing it.
                self.records[bank.index()] = None;
                wipe_bank(&dir)?;
                self.persist(self.state.clone())?;
            }
            SpacePlan::NoRoom {
                needed,
                free,
                needed_inodes,
                free_inodes,
            } => {
                return Err(LayoutError::NoRoom {
                    root: self.dir.clone(),
                    needed,
                    free,
                    needed_inodes,
                    free_inodes,
                });
            }
        }
        let scratch = self.dir.join(SCRATCH_DIR);
        remove_tree(&scratch)?;
        make_bank_dir(&scratch)?;
        let record = match self.fill_scratch(&scratch, source, spec, progress) {
            Ok(record) => record,
            Err(e) => {
                // Best effort: a leftover scratch folder is removed at the next open;
                // the first error is the one to report.
                let _ = remove_tree(&scratch);
                return Err(e);
            }
        };
        self.swap_in(bank, &scratch)?;
        self.records[bank.index()] = Some(record);
        // Best effort too: the retired copy is a leftover the next open removes.
        let _ = remove_tree(&self.dir.join(retired_name(bank)));
        self.persist(self.state.clone())?;
        Ok(bank)
    }

    /// Extracts, verifies and syncs the release into `scratch`, then writes its record
    /// there (last): the scratch folder is then a complete bank.
    fn fill_scratch(
        &self,
        scratch: &Path,
        source: impl Read + Send,
        spec: StageSpec<'_>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<BankRecord, LayoutError> {
        let sha256 = stream_into(scratch, &self.dir, source, &spec, progress)?;
        let record = BankRecord {
            sha256,
            ..spec.record
        };
        let path = scratch.join(RECORD_FILE);
        let bytes = record.to_bytes().map_err(LayoutError::at(&path))?;
        write_atomic_mode(&path, &bytes, PRIVATE_MODE).map_err(LayoutError::at(&path))?;
        Ok(record)
    }

    /// Replaces the folder of `bank` with the complete bank `scratch`: the old folder
    /// is renamed aside, the scratch folder in, and the root fsynced. On error the old
    /// folder is put back where it can be.
    fn swap_in(&mut self, bank: BankId, scratch: &Path) -> Result<(), LayoutError> {
        let dir = self.bank_dir(bank);
        let retired = self.dir.join(retired_name(bank));
        remove_tree(&retired)?;
        let had_folder = match fs::rename(&dir, &retired) {
            Ok(()) => true,
            // A bank folder deleted by hand: nothing to put aside.
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => {
                let _ = remove_tree(scratch);
                return Err(LayoutError::io(&dir, e));
            }
        };
        if let Err(e) = fs::rename(scratch, &dir) {
            if had_folder {
                let _ = fs::rename(&retired, &dir);
            }
            let _ = remove_tree(scratch);
            return Err(LayoutError::io(&dir, e));
        }
        fsync_dir(&self.dir).map_err(LayoutError::at(&self.dir))
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
        // The latest known time only rises, whatever the caller wrote.
        state.latest_time = state.latest_time.max(self.state.latest_time);
        state.sync_with(&self.records);
        state.bound();
        if state == self.state {
            return Ok(());
        }
        let path = self.dir.join(STATE_FILE);
        let bytes = state.to_bytes().map_err(LayoutError::at(&path))?;
        write_atomic_mode(&path, &bytes, PRIVATE_MODE).map_err(LayoutError::at(&path))?;
        self.state = state;
        Ok(())
    }
}

/// Creates the empty bank folder `dir` with exactly [`BANK_DIR_MODE`].
pub(crate) fn make_bank_dir(dir: &Path) -> Result<(), LayoutError> {
    DirBuilder::new()
        .mode(BANK_DIR_MODE)
        .create(dir)
        .map_err(LayoutError::at(dir))?;
    fs::set_permissions(dir, Permissions::from_mode(BANK_DIR_MODE)).map_err(LayoutError::at(dir))
}
