//! Staging a build into the idle slot: a capped, hashed extraction into a scratch
//! folder, checked to hold exactly the one binary, record written last, then renamed
//! over the slot (the old content aside first, put back on error).

use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::record::{read_record, write_record};
use super::{
    AGENT_BINARY, AgentBuild, AgentPhase, AgentSlots, MAX_AGENT_BINARY_BYTES, RETIRED_PREFIX,
    SCRATCH_PREFIX, SLOT_MODE, SlotId,
};
use crate::atomic::fsync_dir;
use crate::fsutil::{move_in, put_aside, remove_tree};
use crate::root::make_bank_dir;
use crate::stage::{StageSpec, stream_into};
use crate::{ArchiveFormat, BankRecord, LayoutError};

/// What to stage into the idle slot: the artifact's announced format, size and digest,
/// and the record to write once the slot is complete (its `sha256` and `size` are set
/// from what was verified).
#[derive(Debug, Clone)]
pub struct AgentStageSpec<'a> {
    /// Container format of the artifact.
    pub format: ArchiveFormat,
    /// Announced artifact size in bytes.
    pub size: u64,
    /// Announced SHA-256 (hex) of the artifact.
    pub sha256: &'a str,
    /// The record to write.
    pub build: AgentBuild,
}

impl AgentSlots {
    /// Streams an agent artifact into the idle slot (see [`AgentSlots::idle_slot`]):
    /// scratch folder → capped, hashed extraction (exactly one regular file
    /// `bankswap`, made 0755, at most [`MAX_AGENT_BINARY_BYTES`]) → synced → record
    /// written last → renamed over the idle slot → `agent/` fsynced → listed in
    /// `state.json`. Refused during a trial ([`LayoutError::AgentTrialInProgress`]).
    /// On error the idle slot is as it was.
    pub fn stage(
        &mut self,
        source: impl Read + Send,
        spec: AgentStageSpec<'_>,
        running: Option<SlotId>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<SlotId, LayoutError> {
        if self.state.phase == AgentPhase::Trial {
            return Err(LayoutError::AgentTrialInProgress);
        }
        let slot = self.idle_slot(running)?;
        let scratch = self.dir.join(format!("{SCRATCH_PREFIX}{slot}"));
        remove_tree(&scratch)?;
        make_bank_dir(&scratch)?;
        let build = match self.fill_scratch(&scratch, source, &spec, progress) {
            Ok(build) => build,
            Err(e) => {
                // Best effort: a leftover scratch folder is removed at the next open.
                let _ = remove_tree(&scratch);
                return Err(e);
            }
        };
        self.swap_in(slot, &scratch)?;
        let version = build.version.clone();
        self.records[slot.index()] = Some(build);
        let _ = remove_tree(&self.dir.join(format!("{RETIRED_PREFIX}{slot}")));
        self.update(|state| state.set_version(slot, Some(version)))?;
        Ok(slot)
    }

    /// Extracts and checks the build into `scratch`, then writes its record there.
    fn fill_scratch(
        &self,
        scratch: &Path,
        source: impl Read + Send,
        spec: &AgentStageSpec<'_>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<AgentBuild, LayoutError> {
        let stage = StageSpec {
            format: spec.format,
            size: spec.size,
            sha256: spec.sha256,
            record: BankRecord {
                command: AGENT_BINARY.to_owned(),
                ..BankRecord::default()
            },
            unpacked_size: Some(MAX_AGENT_BINARY_BYTES),
            entries: Some(1),
            allow_in_place: false,
        };
        let sha256 = stream_into(scratch, &self.dir, source, &stage, progress)?;
        let binary = scratch.join(AGENT_BINARY);
        let size = check_only_binary(scratch)?;
        fs::set_permissions(&binary, fs::Permissions::from_mode(SLOT_MODE))
            .map_err(LayoutError::at(&binary))?;
        File::open(&binary)
            .and_then(|f| f.sync_all())
            .map_err(LayoutError::at(&binary))?;
        let build = AgentBuild {
            sha256,
            size,
            ..spec.build.clone()
        };
        write_record(scratch, &build)?;
        Ok(build)
    }

    /// Replaces the folder of `slot` with the complete `scratch` (old content renamed
    /// aside first, `agent/` fsynced after); on error the old content is put back.
    fn swap_in(&mut self, slot: SlotId, scratch: &Path) -> Result<(), LayoutError> {
        let dir = self.dir.join(slot.dir_name());
        let retired = self.dir.join(format!("{RETIRED_PREFIX}{slot}"));
        let had_folder = put_aside(&dir, &retired, scratch)?;
        self.records[slot.index()] = None;
        if let Err(e) = move_in(&dir, &retired, scratch, had_folder) {
            if had_folder {
                self.records[slot.index()] = read_record(&dir).ok().flatten();
            }
            return Err(e);
        }
        fsync_dir(&self.dir).map_err(LayoutError::at(&self.dir))
    }
}

/// The scratch folder holds exactly one entry, the regular file `bankswap`: returns
/// its size.
fn check_only_binary(scratch: &Path) -> Result<u64, LayoutError> {
    let refuse = |reason: String| LayoutError::Archive { reason };
    let mut names = Vec::new();
    for entry in fs::read_dir(scratch).map_err(LayoutError::at(scratch))? {
        let entry = entry.map_err(LayoutError::at(scratch))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    if names != [AGENT_BINARY] {
        return Err(refuse(format!(
            "an agent release holds exactly one file `{AGENT_BINARY}`, this one holds {names:?}"
        )));
    }
    let binary = scratch.join(AGENT_BINARY);
    let meta = fs::symlink_metadata(&binary).map_err(LayoutError::at(&binary))?;
    if !meta.is_file() {
        return Err(refuse(format!(
            "`{AGENT_BINARY}` in an agent release must be a regular file"
        )));
    }
    Ok(meta.len())
}
