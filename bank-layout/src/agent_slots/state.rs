//! The types of `agent/state.json`: the slot ids, the phase, the trial marker, the
//! launch guard and the state itself, with its bounded, schema-checked read.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{AGENT_STATE_SCHEMA, MAX_AGENT_STATE_BYTES};
use crate::state::{Capped, bounded_note, read_capped};
use crate::{BadVersion, LayoutError, Pending, marked_bad};

/// One of the two agent build slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SlotId {
    /// `ROOT/agent/Slot1`.
    Slot1,
    /// `ROOT/agent/Slot2`.
    Slot2,
}

impl SlotId {
    /// Both slots, in order.
    pub const ALL: [SlotId; 2] = [SlotId::Slot1, SlotId::Slot2];

    /// The other slot.
    pub fn other(self) -> SlotId {
        match self {
            SlotId::Slot1 => SlotId::Slot2,
            SlotId::Slot2 => SlotId::Slot1,
        }
    }

    /// The folder name of this slot inside `ROOT/agent`.
    pub fn dir_name(self) -> &'static str {
        match self {
            SlotId::Slot1 => "Slot1",
            SlotId::Slot2 => "Slot2",
        }
    }

    /// 0 for Slot1, 1 for Slot2.
    pub(super) fn index(self) -> usize {
        match self {
            SlotId::Slot1 => 0,
            SlotId::Slot2 => 1,
        }
    }
}

impl fmt::Display for SlotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.dir_name())
    }
}

/// Whether the agent build in use is accepted, or a new one is on trial.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentPhase {
    /// `active` (or the installed binary) is the accepted build.
    Committed,
    /// `attempt` names a build exec'd (or about to be) that has not committed yet.
    Trial,
}

impl fmt::Display for AgentPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AgentPhase::Committed => "committed",
            AgentPhase::Trial => "trial",
        })
    }
}

/// The trial marker: a new build is being (or was) exec'd and has not committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentAttempt {
    /// Release version on trial.
    pub version: String,
    /// Its manifest sequence.
    pub sequence: u64,
    /// The slot holding the build on trial.
    pub slot: SlotId,
    /// The build it replaces: a slot, or `None` for the installed binary.
    pub from: Option<SlotId>,
    /// Version of the build it replaces.
    pub from_version: String,
    /// What to exec to go back (a slot's binary or the installed binary's path).
    pub from_exe: PathBuf,
    /// 32 hex characters; equals the hand-over's.
    pub nonce: String,
    /// When the attempt began, unix seconds (passed in).
    pub started_at: u64,
    /// Set by the new build once it validated the hand-over: from then on an ended
    /// process is the build's fault.
    #[serde(default)]
    pub ran: bool,
    /// Attempts of this sequence interrupted before `ran`, this one included (set by
    /// [`AgentSlots::begin_attempt`](super::AgentSlots::begin_attempt)).
    #[serde(default)]
    pub tries: u32,
}

/// The crash-loop guard of the launcher: how often in a row `slot` was exec'd at a
/// cold start without reporting "serving".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Launch {
    /// The slot launched.
    pub slot: SlotId,
    /// Launches in a row without [`AgentSlots::launch_ok`](super::AgentSlots::launch_ok).
    pub count: u32,
}

/// Attempts of a sequence that were interrupted before the new build ran, remembered
/// across [`AgentSlots::fail_attempt`](super::AgentSlots::fail_attempt) so that [`MAX_ATTEMPT_TRIES`](super::MAX_ATTEMPT_TRIES) can be counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interrupted {
    /// The sequence.
    pub sequence: u64,
    /// Interrupted attempts so far.
    pub tries: u32,
}

