//! The folder-level repairs at open: leftovers of a staging or hand-over removed, a
//! slot's retired content put back, a slot without a valid build emptied.

use std::fs;
use std::io;
use std::path::Path;

use super::record::read_record;
use super::{
    AGENT_BINARY, AgentBuild, AgentRecovery, HANDOVER_PREFIX, RETIRED_PREFIX, SCRATCH_PREFIX,
    SlotId,
};
use crate::atomic::{fsync_dir, remove_temp_files};
use crate::fsutil::{empty_dir, has_entries, remove_durably, remove_tree};
use crate::recover::LINK_LOG_PREFIX;
use crate::root::make_bank_dir;
use crate::{LayoutError, RECORD_FILE};

/// Removes temp files, scratch folders, link logs and hand-over files left in `dir`
/// (except the hand-over being received), and puts a slot's retired content back when
/// the slot itself is missing. fsyncs `dir` if anything changed.
pub(super) fn remove_leftovers(
    dir: &Path,
    receiving: Option<&str>,
    notes: &mut Vec<AgentRecovery>,
) -> Result<(), LayoutError> {
    let mut changed = remove_temp_files(dir).map_err(LayoutError::at(dir))? > 0;
    for slot in SlotId::ALL {
        let retired = dir.join(format!("{RETIRED_PREFIX}{slot}"));
        if fs::symlink_metadata(&retired).is_err() {
            continue;
        }
        let slot_dir = dir.join(slot.dir_name());
        match fs::symlink_metadata(&slot_dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::rename(&retired, &slot_dir).map_err(LayoutError::at(&slot_dir))?;
                notes.push(AgentRecovery::SlotRestored { slot });
            }
            _ => {
                remove_tree(&retired)?;
                notes.push(AgentRecovery::LeftoverRemoved {
                    name: format!("{RETIRED_PREFIX}{slot}"),
                });
            }
        }
        changed = true;
    }
    let kept = receiving.map(|nonce| format!("{HANDOVER_PREFIX}{nonce}.json"));
    for entry in fs::read_dir(dir).map_err(LayoutError::at(dir))? {
        let entry = entry.map_err(LayoutError::at(dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let leftover = name.starts_with(SCRATCH_PREFIX)
            || name.starts_with(LINK_LOG_PREFIX)
            || (name.starts_with(HANDOVER_PREFIX) && kept.as_deref() != Some(name.as_str()));
        if leftover {
            remove_tree(&entry.path())?;
            notes.push(AgentRecovery::LeftoverRemoved { name });
            changed = true;
        }
    }
    if changed {
        fsync_dir(dir).map_err(LayoutError::at(dir))?;
    }
    Ok(())
}

/// Brings one slot folder into shape: created if missing, emptied if it holds files but
/// no valid build (no record, no binary, or a binary of another size than recorded).
pub(super) fn recover_slot(
    dir: &Path,
    slot: SlotId,
    notes: &mut Vec<AgentRecovery>,
) -> Result<Option<AgentBuild>, LayoutError> {
    let slot_dir = dir.join(slot.dir_name());
    match fs::symlink_metadata(&slot_dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return Err(LayoutError::io(
                &slot_dir,
                io::Error::new(
                    io::ErrorKind::NotADirectory,
                    "an agent slot must be a real folder",
                ),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            make_bank_dir(&slot_dir)?;
            return Ok(None);
        }
        Err(e) => return Err(LayoutError::io(&slot_dir, e)),
    }
    let problem = match read_record(&slot_dir)? {
        None => "no complete build (no valid record)".to_owned(),
        Some(build) => {
            let binary = slot_dir.join(AGENT_BINARY);
            match fs::symlink_metadata(&binary) {
                Ok(meta) if meta.is_file() && meta.len() == build.size => return Ok(Some(build)),
                Ok(meta) if meta.is_file() => format!(
                    "its build has {} bytes, the record says {}",
                    meta.len(),
                    build.size
                ),
                Ok(_) => format!("`{AGENT_BINARY}` is not a regular file"),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    format!("`{AGENT_BINARY}` is missing")
                }
                Err(e) => return Err(LayoutError::io(&binary, e)),
            }
        }
    };
    if !has_entries(&slot_dir)? {
        return Ok(None);
    }
    remove_durably(&slot_dir.join(RECORD_FILE), &slot_dir)?;
    empty_dir(&slot_dir)?;
    notes.push(AgentRecovery::SlotWiped {
        slot,
        reason: problem,
    });
    Ok(None)
}
