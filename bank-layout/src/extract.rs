//! The archive rules (SPEC §4): decompress, walk the tar entries ourselves and create
//! only what a bank may hold, strictly inside the bank folder.
//!
//! Entries may only be regular files, folders, hard links to files already extracted,
//! and symlinks. Paths may only hold plain names (and `.`). Symlinks are created after
//! every other entry, so nothing is ever written through one, and each is then proven
//! to resolve inside the bank. setuid, setgid and sticky bits are dropped, and so is
//! write permission for group and others: a bank is writable by the agent alone. Between
//! the decompressor and `tar` sits a [`TarGuard`]: headers `tar` would hold whole in
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
//! second thread ([`write_files`]) while the next bytes are decompressed, through a few
//! recycled buffers ([`WRITE_QUEUE`] × [`WRITE_CHUNK`]); that thread also asks the
//! kernel to start writing each finished file back (`sync_file_range`), so the disk
//! works during extraction and the final sync of the bank waits for little. A file gets
//! its mode when it is created, unless the umask would narrow it (then `fchmod`).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Seek, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};

use crate::stage::fill;
use crate::tar_guard::TarGuard;
use crate::{ArchiveFormat, LayoutError, RECORD_FILE, resolve};

/// Bytes moved per write while extracting a file: large writes keep syscall overhead
/// out of the pipeline (zstd hands out at most 128 KiB blocks anyway); the buffers are
/// recycled, so memory does not grow with the file size.
const WRITE_CHUNK: usize = 128 * 1024;

/// Buffers of file data queued for the writer thread: 4 × 128 KiB lets decompression
/// run ahead over a slow write without growing memory (at most `WRITE_QUEUE + 2`
/// buffers exist: the queued ones, the one being written and the one being filled).
const WRITE_QUEUE: usize = 4;

/// Largest zstd window accepted (2^24 = 16 MiB). Every standard level up to 19 uses at
/// most 8 MiB; only `--ultra`/`--long` archives need more, and a 128 MiB window would
/// break the 32 MiB memory budget of SPEC §8.
const MAX_ZSTD_WINDOW_LOG: u32 = 24;

/// Permission bits kept from an archive: rwx for the owner, r-x for group and others.
/// setuid, setgid and sticky are dropped (SPEC §4), and so is write for group and
/// others: the payload user may read a bank, only the agent may change it (issue 8.8).
const PERMISSION_BITS: u32 = 0o755;

/// Owner rwx, forced on folders while extracting so we can fill them; the archive's
/// own mode is applied at the end.
const OWNER_RWX: u32 = 0o700;

/// Mode of folders the archive implies but does not list.
const IMPLIED_DIR_MODE: u32 = 0o755;

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

/// Bytes of the buffered writer and reader of the deferred-symlink file.
const LINK_LOG_BUFFER: usize = 64 * 1024;

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

/// Symlinks to create at the end: `(path in the bank, target)` records, appended to an
/// unlinked file (gone by itself after a crash), read back in order.
#[derive(Debug)]
struct LinkLog {
    /// The buffered log file.
    writer: BufWriter<File>,
    /// Records written.
    count: u64,
    /// Bytes of names written, at most [`MAX_LINK_NAME_BYTES`].
    name_bytes: u64,
}

impl LinkLog {
    /// A new, already unlinked, log file in `dir` (the root, beside the scratch bank).
    fn create(dir: &Path) -> Result<LinkLog, LayoutError> {
        let path = dir.join(format!(".staging-links.{}", std::process::id()));
        let _ = fs::remove_file(&path); // a leftover of a crashed process with our pid
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(LayoutError::at(&path))?;
        fs::remove_file(&path).map_err(LayoutError::at(&path))?;
        Ok(LinkLog {
            writer: BufWriter::with_capacity(LINK_LOG_BUFFER, file),
            count: 0,
            name_bytes: 0,
        })
    }

    /// Appends the symlink `path` -> `target`.
    fn push(&mut self, path: &Path, target: &Path) -> Result<(), LayoutError> {
        let len = (path.as_os_str().len() + target.as_os_str().len()) as u64;
        self.name_bytes += len;
        if self.name_bytes > MAX_LINK_NAME_BYTES {
            return Err(LayoutError::Archive {
                reason: format!(
                    "symbolic links with more than {MAX_LINK_NAME_BYTES} bytes of names (at `{}`)",
                    path.display()
                ),
            });
        }
        let mut put = |bytes: &[u8]| -> io::Result<()> {
            let len = u32::try_from(bytes.len())
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name too long"))?;
            self.writer.write_all(&len.to_le_bytes())?;
            self.writer.write_all(bytes)
        };
        put(path.as_os_str().as_bytes())
            .and_then(|()| put(target.as_os_str().as_bytes()))
            .map_err(|e| LayoutError::io(Path::new("(deferred symlinks)"), e))?;
        self.count += 1;
        Ok(())
    }

