//! Names and folders inside the bank: an archive path checked to hold only plain
//! names, the folders above an entry made (each with exactly the implied mode), and a
//! repeated file entry replaced.

use std::ffi::OsStr;
use std::fs::{self, DirBuilder, Permissions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use super::{OWNER_RWX, conflict};
use crate::LayoutError;

/// Mode of folders the archive implies but does not list.
const IMPLIED_DIR_MODE: u32 = 0o755;

/// Remembers the last folder whose existence was made sure of.
#[derive(Default)]
pub(super) struct ParentCache {
    /// Parent (relative to the bank) of the last entry placed.
    last: Option<PathBuf>,
}

impl ParentCache {
    /// Creates the folders above `path` (relative to `bank`) if missing.
    pub(super) fn ensure(&mut self, bank: &Path, path: &Path) -> Result<(), LayoutError> {
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
pub(super) fn create_replacing<T>(
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
pub(super) fn bank_path(raw: &[u8]) -> Result<PathBuf, &'static str> {
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
