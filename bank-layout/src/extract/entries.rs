//! Walking the tar entries: each one checked against the archive rules and the bounds,
//! then created in the bank (files through the writer thread, folders, hard links) or
//! deferred (symlinks, restrictive folder modes).

use std::ffi::OsStr;
use std::fs::{self, DirBuilder, OpenOptions, Permissions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use super::paths::{ParentCache, bank_path, create_replacing};
use super::writer::{Job, WRITE_CHUNK, WRITE_QUEUE, Writer, write_files};
use super::{
    Extracted, Limits, MAX_RESTRICTED_DIRS, OWNER_RWX, archive, archive_at, conflict, escape,
};
use crate::stage::fill;
use crate::tar_guard::TarGuard;
use crate::{LayoutError, RECORD_FILE};

/// Permission bits kept from an archive: rwx for the owner, r-x for group and others.
/// setuid, setgid and sticky are dropped (SPEC §4), and so is write for group and
/// others: the payload user may read a bank, only the agent may change it (issue 8.8).
const PERMISSION_BITS: u32 = 0o755;

/// Walks the tar entries of `reader`, through a [`TarGuard`] that refuses the headers
/// `tar` would read whole into memory when they are too large.
pub(super) fn extract_tar<R: Read>(
    reader: R,
    bank: &Path,
    limits: &Limits,
    out: Extracted,
) -> Result<Extracted, LayoutError> {
    let mut tar_archive = tar::Archive::new(TarGuard::new(reader));
    let walked = walk_entries(&mut tar_archive, bank, limits, out);
    let mut guard = tar_archive.into_inner();
    // A refused header is the cause of whatever error `tar` then made of the failed read.
    if let Some(refusal) = guard.take_refusal() {
        return Err(refusal);
    }
    let out = walked?;
    // Read the decompressed stream to its end, so the gzip CRC or zstd checksum after
    // the tar end marker is verified too.
    io::copy(&mut guard, &mut io::sink()).map_err(archive)?;
    Ok(out)
}

/// Applies every entry of `tar_archive` to `bank`; returns what [`finish`](super::finish) still has to do.
/// File data goes to a writer thread ([`write_files`]); it has written (or failed on)
/// everything when this returns.
fn walk_entries<R: Read>(
    tar_archive: &mut tar::Archive<R>,
    bank: &Path,
    limits: &Limits,
    out: Extracted,
) -> Result<Extracted, LayoutError> {
    std::thread::scope(|scope| {
        let (jobs_tx, jobs_rx) = mpsc::sync_channel(WRITE_QUEUE);
        let (recycle_tx, recycle_rx) = mpsc::channel();
        let writer = scope.spawn(move || write_files(jobs_rx, recycle_tx));
        let mut extractor = Extractor {
            bank,
            parents: ParentCache::default(),
            out,
            writer: Writer {
                jobs: jobs_tx,
                recycled: recycle_rx,
            },
            chmod_mask: umask().map_or(PERMISSION_BITS, |mask| mask & PERMISSION_BITS),
            limits,
            bytes_left: limits.bytes,
            entries_left: limits.entries,
        };
        let walked = tar_archive.entries().map_err(archive).and_then(|entries| {
            for entry in entries {
                extractor.entry(entry.map_err(archive)?)?;
            }
            Ok(())
        });
        let Extractor {
            out, writer: jobs, ..
        } = extractor;
        drop(jobs); // the writer ends once it has written what is queued
        let wrote = match writer.join() {
            Ok(wrote) => wrote,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        // A failed write is the cause of the extractor's "writer gone".
        wrote.and(walked).map(|()| out)
    })
}

/// The process's umask, from `/proc/self/status` (reading it with `umask(2)` would set
/// it, racing other threads); `None` where that is not available.
fn umask() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
    u32::from_str_radix(line.trim(), 8).ok()
}

/// The state of one extraction.
struct Extractor<'a> {
    /// The bank folder being filled.
    bank: &'a Path,
    /// The last folder made sure of, so sorted archives do not stat it per file.
    parents: ParentCache,
    /// What [`finish`](super::finish) still has to do.
    out: Extracted,
    /// The writer thread, which writes the file data.
    writer: Writer,
    /// Permission bits the umask removes from a file's mode at creation (all of
    /// [`PERMISSION_BITS`] if the umask is unknown): a mode touching them is set again.
    chmod_mask: u32,
    /// The bounds.
    limits: &'a Limits,
    /// File data bytes still allowed.
    bytes_left: u64,
    /// Entries still allowed.
    entries_left: u64,
}

