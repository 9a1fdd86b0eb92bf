//! Recovery at open: repair what a crash, a power loss or a hand left in the root, and
//! say what was done, one line per repair.

use std::fs;
use std::io;
use std::path::Path;

use crate::atomic::{fsync_dir, remove_temp_files, write_atomic_mode};
use crate::fsutil::{empty_dir, has_entries, remove_durably, remove_tree};
use crate::root::{Inspection, PRIVATE_MODE, SCRATCH_DIR, make_bank_dir, retired_name};
use crate::{BankId, BankRecord, LayoutError, Phase, RECORD_FILE, STATE_FILE, State};

/// Prefix of the unlinked file of deferred symlinks (see `extract`): a crash between its
/// creation and its unlinking leaves one, removed at open.
pub(crate) const LINK_LOG_PREFIX: &str = ".staging-links.";

mod notes;

pub use self::notes::Recovery;

/// What a bank folder looked like at open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Finding {
    /// Holds a valid record.
    Complete,
    /// Exists and is empty.
    Empty,
    /// Was missing; re-created.
    Recreated,
    /// Held files without a valid record; wiped.
    Wiped,
}

impl Finding {
    /// Why a bank with this finding holds no release, after its name.
    fn why_empty(self) -> &'static str {
        match self {
            Finding::Complete => "holds a release",
            Finding::Empty => "is empty",
            Finding::Recreated => "was deleted",
            Finding::Wiped => "held an incomplete release",
        }
    }
}

/// A root after recovery.
pub(crate) struct Recovered {
    /// The state, as now on disk.
    pub(crate) state: State,
    /// The valid record of each bank (index: [`BankId::index`]).
    pub(crate) records: [Option<BankRecord>; 2],
    /// What was repaired.
    pub(crate) notes: Vec<Recovery>,
}

/// Recovers the root `dir` (lock held by the caller). A corrupt `state.json` is
/// reported before anything is touched.
pub(crate) fn recover(dir: &Path) -> Result<Recovered, LayoutError> {
    let state_path = dir.join(STATE_FILE);
    let stored = State::read(&state_path)?;
    let mut notes = Vec::new();

    let removed = remove_temp_files(dir).map_err(LayoutError::at(dir))?;
    if removed > 0 {
        notes.push(Recovery::TempFilesRemoved { count: removed });
    }
    remove_staging_leftovers(dir, &mut notes)?;

    let mut records = [None, None];
    let mut findings = [Finding::Empty; 2];
    for bank in BankId::ALL {
        let (finding, record) = recover_bank(&dir.join(bank.dir_name()))?;
        findings[bank.index()] = finding;
        records[bank.index()] = record;
    }
    let fresh = stored.is_none() && findings.iter().all(|f| *f == Finding::Recreated);
    for bank in BankId::ALL {
        match findings[bank.index()] {
            Finding::Recreated if !fresh => notes.push(Recovery::BankRecreated { bank }),
            Finding::Wiped => notes.push(Recovery::HalfStagedWiped { bank }),
            _ => {}
        }
    }

    let mut state = match &stored {
        None => {
            let state = rebuild(&records);
            if !fresh {
                notes.push(Recovery::StateRebuilt {
                    active: state.active,
                });
            }
            state
        }
        Some(stored) => {
            let mut state = stored.clone();
            let active = state.active;
            if records[active.index()].is_none() {
                let reason = format!("{active} {}", findings[active.index()].why_empty());
                if records[active.other().index()].is_some() {
                    state.active = active.other();
                    state.phase = Phase::Committed;
                    state.trial_started = None;
                    notes.push(Recovery::FellBack {
                        from: active,
                        to: active.other(),
                        reason,
                    });
                } else if state.version_of(active).is_some() {
                    notes.push(Recovery::ActiveEmpty {
                        bank: active,
                        reason,
                    });
                }
            }
            state
        }
    };
    for (bank, listed) in state.sync_with(&records) {
        if stored.is_some() {
            let actual = state.version_of(bank).map(str::to_owned);
            notes.push(Recovery::VersionCorrected {
                bank,
                listed,
                actual,
            });
        }
    }
    if state.product.is_none() {
        state.product = records[state.active.index()]
            .as_ref()
            .map(|r| r.product.clone());
    }
    state.bound();
    if stored.as_ref() != Some(&state) {
        let bytes = state.to_bytes().map_err(LayoutError::at(&state_path))?;
        write_atomic_mode(&state_path, &bytes, PRIVATE_MODE)
            .map_err(LayoutError::at(&state_path))?;
    } else if let Ok(meta) = fs::metadata(&state_path) {
        // A state file made by an older bankswap under a loose umask is narrowed.
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o777 != PRIVATE_MODE {
            fs::set_permissions(&state_path, fs::Permissions::from_mode(PRIVATE_MODE))
                .map_err(LayoutError::at(&state_path))?;
        }
    }
    Ok(Recovered {
        state,
        records,
        notes,
    })
}

