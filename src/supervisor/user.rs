//! `[payload] user`: the user database look-up (`getpwnam_r`,
//! `getgrouplist`) done in the agent before fork, so the child only makes the
//! `setgroups`/`setgid`/`setuid` calls.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::mem::MaybeUninit;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use super::SupervisorError;

/// First buffer size for `getpwnam_r` (glibc suggests 1024 via `_SC_GETPW_R_SIZE_MAX`).
const PASSWD_BUFFER_START: usize = 1024;
/// Largest buffer tried: an entry needing more than this is a broken database.
const PASSWD_BUFFER_MAX: usize = 1 << 20;
/// First guess at the number of supplementary groups.
const GROUPS_START: usize = 32;
/// Linux's `NGROUPS_MAX`: more groups than this cannot be set.
const GROUPS_MAX: usize = 65_536;

/// Who the payload runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Identity {
    /// The user name (`USER`, `LOGNAME`).
    pub(super) name: String,
    /// The user id.
    pub(super) uid: libc::uid_t,
    /// The primary group id.
    pub(super) gid: libc::gid_t,
    /// Every group the user is in, the primary one included.
    pub(super) groups: Vec<libc::gid_t>,
    /// The home folder (`HOME`).
    pub(super) home: PathBuf,
}

/// Looks `user` up. `None` means no switch is needed: the agent already runs
/// as that user. Switching to anyone else needs root.
pub(super) fn resolve(user: &str) -> Result<Option<Identity>, SupervisorError> {
    let identity = lookup(user)?;
    switch_needed(identity, rustix::process::geteuid().as_raw())
}

/// Decides between switching (root), nothing (same user), or an error.
fn switch_needed(
    identity: Identity,
    euid: libc::uid_t,
) -> Result<Option<Identity>, SupervisorError> {
    if euid == 0 {
        Ok(Some(identity))
    } else if identity.uid == euid {
        Ok(None)
    } else {
        Err(SupervisorError::NeedsRoot {
            user: identity.name,
            uid: euid,
        })
    }
}

/// Reads the user's passwd entry and group list.
fn lookup(user: &str) -> Result<Identity, SupervisorError> {
    let unknown = || SupervisorError::UnknownUser {
        user: user.to_owned(),
    };
    let lookup_error = |source| SupervisorError::UserLookup {
        user: user.to_owned(),
        source,
    };
    let c_name = CString::new(user).map_err(|_| unknown())?;
    let mut size = PASSWD_BUFFER_START;
    loop {
        let mut buffer: Vec<libc::c_char> = vec![0; size];
        let mut entry = MaybeUninit::<libc::passwd>::uninit();
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call: a NUL-terminated name, an
        // entry to fill, a buffer of `buffer.len()` bytes, and the result slot.
        let rc = unsafe {
            libc::getpwnam_r(
                c_name.as_ptr(),
                entry.as_mut_ptr(),
                buffer.as_mut_ptr(),
                buffer.len(),
                &mut found,
            )
        };
        if rc == libc::ERANGE && size < PASSWD_BUFFER_MAX {
            size *= 2;
            continue;
        }
        if rc != 0 {
            return Err(lookup_error(io::Error::from_raw_os_error(rc)));
        }
        if found.is_null() {
            return Err(unknown());
        }
        // SAFETY: a non-null result means getpwnam_r filled `entry`; its strings
        // point into `buffer`, which lives until the end of this block.
        let (uid, gid, home) = unsafe {
            let entry = entry.assume_init_ref();
            let home = OsStr::from_bytes(CStr::from_ptr(entry.pw_dir).to_bytes());
            (entry.pw_uid, entry.pw_gid, PathBuf::from(home))
        };
        let groups = group_list(&c_name, gid).map_err(lookup_error)?;
        return Ok(Identity {
            name: user.to_owned(),
            uid,
            gid,
            groups,
            home,
        });
    }
}

/// `getgrouplist`, growing the list until it fits.
fn group_list(name: &CStr, gid: libc::gid_t) -> io::Result<Vec<libc::gid_t>> {
    let mut capacity = GROUPS_START;
    loop {
        let mut groups: Vec<libc::gid_t> = vec![0; capacity];
        let mut count = libc::c_int::try_from(capacity).map_err(io::Error::other)?;
        // SAFETY: `groups` has room for `count` entries; the name is NUL-terminated.
        let rc = unsafe { libc::getgrouplist(name.as_ptr(), gid, groups.as_mut_ptr(), &mut count) };
        let count = usize::try_from(count).map_err(io::Error::other)?;
        if rc >= 0 {
            groups.truncate(count);
            return Ok(groups);
        }
        // -1: `count` now holds the number needed.
        if count > GROUPS_MAX || capacity >= GROUPS_MAX {
            return Err(io::Error::other(format!(
                "in {count} groups, more than Linux allows"
            )));
        }
        capacity = count.max(capacity * 2).min(GROUPS_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nobody() -> Identity {
        Identity {
            name: "nobody".into(),
            uid: 65534,
            gid: 65534,
            groups: vec![65534],
            home: "/nonexistent".into(),
        }
    }

    #[test]
    fn root_is_found_with_its_groups_and_home() {
        let root = lookup("root").unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        assert!(root.groups.contains(&0));
        assert_eq!(root.home, PathBuf::from("/root"));
    }

    #[test]
    fn unknown_users_are_named_in_the_error() {
        for name in ["bankswap-no-such-user", "nul\0inside"] {
            let err = resolve(name).unwrap_err();
            assert!(
                matches!(&err, SupervisorError::UnknownUser { user } if user == name),
                "{err}"
            );
        }
    }

    #[test]
    fn only_root_switches_to_another_user() {
        assert_eq!(switch_needed(nobody(), 0).unwrap(), Some(nobody()));
        assert_eq!(switch_needed(nobody(), 65534).unwrap(), None);
        let err = switch_needed(nobody(), 1000).unwrap_err();
        assert!(
            matches!(err, SupervisorError::NeedsRoot { ref user, uid: 1000 } if user == "nobody")
        );
        assert!(err.to_string().contains("needs root"));
    }
}
