//! The entrypoint check (issue 8.7): before a staged bank becomes valid, its entrypoint
//! command must be an executable regular file inside the bank, so that a release
//! without its program is refused before any activation instead of being committed
//! and then retried forever.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::LayoutError;
use crate::resolve::{Walk, resolve_in_bank};

/// Any execute bit: the supervisor runs the command as the payload user, who may be
/// the owner, in the group or another user.
const ANY_EXECUTE: u32 = 0o111;

/// Checks that `command` (relative to `bank`) names, after following symlinks inside
/// the bank, an executable regular file there.
pub(crate) fn check(bank: &Path, command: &str) -> Result<(), LayoutError> {
    let bad = |reason: &str| LayoutError::BadEntrypoint {
        command: command.escape_debug().to_string(),
        reason: reason.to_owned(),
    };
    if command.is_empty() {
        return Err(bad("is empty"));
    }
    if command.contains('\0') {
        return Err(bad("holds a NUL byte"));
    }
    let resolved = match resolve_in_bank(bank, Path::new(command)) {
        Ok(path) => path,
        Err(Walk::Escape(why)) => return Err(bad(&format!("is not inside the bank: it {why}"))),
        Err(Walk::Io(e)) => return Err(e),
    };
    let meta = match fs::symlink_metadata(&resolved) {
        Ok(meta) => meta,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            return Err(bad("does not exist in the release"));
        }
        Err(e) => return Err(LayoutError::io(&resolved, e)),
    };
    if !meta.is_file() {
        return Err(bad("is not a regular file"));
    }
    if meta.permissions().mode() & ANY_EXECUTE == 0 {
        return Err(bad("is not executable"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn verdict(bank: &Path, command: &str) -> String {
        match check(bank, command) {
            Ok(()) => "ok".into(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn only_an_executable_file_inside_the_bank_passes() {
        let dir = tempfile::tempdir().unwrap();
        let b = dir.path();
        fs::create_dir_all(b.join("bin")).unwrap();
        fs::write(b.join("bin/app"), b"#!/bin/sh\n").unwrap();
        fs::set_permissions(b.join("bin/app"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(b.join("data"), b"x").unwrap();
        fs::set_permissions(b.join("data"), fs::Permissions::from_mode(0o644)).unwrap();
        symlink("bin/app", b.join("run")).unwrap();
        symlink("/bin/sh", b.join("sh")).unwrap();
        symlink("../../bin/sh", b.join("bin/up")).unwrap();
        assert_eq!(verdict(b, "bin/app"), "ok");
        assert_eq!(verdict(b, "./run"), "ok");
        for (command, reason) in [
            ("", "is empty"),
            ("bin/a\0pp", "holds a NUL byte"),
            ("bin/missing", "does not exist"),
            ("data/x", "does not exist"),
            ("bin", "is not a regular file"),
            ("data", "is not executable"),
            ("/bin/sh", "is not inside the bank"),
            ("../x", "is not inside the bank"),
            ("sh", "is not inside the bank"),
            ("bin/up", "is not inside the bank"),
        ] {
            let text = verdict(b, command);
            assert!(
                text.starts_with("entrypoint `") && text.contains(reason),
                "{command}: {text}"
            );
        }
    }
}