    /// Calls `each` with every record, in order.
    fn for_each(
        &mut self,
        mut each: impl FnMut(&Path, &Path) -> Result<(), LayoutError>,
    ) -> Result<(), LayoutError> {
        let at = |e| LayoutError::io(Path::new("(deferred symlinks)"), e);
        if self.count == 0 {
            return Ok(());
        }
        self.writer.flush().map_err(at)?;
        let mut file = self.writer.get_ref();
        file.rewind().map_err(at)?;
        let mut reader = BufReader::with_capacity(LINK_LOG_BUFFER, file);
        let take = |reader: &mut BufReader<&File>| -> io::Result<PathBuf> {
            let mut len = [0u8; 4];
            reader.read_exact(&mut len)?;
            let mut bytes = vec![0u8; u32::from_le_bytes(len) as usize];
            reader.read_exact(&mut bytes)?;
            Ok(PathBuf::from(OsStr::from_bytes(&bytes)))
        };
        for _ in 0..self.count {
            let path = take(&mut reader).map_err(at)?;
            let target = take(&mut reader).map_err(at)?;
            each(&path, &target)?;
        }
        // Appends go to the end again if anything is pushed later.
        let mut file = self.writer.get_ref();
        file.seek(io::SeekFrom::End(0)).map_err(at)?;
        Ok(())
    }
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

/// Walks the tar entries of `reader`, through a [`TarGuard`] that refuses the headers
/// `tar` would read whole into memory when they are too large.
fn extract_tar<R: Read>(
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

/// Applies every entry of `tar_archive` to `bank`; returns what [`finish`] still has to do.
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

/// What the extracting thread hands the writer thread, in order.
enum Job {
    /// A file just created: the data that follows goes into it.
    Open {
        /// The file, open for writing.
        file: File,
        /// Its path, for errors.
        path: PathBuf,
        /// The mode to set once it is written, when the umask narrowed the one it was
        /// created with.
        chmod: Option<u32>,
    },
    /// The next `len` bytes of the open file, in `buf` (recycled afterwards).
    Data {
        /// A [`WRITE_CHUNK`] buffer.
        buf: Vec<u8>,
        /// How much of it holds data.
        len: usize,
    },
    /// The open file is complete.
    Close,
}

/// The extractor's end of the writer thread.
struct Writer {
    /// Jobs, at most [`WRITE_QUEUE`] waiting.
    jobs: SyncSender<Job>,
    /// Buffers written and handed back.
    recycled: Receiver<Vec<u8>>,
}

impl Writer {
    /// A buffer to fill: a recycled one, or a new one while fewer than the bound exist.
    fn buffer(&self) -> Vec<u8> {
        self.recycled
            .try_recv()
            .unwrap_or_else(|_| vec![0; WRITE_CHUNK])
    }

    /// Queues `job`; fails if the writer stopped (its own error is reported instead).
    fn send(&self, job: Job) -> Result<(), LayoutError> {
        self.jobs.send(job).map_err(|_| LayoutError::Archive {
            reason: "the file writer stopped".to_owned(),
        })
    }
}

/// The writer thread: writes each file's data, sets its mode if needed, starts its
/// writeback and closes it. Stops at the first error, which it returns.
fn write_files(jobs: Receiver<Job>, recycle: Sender<Vec<u8>>) -> Result<(), LayoutError> {
    let mut open: Option<(File, PathBuf, Option<u32>)> = None;
    for job in jobs {
        match job {
            Job::Open { file, path, chmod } => open = Some((file, path, chmod)),
            Job::Data { buf, len } => {
                if let Some((file, path, _)) = &mut open {
                    file.write_all(&buf[..len]).map_err(LayoutError::at(path))?;
                }
                let _ = recycle.send(buf); // the extractor may be done: fine
            }
            Job::Close => {
                if let Some((file, path, chmod)) = open.take() {
                    if let Some(mode) = chmod {
                        file.set_permissions(Permissions::from_mode(mode))
                            .map_err(LayoutError::at(&path))?;
                    }
                    start_writeback(&file);
                }
            }
        }
    }
    Ok(())
}

/// Asks the kernel to start writing `file`'s data to disk now, without waiting: the
/// bank's final sync (`syncfs`, or an fsync per file) then finds it mostly written.
/// Only a hint: durability still comes from that sync, which reports any write error.
fn start_writeback(file: &File) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: sync_file_range only reads the descriptor, which `file` keeps open.
        let _ =
            unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = file;
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
    /// What [`finish`] still has to do.
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

/// Remembers the last folder whose existence was made sure of.
#[derive(Default)]
struct ParentCache {
    /// Parent (relative to the bank) of the last entry placed.
    last: Option<PathBuf>,
}

impl ParentCache {
    /// Creates the folders above `path` (relative to `bank`) if missing.
    fn ensure(&mut self, bank: &Path, path: &Path) -> Result<(), LayoutError> {
        let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) else {
            return Ok(());
        };
        if self.last.as_deref() == Some(parent) {
            return Ok(());
        }
        make_dirs(bank, parent).map_err(|e| match e {
            MakeDirs::NotAFolder => LayoutError::Archive {
                reason: format!(
                    "entry `{}` lies below `{}`, which is not a folder",
                    path.display(),
                    parent.display()
                ),
            },
            MakeDirs::Io(e) => e,
        })?;
        self.last = Some(parent.to_path_buf());
        Ok(())
    }
}

/// Why [`make_dirs`] failed.
enum MakeDirs {
    /// Something on the way is not a folder.
    NotAFolder,
    /// Another error.
    Io(LayoutError),
}

/// Creates `rel` (relative to `bank`) and the folders above it, each with exactly
/// [`IMPLIED_DIR_MODE`] (set on the folder: the umask does not apply).
fn make_dirs(bank: &Path, rel: &Path) -> Result<(), MakeDirs> {
    let full = bank.join(rel);
    match DirBuilder::new().mode(OWNER_RWX).create(&full) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return if fs::symlink_metadata(&full).is_ok_and(|m| m.is_dir()) {
                Ok(())
            } else {
                Err(MakeDirs::NotAFolder)
            };
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            match rel.parent().filter(|p| !p.as_os_str().is_empty()) {
                Some(parent) => make_dirs(bank, parent)?,
                None => return Err(MakeDirs::Io(LayoutError::io(&full, e))),
            }
            return make_dirs(bank, rel);
        }
        Err(e) if e.kind() == io::ErrorKind::NotADirectory => return Err(MakeDirs::NotAFolder),
        Err(e) => return Err(MakeDirs::Io(LayoutError::io(&full, e))),
    }
    fs::set_permissions(&full, Permissions::from_mode(IMPLIED_DIR_MODE))
        .map_err(|e| MakeDirs::Io(LayoutError::io(&full, e)))
}

