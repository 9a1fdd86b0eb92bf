//! The archive rules (SPEC §4): decompress, walk the tar entries ourselves and create
//! only what a bank may hold, strictly inside the bank folder.
//!
//! Entries may only be regular files, folders, hard links to files already extracted,
//! and symlinks. Paths may only hold plain names (and `.`). Symlinks are created after
//! every other entry, so nothing is ever written through one, and each is then proven
//! to resolve inside the bank. setuid, setgid and sticky bits are dropped. Between the
//! decompressor and `tar` sits a [`TarGuard`]: headers `tar` would hold whole in memory
//! are bounded before they are read, and GNU sparse entries are refused.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, DirBuilder, OpenOptions, Permissions};
use std::io::{self, BufRead, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use crate::stage::fill;
use crate::tar_guard::TarGuard;
use crate::{ArchiveFormat, LayoutError, RECORD_FILE, resolve};

/// Bytes moved per read/write while extracting a file: large writes keep syscall
/// overhead out of the pipeline; one buffer, reused, so memory does not grow with size.
const WRITE_CHUNK: usize = 256 * 1024;

/// Largest zstd window accepted (2^24 = 16 MiB). Every standard level up to 19 uses at
/// most 8 MiB; only `--ultra`/`--long` archives need more, and a 128 MiB window would
/// break the 32 MiB memory budget of SPEC §8.
const MAX_ZSTD_WINDOW_LOG: u32 = 24;

/// Permission bits kept from an archive: rwx for owner, group, others. setuid, setgid
/// and sticky are dropped (SPEC §4).
const PERMISSION_BITS: u32 = 0o777;

/// Owner rwx, forced on folders while extracting so we can fill them; the archive's
/// own mode is applied at the end.
const OWNER_RWX: u32 = 0o700;

/// Mode of folders the archive implies but does not list.
const IMPLIED_DIR_MODE: u32 = 0o755;

/// What extraction left for [`finish`]: the deferred symlinks and folder modes.
#[derive(Debug, Default)]
pub(crate) struct Extracted {
    /// Symlinks to create, in archive order: path in the bank, target as written.
    symlinks: Vec<(PathBuf, PathBuf)>,
    /// Final mode of every folder the archive lists.
    dir_modes: HashMap<PathBuf, u32>,
}

/// Decompresses `input` by `format` and extracts its entries into the empty folder `bank`.
pub(crate) fn extract_archive<R: BufRead>(
    input: R,
    format: ArchiveFormat,
    bank: &Path,
) -> Result<Extracted, LayoutError> {
    match format {
        ArchiveFormat::Tar => extract_tar(input, bank),
        ArchiveFormat::TarGz => extract_tar(flate2::bufread::MultiGzDecoder::new(input), bank),
        ArchiveFormat::TarZst => {
            let mut decoder = zstd::stream::read::Decoder::with_buffer(input).map_err(archive)?;
            decoder
                .window_log_max(MAX_ZSTD_WINDOW_LOG)
                .map_err(archive)?;
            extract_tar(decoder, bank)
        }
    }
}

/// Creates the deferred symlinks, proves each resolves inside `bank`, then applies the
/// folder modes (deepest first, so a read-only folder never blocks its children).
pub(crate) fn finish(bank: &Path, extracted: Extracted) -> Result<(), LayoutError> {
    // Parents first, while no symlink exists: every folder made here is a real one, so
    // no symlink below can be created through another symlink.
    let mut parents = ParentCache::default();
    for (link, _) in &extracted.symlinks {
        parents.ensure(bank, link)?;
    }
    for (link, target) in &extracted.symlinks {
        let path = bank.join(link);
        match std::os::unix::fs::symlink(target, &path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(conflict(link, "a symbolic link"));
            }
            Err(e) => return Err(LayoutError::io(&path, e)),
        }
    }
    for (link, _) in &extracted.symlinks {
        resolve::check_symlink(bank, link)?;
    }
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
fn extract_tar<R: Read>(reader: R, bank: &Path) -> Result<Extracted, LayoutError> {
    let mut tar_archive = tar::Archive::new(TarGuard::new(reader));
    let walked = walk_entries(&mut tar_archive, bank);
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
fn walk_entries<R: Read>(
    tar_archive: &mut tar::Archive<R>,
    bank: &Path,
) -> Result<Extracted, LayoutError> {
    let mut extractor = Extractor {
        bank,
        parents: ParentCache::default(),
        symlink_index: HashMap::new(),
        out: Extracted::default(),
        buf: vec![0; WRITE_CHUNK],
    };
    for entry in tar_archive.entries().map_err(archive)? {
        extractor.entry(entry.map_err(archive)?)?;
    }
    Ok(extractor.out)
}

/// The state of one extraction.
struct Extractor<'a> {
    /// The bank folder being filled.
    bank: &'a Path,
    /// The last folder made sure of, so sorted archives do not stat it per file.
    parents: ParentCache,
    /// Index of each deferred symlink in `out.symlinks`: a later entry replaces it.
    symlink_index: HashMap<PathBuf, usize>,
    /// What [`finish`] still has to do.
    out: Extracted,
    /// The copy buffer, [`WRITE_CHUNK`] bytes.
    buf: Vec<u8>,
}

impl Extractor<'_> {
    /// Applies one entry, or refuses it.
    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), LayoutError> {
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            return Ok(()); // metadata for the whole archive; nothing to create
        }
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
            self.defer_symlink(path, target);
            Ok(())
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
        self.parents.ensure(self.bank, path)?;
        let full = self.bank.join(path);
        let mut file = create_replacing(name, &full, |p| {
            OpenOptions::new().write(true).create_new(true).open(p)
        })?;
        let mut written = 0u64;
        loop {
            let n = fill(data, &mut self.buf).map_err(|e| archive_at(name, e))?;
            if n == 0 {
                break;
            }
            file.write_all(&self.buf[..n])
                .map_err(LayoutError::at(&full))?;
            written += n as u64;
            if n < self.buf.len() {
                break;
            }
        }
        if written != size {
            return Err(LayoutError::Archive {
                reason: format!("entry `{name}` ends after {written} of its {size} bytes"),
            });
        }
        file.set_permissions(Permissions::from_mode(mode))
            .map_err(LayoutError::at(&full))
    }

    /// Creates the folder `path` (owner rwx for now) and remembers its final mode.
    fn dir(&mut self, name: &str, path: &Path, mode: u32) -> Result<(), LayoutError> {
        self.parents.ensure(self.bank, path)?;
        let full = self.bank.join(path);
        match DirBuilder::new().mode(mode | OWNER_RWX).create(&full) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if !fs::symlink_metadata(&full).is_ok_and(|m| m.is_dir()) {
                    return Err(conflict(Path::new(name), "a folder"));
                }
            }
            Err(e) => return Err(LayoutError::io(&full, e)),
        }
        self.out.dir_modes.insert(path.to_path_buf(), mode);
        Ok(())
    }

    /// Queues the symlink `path` -> `target`; a later entry of the same path wins.
    fn defer_symlink(&mut self, path: PathBuf, target: PathBuf) {
        match self.symlink_index.get(&path) {
            Some(&i) => self.out.symlinks[i].1 = target,
            None => {
                self.symlink_index
                    .insert(path.clone(), self.out.symlinks.len());
                self.out.symlinks.push((path, target));
            }
        }
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
        let full = bank.join(parent);
        match DirBuilder::new()
            .recursive(true)
            .mode(IMPLIED_DIR_MODE)
            .create(&full)
        {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::AlreadyExists | io::ErrorKind::NotADirectory
                ) =>
            {
                return Err(LayoutError::Archive {
                    reason: format!(
                        "entry `{}` lies below `{}`, which is not a folder",
                        path.display(),
                        parent.display()
                    ),
                });
            }
            Err(e) => return Err(LayoutError::io(&full, e)),
        }
        self.last = Some(parent.to_path_buf());
        Ok(())
    }
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
