//! Staging a release into the idle bank, in the order the `root` module doc lists: the
//! space check, a fresh scratch folder filled (stream extraction or a delta), its
//! record written last, the swap into the idle bank, the state write.

use std::io::Read;
use std::path::Path;

use super::{PRIVATE_MODE, Root, SCRATCH_DIR, make_bank_dir, retired_name, without_files};
use crate::atomic::{fsync_dir, write_atomic_mode};
use crate::fsutil::{move_in, put_aside, remove_tree};
use crate::recover::wipe_bank;
use crate::space::{SpacePlan, plan};
use crate::stage::{StageSpec, stream_into};
use crate::{BankId, BankRecord, LayoutError, Phase, RECORD_FILE};

impl Root {
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
    /// does it replace the idle bank (see the `root` module doc for the order). `progress`
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
        let dir = self.dir.clone();
        self.stage_with(&spec.clone(), |scratch| {
            fill_scratch(&dir, scratch, source, spec, progress)
        })
    }

    /// The steps every staging shares: refused during a trial, the space
    /// check, a fresh scratch folder that `fill` makes a complete release in
    /// (returning its record), the record written last, then the swap into
    /// the idle bank and the state write. On error the scratch folder is
    /// removed and both banks are as they were.
    pub(crate) fn stage_with(
        &mut self,
        spec: &StageSpec<'_>,
        fill: impl FnOnce(&Path) -> Result<BankRecord, LayoutError>,
    ) -> Result<BankId, LayoutError> {
        if self.state.phase == Phase::Trial {
            return Err(LayoutError::TrialInProgress);
        }
        let bank = self.idle_bank();
        let dir = self.bank_dir(bank);
        match self.space_plan(spec)? {
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
        let record = match fill(&scratch).and_then(|record| write_record(&scratch, record)) {
            Ok(record) => record,
            Err(e) => {
                // Best effort: a leftover scratch folder is removed at the next open;
                // the first error is the one to report.
                let _ = remove_tree(&scratch);
                return Err(e);
            }
        };
        self.swap_in(bank, &scratch)?;
        self.records[bank.index()] = Some(without_files(record));
        // Best effort too: the retired copy is a leftover the next open removes.
        let _ = remove_tree(&self.dir.join(retired_name(bank)));
        self.persist(self.state.clone())?;
        Ok(bank)
    }

    /// Replaces the folder of `bank` with the complete bank `scratch`: the old folder
    /// is renamed aside, the scratch folder in, and the root fsynced. On error the old
    /// folder is put back where it can be.
    fn swap_in(&mut self, bank: BankId, scratch: &Path) -> Result<(), LayoutError> {
        let dir = self.bank_dir(bank);
        let retired = self.dir.join(retired_name(bank));
        let had_folder = put_aside(&dir, &retired, scratch)?;
        move_in(&dir, &retired, scratch, had_folder)?;
        fsync_dir(&self.dir).map_err(LayoutError::at(&self.dir))
    }
}

/// Extracts, verifies and syncs the release into `scratch` (the root `dir`
/// holds the unlinked file of deferred symlinks); returns its record.
fn fill_scratch(
    dir: &Path,
    scratch: &Path,
    source: impl Read + Send,
    spec: StageSpec<'_>,
    progress: &mut dyn FnMut(u64),
) -> Result<BankRecord, LayoutError> {
    let sha256 = stream_into(scratch, dir, source, &spec, progress)?;
    Ok(BankRecord {
        sha256,
        ..spec.record
    })
}

/// Writes `record` into `scratch` (last): the scratch folder is then a complete bank.
fn write_record(scratch: &Path, record: BankRecord) -> Result<BankRecord, LayoutError> {
    let path = scratch.join(RECORD_FILE);
    let bytes = record.to_bytes().map_err(LayoutError::at(&path))?;
    write_atomic_mode(&path, &bytes, PRIVATE_MODE).map_err(LayoutError::at(&path))?;
    Ok(record)
}
