//! The on-disk A/B bank layout of a bankswap data root and its crash-safe state machine.
//!
//! ```text
//! ROOT/
//!   agent/          the agent's own builds, two slots and their state (agent_slots)
//!   Bank1/ Bank2/   payload files of one release each, plus RECORD_FILE (written last); 0755
//!   state.json      the single source of truth (active bank, phase, versions, ...); 0600
//!   lock            held (flock) by the one process that owns the root; 0600
//!   .staging/       the scratch folder a release is staged into (same file system)
//! ```
//!
//! [`Root::open`] takes the lock and repairs what a crash or a hand left behind;
//! [`Root::inspect`] reads without locking or writing; [`Root::stage`] streams a
//! release into a scratch folder that replaces the idle bank only once complete;
//! [`Root::stage_delta`] builds it instead from the active bank plus the objects
//! that changed, checked against the release's file [`Index`];
//! [`Root::activate`], [`Root::commit`], [`Root::rollback_marking_bad`] and
//! [`Root::mark_bad`] move the state machine.
//!
//! **Architecture Invariant:** this crate knows nothing of the network, child processes,
//! the wall clock (`now` is passed in as unix seconds) or randomness. It never writes
//! into the active bank, and every change of `state.json` goes through [`write_atomic`].

#![deny(missing_docs)]

mod agent_slots;
mod atomic;
mod delta;
mod delta_index;
mod entrypoint;
mod error;
mod extract;
mod fsutil;
mod lock;
mod recover;
mod resolve;
mod root;
mod space;
mod stage;
mod state;
mod tar_guard;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use crate::agent_slots::{
    AGENT_BINARY, AGENT_DIR, AGENT_STATE_FILE, AGENT_STATE_SCHEMA, AgentAttempt, AgentBuild,
    AgentPhase, AgentRecovery, AgentSlots, AgentStageSpec, AgentState, Interrupted, Launch,
    MAX_AGENT_BINARY_BYTES, MAX_AGENT_RECORD_BYTES, MAX_AGENT_STATE_BYTES, MAX_ATTEMPT_TRIES,
    MAX_LAUNCH_FAILURES, SlotId,
};
pub use crate::atomic::{
    AtomicFile, DEFAULT_FILE_MODE, create_dir_durable, write_atomic, write_atomic_mode,
    write_atomic_with,
};
pub use crate::delta::{DeltaPlan, ObjectSource, WantedObject};
pub use crate::delta_index::{
    FileDigest, INDEX_SCHEMA, Index, IndexEntry, MAX_INDEX_BYTES, MAX_INDEX_ENTRIES,
};
pub use crate::error::LayoutError;
pub use crate::extract::{MAX_LINK_NAME_BYTES, MAX_RESTRICTED_DIRS};
pub use crate::recover::Recovery;
pub use crate::root::{Inspection, RolledBack, Root, SCRATCH_DIR};
pub use crate::space::{ENTRY_OVERHEAD_BYTES, INODE_MARGIN, SPACE_MARGIN_BYTES, SpacePlan};
pub use crate::stage::{
    FALLBACK_EXPANSION, FALLBACK_MAX_ENTRIES, FALLBACK_MIN_UNPACKED, StageSpec,
};
pub use crate::state::{
    BadVersion, BankRecord, MAX_BAD_VERSIONS, MAX_NOTE_BYTES, Pending, STATE_SCHEMA, State,
    marked_bad,
};

/// Name of the bank record inside each bank folder.
///
/// Reserved: an archive entry of that name at the top of the bank is refused, so a
/// payload can never forge or pre-empt the record that marks a bank as complete.
pub const RECORD_FILE: &str = ".bankswap-record.json";

/// Name of the state file in the root.
pub const STATE_FILE: &str = "state.json";

/// Name of the lock file in the root.
pub const LOCK_FILE: &str = "lock";

/// One of the two bank folders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BankId {
    /// `ROOT/Bank1`.
    Bank1,
    /// `ROOT/Bank2`.
    Bank2,
}

impl BankId {
    /// Both banks, in order.
    pub const ALL: [BankId; 2] = [BankId::Bank1, BankId::Bank2];

    /// The other bank.
    pub fn other(self) -> BankId {
        match self {
            BankId::Bank1 => BankId::Bank2,
            BankId::Bank2 => BankId::Bank1,
        }
    }

    /// The folder name of this bank inside the root.
    pub fn dir_name(self) -> &'static str {
        match self {
            BankId::Bank1 => "Bank1",
            BankId::Bank2 => "Bank2",
        }
    }

    /// 0 for Bank1, 1 for Bank2: an index into per-bank arrays.
    pub(crate) fn index(self) -> usize {
        match self {
            BankId::Bank1 => 0,
            BankId::Bank2 => 1,
        }
    }
}

impl fmt::Display for BankId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.dir_name())
    }
}

/// Whether the active bank is proven healthy or still on trial.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// The active bank is the accepted version.
    Committed,
    /// The active bank was just activated; the idle bank holds the fallback.
    Trial,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Committed => "committed",
            Phase::Trial => "trial",
        })
    }
}

/// The container format of a release artifact (`artifact.format` of the manifest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArchiveFormat {
    /// An uncompressed tar archive (`tar`).
    Tar,
    /// A gzip-compressed tar archive (`tar.gz`).
    TarGz,
    /// A zstd-compressed tar archive (`tar.zst`).
    TarZst,
}

impl fmt::Display for ArchiveFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ArchiveFormat::Tar => "tar",
            ArchiveFormat::TarGz => "tar.gz",
            ArchiveFormat::TarZst => "tar.zst",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bank_ids_name_their_folders_and_pair_up() {
        assert_eq!(BankId::Bank1.other(), BankId::Bank2);
        assert_eq!(BankId::Bank2.other(), BankId::Bank1);
        assert_eq!(BankId::Bank1.dir_name(), "Bank1");
        assert_eq!(BankId::Bank2.to_string(), "Bank2");
    }

    #[test]
    fn serde_names_match_the_contract() {
        assert_eq!(
            serde_json::to_string(&BankId::Bank2).ok().as_deref(),
            Some("\"Bank2\"")
        );
        assert_eq!(
            serde_json::to_string(&Phase::Trial).ok().as_deref(),
            Some("\"trial\"")
        );
        assert_eq!(
            serde_json::to_string(&Phase::Committed).ok().as_deref(),
            Some("\"committed\"")
        );
        assert_eq!(ArchiveFormat::TarZst.to_string(), "tar.zst");
    }
}
