//! Small file system helpers for bank folders: empty one, make one durable.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::LayoutError;
use crate::atomic::fsync_dir;

/// Owner read, write and search: what we need on a folder to empty it.
const OWNER_RWX: u32 = 0o700;

/// Whether the folder `dir` has any entry.
pub(crate) fn has_entries(dir: &Path) -> Result<bool, LayoutError> {
    let mut entries = fs::read_dir(dir).map_err(LayoutError::at(dir))?;
    Ok(entries.next().is_some())
}

/// Removes everything inside `dir`, keeping `dir` itself. Folders extracted without
/// owner write or search permission are made writable first.
pub(crate) fn empty_dir(dir: &Path) -> Result<(), LayoutError> {
    for entry in fs::read_dir(dir).map_err(LayoutError::at(dir))? {
        let entry = entry.map_err(LayoutError::at(dir))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(LayoutError::at(&path))?;
        if kind.is_dir() {
            if fs::remove_dir_all(&path).is_err() {
                make_writable(&path)?;
                fs::remove_dir_all(&path).map_err(LayoutError::at(&path))?;
            }
        } else {
            fs::remove_file(&path).map_err(LayoutError::at(&path))?;
        }
    }
    Ok(())
}

/// Gives the owner rwx on `dir` and every folder below it (symlinks are not followed).
fn make_writable(dir: &Path) -> Result<(), LayoutError> {
    let mode = fs::symlink_metadata(dir)
        .map_err(LayoutError::at(dir))?
        .permissions()
        .mode();
    if mode & OWNER_RWX != OWNER_RWX {
        fs::set_permissions(dir, fs::Permissions::from_mode(mode | OWNER_RWX))
            .map_err(LayoutError::at(dir))?;
    }
    for entry in fs::read_dir(dir).map_err(LayoutError::at(dir))? {
        let entry = entry.map_err(LayoutError::at(dir))?;
        if entry
            .file_type()
            .map_err(LayoutError::at(&entry.path()))?
            .is_dir()
        {
            make_writable(&entry.path())?;
        }
    }
    Ok(())
}

/// Makes everything written below `dir` durable: one `syncfs` of its file system,
/// or, where that fails, an fsync of every file and folder below it.
pub(crate) fn sync_tree(dir: &Path) -> Result<(), LayoutError> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let folder = File::open(dir).map_err(LayoutError::at(dir))?;
        // SAFETY: syncfs only uses the descriptor, which `folder` keeps open for the call.
        let rc = unsafe { libc::syncfs(folder.as_raw_fd()) };
        if rc == 0 {
            return Ok(());
        }
    }
    fsync_walk(dir)
}

/// fsyncs every regular file and folder below `dir`, children before their folder.
fn fsync_walk(dir: &Path) -> Result<(), LayoutError> {
    for entry in fs::read_dir(dir).map_err(LayoutError::at(dir))? {
        let entry = entry.map_err(LayoutError::at(dir))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(LayoutError::at(&path))?;
        if kind.is_dir() {
            fsync_walk(&path)?;
        } else if kind.is_file() {
            File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(LayoutError::at(&path))?;
        }
    }
    fsync_dir(dir).map_err(LayoutError::at(dir))
}

/// Removes `file` if present, then fsyncs its folder so the removal is durable.
pub(crate) fn remove_durably(file: &Path, dir: &Path) -> Result<(), LayoutError> {
    match fs::remove_file(file) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(LayoutError::io(file, e)),
    }
    fsync_dir(dir).map_err(LayoutError::at(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empties_folders_even_read_only_ones() {
        let dir = tempfile::tempdir().unwrap();
        let locked = dir.path().join("a/b");
        fs::create_dir_all(&locked).unwrap();
        fs::write(locked.join("f"), b"x").unwrap();
        std::os::unix::fs::symlink("/etc", dir.path().join("link")).unwrap();
        fs::write(dir.path().join("top"), b"y").unwrap();
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o500)).unwrap();
        fs::set_permissions(dir.path().join("a"), fs::Permissions::from_mode(0o500)).unwrap();
        assert!(has_entries(dir.path()).unwrap());
        empty_dir(dir.path()).unwrap();
        assert!(!has_entries(dir.path()).unwrap());
        assert!(
            Path::new("/etc").exists(),
            "the symlink target is untouched"
        );
    }

    #[test]
    fn sync_walk_and_syncfs_succeed() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("d")).unwrap();
        fs::write(dir.path().join("d/f"), b"x").unwrap();
        sync_tree(dir.path()).unwrap();
        fsync_walk(dir.path()).unwrap();
    }

    #[test]
    fn removing_a_missing_file_is_fine() {
        let dir = tempfile::tempdir().unwrap();
        remove_durably(&dir.path().join("nope"), dir.path()).unwrap();
    }
}
