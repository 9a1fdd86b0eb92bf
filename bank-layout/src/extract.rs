//! The archive rules (SPEC §4): decompress, walk the tar entries ourselves and create
//! only what a bank may hold, strictly inside the bank folder.
//!
//! Entries may only be regular files, folders, hard links to files already extracted,
//! and symlinks. Paths may only hold plain names (and `.`). Symlinks are created after
//! every other entry, so nothing is ever written through one, and each is then proven
//! to resolve inside the bank. setuid, setgid and sticky bits are dropped, and so is
//! write permission for group and others: a bank is writable by the agent alone. Between
//! the decompressor and `tar` sits a [`TarGuard`](crate::tar_guard::TarGuard): headers `tar` would hold whole in
//! memory are bounded before they are read, and GNU sparse entries are refused.
//!
//! Bounds: no file is written past the [`Limits`] (the unpacked size and entry count the
//! manifest announces): an entry whose header claims more than what is left is refused
//! before a byte of it is written. Memory does not grow with the entry count: the
//! deferred symlinks go to an unlinked scratch file beside the bank, not to memory, and
//! only folders whose mode must wait for the end (no owner rwx) are kept, at most
//! [`MAX_RESTRICTED_DIRS`].
//!
//! Speed (SPEC §8): decompression is the critical path, so file data is written by a
//! second thread ([`write_files`](writer::write_files)) while the next bytes are
//! decompressed, through a few recycled buffers ([`WRITE_QUEUE`](writer::WRITE_QUEUE) ×
//! [`WRITE_CHUNK`](writer::WRITE_CHUNK)); that thread also asks the
//! kernel to start writing each finished file back (`sync_file_range`), so the disk
//! works during extraction and the final sync of the bank waits for little. A file gets
//! its mode when it is created, unless the umask would narrow it (then `fchmod`).
//!
//! The pieces: `entries` walks the tar entries and creates each one, `writer` is the
//! file-writing thread, `link_log` the deferred-symlink file, `paths` the checks and
//! creation of names and folders inside the bank.

mod entries;
mod link_log;
mod paths;
mod writer;

use std::collections::HashMap;
use std::fs::{self, Permissions};
use std::io::{self, BufRead};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use self::entries::extract_tar;
use self::link_log::LinkLog;
use self::paths::ParentCache;
use crate::{ArchiveFormat, LayoutError, resolve};

/// Largest zstd window accepted (2^24 = 16 MiB). Every standard level up to 19 uses at
/// most 8 MiB; only `--ultra`/`--long` archives need more, and a 128 MiB window would
/// break the 32 MiB memory budget of SPEC §8.
const MAX_ZSTD_WINDOW_LOG: u32 = 24;

/// Owner rwx, forced on folders while extracting so we can fill them; the archive's
/// own mode is applied at the end.
pub(super) const OWNER_RWX: u32 = 0o700;

/// Folders whose mode lacks owner rwx, kept in memory until the end (their mode would
/// keep us from filling them). A release has a handful at most; 4096 entries of a few
/// hundred bytes each stay far inside the 32 MiB budget, and an archive with more is
/// refused rather than let grow memory with its entry count.
pub const MAX_RESTRICTED_DIRS: usize = 4096;

/// Most bytes of symlink paths and targets deferred to the end (the scratch file
/// holding them is on the root's disk, outside the unpacked-size bound, which counts
/// file data): 300,000 links with 400-byte names each fit; a bomb of long-named links
/// does not fill the disk.
pub const MAX_LINK_NAME_BYTES: u64 = 128 * 1024 * 1024;

/// What extraction may write at most.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    /// Bytes of file data, in total.
    pub(crate) bytes: u64,
    /// Where the byte bound comes from, for the error ("announced", ...).
    pub(crate) bytes_basis: String,
    /// Archive entries, in total.
    pub(crate) entries: u64,
    /// Where the entry bound comes from.
    pub(crate) entries_basis: String,
}

