//! Space first (SPEC §13): before staging writes anything, the root's file system must
//! have room (bytes and inodes) for the release beside both banks; failing that, room
//! once the idle bank is given up ("in place"), which the caller must allow.

use std::path::Path;

use crate::fsutil::{Free, free_space, tree_usage};
use crate::{BankRecord, LayoutError, StageSpec};

/// Bytes counted per archive entry on top of its data: a file's last block is rounded
/// up to a whole 4 KiB block, and each folder or link takes one.
pub const ENTRY_OVERHEAD_BYTES: u64 = 4096;

/// Bytes kept free beyond the release: the bank record, `state.json`'s temp copy and
/// the scratch folder's own blocks.
pub const SPACE_MARGIN_BYTES: u64 = 1024 * 1024;

/// Inodes kept free beyond the entries: the record, temp files, the scratch folder.
pub const INODE_MARGIN: u64 = 16;

/// What staging a release will do, by the free space of the root's file system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpacePlan {
    /// There is room for a scratch copy: both banks stay as they are until the
    /// release is complete.
    Scratch {
        /// Bytes staging needs.
        needed: u64,
        /// Bytes free.
        free: u64,
    },
    /// Only with the idle bank's space is there room: staging would first wipe it.
    InPlace {
        /// Bytes staging needs.
        needed: u64,
        /// Bytes free.
        free: u64,
        /// Bytes the idle bank holds.
        idle: u64,
        /// The version the idle bank holds (lost by an in-place staging), if any.
        loses: Option<String>,
    },
    /// Not even in place.
    NoRoom {
        /// Bytes staging needs.
        needed: u64,
        /// Bytes free.
        free: u64,
        /// Inodes staging needs.
        needed_inodes: u64,
        /// Inodes free.
        free_inodes: u64,
    },
}

/// Bytes and inodes `spec` needs: the announced unpacked size and entries with their
/// overhead; without an announced size, the artifact's own size (all that is known:
/// a larger tree then meets ENOSPC in the scratch folder, which leaves the banks as they
/// were).
fn needs(spec: &StageSpec<'_>) -> (u64, u64) {
    let entries = spec.entries.unwrap_or(0);
    let bytes = spec
        .unpacked_size
        .unwrap_or(spec.size)
        .saturating_add(entries.saturating_mul(ENTRY_OVERHEAD_BYTES))
        .saturating_add(SPACE_MARGIN_BYTES);
    (bytes, entries.saturating_add(INODE_MARGIN))
}

/// Plans the staging of `spec` into the root `dir`, whose idle bank is `idle_dir`
/// holding `idle_record`. The idle bank is measured only when the scratch copy does not fit.
pub(crate) fn plan(
    dir: &Path,
    idle_dir: &Path,
    idle_record: Option<&BankRecord>,
    spec: &StageSpec<'_>,
) -> Result<SpacePlan, LayoutError> {
    let (needed, needed_inodes) = needs(spec);
    let Free { bytes, inodes } = free_space(dir)?;
    if bytes >= needed && inodes >= needed_inodes {
        return Ok(SpacePlan::Scratch {
            needed,
            free: bytes,
        });
    }
    let (idle_bytes, idle_inodes) = tree_usage(idle_dir)?;
    let (with_bytes, with_inodes) = (
        bytes.saturating_add(idle_bytes),
        inodes.saturating_add(idle_inodes),
    );
    if with_bytes >= needed && with_inodes >= needed_inodes {
        return Ok(SpacePlan::InPlace {
            needed,
            free: bytes,
            idle: idle_bytes,
            loses: idle_record.map(|r| r.version.clone()),
        });
    }
    Ok(SpacePlan::NoRoom {
        needed,
        free: bytes,
        needed_inodes,
        free_inodes: inodes,
    })
}
