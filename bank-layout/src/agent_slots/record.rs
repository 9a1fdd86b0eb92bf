//! The slot record (`SlotN/.bankswap-record.json`, written last: a slot is complete
//! when it has one): its type, its read and write, and the hand-over schemas the
//! self-test stores in it.

use std::fs;
use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{AgentSlots, MAX_AGENT_RECORD_BYTES, MAX_HANDOVER_SCHEMAS, SlotId};
use crate::atomic::write_atomic_mode;
use crate::root::PRIVATE_MODE;
use crate::state::{Capped, read_capped};
use crate::{LayoutError, RECORD_FILE};

/// The slot record, `.bankswap-record.json` inside the slot, written last: its presence
/// means the slot is complete.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentBuild {
    /// Release version of the build (semver text from the manifest).
    pub version: String,
    /// Manifest sequence.
    pub sequence: u64,
    /// SHA-256 of the artifact (lower-case hex), as verified while staging.
    pub sha256: String,
    /// Bytes of the build file `SlotN/bankswap` (checked at open).
    pub size: u64,
    /// The manifest's platform (`linux-x86_64`).
    pub platform: String,
    /// Channel the release came from.
    pub channel: String,
    /// When the slot was staged, unix seconds (passed in).
    pub staged_at: u64,
    /// What `--self-test` said the build reads; empty until qualified.
    #[serde(default)]
    pub handover_schemas: Vec<u32>,
    /// The exact signed manifest bytes.
    pub manifest: String,
    /// The exact minisign signature of `manifest`.
    pub signature: String,
}

impl AgentSlots {
    /// Stores what `--self-test` said `slot`'s build reads (in its record).
    pub fn set_handover_schemas(
        &mut self,
        slot: SlotId,
        mut schemas: Vec<u32>,
    ) -> Result<(), LayoutError> {
        let Some(build) = self.record(slot) else {
            return Err(LayoutError::NoAgentBuild { slot });
        };
        schemas.truncate(MAX_HANDOVER_SCHEMAS);
        let build = AgentBuild {
            handover_schemas: schemas,
            ..build.clone()
        };
        write_record(&self.dir.join(slot.dir_name()), &build)?;
        self.records[slot.index()] = Some(build);
        Ok(())
    }
}

/// Writes `build` as the record of the slot folder `dir`.
pub(super) fn write_record(dir: &Path, build: &AgentBuild) -> Result<(), LayoutError> {
    let path = dir.join(RECORD_FILE);
    let mut bytes = serde_json::to_vec_pretty(build)
        .map_err(|e| LayoutError::io(&path, io::Error::other(e)))?;
    bytes.push(b'\n');
    write_atomic_mode(&path, &bytes, PRIVATE_MODE).map_err(LayoutError::at(&path))
}

/// The record of the slot folder `dir`: `None` if missing, too big, not a file or not
/// valid JSON (the slot is not complete); other I/O errors are returned.
pub(super) fn read_record(dir: &Path) -> Result<Option<AgentBuild>, LayoutError> {
    let path = dir.join(RECORD_FILE);
    match fs::symlink_metadata(&path) {
        Ok(meta) if meta.is_file() => {}
        Ok(_) => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(LayoutError::io(&path, e)),
    }
    match read_capped(&path, MAX_AGENT_RECORD_BYTES) {
        Ok(Capped::Whole(bytes)) => Ok(serde_json::from_slice(&bytes).ok()),
        Ok(Capped::TooBig) => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(LayoutError::io(&path, e)),
    }
}
