//! `ROOT/lock`: created 0600 whatever the umask and opened read-write, so a user who
//! cannot write it cannot take it (`flock` works on a read-only descriptor); the holder
//! writes who it is into it, so a process that finds it locked can say who holds it.

use std::fs::{File, OpenOptions, Permissions, TryLockError};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use crate::{LOCK_FILE, LayoutError};

/// Mode of the lock file: the agent's user alone may open it, let alone lock it.
const LOCK_MODE: u32 = 0o600;

/// Pause between two attempts while waiting for the lock. Short-lived commands
/// (`status`, `rollback`, `apply`'s verification) hold it for milliseconds to seconds.
const LOCK_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Longest holder line read from the lock file (a pid and a command name).
const MAX_HOLDER_BYTES: u64 = 256;

/// Opens and locks `dir/lock` (creating it 0600), waiting up to `max_wait` for a
/// holder to let go, then writes who holds it now. The wait sleeps in steps of
/// [`LOCK_POLL_INTERVAL`] and reads no clock.
pub(crate) fn take(dir: &Path, max_wait: Duration) -> Result<File, LayoutError> {
    let path = dir.join(LOCK_FILE);
    let mut lock = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(LOCK_MODE)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(LayoutError::at(&path))?;
    // A lock file made by an older bankswap (0644) is narrowed too.
    lock.set_permissions(Permissions::from_mode(LOCK_MODE))
        .map_err(LayoutError::at(&path))?;
    let mut waited = Duration::ZERO;
    loop {
        match lock.try_lock() {
            Ok(()) => break,
            Err(TryLockError::WouldBlock) if waited < max_wait => {
                std::thread::sleep(LOCK_POLL_INTERVAL);
                waited += LOCK_POLL_INTERVAL;
            }
            Err(TryLockError::WouldBlock) => {
                return Err(LayoutError::Locked {
                    root: dir.to_path_buf(),
                    holder: holder(&mut lock),
                });
            }
            Err(TryLockError::Error(e)) => return Err(LayoutError::io(&path, e)),
        }
    }
    // Best effort: who holds the lock is for messages only.
    let _ = lock
        .set_len(0)
        .and_then(|()| lock.rewind())
        .and_then(|()| writeln!(lock, "{}", whoami()));
    Ok(lock)
}

/// What the holder wrote into the lock file, one line, if anything.
fn holder(lock: &mut File) -> Option<String> {
    let mut text = String::new();
    lock.rewind().ok()?;
    lock.take(MAX_HOLDER_BYTES).read_to_string(&mut text).ok()?;
    let line = text.lines().next()?.trim();
    (!line.is_empty()).then(|| line.escape_debug().to_string())
}

/// This process, as the lock file names it: `pid 42: bankswap run`.
fn whoami() -> String {
    let mut args = std::env::args_os();
    let program = args
        .next()
        .map(|p| {
            Path::new(&p)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .unwrap_or_default();
    let command = args
        .next()
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("pid {}: {program} {command}", std::process::id())
        .trim_end()
        .to_owned()
}