/// Runs `create` on `path`; if a file is already there (a repeated entry) it is
/// removed first, so hard links to it keep the old content. Anything else there is a
/// conflict of kinds.
fn create_replacing<T>(
    name: &str,
    path: &Path,
    create: impl Fn(&Path) -> io::Result<T>,
) -> Result<T, LayoutError> {
    match create(path) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            if !fs::symlink_metadata(path).is_ok_and(|m| m.is_file()) {
                return Err(conflict(Path::new(name), "a file"));
            }
            fs::remove_file(path).map_err(LayoutError::at(path))?;
            create(path).map_err(LayoutError::at(path))
        }
        other => other.map_err(LayoutError::at(path)),
    }
}

/// Checks an archive path: only plain names and `.`; returns it relative to the bank
/// (empty for the bank itself) or the rule it breaks.
fn bank_path(raw: &[u8]) -> Result<PathBuf, &'static str> {
    if raw.is_empty() {
        return Err("empty path");
    }
    let mut path = PathBuf::new();
    for component in Path::new(OsStr::from_bytes(raw)).components() {
        match component {
            Component::Normal(name) => path.push(name),
            Component::CurDir => {}
            Component::ParentDir => return Err("parent directory component"),
            Component::RootDir | Component::Prefix(_) => return Err("absolute path"),
        }
    }
    Ok(path)
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

/// A [`LayoutError::PathEscape`].
fn escape(name: &str, reason: &str) -> LayoutError {
    LayoutError::PathEscape {
        entry: name.to_owned(),
        reason: reason.to_owned(),
    }
}

/// A malformed-archive error from the decompressor or the tar reader.
fn archive(e: io::Error) -> LayoutError {
    LayoutError::Archive {
        reason: e.to_string(),
    }
}

/// A malformed-archive error met while reading the entry `name`.
fn archive_at(name: &str, e: io::Error) -> LayoutError {
    LayoutError::Archive {
        reason: format!("entry `{name}`: {e}"),
    }
}

/// An entry whose path already exists as another kind.
fn conflict(path: &Path, kind: &str) -> LayoutError {
    LayoutError::Archive {
        reason: format!(
            "entry `{}` is {kind}, but the archive already created that path as something else",
            path.display()
        ),
    }
}
