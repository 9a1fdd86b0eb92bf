//! The one crash-safe write: temp file in the same folder → write → `sync_all` → rename
//! over → fsync the folder. A crash at any step leaves the old or the new content.
//!
//! [`write_atomic_mode`] writes bytes, [`write_atomic_with`] streams them (a large file),
//! and [`AtomicFile`] is the same as a value, for writers whose final name is only known
//! at the end (a file named by its own digest). Every temp file is created with an
//! explicit mode (`fchmod` after `open`), so the umask never widens it.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Marker in the name of every temp file [`write_atomic`] creates:
/// `.<name>.bankswap-tmp.<pid>.<n>`. [`remove_temp_files`] removes what a crash left.
pub(crate) const TEMP_MARKER: &str = ".bankswap-tmp.";

/// How many temp names to try before giving up. Names are unique per process (pid and a
/// counter); a clash only comes from a leftover of a crashed process that had the same
/// pid, so a handful of attempts is plenty.
const MAX_TEMP_ATTEMPTS: u32 = 64;

/// Mode of files [`write_atomic`] makes when no mode is given: what `fs::write` makes
/// under the usual umask 022. Secrets and the root's own records use 0600 explicitly.
pub const DEFAULT_FILE_MODE: u32 = 0o644;

/// Per-process counter that makes temp names unique without randomness.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Replaces `path` with `bytes` so that a crash or power loss at any instant leaves
/// either the old or the new content, never a mix: writes a temp file in the same
/// folder, `sync_all`s it, renames it over `path`, then fsyncs the folder. The file
/// gets mode [`DEFAULT_FILE_MODE`] whatever the umask.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_mode(path, bytes, DEFAULT_FILE_MODE)
}

/// [`write_atomic`] with an explicit `mode` (e.g. 0o600 for secrets and state).
pub fn write_atomic_mode(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    write_atomic_with(path, mode, |file| file.write_all(bytes))
}

/// [`write_atomic`] for content streamed by `write` into the temp file (buffer it
/// yourself for small writes). `write`'s error aborts: the temp file is removed and
/// `path` keeps its old content.
pub fn write_atomic_with<T>(
    path: &Path,
    mode: u32,
    write: impl FnOnce(&mut File) -> io::Result<T>,
) -> io::Result<T> {
    let mut file = AtomicFile::new(path, mode)?;
    let value = write(file.file())?;
    file.commit()?;
    Ok(value)
}

/// A file being written crash-safely: a temp file beside its final path until
/// [`AtomicFile::commit`] (or [`AtomicFile::commit_as`]); dropped uncommitted, the
/// temp file is removed and nothing else changed.
#[derive(Debug)]
pub struct AtomicFile {
    /// The final path.
    path: PathBuf,
    /// The temp file's path, in the same folder; `None` once committed.
    temp: Option<PathBuf>,
    /// The open temp file.
    file: File,
}

impl AtomicFile {
    /// Creates the temp file for `path` (same folder), with `mode` whatever the umask.
    pub fn new(path: &Path, mode: u32) -> io::Result<AtomicFile> {
        let (temp, file) = create_temp(path, mode)?;
        Ok(AtomicFile {
            path: path.to_path_buf(),
            temp: Some(temp),
            file,
        })
    }

    /// The open temp file, to write into.
    pub fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// `sync_all`s the temp file, renames it over the final path, fsyncs the folder.
    pub fn commit(self) -> io::Result<()> {
        let path = self.path.clone();
        self.commit_as(&path)
    }

    /// [`AtomicFile::commit`] under another name, which must be in the same folder
    /// (the rename must not cross file systems).
    pub fn commit_as(mut self, path: &Path) -> io::Result<()> {
        if parent_dir(path) != parent_dir(&self.path) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "an atomic file is committed in the folder it was created in",
            ));
        }
        self.file.flush()?;
        self.file.sync_all()?;
        let Some(temp) = self.temp.take() else {
            return Ok(());
        };
        if let Err(e) = fs::rename(&temp, path) {
            let _ = fs::remove_file(&temp);
            return Err(e);
        }
        fsync_dir(parent_dir(path))
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if let Some(temp) = self.temp.take() {
            let _ = fs::remove_file(temp); // best effort: a leftover is removed at open
        }
    }
}