/// What extraction left for [`finish`]: the deferred symlinks and folder modes.
#[derive(Debug)]
pub(crate) struct Extracted {
    /// The deferred symlinks, in archive order, in an unlinked scratch file.
    links: LinkLog,
    /// Final mode of every listed folder whose mode lacks owner rwx.
    dir_modes: HashMap<PathBuf, u32>,
}

/// Decompresses `input` by `format` and extracts its entries into the empty folder `bank`.
/// Never more than `limits`; the deferred symlinks go to a scratch file in `scratch_dir`.
pub(crate) fn extract_archive<R: BufRead>(
    input: R,
    format: ArchiveFormat,
    bank: &Path,
    limits: &Limits,
    scratch_dir: &Path,
) -> Result<Extracted, LayoutError> {
    let out = Extracted {
        links: LinkLog::create(scratch_dir)?,
        dir_modes: HashMap::new(),
    };
    match format {
        ArchiveFormat::Tar => extract_tar(input, bank, limits, out),
        ArchiveFormat::TarGz => extract_tar(
            flate2::bufread::MultiGzDecoder::new(input),
            bank,
            limits,
            out,
        ),
        ArchiveFormat::TarZst => {
            let mut decoder = zstd::stream::read::Decoder::with_buffer(input).map_err(archive)?;
            decoder
                .window_log_max(MAX_ZSTD_WINDOW_LOG)
                .map_err(archive)?;
            extract_tar(decoder, bank, limits, out)
        }
    }
}

/// Creates the deferred symlinks, proves each resolves inside `bank`, then applies the
/// restrictive folder modes (deepest first, so a read-only folder never blocks its children).
pub(crate) fn finish(bank: &Path, mut extracted: Extracted) -> Result<(), LayoutError> {
    // Parents first, while no symlink exists: every folder made here is a real one, so
    // no symlink below can be created through another symlink.
    let mut parents = ParentCache::default();
    extracted
        .links
        .for_each(|link, _| parents.ensure(bank, link))?;
    extracted.links.for_each(|link, target| {
        let path = bank.join(link);
        match std::os::unix::fs::symlink(target, &path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // Only symlinks made here can be symlinks: a later entry of the same path wins.
                if !fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
                    return Err(conflict(link, "a symbolic link"));
                }
                fs::remove_file(&path).map_err(LayoutError::at(&path))?;
                std::os::unix::fs::symlink(target, &path).map_err(LayoutError::at(&path))
            }
            Err(e) => Err(LayoutError::io(&path, e)),
        }
    })?;
    extracted
        .links
        .for_each(|link, _| resolve::check_symlink(bank, link))?;
    let mut dirs: Vec<_> = extracted.dir_modes.into_iter().collect();
    dirs.sort_by_key(|(path, _)| std::cmp::Reverse(path.components().count()));
    for (dir, mode) in dirs {
        let path = bank.join(dir);
        fs::set_permissions(&path, Permissions::from_mode(mode)).map_err(LayoutError::at(&path))?;
    }
    Ok(())
}

/// A [`LayoutError::PathEscape`].
pub(super) fn escape(name: &str, reason: &str) -> LayoutError {
    LayoutError::PathEscape {
        entry: name.to_owned(),
        reason: reason.to_owned(),
    }
}

/// A malformed-archive error from the decompressor or the tar reader.
pub(super) fn archive(e: io::Error) -> LayoutError {
    LayoutError::Archive {
        reason: e.to_string(),
    }
}

/// A malformed-archive error met while reading the entry `name`.
pub(super) fn archive_at(name: &str, e: io::Error) -> LayoutError {
    LayoutError::Archive {
        reason: format!("entry `{name}`: {e}"),
    }
}

/// An entry whose path already exists as another kind.
pub(super) fn conflict(path: &Path, kind: &str) -> LayoutError {
    LayoutError::Archive {
        reason: format!(
            "entry `{}` is {kind}, but the archive already created that path as something else",
            path.display()
        ),
    }
}