/// `ROOT/agent/state.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentState {
    /// [`AGENT_STATE_SCHEMA`].
    pub schema: u32,
    /// The committed slot; `None` = run the installed binary.
    pub active: Option<SlotId>,
    /// Committed, or a build on trial (see `attempt`).
    pub phase: AgentPhase,
    /// Version held by Slot1, kept in sync with its record.
    #[serde(default)]
    pub slot1_version: Option<String>,
    /// Version held by Slot2, kept in sync with its record.
    #[serde(default)]
    pub slot2_version: Option<String>,
    /// Highest agent-release sequence accepted (replay defence, own channel).
    pub highest_sequence: u64,
    /// Agent versions marked bad (same rule as the banks': a higher sequence clears).
    #[serde(default)]
    pub bad_versions: Vec<BadVersion>,
    /// A verified agent release waiting for its slot.
    #[serde(default)]
    pub pending: Option<Pending>,
    /// The trial marker.
    #[serde(default)]
    pub attempt: Option<AgentAttempt>,
    /// The launcher's crash-loop guard.
    #[serde(default)]
    pub launch: Option<Launch>,
    /// Attempts of one sequence interrupted before the new build ran.
    #[serde(default)]
    pub interrupted: Option<Interrupted>,
    /// The last self-update error, one line (rollback reason, self-test failure, ...).
    #[serde(default)]
    pub last_error: Option<String>,
}

impl Default for AgentState {
    /// No build in the root: the installed binary runs, nothing seen.
    fn default() -> AgentState {
        AgentState {
            schema: AGENT_STATE_SCHEMA,
            active: None,
            phase: AgentPhase::Committed,
            slot1_version: None,
            slot2_version: None,
            highest_sequence: 0,
            bad_versions: Vec::new(),
            pending: None,
            attempt: None,
            launch: None,
            interrupted: None,
            last_error: None,
        }
    }
}

impl AgentState {
    /// The version `state.json` lists for `slot`.
    pub fn version_of(&self, slot: SlotId) -> Option<&str> {
        match slot {
            SlotId::Slot1 => self.slot1_version.as_deref(),
            SlotId::Slot2 => self.slot2_version.as_deref(),
        }
    }

    /// Whether `version` at `sequence` is marked bad (the banks' rule).
    pub fn is_bad(&self, version: &str, sequence: u64) -> Option<&BadVersion> {
        marked_bad(&self.bad_versions, version, sequence)
    }

    pub(super) fn set_version(&mut self, slot: SlotId, version: Option<String>) {
        match slot {
            SlotId::Slot1 => self.slot1_version = version,
            SlotId::Slot2 => self.slot2_version = version,
        }
    }

    /// Bounds what is kept (bad list, notes) so the file never outgrows its read cap.
    pub(super) fn bound(&mut self) {
        let excess = self
            .bad_versions
            .len()
            .saturating_sub(crate::MAX_BAD_VERSIONS);
        self.bad_versions.drain(..excess);
        if let Some(error) = &self.last_error {
            self.last_error = Some(bounded_note(error));
        }
    }

    fn parse(path: &Path, bytes: &[u8]) -> Result<AgentState, LayoutError> {
        let corrupt = |reason: String| LayoutError::CorruptAgentState {
            path: path.to_path_buf(),
            reason,
        };
        let state: AgentState =
            serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
        if state.schema != AGENT_STATE_SCHEMA {
            return Err(corrupt(format!(
                "unsupported schema {} (this bankswap understands {AGENT_STATE_SCHEMA})",
                state.schema
            )));
        }
        Ok(state)
    }

    pub(super) fn read(path: &Path) -> Result<Option<AgentState>, LayoutError> {
        match read_capped(path, MAX_AGENT_STATE_BYTES) {
            Ok(Capped::Whole(bytes)) => AgentState::parse(path, &bytes).map(Some),
            Ok(Capped::TooBig) => Err(LayoutError::CorruptAgentState {
                path: path.to_path_buf(),
                reason: format!("larger than {MAX_AGENT_STATE_BYTES} bytes"),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(LayoutError::io(path, e)),
        }
    }
}
