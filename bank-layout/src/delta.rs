//! Delta staging (issue 14): the new release's tree is built in the scratch
//! folder from its [`Index`], taking every file whose digest the active bank's
//! record lists from the active bank (read only: cloned with `FICLONE` where
//! the file system can, else copied) and every other file from an object the
//! caller supplies. The swap afterwards is the one of [`Root::stage`].
//!
//! Every file is checked as it is written: a copied or cloned file is read
//! back and hashed, an object is capped at its announced compressed size,
//! decompressed, capped at the file's size and hashed; any mismatch fails the
//! staging, and the scratch folder (never a bank) is removed. Then the whole
//! tree is walked and compared with the index (types, modes, sizes, nothing
//! more), links are resolved inside the bank, the entrypoint is checked, and
//! only then is the record written and the tree swapped in.
//!
//! **Architecture Invariant:** no network here: object bytes come through
//! [`ObjectSource`], which the binary implements over HTTPS.

use std::collections::{HashMap, HashSet};
use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::delta_index::{FileDigest, Index, IndexEntry, PERMISSION_BITS};
use crate::root::{PRIVATE_MODE, SCRATCH_DIR};
use crate::{BankId, BankRecord, LayoutError, RECORD_FILE, Root, StageSpec, fsutil, resolve};

/// Bytes per read when copying, hashing or decompressing a file.
const COPY_BUFFER: usize = 256 * 1024;

/// A folder is built with owner rwx (so its entries can be made); its own mode
/// is applied at the end, deepest first.
const BUILD_DIR_MODE: u32 = 0o700;

/// Supplies the objects a delta staging needs, one at a time, in the order of
/// [`DeltaPlan::fetch`]. Implemented by the binary (HTTPS, a few in parallel);
/// this crate caps and checks whatever it returns.
pub trait ObjectSource {
    /// The object of the file whose bytes hash to `sha256`: those bytes,
    /// zstd-compressed, announced as `packed` bytes long.
    fn object(&mut self, sha256: &str, packed: u64) -> io::Result<Box<dyn Read + '_>>;

    /// Whether the next object would come without waiting (a download that
    /// has it, or has failed). Staging copies files from the active bank
    /// meanwhile, so the network and the disk work at once.
    fn ready(&mut self) -> bool {
        true
    }
}

/// An object a delta staging asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WantedObject {
    /// The sha256 of the file's bytes (the object's name).
    pub sha256: String,
    /// The object's announced size.
    pub packed: u64,
}

/// What a delta staging of an index into the idle bank will fetch and reuse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeltaPlan {
    /// The objects to fetch, each once, in the order staging asks for them.
    pub fetch: Vec<WantedObject>,
    /// Their announced bytes (what goes over the wire).
    pub fetch_bytes: u64,
    /// Files taken from the active bank.
    pub reused_files: u64,
    /// Their bytes.
    pub reused_bytes: u64,
}

impl Root {
    /// What staging `index` by delta would fetch, from the active bank's record:
    /// `None` when that record has no per-file digests (a bank this agent did
    /// not stage itself, or an empty root), so the caller downloads the full
    /// artifact instead. Reads no file.
    pub fn delta_plan(&self, index: &Index) -> Option<DeltaPlan> {
        let files = self.active_files()?;
        let have: HashSet<(&str, u64)> =
            files.iter().map(|f| (f.sha256.as_str(), f.size)).collect();
        let mut plan = DeltaPlan {
            fetch: Vec::new(),
            fetch_bytes: 0,
            reused_files: 0,
            reused_bytes: 0,
        };
        let mut wanted = HashSet::new();
        for (_, size, sha256, packed) in index.files() {
            if have.contains(&(sha256, size)) {
                plan.reused_files += 1;
                plan.reused_bytes += size;
            } else if wanted.insert(sha256) {
                plan.fetch.push(WantedObject {
                    sha256: sha256.to_owned(),
                    packed,
                });
                plan.fetch_bytes = plan.fetch_bytes.saturating_add(packed);
            }
        }
        Some(plan)
    }

    /// The per-file digests of the active bank, read from its record on disk
    /// (the in-memory records do not keep them): `None` when the record has
    /// none, cannot be read, or is not the release the root knows there.
    fn active_files(&self) -> Option<Vec<FileDigest>> {
        let known = self.bank_record(self.active_bank())?;
        let on_disk = BankRecord::read(&self.bank_dir(self.active_bank())).ok()??;
        if (on_disk.sequence, &on_disk.sha256) != (known.sequence, &known.sha256) {
            return None;
        }
        on_disk.files
    }

