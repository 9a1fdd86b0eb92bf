//! The tree of a delta staging: built in the scratch folder from the release's index
//! (folders, then files from the active bank or from objects, then links, then the
//! folders' modes), then walked and compared with the index.

use std::collections::{HashMap, HashSet};
use std::fs::{self, DirBuilder, Permissions};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::file::{copy_checked, write_object};
use super::{ObjectSource, WantedObject};
use crate::delta_index::{Index, IndexEntry, PERMISSION_BITS};
use crate::root::SCRATCH_DIR;
use crate::{LayoutError, RECORD_FILE, resolve};

/// A folder is built with owner rwx (so its entries can be made); its own mode
/// is applied at the end, deepest first.
const BUILD_DIR_MODE: u32 = 0o700;

/// The state of one delta build.
pub(super) struct Build<'a, 'p> {
    /// The active bank's folder (read only).
    pub(super) active: &'a Path,
    /// A path in the active bank for each digest (and size) its record lists
    /// (the same key as [`Root::delta_plan`](crate::Root::delta_plan)'s, so both agree
    /// on what is fetched).
    pub(super) sources: HashMap<(String, u64), String>,
    /// The objects still to come from `objects`, in order.
    pub(super) plan: std::slice::Iter<'a, WantedObject>,
    /// Files already written into the scratch folder, by digest (a second
    /// file with the same bytes is copied from the first).
    pub(super) written: HashMap<String, PathBuf>,
    /// Where objects come from.
    pub(super) objects: &'p mut dyn ObjectSource,
    /// Bytes of the tree written so far.
    pub(super) done: u64,
    /// The caller's progress callback.
    pub(super) progress: &'p mut dyn FnMut(u64),
}

impl Build<'_, '_> {
    /// Creates every entry of `index` below `scratch`: the folders, then the
    /// files (copies from the active bank, with each object written as soon
    /// as it is there; then the objects still to come; then second copies of
    /// fetched bytes), then the links, then the folders' modes.
    pub(super) fn tree(&mut self, scratch: &Path, index: &Index) -> Result<(), LayoutError> {
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

/// Walks the built tree and compares it with the index: the same entries
/// (nothing more), each of its type, with its mode and size.
pub(super) fn check_tree(scratch: &Path, index: &Index) -> Result<(), LayoutError> {
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
