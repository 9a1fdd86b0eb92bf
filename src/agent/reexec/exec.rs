//! The exec itself: the refusals (staging, admin rollback, a busy
//! self-update, the PDEATHSIG rule), the hand-over written to a memfd, the
//! environment and fds prepared, then one `execve` from the main thread —
//! and `bankswap agent reexec`, which asks for it.

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use tracing::{error, info};

use super::signals::{block_stop_signals, restore_signal_mask, stop_requested};
use super::{ExecPurpose, ExecTarget};
use crate::agent::core::{Agent, Disk, Generation, Mode};
use crate::agent::handover;
use crate::agent::inherit;
use crate::agent::trial::Trial;
use crate::logging;
use crate::supervisor::Payload;

impl Agent {
    /// Execs `target` in place with the hand-over: returns only if it could
    /// not (the agent then keeps running exactly as before, payload untouched).
    pub(in crate::agent) fn exec_in_place(&mut self, target: &ExecTarget) -> anyhow::Error {
        match self.try_exec(target) {
            Ok(never) => match never {},
            Err(e) => e,
        }
    }

    fn try_exec(&mut self, target: &ExecTarget) -> anyhow::Result<std::convert::Infallible> {
        self.exec_preconditions()?;
        let exe = &target.exe;
        let meta = std::fs::metadata(exe).with_context(|| format!("{}", exe.display()))?;
        if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
            bail!("{} is not an executable file", exe.display());
        }
        rustix::fs::access(exe, rustix::fs::Access::EXEC_OK)
            .with_context(|| format!("{} cannot be executed", exe.display()))?;
        let nonce = handover::new_nonce();
        let (handover, fds) = self.build_handover(target, &nonce, (meta.dev(), meta.ino()))?;
        let memfd = handover::write_memfd(&handover).map_err(|e| anyhow!("hand-over: {e}"))?;
        let mut all: Vec<BorrowedFd<'_>> = fds.iter().map(|fd| fd.as_fd()).collect();
        all.push(memfd.as_fd());
        let mut numbers: Vec<_> = handover.fds.iter().map(|f| f.fd).collect();
        numbers.sort_unstable();
        let listed = numbers
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let mut vars = vec![
            (inherit::ENV_PID, std::process::id().to_string()),
            (inherit::ENV_STATE, format!("fd:{}", memfd.as_raw_fd())),
            (inherit::ENV_FDS, listed),
            (inherit::ENV_NONCE, nonce.clone()),
        ];
        if let ExecPurpose::Bounce { reason, .. } = &target.purpose {
            vars.push((
                inherit::ENV_BOUNCE,
                inherit::cut(reason, inherit::MAX_BOUNCE_REASON),
            ));
        }
        let image = ExecImage::new(exe, std::env::args_os(), std::env::vars_os(), &vars)?;
        info!(
            from = handover.from.exe.display().to_string(),
            to = exe.display().to_string(),
            nonce,
            adopting = handover.generations.len(),
            "executing the new agent build in place"
        );
        logging::flush();
        let old_mask = block_stop_signals();
        if stop_requested() {
            // Its handler already ran in this image: an exec now would lose it.
            restore_signal_mask(&old_mask);
            bail!("the agent is stopping (SIGTERM or SIGINT); not executing");
        }
        if let Err(e) = inherit::clear_cloexec(&all) {
            restore_signal_mask(&old_mask);
            return Err(
                anyhow::Error::from(e).context("clearing close-on-exec on the inherited fds")
            );
        }
        let err = image.exec();
        // Still here: the exec failed, and nothing else changed.
        inherit::restore_cloexec(&all);
        restore_signal_mask(&old_mask);
        Err(anyhow::Error::from(err).context(format!("exec {}", exe.display())))
    }

    /// The hand-over is refused while the root is with a staging thread, an
    /// admin rollback waits, or the exec would end a payload's forking thread.
    fn exec_preconditions(&self) -> anyhow::Result<()> {
        match &self.disk {
            Disk::Idle(_) => {}
            Disk::Staging { .. } | Disk::Handover => {
                bail!("a release is being staged; try again when it is done")
            }
        }
        if self.held_rollback.is_some() {
            bail!("an admin rollback is under way");
        }
        if self.self_update.as_ref().is_some_and(|su| su.busy()) {
            // Its thread or self-test child would not survive the exec.
            bail!("an agent build is being staged or self-tested; try again when it is done");
        }
        let me = rustix::process::getpid().as_raw_pid();
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        let forks: Vec<(u32, i32)> = self
            .live_generations()
            .iter()
            .map(|p| (p.pid(), p.forked_by()))
            .collect();
        check_forking_threads(me, tid, &forks)
    }

    /// Every running generation: the current one and one left draining.
    fn live_generations(&self) -> Vec<&Payload> {
        let mut live = Vec::new();
        if let Generation::Running(p) = &self.current {
            live.push(p);
        }
        match &self.mode {
            Mode::Steady {
                draining: Some((p, _)),
            } => live.push(p),
            Mode::Trial(Trial {
                draining: Some(p), ..
            }) => live.push(p),
            _ => {}
        }
        live
    }

    /// `bankswap agent reexec`: the request's answer when the exec failed
    /// (on success the connection ends with the old image).
    pub(in crate::agent) fn reexec_request(
        &mut self,
        binary: Option<PathBuf>,
        grace_ms: Option<u64>,
    ) -> anyhow::Result<String> {
        if self.agent_trial.is_some() {
            bail!("a self-update is on trial; try again after it commits");
        }
        let current = std::fs::read_link("/proc/self/exe").context("reading /proc/self/exe")?;
        let exe = binary.unwrap_or_else(|| current.clone());
        let purpose = match grace_ms {
            None => ExecPurpose::Reexec,
            Some(ms) => ExecPurpose::SelfUpdate {
                attempt: handover::new_nonce(),
                grace: Duration::from_millis(ms),
                previous_exe: current,
            },
        };
        let err = self.exec_in_place(&ExecTarget { exe, purpose });
        error!(error = %format!("{err:#}"), "reexec failed; the agent keeps running");
        Err(err)
    }
}

