//! The agent's own builds (SPEC §9): two slots in the root, like the banks, and a
//! second, smaller state machine over them with the same crash-safety rules.
//!
//! ```text
//! ROOT/agent/
//!   state.json             AgentState, written with write_atomic only; 0600
//!   Slot1/bankswap         one build, 0755; Slot1/.bankswap-record.json written last
//!   Slot2/...
//!   .staging-Slot2/        scratch while staging (removed at open if left over)
//!   .retired-Slot2/        the slot's old content while the new one takes its place
//!   handover-<nonce>.json  only with the hand-over's file fallback; removed at open
//! ```
//!
//! Staging mirrors the banks: extract into `.staging-SlotN`, verify, sync, write the
//! record last; rename the old slot aside, the scratch in, fsync `agent/`; remove the
//! retired copy; list the version in `state.json`. A crash at any step leaves a slot
//! that is whole (with its record) or repaired to empty at [`AgentSlots::open`].
//!
//! The trial marker is `state.json`'s `attempt`: written once before the new build is
//! exec'd, `ran` set by the new build, cleared by [`AgentSlots::commit`] or
//! [`AgentSlots::fail_attempt`]. A cold start that finds it resolves it (§5.4 of
//! `docs/design/self-update.md`).
//!
//! Like the rest of the crate this knows no process, network or clock: times are
//! passed in, and "the running build" is a path the caller names.
//!
//! The code is split by concern: `state` (the types of `agent/state.json`),
//! `record` (the slot record), `stage` (staging a build into the idle slot),
//! `trial` (the trial marker: begin, commit, fail, the launch guard), `open`
//! (opening and the repairs it reports) and `repair` (the folder-level repairs).

mod open;
mod record;
mod repair;
mod stage;
mod state;
mod trial;

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::atomic::write_atomic_mode;
use crate::root::PRIVATE_MODE;
use crate::state::bounded_note;
use crate::{LayoutError, Pending};

pub use self::open::AgentRecovery;
pub use self::record::AgentBuild;
use self::record::read_record;
pub use self::stage::AgentStageSpec;
pub use self::state::{AgentAttempt, AgentPhase, AgentState, Interrupted, Launch, SlotId};

/// The folder of the agent builds inside the root.
pub const AGENT_DIR: &str = "agent";

/// Name of the agent state file inside [`AGENT_DIR`].
pub const AGENT_STATE_FILE: &str = "state.json";

/// Name of the build inside each slot (and of the one entry of an agent artifact).
pub const AGENT_BINARY: &str = "bankswap";

/// The `schema` value of `agent/state.json` this crate writes and understands.
pub const AGENT_STATE_SCHEMA: u32 = 1;

/// Largest `agent/state.json` read: two versions, a pending manifest (≤ 64 KiB by
/// SPEC §4), an attempt and at most `MAX_BAD_VERSIONS` marks fit many times over.
pub const MAX_AGENT_STATE_BYTES: u64 = 1024 * 1024;

/// Largest slot record read: a manifest (≤ 64 KiB) and its signature plus short fields.
pub const MAX_AGENT_RECORD_BYTES: u64 = 256 * 1024;

/// Largest agent build staged: today's release binary is ~15 MiB; 256 MiB leaves room
/// for debug builds and keeps a hostile artifact from filling the disk.
pub const MAX_AGENT_BINARY_BYTES: u64 = 256 * 1024 * 1024;

/// Attempts of one sequence interrupted before the new build ran (not its fault) that
/// are retried; the next interruption marks it bad.
pub const MAX_ATTEMPT_TRIES: u32 = 3;

/// Launches of a committed build in a row that did not report "serving" before it is
/// marked bad and the fallback is used.
pub const MAX_LAUNCH_FAILURES: u32 = 3;

/// Most hand-over schema numbers kept in a slot record (a build speaks a handful).
const MAX_HANDOVER_SCHEMAS: usize = 16;

/// Mode of the agent folder, the slots and the build: the agent user writes, the
/// installed binary (maybe another path, same user) reads and executes.
const SLOT_MODE: u32 = 0o755;

/// Prefix of a slot's scratch folder while staging.
const SCRATCH_PREFIX: &str = ".staging-";

/// Prefix of a slot's old content while the new content is renamed in.
const RETIRED_PREFIX: &str = ".retired-";

/// Prefix of the hand-over's file fallback (`handover-<nonce>.json`).
const HANDOVER_PREFIX: &str = "handover-";

/// The agent build slots of a root opened by this process.
///
/// The in-memory state always equals `agent/state.json`: every change is written with
/// `write_atomic` first and adopted only once durable.
#[derive(Debug)]
pub struct AgentSlots {
    /// `ROOT/agent`.
    dir: PathBuf,
    /// The content of `agent/state.json`.
    state: AgentState,
    /// The valid record of each slot.
    records: [Option<AgentBuild>; 2],
}

