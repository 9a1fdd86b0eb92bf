//! The one crash-safe write: temp file in the same folder → write → `sync_all` → rename
//! over → fsync the folder. A crash at any step leaves the old or the new content.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Marker in the name of every temp file [`write_atomic`] creates:
/// `.<name>.bankswap-tmp.<pid>.<n>`. [`remove_temp_files`] removes what a crash left.
pub(crate) const TEMP_MARKER: &str = ".bankswap-tmp.";

/// How many temp names to try before giving up. Names are unique per process (pid and a
/// counter); a clash only comes from a leftover of a crashed process that had the same
/// pid, so a handful of attempts is plenty.
const MAX_TEMP_ATTEMPTS: u32 = 64;

/// Per-process counter that makes temp names unique without randomness.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Replaces `path` with `bytes` so that a crash or power loss at any instant leaves
/// either the old or the new content, never a mix: writes a temp file in the same
/// folder, `sync_all`s it, renames it over `path`, then fsyncs the folder.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let temp = write_temp(path, bytes)?;
    if let Err(e) = fs::rename(&temp, path) {
        let _ = fs::remove_file(&temp);
        return Err(e);
    }
    fsync_dir(parent_dir(path))
}

/// Steps 1–3 of [`write_atomic`]: a durable temp file next to `path`, returned by name.
/// Separate so that tests can stop ("crash") between the steps.
pub(crate) fn write_temp(path: &Path, bytes: &[u8]) -> io::Result<PathBuf> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "write_atomic needs a file path",
        )
    })?;
    let dir = parent_dir(path);
    let mut attempt = 0;
    let (temp, mut file) = loop {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(name);
        temp_name.push(format!("{TEMP_MARKER}{}.{n}", std::process::id()));
        let temp = dir.join(temp_name);
        match OpenOptions::new().write(true).create_new(true).open(&temp) {
            Ok(file) => break (temp, file),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < MAX_TEMP_ATTEMPTS => {
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    };
    if let Err(e) = file.write_all(bytes).and_then(|()| file.sync_all()) {
        drop(file);
        let _ = fs::remove_file(&temp);
        return Err(e);
    }
    Ok(temp)
}

/// Makes the entries of `dir` (creations, renames, removals) durable.
pub(crate) fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Removes the temp files a crashed [`write_atomic`] left in `dir`; returns how many.
/// Only called with the root's lock held, so no live writer owns them.
pub(crate) fn remove_temp_files(dir: &Path) -> io::Result<usize> {
    let mut removed = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && name.contains(TEMP_MARKER) && entry.file_type()?.is_file() {
            fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// The folder holding `path` (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_atomic(&path, b"old").unwrap();
        write_atomic(&path, b"new").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }

    #[test]
    fn a_crash_before_the_rename_leaves_the_old_content_and_a_removable_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_atomic(&path, b"old").unwrap();
        // Crash after write + sync_all of the temp, before the rename.
        let temp = write_temp(&path, b"new").unwrap();
        assert!(temp.exists());
        assert_eq!(fs::read(&path).unwrap(), b"old");
        assert_eq!(remove_temp_files(dir.path()).unwrap(), 1);
        assert!(!temp.exists());
        assert_eq!(fs::read(&path).unwrap(), b"old");
    }

    #[test]
    fn a_crash_after_the_rename_leaves_the_new_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_atomic(&path, b"old").unwrap();
        let temp = write_temp(&path, b"new").unwrap();
        fs::rename(&temp, &path).unwrap();
        // Crash before the folder fsync: the rename is either there or not.
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(remove_temp_files(dir.path()).unwrap(), 0);
    }

    #[test]
    fn temp_names_are_unique_and_leave_other_files_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x");
        let a = write_temp(&path, b"a").unwrap();
        let b = write_temp(&path, b"b").unwrap();
        assert_ne!(a, b);
        fs::write(dir.path().join(".hidden"), b"keep").unwrap();
        fs::write(dir.path().join("x.bankswap-tmp.not-ours"), b"keep").unwrap();
        assert_eq!(remove_temp_files(dir.path()).unwrap(), 2);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn a_missing_folder_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let result = write_atomic(&dir.path().join("no/such/dir/file"), b"x");
        assert!(matches!(result, Err(e) if e.kind() == io::ErrorKind::NotFound));
    }
}
