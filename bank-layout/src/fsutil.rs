//! Small file system helpers for bank folders: empty one, make one durable, measure
//! one, swap a complete one in, and ask the file system for free space and what
//! `syncfs` is worth on it.

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

/// `statfs` magic numbers (f_type) of file systems where one `syncfs` is a real barrier
/// for everything written before it: ext4 (also ext2/ext3), xfs, btrfs, and tmpfs
/// (nothing to make durable). Anywhere else, and on FUSE (`0x65735546`) above all,
/// `syncfs` may never reach the storage (the kernel does not forward it to a FUSE
/// daemon), so every file and folder is fsynced one by one.
const SYNCFS_BARRIER_MAGICS: [u32; 4] = [0xEF53, 0x5846_5342, 0x9123_683E, 0x0102_1994];

/// How the tree below a folder is made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Durability {
    /// One `syncfs` of the file system (fast: one call for the whole tree).
    Syncfs,
    /// fsync of every file and every folder (FUSE, unknown file systems).
    EachFile,
}

/// What `syncfs` is worth on the file system holding `dir`.
pub(crate) fn durability_of(dir: &Path) -> Durability {
    match fs_magic(dir) {
        Some(magic) if SYNCFS_BARRIER_MAGICS.contains(&magic) => Durability::Syncfs,
        _ => Durability::EachFile,
    }
}

/// The `statfs` f_type of the file system holding `dir`, if it can be asked.
fn fs_magic(dir: &Path) -> Option<u32> {
    let path = c_path(dir)?;
    // SAFETY: statfs writes into the zeroed struct we own; `path` is NUL-terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statfs(path.as_ptr(), &mut st) };
    // f_type is a signed word on some targets; the magics are 32-bit values.
    #[allow(clippy::unnecessary_cast)]
    let magic = (st.f_type as i64 & 0xFFFF_FFFF) as u32;
    (rc == 0).then_some(magic)
}

/// Free space of the file system holding a folder, as an unprivileged writer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Free {
    /// Bytes available (f_bavail × f_frsize).
    pub(crate) bytes: u64,
    /// Inodes available (f_favail); `u64::MAX` where the file system has no inode limit.
    pub(crate) inodes: u64,
}

/// `statvfs` of the file system holding `dir`.
pub(crate) fn free_space(dir: &Path) -> Result<Free, LayoutError> {
    let path = c_path(dir).ok_or_else(|| {
        LayoutError::io(
            dir,
            io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL byte"),
        )
    })?;
    // SAFETY: statvfs writes into the zeroed struct we own; `path` is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return Err(LayoutError::io(dir, io::Error::last_os_error()));
    }
    #[allow(clippy::unnecessary_cast)]
    let (bavail, frsize, files, favail) = (
        st.f_bavail as u64,
        st.f_frsize as u64,
        st.f_files as u64,
        st.f_favail as u64,
    );
    Ok(Free {
        bytes: bavail.saturating_mul(frsize),
        // btrfs and others report 0 inodes in total: they allocate them on demand.
        inodes: if files == 0 { u64::MAX } else { favail },
    })
}

/// Space a tree takes: allocated bytes (st_blocks × 512) and inodes, symlinks not followed.
pub(crate) fn tree_usage(dir: &Path) -> Result<(u64, u64), LayoutError> {
    let mut bytes = 0u64;
    let mut inodes = 0u64;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        let entries = match fs::read_dir(&folder) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(LayoutError::io(&folder, e)),
        };
        for entry in entries {
            let entry = entry.map_err(LayoutError::at(&folder))?;
            let meta = entry.metadata().map_err(LayoutError::at(&entry.path()))?;
            bytes = bytes.saturating_add(std::os::unix::fs::MetadataExt::blocks(&meta) * 512);
            inodes += 1;
            if meta.is_dir() {
                pending.push(entry.path());
            }
        }
    }
    Ok((bytes, inodes))
}

/// `path` as a C string, `None` if it holds a NUL byte.
fn c_path(path: &Path) -> Option<std::ffi::CString> {
    std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str())).ok()
}

/// Makes everything written below `dir` durable, as [`durability_of`] says is needed:
/// one `syncfs` where that is a barrier (falling back to the walk if it fails), else an
/// fsync of every file and folder below it.
pub(crate) fn sync_tree(dir: &Path) -> Result<(), LayoutError> {
    #[cfg(target_os = "linux")]
    if durability_of(dir) == Durability::Syncfs {
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

/// Asks the kernel to start writing `file`'s data to disk now, without waiting: the
/// bank's final sync (`syncfs`, or an fsync per file) then finds it mostly written.
/// Only a hint: durability still comes from that sync, which reports any write error.
pub(crate) fn start_writeback(file: &File) {
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

/// Removes the folder `dir` and everything in it, even read-only folders; a missing
/// folder is fine.
pub(crate) fn remove_tree(dir: &Path) -> Result<(), LayoutError> {
    match fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(LayoutError::io(dir, e)),
        Ok(meta) if !meta.is_dir() => {
            return fs::remove_file(dir).map_err(LayoutError::at(dir));
        }
        Ok(_) => {}
    }
    if fs::remove_dir_all(dir).is_err() {
        make_writable(dir)?;
        fs::remove_dir_all(dir).map_err(LayoutError::at(dir))?;
    }
    Ok(())
}

/// Renames the folder `dir` to `retired` (a leftover there removed first), so that
/// a complete `scratch` folder can take its place ([`move_in`]): says whether there
/// was a folder to put aside (none: deleted by hand, or never filled). If `dir`
/// cannot be renamed, `scratch` is removed.
pub(crate) fn put_aside(dir: &Path, retired: &Path, scratch: &Path) -> Result<bool, LayoutError> {
    remove_tree(retired)?;
    match fs::rename(dir, retired) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => {
            let _ = remove_tree(scratch);
            Err(LayoutError::io(dir, e))
        }
    }
}

/// Renames `scratch` to `dir` after [`put_aside`]; if that fails, the folder put
/// aside (`had_folder`) goes back to `dir` where it can, and `scratch` is removed.
/// The parent folder is not fsynced here.
pub(crate) fn move_in(
    dir: &Path,
    retired: &Path,
    scratch: &Path,
    had_folder: bool,
) -> Result<(), LayoutError> {
    if let Err(e) = fs::rename(scratch, dir) {
        if had_folder {
            let _ = fs::rename(retired, dir);
        }
        let _ = remove_tree(scratch);
        return Err(LayoutError::io(dir, e));
    }
    Ok(())
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
    fn free_space_usage_and_durability_are_known() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("f"), vec![1u8; 10_000]).unwrap();
        fs::create_dir(dir.path().join("d")).unwrap();
        let free = free_space(dir.path()).unwrap();
        assert!(free.bytes > 0 && free.inodes > 0, "{free:?}");
        let (bytes, inodes) = tree_usage(dir.path()).unwrap();
        assert_eq!(inodes, 2);
        assert!(bytes >= 8192, "{bytes}");
        // Whatever the test machine's file system, the answer is one of the two.
        let _ = durability_of(dir.path());
        assert_eq!(durability_of(Path::new("/proc")), Durability::EachFile);
        remove_tree(dir.path()).unwrap();
        assert!(!dir.path().exists());
        remove_tree(dir.path()).unwrap();
    }

    #[test]
    fn removing_a_missing_file_is_fine() {
        let dir = tempfile::tempdir().unwrap();
        remove_durably(&dir.path().join("nope"), dir.path()).unwrap();
    }
}
