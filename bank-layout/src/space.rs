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
    let free = free_space(dir)?;
    decide(needs(spec), free, || tree_usage(idle_dir), idle_record)
}

/// The decision of [`plan`], given what is needed, what is free and how to measure the
/// idle bank (asked only when the scratch copy does not fit).
fn decide(
    (needed, needed_inodes): (u64, u64),
    Free { bytes, inodes }: Free,
    idle_usage: impl FnOnce() -> Result<(u64, u64), LayoutError>,
    idle_record: Option<&BankRecord>,
) -> Result<SpacePlan, LayoutError> {
    if bytes >= needed && inodes >= needed_inodes {
        return Ok(SpacePlan::Scratch {
            needed,
            free: bytes,
        });
    }
    let (idle_bytes, idle_inodes) = idle_usage()?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ArchiveFormat;

    const MIB: u64 = 1024 * 1024;

    fn spec(unpacked: Option<u64>, entries: Option<u64>) -> StageSpec<'static> {
        StageSpec {
            format: ArchiveFormat::TarZst,
            size: 10 * MIB,
            sha256: "",
            record: BankRecord::default(),
            unpacked_size: unpacked,
            entries,
            allow_in_place: false,
        }
    }

    fn free(bytes: u64, inodes: u64) -> Free {
        Free { bytes, inodes }
    }

    #[test]
    fn the_need_counts_data_entries_and_a_margin() {
        assert_eq!(
            needs(&spec(Some(100 * MIB), Some(10))),
            (
                100 * MIB + 10 * ENTRY_OVERHEAD_BYTES + SPACE_MARGIN_BYTES,
                10 + INODE_MARGIN
            )
        );
        // Without an announced size, the artifact's own size is all that is known.
        assert_eq!(
            needs(&spec(None, None)),
            (10 * MIB + SPACE_MARGIN_BYTES, INODE_MARGIN)
        );
        assert_eq!(needs(&spec(Some(u64::MAX), Some(u64::MAX))).0, u64::MAX);
    }

    #[test]
    fn scratch_in_place_or_no_room() {
        let need = (100 * MIB, 1000);
        let record = BankRecord {
            version: "1.0.0".into(),
            ..BankRecord::default()
        };
        let never = || -> Result<(u64, u64), LayoutError> {
            Err(LayoutError::NoPrevious) // not asked when the scratch copy fits
        };
        assert_eq!(
            decide(need, free(200 * MIB, 5000), never, Some(&record)).unwrap(),
            SpacePlan::Scratch {
                needed: 100 * MIB,
                free: 200 * MIB
            }
        );
        assert_eq!(
            decide(
                need,
                free(60 * MIB, 5000),
                || Ok((50 * MIB, 10)),
                Some(&record)
            )
            .unwrap(),
            SpacePlan::InPlace {
                needed: 100 * MIB,
                free: 60 * MIB,
                idle: 50 * MIB,
                loses: Some("1.0.0".into())
            }
        );
        // Inodes count as much as bytes.
        assert!(matches!(
            decide(need, free(500 * MIB, 900), || Ok((MIB, 200)), None).unwrap(),
            SpacePlan::InPlace { loses: None, .. }
        ));
        assert_eq!(
            decide(
                need,
                free(10 * MIB, 5000),
                || Ok((50 * MIB, 10)),
                Some(&record)
            )
            .unwrap(),
            SpacePlan::NoRoom {
                needed: 100 * MIB,
                free: 10 * MIB,
                needed_inodes: 1000,
                free_inodes: 5000
            }
        );
    }
}
