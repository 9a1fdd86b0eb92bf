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
//!
//! Opening, the accessors and the one state write (`persist`) are here; staging into
//! the idle bank is in `staging`, the moves of the state machine (activate, commit,
//! rollback, mark bad) in `transitions`.

mod staging;
mod transitions;

use std::fs::{self, DirBuilder, File, Permissions};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::atomic::write_atomic_mode;
use crate::recover::{Recovery, recover, view};
use crate::{BankId, BankRecord, LayoutError, STATE_FILE, State};

pub use self::transitions::RolledBack;

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
    /// Kept without their per-file digests (`files`), which only a delta staging
    /// needs and reads from the bank then: an idle agent holds no file lists.
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
            records: recovered.records.map(|r| r.map(without_files)),
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

/// A record as [`Root`] keeps it in memory: without its per-file digests.
fn without_files(record: BankRecord) -> BankRecord {
    BankRecord {
        files: None,
        ..record
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
