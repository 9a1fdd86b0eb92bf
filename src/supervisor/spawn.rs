//! Building one payload generation's command: environment, working folder,
//! process group, and the set-up that runs in the child between `fork` and
//! `exec` (user switch, parent-death signal, listener fds moved to 3, 4, …).

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;

use rustix::process::{Pid, Signal};
use tokio::process::Command;

use super::listeners::MAX_LISTENERS;
use super::user::Identity;
use super::{Listeners, PayloadSpec, SupervisorError};

/// The shell that runs [`LISTEN_PID_WRAPPER`].
const SHELL: &str = "/bin/sh";

/// `LISTEN_PID` must be the payload's own pid, which is known only in the
/// child, and `Command` fixes the environment before `fork` (setting it in
/// `pre_exec` would be lost, and `setenv` there is not async-signal-safe). So
/// when sockets are handed over, the payload is started as
/// `/bin/sh -c '<this>' <command> <args>…`: the shell exports its own pid and
/// `exec`s the payload, which keeps that pid. This is the usual equivalent of
/// systemd's own set-up and passes `sd_listen_fds`' `LISTEN_PID == getpid()`.
const LISTEN_PID_WRAPPER: &str = r#"LISTEN_PID=$$; export LISTEN_PID; exec "$0" "$@""#;

/// The first fd handed over (`SD_LISTEN_FDS_START`).
const FIRST_LISTEN_FD: RawFd = 3;

/// Protocol variables the agent may itself have been given (by systemd, or
/// by its previous image at an in-place exec: `BANKSWAP_HANDOVER_*`, see
/// `agent/inherit.rs`), and its test switches: the payload must never see them.
const AGENT_PROTOCOL_VARS: [&str; 12] = [
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
    "LISTEN_PID",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "BANKSWAP_HANDOVER_PID",
    "BANKSWAP_HANDOVER_STATE",
    "BANKSWAP_HANDOVER_FDS",
    "BANKSWAP_HANDOVER_NONCE",
    "BANKSWAP_HANDOVER_BOUNCE",
    "BANKSWAP_TEST_AGENT_FAULT",
];

/// Builds the command for `spec`, handing over `listeners` and `notify_socket`.
pub(super) fn command(
    spec: &PayloadSpec,
    listeners: &Listeners,
    notify_socket: &str,
    identity: Option<Identity>,
) -> Result<Command, SupervisorError> {
    check_executable(spec)?;
    let mut command = if listeners.is_empty() {
        Command::new(&spec.command)
    } else {
        let mut wrapped = Command::new(SHELL);
        wrapped.arg("-c").arg(LISTEN_PID_WRAPPER).arg(&spec.command);
        wrapped
    };
    command.args(&spec.args);

    // Later settings win: the configured env may override HOME, but not the protocol.
    if let Some(identity) = &identity {
        command.env("HOME", &identity.home);
        command.env("USER", &identity.name);
        command.env("LOGNAME", &identity.name);
    }
    command.envs(&spec.env);
    for var in AGENT_PROTOCOL_VARS {
        command.env_remove(var);
    }
    command.env("BANKSWAP_VERSION", &spec.version);
    command.env("BANKSWAP_BANK", spec.bank.dir_name());
    command.env("BANKSWAP_BANK_DIR", &spec.bank_dir);
    command.env("NOTIFY_SOCKET", notify_socket);
    if let Some(watchdog) = spec.watchdog {
        command.env("WATCHDOG_USEC", watchdog.as_micros().to_string());
    }
    if !listeners.is_empty() {
        command.env("LISTEN_FDS", listeners.len().to_string());
        command.env("LISTEN_FDNAMES", listeners.names());
    }

    command
        .current_dir(&spec.bank_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(false);

    let mut setup = ChildSetup {
        fds: [-1; MAX_LISTENERS],
        fd_count: listeners.len().min(MAX_LISTENERS),
        agent: rustix::process::getpid(),
        identity,
    };
    for (slot, fd) in setup.fds.iter_mut().zip(listeners.fds()) {
        *slot = fd.as_raw_fd();
    }
    // SAFETY: the closure runs in the forked child before exec; `ChildSetup::run`
    // makes only async-signal-safe system calls and does not allocate. The raw
    // fds it names stay open: `listeners` outlives `spawn`, which returns only
    // once the child has exec'd.
    unsafe {
        command.pre_exec(move || setup.run());
    }
    Ok(command)
}

/// Fails early, with the path in the error, when the command cannot be run.
fn check_executable(spec: &PayloadSpec) -> Result<(), SupervisorError> {
    let meta = std::fs::metadata(&spec.command).map_err(|source| SupervisorError::Command {
        command: spec.command.clone(),
        source,
    })?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Err(SupervisorError::NotExecutable {
            command: spec.command.clone(),
        });
    }
    Ok(())
}

/// What the child does between `fork` and `exec`, prepared in the agent.
struct ChildSetup {
    /// The listener fds as numbered in the agent (close-on-exec there).
    fds: [RawFd; MAX_LISTENERS],
    /// How many entries of `fds` are used.
    fd_count: usize,
    /// The agent's pid, to catch the agent dying before the death signal is set.
    agent: Pid,
    /// The user to switch to, if any.
    identity: Option<Identity>,
}

impl ChildSetup {
    /// Runs in the child: only async-signal-safe calls, no allocation.
    fn run(&self) -> io::Result<()> {
        if let Some(identity) = &self.identity {
            // Groups and gid first: after setuid we could no longer change them.
            // SAFETY: plain system calls on values prepared before fork.
            unsafe {
                check(libc::setgroups(
                    identity.groups.len(),
                    identity.groups.as_ptr(),
                ))?;
                check(libc::setgid(identity.gid))?;
                check(libc::setuid(identity.uid))?;
            }
        }
        // After the user switch, which clears the setting. The signal comes when
        // the agent *thread* that forked exits, and an in-place exec of the
        // agent ends every thread but the one calling it: payloads are forked
        // from the main thread only (the core's current_thread runtime), which
        // is also the only thread the agent execs from (`agent/reexec.rs`);
        // never from a blocking or worker thread.
        rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
        if rustix::process::getppid() != Some(self.agent) {
            // The agent died before the prctl: no signal will ever come.
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        self.move_listen_fds()
    }

    /// Puts the listeners at 3, 4, … without close-on-exec. They are first
    /// copied above the target range, so a listener that already sits at a
    /// target number is never overwritten before it is copied.
    ///
    /// A target number may hold std's close-on-exec error pipe; `dup2` closes
    /// it. A successful exec is unaffected; a failed exec of `/bin/sh` would
    /// then show as an exit of the child rather than a spawn error.
    fn move_listen_fds(&self) -> io::Result<()> {
        let count = self.fd_count;
        let above_targets = FIRST_LISTEN_FD + count as RawFd; // count <= MAX_LISTENERS
        let mut copies = [-1; MAX_LISTENERS];
        for (copy, &fd) in copies.iter_mut().zip(&self.fds).take(count) {
            // SAFETY: `fd` is open in the child (inherited); F_DUPFD_CLOEXEC makes a new fd.
            *copy = check(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, above_targets) })?;
        }
        for (target, &copy) in (FIRST_LISTEN_FD..).zip(&copies).take(count) {
            // SAFETY: dup2 onto a number below `above_targets`, never equal to
            // `copy`, so the new fd is made without FD_CLOEXEC; then the copy goes.
            unsafe {
                check(libc::dup2(copy, target))?;
                libc::close(copy);
            }
        }
        Ok(())
    }
}

/// Turns a `-1` return into the thread's errno (no allocation).
fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}