/// Undoes what an interrupted staging left (see the order in `root`): a bank folder
/// missing while its retired copy exists gets the copy back (the staged release never
/// replaced it); a retired copy beside its bank is removed (the new release is in); the
/// scratch folder is removed. Then the root is fsynced, so the repair is durable
/// before anything else changes.
fn remove_staging_leftovers(dir: &Path, notes: &mut Vec<Recovery>) -> Result<(), LayoutError> {
    let mut changed = false;
    for bank in BankId::ALL {
        let retired = dir.join(retired_name(bank));
        if fs::symlink_metadata(&retired).is_err() {
            continue;
        }
        let bank_dir = dir.join(bank.dir_name());
        match fs::symlink_metadata(&bank_dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::rename(&retired, &bank_dir).map_err(LayoutError::at(&bank_dir))?;
                notes.push(Recovery::BankRestored { bank });
            }
            _ => {
                remove_tree(&retired)?;
                notes.push(Recovery::RetiredRemoved { bank });
            }
        }
        changed = true;
    }
    let scratch = dir.join(SCRATCH_DIR);
    if fs::symlink_metadata(&scratch).is_ok() {
        remove_tree(&scratch)?;
        notes.push(Recovery::ScratchRemoved);
        changed = true;
    }
    for entry in fs::read_dir(dir).map_err(LayoutError::at(dir))? {
        let entry = entry.map_err(LayoutError::at(dir))?;
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with(LINK_LOG_PREFIX)
        {
            fs::remove_file(entry.path()).map_err(LayoutError::at(&entry.path()))?;
            changed = true;
        }
    }
    if changed {
        fsync_dir(dir).map_err(LayoutError::at(dir))?;
    }
    Ok(())
}

/// The read-only view of [`Root::inspect`](crate::Root::inspect): what [`recover`]
/// would find, without writing, creating or locking anything.
pub(crate) fn view(dir: &Path) -> Result<Inspection, LayoutError> {
    let meta = fs::metadata(dir).map_err(LayoutError::at(dir))?;
    if !meta.is_dir() {
        return Err(LayoutError::io(
            dir,
            io::Error::new(io::ErrorKind::NotADirectory, "a root must be a folder"),
        ));
    }
    let stored = State::read(&dir.join(STATE_FILE))?;
    let mut records = [None, None];
    for bank in BankId::ALL {
        let bank_dir = dir.join(bank.dir_name());
        let record = match fs::symlink_metadata(&bank_dir) {
            Ok(meta) if meta.is_dir() => BankRecord::read(&bank_dir)?,
            // Between the renames of a staging: the retired copy is put back at open.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let retired = dir.join(retired_name(bank));
                if retired.is_dir() {
                    BankRecord::read(&retired)?
                } else {
                    None
                }
            }
            Ok(_) => None,
            Err(e) => return Err(LayoutError::io(&bank_dir, e)),
        };
        records[bank.index()] = record;
    }
    let has_state_file = stored.is_some();
    let mut state = stored.unwrap_or_else(|| rebuild(&records));
    let active = state.active;
    if records[active.index()].is_none() && records[active.other().index()].is_some() {
        state.active = active.other();
        state.phase = Phase::Committed;
        state.trial_started = None;
    }
    state.sync_with(&records);
    if state.product.is_none() {
        state.product = records[state.active.index()]
            .as_ref()
            .map(|r| r.product.clone());
    }
    Ok(Inspection {
        state,
        records,
        has_state_file,
    })
}

/// Brings one bank folder into shape: re-creates it if missing, wipes it if it holds
/// files but no valid record.
fn recover_bank(bank_dir: &Path) -> Result<(Finding, Option<BankRecord>), LayoutError> {
    match fs::symlink_metadata(bank_dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return Err(LayoutError::io(
                bank_dir,
                io::Error::new(io::ErrorKind::NotADirectory, "a bank must be a real folder"),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            make_bank_dir(bank_dir)?;
            return Ok((Finding::Recreated, None));
        }
        Err(e) => return Err(LayoutError::io(bank_dir, e)),
    }
    if let Some(record) = BankRecord::read(bank_dir)? {
        return Ok((Finding::Complete, Some(record)));
    }
    if !has_entries(bank_dir)? {
        return Ok((Finding::Empty, None));
    }
    wipe_bank(bank_dir)?;
    Ok((Finding::Wiped, None))
}

/// Empties a bank folder, its record first (durably), so that a crash during the wipe
/// leaves a bank that is visibly incomplete.
pub(crate) fn wipe_bank(bank_dir: &Path) -> Result<(), LayoutError> {
    remove_durably(&bank_dir.join(RECORD_FILE), bank_dir)?;
    empty_dir(bank_dir)
}

/// A state rebuilt from the bank records: the bank with the highest sequence is active
/// and committed (Bank1 on a fresh root).
fn rebuild(records: &[Option<BankRecord>; 2]) -> State {
    let active = match records {
        [Some(one), Some(two)] if two.sequence > one.sequence => BankId::Bank2,
        [None, Some(_)] => BankId::Bank2,
        _ => BankId::Bank1,
    };
    State {
        active,
        ..State::default()
    }
}

#[cfg(test)]
mod tests;