/// Steps 1–3 of [`write_atomic`]: a durable temp file next to `path`, returned by name.
/// Separate so that tests can stop ("crash") between the steps.
#[cfg(test)]
pub(crate) fn write_temp(path: &Path, bytes: &[u8]) -> io::Result<PathBuf> {
    let (temp, mut file) = create_temp(path, DEFAULT_FILE_MODE)?;
    if let Err(e) = file.write_all(bytes).and_then(|()| file.sync_all()) {
        drop(file);
        let _ = fs::remove_file(&temp);
        return Err(e);
    }
    Ok(temp)
}

/// Creates a new temp file next to `path` with exactly `mode`.
fn create_temp(path: &Path, mode: u32) -> io::Result<(PathBuf, File)> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "write_atomic needs a file path",
        )
    })?;
    let dir = parent_dir(path);
    let mut attempt = 0;
    loop {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(name);
        temp_name.push(format!("{TEMP_MARKER}{}.{n}", std::process::id()));
        let temp = dir.join(temp_name);
        // Created owner-only; the final mode is set on the descriptor, not through the umask.
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
        {
            Ok(file) => {
                if let Err(e) = file.set_permissions(Permissions::from_mode(mode)) {
                    drop(file);
                    let _ = fs::remove_file(&temp);
                    return Err(e);
                }
                return Ok((temp, file));
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < MAX_TEMP_ATTEMPTS => {
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Creates `dir` and any missing parents, like `create_dir_all`, and makes each
/// creation durable (the parent of every folder it made is fsynced), so a power cut
/// after a crash-safe write into a new folder cannot lose the folder itself.
pub fn create_dir_durable(dir: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut cursor = Some(dir);
    while let Some(path) = cursor {
        if path.as_os_str().is_empty() || path.is_dir() {
            break;
        }
        missing.push(path);
        cursor = path.parent();
    }
    for path in missing.into_iter().rev() {
        match fs::create_dir(path) {
            Ok(()) => fsync_dir(parent_dir(path))?,
            // Made by someone else in between: theirs to make durable.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
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
    fn create_dir_durable_makes_every_missing_folder_and_refuses_a_file_in_the_way() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("identity").join("sub");
        create_dir_durable(&deep).unwrap();
        assert!(deep.is_dir());
        // Idempotent, like create_dir_all.
        create_dir_durable(&deep).unwrap();
        fs::write(dir.path().join("file"), b"x").unwrap();
        let blocked = dir.path().join("file").join("child");
        assert!(create_dir_durable(&blocked).is_err());
        assert_eq!(fs::read(dir.path().join("file")).unwrap(), b"x");
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

    #[test]
    fn modes_are_explicit_whatever_the_umask() {
        let dir = tempfile::tempdir().unwrap();
        // SAFETY: umask only changes this process's file creation mask.
        let old = unsafe { libc::umask(0) };
        let secret = dir.path().join("secret");
        write_atomic_mode(&secret, b"s", 0o600).unwrap();
        let public = dir.path().join("public");
        write_atomic(&public, b"p").unwrap();
        unsafe { libc::umask(old) };
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&secret), 0o600);
        assert_eq!(mode(&public), 0o644);
    }

    #[test]
    fn a_streamed_write_is_all_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        write_atomic(&path, b"old").unwrap();
        let failed = write_atomic_with(&path, 0o644, |f| {
            f.write_all(b"half")?;
            Err::<(), _>(io::Error::other("writer gave up"))
        });
        assert!(failed.is_err());
        assert_eq!(fs::read(&path).unwrap(), b"old");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "temp removed");
        let n = write_atomic_with(&path, 0o644, |f| f.write_all(b"new").map(|()| 3)).unwrap();
        assert_eq!((n, fs::read(&path).unwrap()), (3, b"new".to_vec()));
    }

    #[test]
    fn an_atomic_file_commits_under_a_name_found_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = AtomicFile::new(&dir.path().join("artifact"), 0o644).unwrap();
        file.write_all(b"data").unwrap();
        let named = dir.path().join("abc.tar.zst");
        file.commit_as(&named).unwrap();
        assert_eq!(fs::read(&named).unwrap(), b"data");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        let other = tempfile::tempdir().unwrap();
        let file = AtomicFile::new(&dir.path().join("x"), 0o644).unwrap();
        assert!(file.commit_as(&other.path().join("x")).is_err());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "temp removed");
        drop(AtomicFile::new(&dir.path().join("y"), 0o644).unwrap());
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "dropped = removed"
        );
    }
}
