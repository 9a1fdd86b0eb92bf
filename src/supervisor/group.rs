//! A payload's process group: signalling it as a whole, and telling whether
//! any live process is left in it.
//!
//! A killed process stays a zombie until its parent reaps it; for a payload's
//! helpers that parent is init once the main process is gone, and some inits
//! reap lazily. A zombie has closed its fds and runs no code, so "gone" here
//! means "no member that is not a zombie", read from `/proc`.

use std::fs;
use std::io;

use rustix::io::Errno;
use rustix::process::{Pid, Signal};

/// Where the kernel lists processes.
const PROC: &str = "/proc";

/// A process group, named by its leader's pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ProcessGroup(pub(super) Pid);

impl ProcessGroup {
    /// Sends `signal` to every process of the group; a group already gone is
    /// not an error.
    pub(super) fn signal(self, signal: Signal) -> io::Result<()> {
        match rustix::process::kill_process_group(self.0, signal) {
            Ok(()) | Err(Errno::SRCH) => Ok(()),
            Err(errno) => Err(errno.into()),
        }
    }

    /// True while a process of the group is alive (not a zombie).
    pub(super) fn has_live_members(self) -> bool {
        if rustix::process::test_kill_process_group(self.0) == Err(Errno::SRCH) {
            return false;
        }
        // Some member exists; it may be a zombie. Without /proc, assume alive.
        match fs::read_dir(PROC) {
            Ok(entries) => entries
                .filter_map(Result::ok)
                .filter(|entry| entry.file_name().to_str().is_some_and(is_pid))
                .filter_map(|entry| fs::read_to_string(entry.path().join("stat")).ok())
                .any(|stat| is_live_member(&stat, self.0.as_raw_pid())),
            Err(_) => true,
        }
    }
}

/// A `/proc` entry name that is a pid.
fn is_pid(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit())
}

/// Reads `/proc/<pid>/stat`: `pid (comm) state ppid pgrp …`. The command name
/// may hold spaces and parentheses, so fields are counted after the last `)`.
fn is_live_member(stat: &str, pgid: i32) -> bool {
    let Some((_, fields)) = stat.rsplit_once(')') else {
        return false;
    };
    let mut fields = fields.split_ascii_whitespace();
    let state = fields.next();
    let pgrp = fields.nth(1).and_then(|pgrp| pgrp.parse::<i32>().ok());
    pgrp == Some(pgid) && !matches!(state, Some("Z" | "X" | "x"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_are_read_after_the_command_name() {
        let stat = "4242 (a (weird) name) S 1 777 777 0 -1 4194560 0 0";
        assert!(is_live_member(stat, 777));
        assert!(!is_live_member(stat, 4242));
        assert!(!is_live_member("4243 (sleep) Z 1 777 777 0", 777));
        assert!(!is_live_member("garbage", 777));
        assert!(is_pid("123") && !is_pid("self") && !is_pid(""));
    }

    #[test]
    fn a_group_without_processes_has_no_live_members_and_takes_signals() {
        let ours = ProcessGroup(rustix::process::getpgrp());
        assert!(ours.has_live_members());
        // pid_max is at most 2^22, so this group cannot exist.
        let none = ProcessGroup(Pid::from_raw(i32::MAX).unwrap());
        assert!(!none.has_live_members());
        none.signal(Signal::KILL).unwrap();
    }
}
