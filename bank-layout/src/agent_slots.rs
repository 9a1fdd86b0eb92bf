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

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::atomic::{fsync_dir, remove_temp_files, write_atomic_mode};
use crate::fsutil::{empty_dir, has_entries, remove_durably, remove_tree};
use crate::recover::LINK_LOG_PREFIX;
use crate::root::{PRIVATE_MODE, make_bank_dir};
use crate::stage::{StageSpec, stream_into};
use crate::state::{Capped, add_bad, bounded_note, read_capped};
use crate::{
    ArchiveFormat, BadVersion, BankRecord, LayoutError, Pending, RECORD_FILE, Root, marked_bad,
};

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
    fn index(self) -> usize {
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
    /// [`AgentSlots::begin_attempt`]).
    #[serde(default)]
    pub tries: u32,
}

/// The crash-loop guard of the launcher: how often in a row `slot` was exec'd at a
/// cold start without reporting "serving".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Launch {
    /// The slot launched.
    pub slot: SlotId,
    /// Launches in a row without [`AgentSlots::launch_ok`].
    pub count: u32,
}

/// Attempts of a sequence that were interrupted before the new build ran, remembered
/// across [`AgentSlots::fail_attempt`] so that [`MAX_ATTEMPT_TRIES`] can be counted.
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

    fn set_version(&mut self, slot: SlotId, version: Option<String>) {
        match slot {
            SlotId::Slot1 => self.slot1_version = version,
            SlotId::Slot2 => self.slot2_version = version,
        }
    }

    /// Bounds what is kept (bad list, notes) so the file never outgrows its read cap.
    fn bound(&mut self) {
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

    fn read(path: &Path) -> Result<Option<AgentState>, LayoutError> {
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

/// One repair made by [`AgentSlots::open`]. `Display` is one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentRecovery {
    /// A leftover of an interrupted staging or hand-over was removed.
    LeftoverRemoved {
        /// Its name inside `ROOT/agent`.
        name: String,
    },
    /// A slot's old content was put back (the staged build never replaced it).
    SlotRestored {
        /// The slot.
        slot: SlotId,
    },
    /// A slot held files but no valid build: emptied.
    SlotWiped {
        /// The slot.
        slot: SlotId,
        /// What was wrong.
        reason: String,
    },
    /// `state.json` listed another version for a slot than its record; corrected.
    VersionCorrected {
        /// The slot.
        slot: SlotId,
        /// What `state.json` listed.
        listed: Option<String>,
        /// What the record says.
        actual: Option<String>,
    },
    /// The active slot holds no build: the installed binary runs.
    ActiveMissing {
        /// The slot that was active.
        slot: SlotId,
    },
    /// An unfinished self-update attempt was resolved (the previous build stays).
    AttemptResolved {
        /// The version that was on trial.
        version: String,
        /// Whether it was marked bad (else it is retried).
        marked_bad: bool,
        /// Why.
        reason: String,
    },
    /// A committed build that did not start [`MAX_LAUNCH_FAILURES`] times was marked bad.
    CrashLoop {
        /// Its version.
        version: String,
        /// What runs now (`None` = the installed binary).
        now_active: Option<SlotId>,
    },
}

impl fmt::Display for AgentRecovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AgentRecovery::LeftoverRemoved { name } => {
                write!(f, "removed agent/{} left over", name.escape_debug())
            }
            AgentRecovery::SlotRestored { slot } => {
                write!(f, "restored agent/{slot} (its staging was interrupted)")
            }
            AgentRecovery::SlotWiped { slot, reason } => {
                write!(f, "wiped agent/{slot}: {reason}")
            }
            AgentRecovery::VersionCorrected {
                slot,
                listed,
                actual,
            } => write!(
                f,
                "agent/{slot}: state listed {}, the slot holds {}",
                listed.as_deref().unwrap_or("nothing"),
                actual.as_deref().unwrap_or("nothing")
            ),
            AgentRecovery::ActiveMissing { slot } => write!(
                f,
                "agent/{slot} was active but holds no build; the installed binary runs"
            ),
            AgentRecovery::AttemptResolved {
                version,
                marked_bad,
                reason,
            } => {
                let what = if *marked_bad {
                    "marked bad"
                } else {
                    "will be retried"
                };
                write!(
                    f,
                    "agent {version}: unfinished self-update {what}: {reason}"
                )
            }
            AgentRecovery::CrashLoop {
                version,
                now_active,
            } => write!(
                f,
                "agent {version} did not start {MAX_LAUNCH_FAILURES} times in a row: marked bad; running {}",
                now_active.map_or("the installed binary".to_owned(), |s| format!("agent/{s}"))
            ),
        }
    }
}

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
    /// Opens `ROOT/agent` (created if missing) of the locked `root` — `&Root` is the
    /// proof of the lock — and recovers (see [`AgentRecovery`]). An unfinished
    /// attempt is resolved unless `receiving` is its nonce (the hand-over receiver
    /// resolves that one). A corrupt state file is [`LayoutError::CorruptAgentState`]
    /// and nothing is touched.
    pub fn open(
        root: &Root,
        receiving: Option<&str>,
    ) -> Result<(AgentSlots, Vec<AgentRecovery>), LayoutError> {
        let dir = root.dir().join(AGENT_DIR);
        let state_path = dir.join(AGENT_STATE_FILE);
        let stored = AgentState::read(&state_path)?;
        if !dir.is_dir() {
            make_bank_dir(&dir)?;
        }
        let mut notes = Vec::new();
        remove_leftovers(&dir, receiving, &mut notes)?;
        let mut records = [None, None];
        for slot in SlotId::ALL {
            records[slot.index()] = recover_slot(&dir, slot, &mut notes)?;
        }
        let mut state = stored.clone().unwrap_or_default();
        for slot in SlotId::ALL {
            let actual = records[slot.index()]
                .as_ref()
                .map(|r: &AgentBuild| r.version.clone());
            if state.version_of(slot) != actual.as_deref() {
                if stored.is_some() {
                    notes.push(AgentRecovery::VersionCorrected {
                        slot,
                        listed: state.version_of(slot).map(str::to_owned),
                        actual: actual.clone(),
                    });
                }
                state.set_version(slot, actual);
            }
        }
        if let Some(active) = state.active
            && records[active.index()].is_none()
        {
            state.active = None;
            notes.push(AgentRecovery::ActiveMissing { slot: active });
        }
        if let Some(attempt) = state.attempt.clone()
            && receiving != Some(attempt.nonce.as_str())
        {
            let (reason, bad) = if attempt.ran {
                (
                    format!(
                        "agent {}: the process ended during its trial (crash or kill)",
                        attempt.version
                    ),
                    true,
                )
            } else {
                (
                    format!(
                        "agent {}: interrupted before the new build ran",
                        attempt.version
                    ),
                    attempt.tries >= MAX_ATTEMPT_TRIES,
                )
            };
            resolve_attempt(&mut state, &attempt, &reason, bad);
            notes.push(AgentRecovery::AttemptResolved {
                version: attempt.version,
                marked_bad: bad,
                reason,
            });
        }
        if let Some(launch) = state.launch
            && launch.count >= MAX_LAUNCH_FAILURES
        {
            state.launch = None;
            if let Some(build) = &records[launch.slot.index()] {
                let reason = format!(
                    "agent {}: did not start {MAX_LAUNCH_FAILURES} times in a row",
                    build.version
                );
                add_bad(
                    &mut state.bad_versions,
                    &build.version,
                    build.sequence,
                    &reason,
                );
                state.last_error = Some(reason);
                if state.active == Some(launch.slot) {
                    let other = launch.slot.other();
                    let good = records[other.index()]
                        .as_ref()
                        .is_some_and(|b| state.is_bad(&b.version, b.sequence).is_none());
                    state.active = good.then_some(other);
                }
                notes.push(AgentRecovery::CrashLoop {
                    version: build.version.clone(),
                    now_active: state.active,
                });
            }
        }
        state.bound();
        let mut slots = AgentSlots {
            dir,
            state: stored.clone().unwrap_or_default(),
            records,
        };
        if stored.as_ref() != Some(&state) {
            slots.write(state)?;
        }
        Ok((slots, notes))
    }

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
        remove_tree(&retired)?;
        let had_folder = match fs::rename(&dir, &retired) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => {
                let _ = remove_tree(scratch);
                return Err(LayoutError::io(&dir, e));
            }
        };
        self.records[slot.index()] = None;
        if let Err(e) = fs::rename(scratch, &dir) {
            if had_folder {
                let _ = fs::rename(&retired, &dir);
                self.records[slot.index()] = read_record(&dir).ok().flatten();
            }
            let _ = remove_tree(scratch);
            return Err(LayoutError::io(&dir, e));
        }
        fsync_dir(&self.dir).map_err(LayoutError::at(&self.dir))
    }

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

    /// Writes the trial marker: phase trial, `attempt` with `ran = false` and `tries`
    /// counting interrupted attempts of this sequence. Refused during a trial and for
    /// a slot without a build.
    pub fn begin_attempt(&mut self, mut attempt: AgentAttempt) -> Result<(), LayoutError> {
        if self.state.phase == AgentPhase::Trial || self.state.attempt.is_some() {
            return Err(LayoutError::AgentTrialInProgress);
        }
        if self.record(attempt.slot).is_none() {
            return Err(LayoutError::NoAgentBuild { slot: attempt.slot });
        }
        attempt.ran = false;
        attempt.tries = match self.state.interrupted {
            Some(i) if i.sequence == attempt.sequence => i.tries + 1,
            _ => 1,
        };
        self.update(|state| {
            state.phase = AgentPhase::Trial;
            state.attempt = Some(attempt);
        })
    }

    /// Written by the new build once it validated the hand-over: `attempt.ran = true`.
    pub fn note_ran(&mut self, nonce: &str) -> Result<(), LayoutError> {
        self.matching_attempt(nonce)?;
        self.update(|state| {
            if let Some(attempt) = &mut state.attempt {
                attempt.ran = true;
            }
        })
    }

    /// Accepts the build on trial: active = its slot, committed, attempt, pending,
    /// launch and the interrupted count cleared, `highest_sequence` raised, last error
    /// cleared. The nonce must be the attempt's.
    pub fn commit(&mut self, nonce: &str) -> Result<(), LayoutError> {
        let attempt = self.matching_attempt(nonce)?.clone();
        self.update(|state| {
            state.active = Some(attempt.slot);
            state.phase = AgentPhase::Committed;
            state.attempt = None;
            state.pending = None;
            state.launch = None;
            state.interrupted = None;
            state.highest_sequence = state.highest_sequence.max(attempt.sequence);
            state.last_error = None;
        })
    }

    /// Ends the attempt without accepting it: committed (the previous build stays),
    /// `last_error = reason`; with `mark_bad` the version is marked bad and pending
    /// cleared, else the interruption is counted. One write.
    pub fn fail_attempt(&mut self, reason: &str, mark_bad: bool) -> Result<(), LayoutError> {
        let Some(attempt) = self.state.attempt.clone() else {
            return Err(LayoutError::AgentAttemptMismatch {
                reason: "no self-update attempt is in progress".to_owned(),
            });
        };
        self.update(|state| resolve_attempt(state, &attempt, reason, mark_bad))
    }

    /// Marks a release bad that failed before any attempt (its self-test): bad list,
    /// pending cleared if it is that release, last error set. One write.
    pub fn mark_bad(
        &mut self,
        version: &str,
        sequence: u64,
        reason: &str,
    ) -> Result<(), LayoutError> {
        self.update(|state| {
            add_bad(&mut state.bad_versions, version, sequence, reason);
            if state
                .pending
                .as_ref()
                .is_some_and(|p| p.version == version && p.sequence <= sequence)
            {
                state.pending = None;
            }
            state.last_error = Some(bounded_note(reason));
        })
    }

    /// Makes `slot` the committed build in one write, without a trial (offline
    /// `apply`: nobody watches it): the next start of the installed binary runs it.
    pub fn activate_committed(&mut self, slot: SlotId) -> Result<(), LayoutError> {
        if self.state.phase == AgentPhase::Trial {
            return Err(LayoutError::AgentTrialInProgress);
        }
        let Some(build) = self.record(slot) else {
            return Err(LayoutError::NoAgentBuild { slot });
        };
        let sequence = build.sequence;
        self.update(|state| {
            state.active = Some(slot);
            state.phase = AgentPhase::Committed;
            state.pending = None;
            state.launch = None;
            state.interrupted = None;
            state.highest_sequence = state.highest_sequence.max(sequence);
            state.last_error = None;
        })
    }

    /// The launcher execs `slot` at a cold start: counts the launch; returns the count.
    pub fn note_launch(&mut self, slot: SlotId) -> Result<u32, LayoutError> {
        let count = match self.state.launch {
            Some(launch) if launch.slot == slot => launch.count.saturating_add(1),
            _ => 1,
        };
        self.update(|state| state.launch = Some(Launch { slot, count }))?;
        Ok(count)
    }

    /// The launched build serves: the crash-loop count is cleared.
    pub fn launch_ok(&mut self) -> Result<(), LayoutError> {
        self.update(|state| state.launch = None)
    }

    /// The installed binary runs from now on (`active = None`), e.g. because a package
    /// upgrade installed a newer one; `reason` is kept as the last note.
    pub fn use_installed(&mut self, reason: &str) -> Result<(), LayoutError> {
        self.update(|state| {
            state.active = None;
            state.launch = None;
            state.last_error = Some(bounded_note(reason));
        })
    }

    /// The attempt, if its nonce is `nonce`.
    fn matching_attempt(&self, nonce: &str) -> Result<&AgentAttempt, LayoutError> {
        match &self.state.attempt {
            Some(attempt) if attempt.nonce == nonce => Ok(attempt),
            Some(_) => Err(LayoutError::AgentAttemptMismatch {
                reason: "the attempt in agent/state.json has another nonce".to_owned(),
            }),
            None => Err(LayoutError::AgentAttemptMismatch {
                reason: "no self-update attempt is in progress".to_owned(),
            }),
        }
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

/// Ends `attempt` in `state`: committed, no attempt, `last_error = reason`; marked bad
/// (pending cleared) or its interruption counted.
fn resolve_attempt(state: &mut AgentState, attempt: &AgentAttempt, reason: &str, bad: bool) {
    state.phase = AgentPhase::Committed;
    state.attempt = None;
    state.last_error = Some(bounded_note(reason));
    if bad {
        add_bad(
            &mut state.bad_versions,
            &attempt.version,
            attempt.sequence,
            reason,
        );
        state.pending = None;
        state.interrupted = None;
    } else if !attempt.ran {
        state.interrupted = Some(Interrupted {
            sequence: attempt.sequence,
            tries: attempt.tries,
        });
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

/// Writes `build` as the record of the slot folder `dir`.
fn write_record(dir: &Path, build: &AgentBuild) -> Result<(), LayoutError> {
    let path = dir.join(RECORD_FILE);
    let mut bytes = serde_json::to_vec_pretty(build)
        .map_err(|e| LayoutError::io(&path, io::Error::other(e)))?;
    bytes.push(b'\n');
    write_atomic_mode(&path, &bytes, PRIVATE_MODE).map_err(LayoutError::at(&path))
}

/// The record of the slot folder `dir`: `None` if missing, too big, not a file or not
/// valid JSON (the slot is not complete); other I/O errors are returned.
fn read_record(dir: &Path) -> Result<Option<AgentBuild>, LayoutError> {
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

/// Removes temp files, scratch folders, link logs and hand-over files left in `dir`
/// (except the hand-over being received), and puts a slot's retired content back when
/// the slot itself is missing. fsyncs `dir` if anything changed.
fn remove_leftovers(
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
fn recover_slot(
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

#[cfg(test)]
mod tests {
    use super::*;

    use sha2::{Digest, Sha256};

    /// A root with its agent slots opened, in a temp folder.
    fn open() -> (tempfile::TempDir, Root, AgentSlots) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (root, _) = Root::open(tmp.path()).expect("open root");
        let (slots, notes) = AgentSlots::open(&root, None).expect("open slots");
        assert!(notes.is_empty(), "{notes:?}");
        (tmp, root, slots)
    }

    /// A plain tar with the given (name, bytes, mode) entries.
    fn tar_of(entries: &[(&str, &[u8], u32)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, bytes, mode) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(*mode);
            header.set_entry_type(tar::EntryType::Regular);
            header.set_cksum();
            builder
                .append_data(&mut header, name, *bytes)
                .expect("append");
        }
        builder.into_inner().expect("tar")
    }

    fn build(version: &str, sequence: u64) -> AgentBuild {
        AgentBuild {
            version: version.into(),
            sequence,
            platform: "linux-x86_64".into(),
            channel: "bankswap".into(),
            staged_at: 1_000,
            manifest: "{}".into(),
            signature: "sig".into(),
            ..AgentBuild::default()
        }
    }

    fn stage(
        slots: &mut AgentSlots,
        archive: &[u8],
        version: &str,
        sequence: u64,
        running: Option<SlotId>,
    ) -> Result<SlotId, LayoutError> {
        let sha = hex::encode(Sha256::digest(archive));
        let spec = AgentStageSpec {
            format: ArchiveFormat::Tar,
            size: archive.len() as u64,
            sha256: &sha,
            build: build(version, sequence),
        };
        slots.stage(archive, spec, running, &mut |_| {})
    }

    fn good_archive(content: &[u8]) -> Vec<u8> {
        tar_of(&[(AGENT_BINARY, content, 0o700)])
    }

    fn attempt(slot: SlotId, version: &str, sequence: u64, nonce: &str) -> AgentAttempt {
        AgentAttempt {
            version: version.into(),
            sequence,
            slot,
            from: None,
            from_version: "0.1.0".into(),
            from_exe: "/usr/bin/bankswap".into(),
            nonce: nonce.into(),
            started_at: 2_000,
            ran: false,
            tries: 0,
        }
    }

    fn reopen(root: &Root) -> (AgentSlots, Vec<AgentRecovery>) {
        AgentSlots::open(root, None).expect("reopen")
    }

    #[test]
    fn a_staged_build_is_whole_or_absent() {
        let (tmp, root, mut slots) = open();
        let agent = tmp.path().join(AGENT_DIR);
        let slot =
            stage(&mut slots, &good_archive(b"#!/bin/sh\n"), "0.2.0", 5, None).expect("stage");
        assert_eq!(slot, SlotId::Slot1);
        let binary = slots.binary(slot);
        let mode = fs::metadata(&binary).expect("binary").permissions().mode();
        assert_eq!(mode & 0o777, SLOT_MODE);
        assert_eq!(slots.state().slot1_version.as_deref(), Some("0.2.0"));
        assert_eq!(slots.record(slot).map(|b| b.size), Some(10));

        // A staging that fails its digest leaves the idle slot (Slot2) as it was, and
        // Slot1 untouched.
        let archive = good_archive(b"other");
        let spec = AgentStageSpec {
            format: ArchiveFormat::Tar,
            size: archive.len() as u64,
            sha256: "00",
            build: build("0.3.0", 6),
        };
        let error = slots
            .stage(&archive[..], spec, Some(SlotId::Slot1), &mut |_| {})
            .expect_err("digest");
        assert!(matches!(error, LayoutError::HashMismatch { .. }), "{error}");
        assert!(!agent.join(".staging-Slot2").exists());
        assert!(slots.record(SlotId::Slot2).is_none());
        drop(slots);

        // Crash states left by each step, repaired at open.
        // 1. scratch half-written: removed.
        fs::create_dir(agent.join(".staging-Slot2")).expect("mkdir");
        fs::write(agent.join(".staging-Slot2").join(AGENT_BINARY), b"half").expect("w");
        // 2. a slot whose record is missing (renamed in before... never: but a hand).
        fs::write(agent.join("Slot2").join(AGENT_BINARY), b"junk").expect("w");
        let (slots, notes) = reopen(&root);
        assert!(!agent.join(".staging-Slot2").exists());
        assert!(slots.record(SlotId::Slot2).is_none());
        assert!(!agent.join("Slot2").join(AGENT_BINARY).exists());
        assert!(
            notes.iter().any(|n| matches!(
                n,
                AgentRecovery::SlotWiped {
                    slot: SlotId::Slot2,
                    ..
                }
            )),
            "{notes:?}"
        );
        assert_eq!(
            slots.record(SlotId::Slot1).map(|b| b.version.as_str()),
            Some("0.2.0")
        );
        drop(slots);

        // 3. killed between "old slot renamed aside" and "scratch renamed in": the old
        //    content comes back.
        fs::rename(agent.join("Slot1"), agent.join(".retired-Slot1")).expect("mv");
        let (slots, notes) = reopen(&root);
        assert!(notes.contains(&AgentRecovery::SlotRestored {
            slot: SlotId::Slot1
        }));
        assert_eq!(
            slots.record(SlotId::Slot1).map(|b| b.version.as_str()),
            Some("0.2.0")
        );
        drop(slots);

        // 4. a build whose size is not the recorded one (a torn copy): wiped, and the
        //    state stops listing it.
        fs::write(agent.join("Slot1").join(AGENT_BINARY), b"short").expect("w");
        let (slots, notes) = reopen(&root);
        assert!(slots.record(SlotId::Slot1).is_none());
        assert_eq!(slots.state().slot1_version, None);
        assert!(
            notes
                .iter()
                .any(|n| matches!(n, AgentRecovery::VersionCorrected { .. })),
            "{notes:?}"
        );
    }

    #[test]
    fn an_archive_with_anything_but_one_binary_is_refused() {
        let (_tmp, _root, mut slots) = open();
        let cases: Vec<Vec<u8>> = vec![
            tar_of(&[("other", b"x", 0o755)]),
            tar_of(&[(AGENT_BINARY, b"x", 0o755), ("extra", b"y", 0o644)]),
            tar_of(&[]),
        ];
        for archive in cases {
            let error = stage(&mut slots, &archive, "0.2.0", 1, None).expect_err("refused");
            assert!(!error.to_string().contains('\n'), "{error}");
            assert!(slots.record(SlotId::Slot1).is_none());
            assert!(slots.record(SlotId::Slot2).is_none());
        }
    }

    #[test]
    fn the_running_slot_is_never_the_idle_one() {
        let (_tmp, _root, mut slots) = open();
        let a = stage(&mut slots, &good_archive(b"a"), "0.2.0", 1, None).expect("a");
        slots.activate_committed(a).expect("activate");
        // Active Slot1: the idle one is Slot2, whoever runs.
        assert_eq!(slots.idle_slot(None).ok(), Some(SlotId::Slot2));
        assert_eq!(
            slots.idle_slot(Some(SlotId::Slot1)).ok(),
            Some(SlotId::Slot2)
        );
        // Active Slot1 but running Slot2 (a trial that went on): no idle slot.
        assert!(matches!(
            slots.idle_slot(Some(SlotId::Slot2)),
            Err(LayoutError::NoIdleAgentSlot)
        ));
        slots
            .use_installed("installed is newer")
            .expect("installed");
        assert_eq!(
            slots.idle_slot(Some(SlotId::Slot1)).ok(),
            Some(SlotId::Slot2)
        );
        let b = stage(
            &mut slots,
            &good_archive(b"b"),
            "0.3.0",
            2,
            Some(SlotId::Slot1),
        )
        .expect("b");
        assert_eq!(b, SlotId::Slot2);
        // Installed runs, both hold builds: the older sequence is replaced.
        assert_eq!(slots.idle_slot(None).ok(), Some(SlotId::Slot1));
    }

    #[test]
    fn a_marker_without_ran_is_retried_then_marked_bad() {
        let (_tmp, root, mut slots) = open();
        let slot = stage(&mut slots, &good_archive(b"a"), "0.2.0", 7, None).expect("stage");
        let mut slots_now = slots;
        for round in 1..=MAX_ATTEMPT_TRIES {
            slots_now
                .begin_attempt(attempt(slot, "0.2.0", 7, "n"))
                .expect("begin");
            assert_eq!(slots_now.state().phase, AgentPhase::Trial);
            assert_eq!(
                slots_now.state().attempt.as_ref().map(|a| a.tries),
                Some(round)
            );
            drop(slots_now);
            let (reopened, notes) = reopen(&root);
            let bad = round >= MAX_ATTEMPT_TRIES;
            assert!(
                notes.iter().any(|n| matches!(n,
                    AgentRecovery::AttemptResolved { marked_bad, .. } if *marked_bad == bad)),
                "{notes:?}"
            );
            assert_eq!(reopened.state().phase, AgentPhase::Committed);
            assert!(reopened.state().attempt.is_none());
            assert_eq!(reopened.state().is_bad("0.2.0", 7).is_some(), bad);
            slots_now = reopened;
        }
    }

    #[test]
    fn a_marker_with_ran_is_marked_bad_in_one_write() {
        let (tmp, root, mut slots) = open();
        let slot = stage(&mut slots, &good_archive(b"a"), "0.2.0", 7, None).expect("stage");
        slots
            .schedule(Pending {
                version: "0.2.0".into(),
                sequence: 7,
                not_before: 0,
                manifest: "{}".into(),
                signature: "s".into(),
            })
            .expect("schedule");
        slots
            .begin_attempt(attempt(slot, "0.2.0", 7, "abc"))
            .expect("begin");
        slots.note_ran("abc").expect("ran");
        drop(slots);
        let state_path = tmp.path().join(AGENT_DIR).join(AGENT_STATE_FILE);
        let before = fs::metadata(&state_path).expect("state").ino();
        let (slots, _) = reopen(&root);
        // One write_atomic = one rename = one new inode, holding all of it.
        assert_ne!(fs::metadata(&state_path).expect("state").ino(), before);
        let on_disk = AgentSlots::read_state(tmp.path())
            .expect("read")
            .expect("some");
        assert_eq!(&on_disk, slots.state());
        assert!(on_disk.attempt.is_none());
        assert!(on_disk.pending.is_none());
        assert_eq!(on_disk.phase, AgentPhase::Committed);
        let bad = on_disk.is_bad("0.2.0", 7).expect("bad");
        assert!(
            bad.reason.contains("ended during its trial"),
            "{}",
            bad.reason
        );
        assert_eq!(on_disk.active, None);
    }

    #[test]
    fn commit_needs_the_matching_nonce() {
        let (_tmp, _root, mut slots) = open();
        let slot = stage(&mut slots, &good_archive(b"a"), "0.2.0", 9, None).expect("stage");
        assert!(matches!(
            slots.commit("nope"),
            Err(LayoutError::AgentAttemptMismatch { .. })
        ));
        slots
            .begin_attempt(attempt(slot, "0.2.0", 9, "right"))
            .expect("begin");
        assert!(matches!(
            slots.begin_attempt(attempt(slot, "0.2.0", 9, "second")),
            Err(LayoutError::AgentTrialInProgress)
        ));
        assert!(matches!(
            slots.commit("wrong"),
            Err(LayoutError::AgentAttemptMismatch { .. })
        ));
        assert!(matches!(
            slots.note_ran("wrong"),
            Err(LayoutError::AgentAttemptMismatch { .. })
        ));
        slots.commit("right").expect("commit");
        assert_eq!(slots.state().active, Some(slot));
        assert_eq!(slots.state().phase, AgentPhase::Committed);
        assert_eq!(slots.state().highest_sequence, 9);
        assert!(slots.state().attempt.is_none());
    }

    #[test]
    fn a_crash_looping_committed_build_falls_back() {
        let (_tmp, root, mut slots) = open();
        let a = stage(&mut slots, &good_archive(b"a"), "0.2.0", 1, None).expect("a");
        slots.activate_committed(a).expect("a active");
        let b = stage(&mut slots, &good_archive(b"bb"), "0.3.0", 2, Some(a)).expect("b");
        slots.activate_committed(b).expect("b active");
        for n in 1..=MAX_LAUNCH_FAILURES {
            assert_eq!(slots.note_launch(b).expect("launch"), n);
        }
        drop(slots);
        let (slots, notes) = reopen(&root);
        assert!(
            notes.contains(&AgentRecovery::CrashLoop {
                version: "0.3.0".into(),
                now_active: Some(a)
            }),
            "{notes:?}"
        );
        assert_eq!(slots.state().active, Some(a));
        assert!(slots.state().is_bad("0.3.0", 2).is_some());
        assert!(slots.state().launch.is_none());
        // A launch that reports serving clears the count.
        let mut slots = slots;
        slots.note_launch(a).expect("launch");
        slots.launch_ok().expect("ok");
        assert!(slots.state().launch.is_none());
    }

    #[test]
    fn state_with_unknown_schema_is_corrupt() {
        let (tmp, root, slots) = open();
        drop(slots);
        let path = tmp.path().join(AGENT_DIR).join(AGENT_STATE_FILE);
        let text = r#"{"schema": 2, "active": null, "phase": "committed", "highest_sequence": 0}"#;
        fs::write(&path, text).expect("write");
        let error = AgentSlots::open(&root, None).expect_err("corrupt");
        assert!(
            matches!(error, LayoutError::CorruptAgentState { .. }),
            "{error}"
        );
        assert!(
            error.to_string().contains("unsupported schema 2"),
            "{error}"
        );
        // Nothing was touched.
        assert_eq!(fs::read_to_string(&path).expect("read"), text);
        assert!(AgentSlots::read_state(tmp.path()).is_err());
    }

    #[test]
    fn a_failed_self_test_marks_bad_and_clears_pending() {
        let (_tmp, _root, mut slots) = open();
        slots
            .schedule(Pending {
                version: "0.2.0".into(),
                sequence: 3,
                not_before: 0,
                manifest: "{}".into(),
                signature: "s".into(),
            })
            .expect("schedule");
        slots
            .mark_bad("0.2.0", 3, "self-test: exited with status 3")
            .expect("bad");
        assert!(slots.state().pending.is_none());
        assert!(slots.state().is_bad("0.2.0", 3).is_some());
        assert!(slots.state().is_bad("0.2.0", 4).is_none());
        assert_eq!(
            slots.state().last_error.as_deref(),
            Some("self-test: exited with status 3")
        );
    }

    #[test]
    fn leftover_handover_files_go_except_the_one_being_received() {
        let (tmp, root, slots) = open();
        drop(slots);
        let agent = tmp.path().join(AGENT_DIR);
        fs::write(agent.join("handover-aaaa.json"), b"{}").expect("w");
        fs::write(agent.join("handover-bbbb.json"), b"{}").expect("w");
        let (_slots, notes) = AgentSlots::open(&root, Some("bbbb")).expect("open");
        assert!(!agent.join("handover-aaaa.json").exists());
        assert!(agent.join("handover-bbbb.json").exists());
        assert_eq!(notes.len(), 1, "{notes:?}");
        for note in notes {
            assert!(!note.to_string().contains('\n'));
        }
    }

    #[test]
    fn an_inherited_lock_is_adopted_only_if_it_is_ours() {
        use std::os::fd::OwnedFd;
        let tmp = tempfile::tempdir().expect("tempdir");
        let (root, _) = Root::open(tmp.path()).expect("open");
        let ours: OwnedFd = root.lock_fd().try_clone_to_owned().expect("dup");
        drop(root);
        // The dup still holds the flock (same open file): adopting it works, and a
        // fresh open is still refused.
        let (adopted, _) = Root::adopt(tmp.path(), ours).expect("adopt");
        assert!(matches!(
            Root::open(tmp.path()),
            Err(LayoutError::Locked { .. })
        ));
        // Another file is refused.
        let other = tmp.path().join("other");
        fs::write(&other, b"").expect("w");
        let fd: OwnedFd = File::open(&other).expect("open").into();
        assert!(matches!(
            Root::adopt(tmp.path(), fd),
            Err(LayoutError::LockNotOurs { .. })
        ));
        // The lock file opened afresh (not the holder's open file) is refused too.
        let fresh: OwnedFd = File::open(tmp.path().join(crate::LOCK_FILE))
            .expect("open")
            .into();
        assert!(matches!(
            Root::adopt(tmp.path(), fresh),
            Err(LayoutError::LockNotOurs { .. })
        ));
        drop(adopted);
    }
}