    /// Stages the release whose tree is `index` into the idle bank, from the
    /// active bank plus the objects of [`Root::delta_plan`] read from `objects`
    /// (see the module doc). `spec` gives the record (its `sha256` stays the
    /// artifact's, the tree it names) and the bounds; its `format` and `size`
    /// are not used. `progress` gets the bytes of the tree written so far.
    ///
    /// On error both banks and `state.json` are as they were, as with
    /// [`Root::stage`]; [`LayoutError::NoDelta`] when the active bank has no
    /// per-file digests.
    pub fn stage_delta(
        &mut self,
        index: &Index,
        spec: StageSpec<'_>,
        objects: &mut dyn ObjectSource,
        progress: &mut dyn FnMut(u64),
    ) -> Result<BankId, LayoutError> {
        index.check()?;
        let plan = self.delta_plan(index).ok_or(LayoutError::NoDelta)?;
        let active = self.bank_dir(self.active_bank());
        let sources: HashMap<(String, u64), String> = self
            .active_files()
            .unwrap_or_default()
            .into_iter()
            .map(|f| ((f.sha256, f.size), f.path))
            .collect();
        let spec = StageSpec {
            unpacked_size: Some(index.unpacked_size()),
            entries: Some(index.entries.len() as u64),
            ..spec
        };
        let record = BankRecord {
            sha256: spec.sha256.to_owned(),
            files: Some(index.digests()),
            ..spec.record.clone()
        };
        let mut build = Build {
            active: &active,
            sources,
            plan: plan.fetch.iter(),
            written: HashMap::new(),
            objects,
            done: 0,
            progress,
        };
        self.stage_with(&spec, |scratch| {
            build.tree(scratch, index)?;
            check_tree(scratch, index)?;
            crate::entrypoint::check(scratch, &record.command)?;
            fsutil::sync_tree(scratch)?;
            Ok(record)
        })
    }
}

/// The state of one delta build.
struct Build<'a, 'p> {
    /// The active bank's folder (read only).
    active: &'a Path,
    /// A path in the active bank for each digest (and size) its record lists
    /// (the same key as [`Root::delta_plan`]'s, so both agree on what is fetched).
    sources: HashMap<(String, u64), String>,
    /// The objects still to come from `objects`, in order.
    plan: std::slice::Iter<'a, WantedObject>,
    /// Files already written into the scratch folder, by digest (a second
    /// file with the same bytes is copied from the first).
    written: HashMap<String, PathBuf>,
    /// Where objects come from.
    objects: &'p mut dyn ObjectSource,
    /// Bytes of the tree written so far.
    done: u64,
    /// The caller's progress callback.
    progress: &'p mut dyn FnMut(u64),
}

impl Build<'_, '_> {
    /// Creates every entry of `index` below `scratch`: the folders, then the
    /// files (copies from the active bank, with each object written as soon
    /// as it is there; then the objects still to come; then second copies of
    /// fetched bytes), then the links, then the folders' modes.
    fn tree(&mut self, scratch: &Path, index: &Index) -> Result<(), LayoutError> {
        let mut dirs = Vec::new();
        let mut links = Vec::new();
        let (mut copies, mut fetched, mut repeats) = (Vec::new(), Vec::new(), Vec::new());
        let mut seen = HashSet::new();
        for entry in &index.entries {
            match entry {
                IndexEntry::Dir { path, mode } => {
                    let full = scratch.join(path);
                    DirBuilder::new()
                        .mode(BUILD_DIR_MODE)
                        .create(&full)
                        .map_err(LayoutError::at(&full))?;
                    dirs.push((path.as_str(), mode & PERMISSION_BITS));
                }
                IndexEntry::File { sha256, size, .. } => {
                    if self.sources.contains_key(&(sha256.clone(), *size)) {
                        copies.push(entry);
                    } else if seen.insert(sha256.as_str()) {
                        fetched.push(entry);
                    } else {
                        repeats.push(entry);
                    }
                }
                IndexEntry::Symlink { path, target } => links.push((path.as_str(), target)),
            }
        }
        let mut fetched = fetched.into_iter().peekable();
        for entry in copies {
            while fetched.peek().is_some() && self.objects.ready() {
                if let Some(next) = fetched.next() {
                    self.entry(scratch, next)?;
                }
            }
            self.entry(scratch, entry)?;
        }
        for entry in fetched.chain(repeats) {
            self.entry(scratch, entry)?;
        }
        // Links last, as extraction does: none can redirect a write above.
        for (path, target) in &links {
            let full = scratch.join(path);
            std::os::unix::fs::symlink(target, &full).map_err(LayoutError::at(&full))?;
        }
        for (path, _) in &links {
            resolve::check_symlink(scratch, Path::new(path))?;
        }
        dirs.sort_by_key(|(path, _)| std::cmp::Reverse(path.matches('/').count()));
        for (path, mode) in dirs {
            let full = scratch.join(path);
            fs::set_permissions(&full, Permissions::from_mode(mode))
                .map_err(LayoutError::at(&full))?;
        }
        Ok(())
    }