/// An `execve` prepared in full before the exec: path, argv (this process's
/// own) and environment (this process's, without any old hand-over
/// variables, plus the new ones).
///
/// Not std's `Command::exec`: it calls `execvp`, which on `ENOEXEC` runs the
/// file with `/bin/sh` instead (a non-program with exec bits would replace the
/// agent by a shell), and it resets SIGPIPE to the default in this process
/// even when the exec then fails.
struct ExecImage {
    /// The executable.
    path: CString,
    /// The arguments, `argv[0]` first.
    argv: Vec<CString>,
    /// `KEY=VALUE` pairs.
    envp: Vec<CString>,
}

impl ExecImage {
    /// `exe` with `args` (`argv[0]` first) and `env` minus every hand-over
    /// variable, plus `vars`.
    fn new(
        exe: &Path,
        args: impl Iterator<Item = OsString>,
        env: impl Iterator<Item = (OsString, OsString)>,
        vars: &[(&str, String)],
    ) -> anyhow::Result<ExecImage> {
        let c =
            |bytes: Vec<u8>| CString::new(bytes).context("a NUL byte in an argument or variable");
        let path = c(exe.as_os_str().as_bytes().to_vec())?;
        let argv = args
            .map(|a| c(a.into_vec()))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut envp = Vec::new();
        for (key, value) in env {
            if inherit::ENV_VARS.iter().any(|v| key == *v) {
                continue;
            }
            let mut pair = key.into_vec();
            pair.push(b'=');
            pair.extend(value.into_vec());
            envp.push(c(pair)?);
        }
        for (key, value) in vars {
            envp.push(c(format!("{key}={value}").into_bytes())?);
        }
        Ok(ExecImage { path, argv, envp })
    }

    /// `execve`; returns only on failure.
    fn exec(&self) -> io::Error {
        let mut argv: Vec<*const libc::c_char> = self.argv.iter().map(|a| a.as_ptr()).collect();
        argv.push(std::ptr::null());
        let mut envp: Vec<*const libc::c_char> = self.envp.iter().map(|e| e.as_ptr()).collect();
        envp.push(std::ptr::null());
        // SAFETY: NUL-terminated strings and NULL-terminated arrays that live
        // until execve returns (or the image is replaced).
        unsafe {
            libc::execve(self.path.as_ptr(), argv.as_ptr(), envp.as_ptr());
        }
        io::Error::last_os_error()
    }
}

/// The PDEATHSIG rule: the exec must come from the main thread (`tid ==
/// me`), and every live generation (`(pid, forked_by)`) must have been forked
/// by it, since every other thread ends at the exec and a payload's death
/// signal fires when its forking thread ends.
fn check_forking_threads(me: i32, tid: i32, forks: &[(u32, i32)]) -> anyhow::Result<()> {
    if tid != me {
        bail!("the agent core runs on thread {tid}, not the main thread; an exec would end it");
    }
    for &(pid, by) in forks {
        if by != me {
            bail!(
                "payload pid {pid} was started from thread {by}, which the exec would end; not executing"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exec_environment_drops_old_hand_over_variables_and_adds_the_new_ones() {
        let os = |s: &str| OsString::from(s);
        let env = vec![
            (os("PATH"), os("/usr/bin")),
            (os(inherit::ENV_PID), os("1")),
            (os(inherit::ENV_BOUNCE), os("old reason")),
            (os("NOTIFY_SOCKET"), os("/run/systemd/notify")),
        ];
        let image = ExecImage::new(
            Path::new("/usr/bin/bankswap"),
            vec![os("bankswap"), os("run")].into_iter(),
            env.into_iter(),
            &[(inherit::ENV_PID, "42".to_owned())],
        )
        .unwrap();
        let envp: Vec<&str> = image.envp.iter().map(|e| e.to_str().unwrap()).collect();
        assert_eq!(
            envp,
            [
                "PATH=/usr/bin",
                "NOTIFY_SOCKET=/run/systemd/notify",
                "BANKSWAP_HANDOVER_PID=42"
            ]
        );
        assert_eq!(image.argv.len(), 2);
        assert_eq!(image.path.to_str().unwrap(), "/usr/bin/bankswap");
        // A NUL byte cannot be passed: refused, not cut.
        let err = ExecImage::new(
            Path::new("/bin/x"),
            std::iter::once(os("a\0b")),
            std::iter::empty(),
            &[],
        );
        assert!(err.is_err());
    }

    #[test]
    fn payload_forked_off_the_main_thread_blocks_the_exec() {
        assert!(check_forking_threads(100, 100, &[(200, 100), (300, 100)]).is_ok());
        let err = check_forking_threads(100, 100, &[(200, 100), (300, 101)]).unwrap_err();
        assert!(
            err.to_string()
                .contains("payload pid 300 was started from thread 101"),
            "{err}"
        );
        let err = check_forking_threads(100, 105, &[]).unwrap_err();
        assert!(err.to_string().contains("not the main thread"), "{err}");
    }
}