impl Extractor<'_> {
    /// Applies one entry, or refuses it.
    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), LayoutError> {
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            return Ok(()); // metadata for the whole archive; nothing to create
        }
        if self.entries_left == 0 {
            return Err(LayoutError::TooManyEntries {
                limit: self.limits.entries,
                basis: self.limits.entries_basis.clone(),
            });
        }
        self.entries_left -= 1;
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw).into_owned();
        let path = bank_path(&raw).map_err(|reason| escape(&name, reason))?;
        if path.as_os_str().is_empty() {
            // `tar -C dir .` lists the top folder as `./`: that is the bank itself.
            if kind.is_dir() {
                return Ok(());
            }
            return Err(escape(&name, "names the bank folder itself"));
        }
        if path.as_os_str() == RECORD_FILE {
            return Err(escape(&name, "the name is reserved for the bank record"));
        }
        let mode = entry.header().mode().map_err(|e| archive_at(&name, e))? & PERMISSION_BITS;
        // GNU sparse entries never get here: the guard refuses them (see tar_guard).
        if kind.is_file() || kind.is_contiguous() {
            let size = entry.size();
            self.file(&name, &path, mode, size, &mut entry)
        } else if kind.is_dir() {
            self.dir(&name, &path, mode)
        } else if kind.is_symlink() {
            let target = link_target(&name, &entry)?;
            if target.as_os_str().is_empty() {
                return Err(LayoutError::Archive {
                    reason: format!("symbolic link `{name}` has an empty target"),
                });
            }
            self.out.links.push(&path, &target)
        } else if kind.is_hard_link() {
            let target = link_target(&name, &entry)?;
            self.hard_link(&name, &path, &target)
        } else {
            let kind = if kind.is_character_special() {
                "character device".to_owned()
            } else if kind.is_block_special() {
                "block device".to_owned()
            } else if kind.is_fifo() {
                "fifo".to_owned()
            } else {
                format!("tar entry of type `{}`", kind.as_byte().escape_ascii())
            };
            Err(LayoutError::UnsupportedEntry { entry: name, kind })
        }
    }

    /// Creates the regular file `path` from the entry's `size` bytes of data.
    fn file(
        &mut self,
        name: &str,
        path: &Path,
        mode: u32,
        size: u64,
        data: &mut impl Read,
    ) -> Result<(), LayoutError> {
        // The header's size is what `tar` hands out: refuse before writing a byte of it.
        if size > self.bytes_left {
            return Err(LayoutError::UnpackedTooLarge {
                limit: self.limits.bytes,
                basis: self.limits.bytes_basis.clone(),
            });
        }
        self.bytes_left -= size;
        self.parents.ensure(self.bank, path)?;
        let full = self.bank.join(path);
        // Created with its mode (only the owner may write a bank anyway, and the creating
        // descriptor may write whatever the mode says); set again if the umask narrowed it.
        let file = create_replacing(name, &full, |p| {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(p)
        })?;
        let chmod = (mode & self.chmod_mask != 0).then_some(mode);
        self.writer.send(Job::Open {
            file,
            path: full,
            chmod,
        })?;
        let mut written = 0u64;
        loop {
            let mut buf = self.writer.buffer();
            let n = fill(data, &mut buf).map_err(|e| archive_at(name, e))?;
            if n > 0 {
                self.writer.send(Job::Data { buf, len: n })?;
            }
            written += n as u64;
            if n < WRITE_CHUNK {
                break;
            }
        }
        self.writer.send(Job::Close)?;
        if written != size {
            return Err(LayoutError::Archive {
                reason: format!("entry `{name}` ends after {written} of its {size} bytes"),
            });
        }
        Ok(())
    }

    /// Creates the folder `path` with its mode; a mode without owner rwx is applied
    /// at the end (owner rwx until then, so we can fill it).
    fn dir(&mut self, name: &str, path: &Path, mode: u32) -> Result<(), LayoutError> {
        self.parents.ensure(self.bank, path)?;
        let full = self.bank.join(path);
        match DirBuilder::new().mode(OWNER_RWX).create(&full) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if !fs::symlink_metadata(&full).is_ok_and(|m| m.is_dir()) {
                    return Err(conflict(Path::new(name), "a folder"));
                }
            }
            Err(e) => return Err(LayoutError::io(&full, e)),
        }
        // Set on the folder itself: the umask never narrows or widens it.
        let now = mode | OWNER_RWX;
        fs::set_permissions(&full, Permissions::from_mode(now)).map_err(LayoutError::at(&full))?;
        if now == mode {
            // A repeated entry: the last one wins.
            self.out.dir_modes.remove(path);
        } else {
            if self.out.dir_modes.len() >= MAX_RESTRICTED_DIRS
                && !self.out.dir_modes.contains_key(path)
            {
                return Err(LayoutError::Archive {
                    reason: format!(
                        "more than {MAX_RESTRICTED_DIRS} folders without owner rwx (at `{name}`)"
                    ),
                });
            }
            self.out.dir_modes.insert(path.to_path_buf(), mode);
        }
        Ok(())
    }

    /// Creates `path` as a hard link to the already extracted regular file `target`.
    fn hard_link(&mut self, name: &str, path: &Path, target: &Path) -> Result<(), LayoutError> {
        let shown = target.display();
        let rel = bank_path(target.as_os_str().as_bytes())
            .map_err(|reason| escape(name, &format!("hard link target `{shown}`: {reason}")))?;
        if rel.as_os_str().is_empty() {
            return Err(escape(name, "hard link to the bank folder itself"));
        }
        let source = self.bank.join(&rel);
        if rel == path || !fs::symlink_metadata(&source).is_ok_and(|m| m.is_file()) {
            return Err(LayoutError::Archive {
                reason: format!(
                    "hard link `{name}` points to `{shown}`, which is not a file extracted before it"
                ),
            });
        }
        self.parents.ensure(self.bank, path)?;
        create_replacing(name, &self.bank.join(path), |p| fs::hard_link(&source, p))
    }
}

/// The link target of a link entry.
fn link_target<R: Read>(name: &str, entry: &tar::Entry<'_, R>) -> Result<PathBuf, LayoutError> {
    match entry.link_name_bytes() {
        Some(bytes) => Ok(PathBuf::from(OsStr::from_bytes(&bytes))),
        None => Err(LayoutError::Archive {
            reason: format!("link `{name}` has no target"),
        }),
    }
}