    /// Writes the file `entry` below `scratch` and sets its mode.
    fn entry(&mut self, scratch: &Path, entry: &IndexEntry) -> Result<(), LayoutError> {
        let IndexEntry::File {
            path,
            mode,
            size,
            sha256,
            packed,
        } = entry
        else {
            return Ok(());
        };
        let full = scratch.join(path);
        self.file(path, &full, *size, sha256, *packed)?;
        fs::set_permissions(&full, Permissions::from_mode(mode & PERMISSION_BITS))
            .map_err(LayoutError::at(&full))?;
        self.done += size;
        (self.progress)(self.done);
        Ok(())
    }

    /// Writes the file `path` (at `full`) from the active bank, from an
    /// earlier file of this tree, or from its object; checked either way.
    fn file(
        &mut self,
        path: &str,
        full: &Path,
        size: u64,
        sha256: &str,
        packed: u64,
    ) -> Result<(), LayoutError> {
        if let Some(source) = self.sources.get(&(sha256.to_owned(), size)) {
            let from = self.active.join(source);
            let actual = copy_checked(&from, full, size)?;
            if actual.as_deref() != Some(sha256) {
                return Err(LayoutError::ActiveFileChanged {
                    path: source.clone(),
                });
            }
        } else if let Some(from) = self.written.get(sha256) {
            let actual = copy_checked(from, full, size)?;
            if actual.as_deref() != Some(sha256) {
                return Err(LayoutError::ObjectMismatch {
                    path: path.to_owned(),
                    reason: "an earlier copy of the same bytes changed".to_owned(),
                });
            }
        } else {
            match self.plan.next() {
                Some(next) if next.sha256 == sha256 => {}
                // Invariant: the plan was made from this index in this order.
                _ => {
                    return Err(LayoutError::BadIndex {
                        reason: format!("entry `{path}` is not in the delta plan"),
                    });
                }
            }
            let reader = self.objects.object(sha256, packed).map_err(|source| {
                LayoutError::ObjectSource {
                    sha256: sha256.to_owned(),
                    source,
                }
            })?;
            write_object(reader, full, path, size, sha256, packed)?;
        }
        self.written.insert(sha256.to_owned(), full.to_path_buf());
        Ok(())
    }
}

/// Creates `to` (new, private until its mode is set) with the bytes of `from`,
/// cloned where the file system can (`FICLONE`), else copied; returns the
/// digest of what `to` holds, or `None` when `from` is not a regular file of
/// `size` bytes. `from` is opened without following a final symlink.
fn copy_checked(from: &Path, to: &Path, size: u64) -> Result<Option<String>, LayoutError> {
    let source = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(from)
    {
        Ok(file) => file,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOENT)) => return Ok(None),
        Err(e) => return Err(LayoutError::io(from, e)),
    };
    let meta = source.metadata().map_err(LayoutError::at(from))?;
    if !meta.is_file() || meta.size() != size {
        return Ok(None);
    }
    let mut target = create_private(to)?;
    if clone_file(&source, &target) {
        let mut clone = File::open(to).map_err(LayoutError::at(to))?;
        let (digest, n) =
            hash_copy(&mut clone, &mut io::sink(), size).map_err(|e| LayoutError::io(to, e))?;
        return Ok((n == size).then_some(digest));
    }
    let mut source = source;
    let (digest, n) =
        hash_copy(&mut source, &mut target, size).map_err(|e| LayoutError::io(to, e))?;
    Ok((n == size).then_some(digest))
}

/// `ioctl(FICLONE)`: shares the blocks of `source` with the empty `target`
/// (btrfs, XFS); false where the file system cannot, and the caller copies.
fn clone_file(source: &File, target: &File) -> bool {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: FICLONE reads both descriptors, which the borrowed files keep open.
        let rc = unsafe { libc::ioctl(target.as_raw_fd(), libc::FICLONE, source.as_raw_fd()) };
        rc == 0
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (source, target);
        false
    }
}

/// Creates the new file `path`, mode 0600 until its own is set.
fn create_private(path: &Path) -> Result<File, LayoutError> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(PRIVATE_MODE)
        .open(path)
        .map_err(LayoutError::at(path))
}