impl AgentSlots {
    /// Reads `ROOT/agent/state.json` without the lock, recovery or any write (for
    /// `status` and `--self-test`). `Ok(None)` when there is none (no self-update yet).
    pub fn read_state(root_dir: &Path) -> Result<Option<AgentState>, LayoutError> {
        AgentState::read(&root_dir.join(AGENT_DIR).join(AGENT_STATE_FILE))
    }

    /// Reads the record of `slot` in `root_dir` without the lock (for `status` and the
    /// self-test); `None` when the slot holds no complete build.
    pub fn read_record(root_dir: &Path, slot: SlotId) -> Result<Option<AgentBuild>, LayoutError> {
        read_record(&root_dir.join(AGENT_DIR).join(slot.dir_name()))
    }

    /// The state, as on disk.
    pub fn state(&self) -> &AgentState {
        &self.state
    }

    /// The complete build in `slot`, if any.
    pub fn record(&self, slot: SlotId) -> Option<&AgentBuild> {
        self.records[slot.index()].as_ref()
    }

    /// `ROOT/agent/SlotN/bankswap`.
    pub fn binary(&self, slot: SlotId) -> PathBuf {
        self.dir.join(slot.dir_name()).join(AGENT_BINARY)
    }

    /// The slot whose build is the file `exe` (same device and inode), if any: the
    /// caller passes its own executable to learn which slot it runs from.
    pub fn slot_holding(&self, exe: &Path) -> Option<SlotId> {
        let exe = fs::metadata(exe).ok()?;
        SlotId::ALL.into_iter().find(|slot| {
            self.record(*slot).is_some()
                && fs::metadata(self.binary(*slot))
                    .is_ok_and(|m| m.dev() == exe.dev() && m.ino() == exe.ino())
        })
    }

    /// The slot that is neither `active` nor `running` (the slot the caller runs from,
    /// if any). With both free, the empty one (else the one with the lower sequence).
    /// Both taken: [`LayoutError::NoIdleAgentSlot`].
    pub fn idle_slot(&self, running: Option<SlotId>) -> Result<SlotId, LayoutError> {
        let taken = |slot: SlotId| self.state.active == Some(slot) || running == Some(slot);
        match (taken(SlotId::Slot1), taken(SlotId::Slot2)) {
            (true, true) => Err(LayoutError::NoIdleAgentSlot),
            (true, false) => Ok(SlotId::Slot2),
            (false, true) => Ok(SlotId::Slot1),
            (false, false) => Ok(
                match (self.record(SlotId::Slot1), self.record(SlotId::Slot2)) {
                    (None, _) => SlotId::Slot1,
                    (_, None) => SlotId::Slot2,
                    (Some(a), Some(b)) if b.sequence < a.sequence => SlotId::Slot2,
                    _ => SlotId::Slot1,
                },
            ),
        }
    }

    /// Records a verified agent release waiting for its slot.
    pub fn schedule(&mut self, pending: Pending) -> Result<(), LayoutError> {
        self.update(|state| state.pending = Some(pending))
    }

    /// Clears the pending agent release.
    pub fn clear_pending(&mut self) -> Result<(), LayoutError> {
        self.update(|state| state.pending = None)
    }

    /// Sets the last error (`None` clears it).
    pub fn set_last_error(&mut self, error: Option<&str>) -> Result<(), LayoutError> {
        self.update(|state| state.last_error = error.map(bounded_note))
    }

    /// Changes the state with `f` and writes it (the slot versions are kept in line
    /// with the records, the schema kept, the bounds applied).
    fn update(&mut self, f: impl FnOnce(&mut AgentState)) -> Result<(), LayoutError> {
        let mut state = self.state.clone();
        f(&mut state);
        for slot in SlotId::ALL {
            let actual = self.records[slot.index()]
                .as_ref()
                .map(|r| r.version.clone());
            state.set_version(slot, actual);
        }
        state.schema = AGENT_STATE_SCHEMA;
        state.bound();
        if state == self.state {
            return Ok(());
        }
        self.write(state)
    }

    /// Writes `state` crash-safely and adopts it.
    fn write(&mut self, state: AgentState) -> Result<(), LayoutError> {
        let path = self.dir.join(AGENT_STATE_FILE);
        let mut bytes = serde_json::to_vec_pretty(&state)
            .map_err(|e| LayoutError::io(&path, io::Error::other(e)))?;
        bytes.push(b'\n');
        write_atomic_mode(&path, &bytes, PRIVATE_MODE).map_err(LayoutError::at(&path))?;
        self.state = state;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