/// Copies at most `limit + 1` bytes of `from` into `to`, hashing them;
/// returns the digest (hex) and the count.
fn hash_copy(from: &mut impl Read, to: &mut impl Write, limit: u64) -> io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; COPY_BUFFER];
    let mut total = 0u64;
    let mut capped = from.take(limit.saturating_add(1));
    loop {
        let n = match capped.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        to.write_all(&buf[..n])?;
        total += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), total))
}

/// Counts what passes through (the compressed side of an object).
struct Counting<R> {
    /// The object's bytes.
    inner: R,
    /// Bytes read so far.
    count: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

/// Writes the file `full` from its object: at most `packed + 1` compressed
/// bytes are read, at most `size + 1` decompressed bytes written, and the
/// bytes must hash to `sha256`.
fn write_object(
    reader: Box<dyn Read + '_>,
    full: &Path,
    path: &str,
    size: u64,
    sha256: &str,
    packed: u64,
) -> Result<(), LayoutError> {
    let mismatch = |reason: String| LayoutError::ObjectMismatch {
        path: path.to_owned(),
        reason,
    };
    let source_error = |source: io::Error| LayoutError::ObjectSource {
        sha256: sha256.to_owned(),
        source,
    };
    let mut counted = Counting {
        inner: reader.take(packed.saturating_add(1)),
        count: 0,
    };
    let mut target = create_private(full)?;
    let decoded = {
        let mut decoder = zstd::stream::read::Decoder::new(&mut counted).map_err(source_error)?;
        hash_copy(&mut decoder, &mut target, size)
    };
    // Whatever the decoder made of it, the object's own size is the first check.
    io::copy(&mut counted, &mut io::sink()).map_err(source_error)?;
    if counted.count > packed {
        return Err(LayoutError::ObjectTooLarge {
            sha256: sha256.to_owned(),
            packed,
        });
    }
    let (actual, written) = decoded.map_err(|e| mismatch(format!("not a zstd object: {e}")))?;
    if counted.count < packed {
        return Err(mismatch(format!(
            "object {sha256} ended after {} of its {packed} bytes",
            counted.count
        )));
    }
    if written != size {
        return Err(mismatch(format!(
            "object {sha256} unpacks to {}{written} bytes, not the {size} announced",
            if written > size { "more than " } else { "" }
        )));
    }
    if actual != sha256 {
        return Err(mismatch(format!(
            "sha256 mismatch: expected {sha256}, got {actual}"
        )));
    }
    Ok(())
}

/// Walks the built tree and compares it with the index: the same entries
/// (nothing more), each of its type, with its mode and size.
fn check_tree(scratch: &Path, index: &Index) -> Result<(), LayoutError> {
    let wanted: HashMap<&str, &IndexEntry> = index.entries.iter().map(|e| (e.path(), e)).collect();
    let mut found = 0usize;
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = scratch.join(&rel);
        for entry in fs::read_dir(&dir).map_err(LayoutError::at(&dir))? {
            let entry = entry.map_err(LayoutError::at(&dir))?;
            let path = rel.join(entry.file_name());
            let text = path.to_string_lossy().into_owned();
            if rel.as_os_str().is_empty() && text == RECORD_FILE {
                continue;
            }
            let mismatch = |why: &str| LayoutError::TreeMismatch {
                path: text.clone(),
                reason: why.to_owned(),
            };
            let meta = fs::symlink_metadata(entry.path()).map_err(LayoutError::at(&path))?;
            let mode = meta.mode() & 0o7777;
            match wanted.get(text.as_str()) {
                None => return Err(mismatch("is not in the index")),
                Some(IndexEntry::Dir { mode: m, .. }) => {
                    if !meta.is_dir() || mode != m & PERMISSION_BITS {
                        return Err(mismatch("is not the folder the index lists"));
                    }
                    stack.push(path);
                }
                Some(IndexEntry::File { mode: m, size, .. }) => {
                    if !meta.is_file() || mode != m & PERMISSION_BITS || meta.size() != *size {
                        return Err(mismatch("is not the file the index lists"));
                    }
                }
                Some(IndexEntry::Symlink { target, .. }) => {
                    let link = fs::read_link(entry.path()).map_err(LayoutError::at(&path))?;
                    if link.as_os_str() != target.as_str() {
                        return Err(mismatch("is not the link the index lists"));
                    }
                }
            }
            found += 1;
        }
    }
    if found != index.entries.len() {
        return Err(LayoutError::TreeMismatch {
            path: SCRATCH_DIR.to_owned(),
            reason: format!("holds {found} of the {} entries", index.entries.len()),
        });
    }
    Ok(())
}
