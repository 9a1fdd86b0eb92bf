//! The agent becoming another binary in place: same pid, so the payload
//! generations stay its children and keep serving. [`Agent::exec_in_place`]
//! is the one primitive (`bankswap agent reexec` and self-update both call
//! it); [`Agent::adopt`] is the new image's side; a self-update's grace,
//! commit and bounce back to the previous build live here too.
//!
//! **Invariant (PR_SET_PDEATHSIG):** a payload's death signal fires when the
//! *thread* that forked it ends, and `execve` ends every thread but the one
//! calling it. The core runs on the main thread (a `current_thread` runtime in
//! `agent::run`), forks every payload from it, and execs only from it; the
//! exec refuses unless the calling thread is the main thread and every live
//! generation was forked by it.

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{error, info, warn};

use bank_layout::AgentSlots;

use crate::agent::core::{Agent, Disk, Generation, Mode};
use crate::agent::handover::{
    self, AgentRef, HANDOVER_SCHEMA, HandedGeneration, Handover, Purpose, Received, Role,
    TrialState,
};
use crate::agent::inherit::{self, FdRef};
use crate::agent::self_update::fault;
use crate::agent::trial::Trial;
use crate::agent::verdict::Evidence;
use crate::control::{self, Request};
use crate::supervisor::{Payload, mono};
use crate::{clock, logging};

/// Signals blocked across the exec: `execve` resets their handlers to the
/// default (terminate), so a `systemctl stop` landing before the new image
/// installs its own would kill the agent (and the payload by its death
/// signal) instead of stopping it. The mask survives the exec; the new image
/// unblocks them once its handlers exist ([`unblock_stop_signals`]).
const STOP_SIGNALS: [libc::c_int; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

/// What to exec, and why.
#[derive(Debug, Clone)]
pub struct ExecTarget {
    /// The executable.
    pub exe: PathBuf,
    /// Why.
    pub purpose: ExecPurpose,
}

/// Why the agent execs in place.
#[derive(Debug, Clone)]
pub enum ExecPurpose {
    /// `bankswap agent reexec`: the new image adopts and carries on.
    Reexec,
    /// A self-update: the new image must adopt and commit within `grace`, or
    /// exec `previous_exe` back.
    SelfUpdate {
        /// The attempt's nonce (the agent-slot marker's).
        attempt: String,
        /// How long the new image has to commit, counted from the exec.
        grace: Duration,
        /// The build to go back to.
        previous_exe: PathBuf,
    },
    /// Back to the previous build: the newer one failed, for `reason`.
    Bounce {
        /// The attempt's nonce.
        attempt: String,
        /// Why.
        reason: String,
    },
}

/// The new image's self-update trial: commit before `deadline`, or go back.
#[derive(Debug)]
pub struct AgentTrial {
    /// The attempt's nonce.
    pub attempt: String,
    /// The end of the grace.
    pub deadline: Instant,
    /// The build to go back to.
    pub previous_exe: PathBuf,
    /// The self-probe of the control socket, while it runs.
    pub probe: Option<JoinHandle<bool>>,
    /// Why the new build already failed (a generation it could not adopt):
    /// the trial then ends at once, by going back.
    pub failed: Option<String>,
}

/// What the exec needs from the process's start: the argv and config path.
#[derive(Debug, Clone, Default)]
pub struct ExecContext {
    /// The `--config` file the agent runs with.
    pub config_path: PathBuf,
    /// The control socket's listening fd, when the agent serves one.
    pub control_fd: Option<std::os::fd::RawFd>,
}

impl Agent {
    /// Execs `target` in place with the hand-over: returns only if it could
    /// not (the agent then keeps running exactly as before, payload untouched).
    pub(super) fn exec_in_place(&mut self, target: &ExecTarget) -> anyhow::Error {
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

    /// The hand-over of the current state, and the fds it names (borrowed
    /// from their owners, which outlive the exec).
    fn build_handover(
        &self,
        target: &ExecTarget,
        nonce: &str,
        to_id: (u64, u64),
    ) -> anyhow::Result<(Handover, Vec<BorrowedFd<'_>>)> {
        let Disk::Idle(root) = &self.disk else {
            bail!("a release is being staged");
        };
        let control_fd = self
            .exec
            .control_fd
            .ok_or_else(|| anyhow!("this agent serves no control socket"))?;
        let self_exe = std::fs::read_link("/proc/self/exe").context("reading /proc/self/exe")?;
        let self_meta = std::fs::metadata("/proc/self/exe").context("reading /proc/self/exe")?;
        let mut fds: Vec<BorrowedFd<'_>> = vec![root.lock_fd()];
        // SAFETY: the control listener's fd is owned by the control socket
        // task, which lives as long as the runtime; the borrow ends at the exec.
        fds.push(unsafe { BorrowedFd::borrow_raw(control_fd) });
        let listeners = self.listeners.handover_state();
        fds.extend(self.listeners.borrowed_fds());
        let mut generations = Vec::new();
        let mut add = |payload: &Payload, role: Role, bank| -> anyhow::Result<()> {
            if let Some(state) = payload.handover_state(bank) {
                generations.push(HandedGeneration { role, state });
            }
            Ok(())
        };
        let active = root.active_bank();
        if let Generation::Running(p) = &self.current {
            add(p, Role::Current, active)?;
        }
        let trial = match &self.mode {
            Mode::Trial(t) => {
                if let Some(p) = &t.draining {
                    add(p, Role::TrialDraining, active.other())?;
                }
                Some(TrialState {
                    version: t.version.clone(),
                    sequence: t.sequence,
                    deadline_mono_ms: mono::from_instant(t.deadline),
                    next_probe_mono_ms: mono::from_instant(t.next_probe),
                    ready: t.seen.ready,
                    failures: t.seen.failures,
                    last_failure: t.seen.last_failure.clone(),
                })
            }
            Mode::Steady {
                draining: Some((p, due)),
            } => {
                let role = Role::Draining {
                    due_mono_ms: mono::from_instant(*due),
                };
                // Left by an admin rollback: the bank rolled away from.
                add(p, role, active.other())?;
                None
            }
            Mode::Steady { draining: None } => None,
        };
        for g in &generations {
            for fd in [
                Some(g.state.notify_fd),
                g.state.stdout_fd,
                g.state.stderr_fd,
            ]
            .into_iter()
            .flatten()
            {
                // SAFETY: owned by the generation's Payload, held by the core
                // until the exec (or until this function's caller returns).
                fds.push(unsafe { BorrowedFd::borrow_raw(fd) });
            }
        }
        let identities: Vec<FdRef> =
            handover::identities(&fds).context("fstat of an inherited fd")?;
        let restart_at = match self.current {
            Generation::Down { restart_at } => restart_at.map(mono::from_instant),
            Generation::Running(_) => None,
        };
        let version = self.identity.version.clone();
        let purpose = match &target.purpose {
            ExecPurpose::Reexec => Purpose::Reexec,
            ExecPurpose::SelfUpdate {
                attempt,
                grace,
                previous_exe,
            } => Purpose::SelfUpdate {
                attempt: attempt.clone(),
                previous_exe: previous_exe.clone(),
                deadline_mono_ms: mono::now_ms().saturating_add(handover::millis(*grace)),
            },
            ExecPurpose::Bounce { attempt, reason } => Purpose::Bounce {
                attempt: attempt.clone(),
                reason: reason.clone(),
            },
        };
        let handover = Handover {
            schema: HANDOVER_SCHEMA,
            pid: std::process::id(),
            boot_id: handover::boot_id().context("reading the boot id")?,
            nonce: nonce.to_owned(),
            written_at_mono_ms: mono::now_ms(),
            root: self.config.root.clone(),
            config: self.exec.config_path.clone(),
            from: AgentRef {
                version: version.clone(),
                exe: self_exe,
                dev: self_meta.dev(),
                ino: self_meta.ino(),
            },
            to: AgentRef {
                version,
                exe: target.exe.clone(),
                dev: to_id.0,
                ino: to_id.1,
            },
            purpose,
            fds: identities,
            lock_fd: root.lock_fd().as_raw_fd(),
            control_fd,
            listeners,
            generations,
            restart_at_mono_ms: restart_at,
            trial,
            restarts: self.restarts.handover_state(),
            console_up: self.console_up,
            last_check_unix: self.last_check.map(clock::unix),
            next_notify_generation: crate::supervisor::next_generation(),
        };
        Ok((handover, fds))
    }

    /// The new image's start: adopts the handed-over generations instead of
    /// starting one (any that cannot be adopted is killed and started
    /// afresh), restores the trial and backoff, and logs the start line.
    pub(super) fn adopt(&mut self, plan: AdoptPlan) {
        let h = plan.handover;
        if let Purpose::SelfUpdate { attempt, .. } = &h.purpose {
            // From here on a death of this process is this build's fault (the
            // next start marks it bad): it validated the hand-over and runs.
            hooks::note_ran(self.slots(), attempt);
            fault::exit_at_once(&self.identity.version);
        }
        crate::supervisor::set_next_generation(h.next_notify_generation);
        self.restarts = crate::agent::generation::Restarts::from_handover(&h.restarts);
        self.console_up = h.console_up;
        self.last_check = h.last_check_unix.map(clock::from_unix);
        let active = self.root().map(|r| r.active_bank());
        let in_trial = self
            .root()
            .is_some_and(|r| r.state().phase == bank_layout::Phase::Trial);
        let mut adopted = 0;
        let mut not_adopted = None;
        let mut draining_steady = None;
        let mut draining_trial = None;
        for (g, fds) in plan.generations {
            let matches_root = match g.role {
                Role::Current => {
                    Some(g.state.bank) == active
                        && self
                            .root()
                            .and_then(|r| r.bank_record(g.state.bank))
                            .is_some_and(|rec| rec.version == g.state.version)
                }
                Role::Draining { .. } | Role::TrialDraining => Some(g.state.bank) != active,
            };
            if !matches_root {
                warn!(
                    version = g.state.version,
                    pid = g.state.pid,
                    "a handed-over generation does not match the root; stopping it"
                );
                kill_group(g.state.pid);
                not_adopted.get_or_insert_with(|| {
                    format!(
                        "could not adopt payload pid {}: it does not match the root",
                        g.state.pid
                    )
                });
                continue;
            }
            match Payload::adopt(&g.state, fds) {
                Ok(payload) => {
                    adopted += 1;
                    match g.role {
                        Role::Current => {
                            self.current = Generation::Running(payload);
                        }
                        Role::Draining { due_mono_ms } => {
                            draining_steady = Some((payload, mono::to_instant(due_mono_ms)));
                        }
                        Role::TrialDraining => draining_trial = Some(payload),
                    }
                }
                Err(e) => {
                    error!(version = g.state.version, pid = g.state.pid, error = %e, "could not adopt a handed-over generation; stopping it");
                    kill_group(g.state.pid);
                    not_adopted.get_or_insert_with(|| format!("could not adopt the payload: {e}"));
                }
            }
        }
        let was_down = h.generations_were_down();
        match (h.trial, in_trial) {
            (Some(t), true) => {
                self.mode = Mode::Trial(Trial {
                    version: t.version,
                    sequence: t.sequence,
                    deadline: mono::to_instant(t.deadline_mono_ms),
                    next_probe: mono::to_instant(t.next_probe_mono_ms),
                    seen: Evidence {
                        ready: t.ready,
                        failures: t.failures,
                        last_failure: t.last_failure,
                        ..Evidence::default()
                    },
                    draining: draining_trial,
                });
            }
            (_, true) => {
                // The root is on trial but the hand-over had none (or not this one).
                if let Some(bank) = active {
                    self.begin_trial(bank, draining_trial);
                }
            }
            (_, false) => {
                if let Some(p) = draining_trial {
                    draining_steady = Some((p, Instant::now()));
                }
                self.mode = Mode::Steady {
                    draining: draining_steady,
                };
            }
        }
        if let Generation::Down { .. } = self.current {
            match h.restart_at_mono_ms {
                // Nothing ran at the exec: the restart stays due when it was.
                Some(at) if was_down => {
                    self.current = Generation::Down {
                        restart_at: Some(mono::to_instant(at)),
                    };
                }
                _ => self.start_payload(),
            }
        }
        log_start(&self.identity.version, adopted);
        match h.purpose {
            Purpose::Reexec => {}
            Purpose::SelfUpdate {
                attempt,
                previous_exe,
                deadline_mono_ms,
            } => {
                // A generation it could not adopt fails the new build: its trial
                // ends at once (the next event), by going back.
                let deadline = match &not_adopted {
                    Some(_) => Instant::now(),
                    None => mono::to_instant(deadline_mono_ms),
                };
                self.agent_trial = Some(AgentTrial {
                    attempt,
                    deadline,
                    previous_exe,
                    probe: None,
                    failed: not_adopted,
                });
                fault::crash_after_adopt(&self.identity.version);
                fault::stop_at("before-commit", &self.identity.version);
                self.start_self_probe();
            }
            Purpose::Bounce { attempt, reason } => {
                let reason = plan.bounce.unwrap_or(reason);
                error!(reason, "the new agent build failed; this build is back");
                hooks::mark_bad(self.slots(), &attempt, &reason);
            }
        }
        self.publish_status();
    }

    /// The agent slots, when self-update is on and no staging holds them.
    fn slots(&mut self) -> Option<&mut AgentSlots> {
        self.self_update.as_mut().and_then(|su| su.slots_mut())
    }

    /// Probes the control socket the way a client would: proves the socket,
    /// the core loop and the status path of the new image. Runs on a
    /// blocking thread, which forks nothing (the PDEATHSIG rule).
    fn start_self_probe(&mut self) {
        let Some(trial) = &mut self.agent_trial else {
            return;
        };
        if trial.failed.is_some() {
            return; // going back anyway
        }
        if fault::armed("no-commit", Some(&self.identity.version)) {
            warn!("a test switch is set: not probing the control socket");
            return;
        }
        let root = self.config.root.clone();
        trial.probe = Some(tokio::task::spawn_blocking(
            move || matches!(control::request(&root, Request::Status), Ok(Some(r)) if r.ok),
        ));
    }

    /// The self-probe answered: commit the new build, or go back.
    pub(super) async fn on_self_probed(&mut self, ok: bool) {
        if ok {
            let Some(trial) = self.agent_trial.take() else {
                return;
            };
            hooks::commit(self.slots(), &trial.attempt);
            info!(
                version = %self.identity.version,
                previous = trial.previous_exe.display().to_string(),
                "agent committed"
            );
        } else {
            self.bounce("its control socket did not answer".to_owned())
                .await;
        }
    }

    /// The grace ended before the new build committed (or it failed at once).
    pub(super) async fn on_agent_trial_due(&mut self) {
        let why = self
            .agent_trial
            .as_mut()
            .and_then(|t| t.failed.take())
            .unwrap_or_else(|| "missed its grace".to_owned());
        self.bounce(why).await;
    }

    /// Execs the previous build back with a fresh hand-over; if even that
    /// fails, this build keeps running (and the attempt is recorded as failed).
    async fn bounce(&mut self, why: String) {
        let Some(trial) = self.agent_trial.take() else {
            return;
        };
        if let Some(probe) = trial.probe {
            probe.abort();
        }
        let reason = format!("agent {}: {why}", self.identity.version);
        error!(reason, "agent trial failed; restoring the previous build");
        let target = ExecTarget {
            exe: trial.previous_exe.clone(),
            purpose: ExecPurpose::Bounce {
                attempt: trial.attempt.clone(),
                reason: reason.clone(),
            },
        };
        let err = self.exec_in_place(&target);
        error!(error = %format!("{err:#}"), "could not exec the previous build; this one keeps running");
        let reason = format!("{reason}; going back failed: {err:#}");
        hooks::mark_bad(self.slots(), &trial.attempt, &reason);
    }

    /// `bankswap agent reexec`: the request's answer when the exec failed
    /// (on success the connection ends with the old image).
    pub(super) fn reexec_request(
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

/// What [`Agent::adopt`] takes over: the hand-over and the generations' fds.
#[derive(Debug)]
pub struct AdoptPlan {
    /// The state.
    pub handover: Handover,
    /// The bounce reason from the environment, on a bounce.
    pub bounce: Option<String>,
    /// The generations and their fds.
    pub generations: Vec<(HandedGeneration, crate::supervisor::GenerationFds)>,
}

impl AdoptPlan {
    /// The self-update attempt this image receives (a self-update or a
    /// bounce): the agent slots open with it, so their recovery does not take
    /// the attempt in progress for an interrupted one.
    pub fn attempt(&self) -> Option<String> {
        match &self.handover.purpose {
            Purpose::Reexec => None,
            Purpose::SelfUpdate { attempt, .. } | Purpose::Bounce { attempt, .. } => {
                Some(attempt.clone())
            }
        }
    }

    /// Splits a received hand-over into the plan and the fds the world needs
    /// (lock, control socket, listeners).
    pub fn split(received: Received) -> (AdoptPlan, WorldFds) {
        (
            AdoptPlan {
                handover: received.handover,
                bounce: received.bounce,
                generations: received.generations,
            },
            WorldFds {
                lock: received.lock,
                control: received.control,
                listeners: received.listeners,
            },
        )
    }
}

/// The inherited fds the world is built from.
#[derive(Debug)]
pub struct WorldFds {
    /// The root's lock.
    pub lock: OwnedFd,
    /// The control socket.
    pub control: OwnedFd,
    /// The `[[listen]]` sockets.
    pub listeners: Vec<(crate::supervisor::InheritedListener, OwnedFd)>,
}

impl Handover {
    /// True when no generation was running at the exec (a restart was due).
    fn generations_were_down(&self) -> bool {
        !self.generations.iter().any(|g| g.role == Role::Current)
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

/// Every agent start: `agent version=<v> pid=<pid> adopted=<n>`.
pub fn log_start(version: &str, adopted: usize) {
    info!(
        version = %version,
        pid = std::process::id(),
        adopted,
        "agent"
    );
}

/// SIGKILLs a handed-over generation's group that cannot be adopted, and reaps it.
fn kill_group(pid: u32) {
    let Some(group) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return;
    };
    // Only our own child leading its own group: never a pid reused by someone else.
    let ours = crate::supervisor::proc_stat(pid)
        .is_ok_and(|s| s.ppid == std::process::id() && s.pgrp == pid);
    if ours {
        let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        let _ = rustix::process::waitpid(Some(group), rustix::process::WaitOptions::empty());
    }
}

/// Blocks [`STOP_SIGNALS`] on this thread; returns the mask before.
fn block_stop_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialize it;
    // pthread_sigmask only changes this thread's mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in STOP_SIGNALS {
            libc::sigaddset(&mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
        old
    }
}

/// Puts back a mask saved by [`block_stop_signals`].
fn restore_signal_mask(old: &libc::sigset_t) {
    // SAFETY: `old` was filled by pthread_sigmask.
    unsafe {
        libc::pthread_sigmask(libc::SIG_SETMASK, old, std::ptr::null_mut());
    }
}

/// Set by the stop signals' handler itself, at delivery: the core runs on the
/// one thread that also polls the signal stream, so a stop that came while it
/// decides to exec is not seen there yet, and would be lost with this image.
static STOP_REQUESTED: AtomicBool = AtomicBool::new(false);

/// Records SIGTERM and SIGINT in [`STOP_REQUESTED`] as they are delivered, beside
/// tokio's own handlers (signal-hook-registry chains both). Called once the
/// agent's signal streams exist.
pub fn watch_stop_signals() {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: the action only stores to an atomic, which is async-signal-safe.
        let registered = unsafe {
            signal_hook_registry::register(sig, || STOP_REQUESTED.store(true, Ordering::SeqCst))
        };
        if let Err(e) = registered {
            warn!(signal = sig, error = %e, "cannot watch a stop signal; a stop during an in-place exec may be lost");
        }
    }
}

/// Whether a stop signal was delivered to this image.
pub fn stop_requested() -> bool {
    STOP_REQUESTED.load(Ordering::SeqCst)
}

/// Unblocks [`STOP_SIGNALS`] (blocked across an in-place exec): called once
/// the agent's own handlers exist; a signal that arrived meanwhile is then
/// delivered and handled. Harmless on a cold start.
pub fn unblock_stop_signals() {
    // SAFETY: as in block_stop_signals.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in STOP_SIGNALS {
            libc::sigaddset(&mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
    }
}

/// The self-update's records in the agent slots (`bank_layout::AgentSlots`:
/// `note_ran`, `commit`, `fail_attempt`); without slots (self-update off,
/// `bankswap agent reexec --self-update-grace`) they only log. A failed write
/// is logged: the next cold start resolves the attempt from what is on disk.
pub mod hooks {
    use bank_layout::AgentSlots;
    use tracing::{error, info, warn};

    /// The new build has run (its attempt is no longer "killed before it ran").
    pub fn note_ran(slots: Option<&mut AgentSlots>, attempt: &str) {
        info!(attempt, "agent self-update: the new build runs");
        if let Some(slots) = slots
            && let Err(e) = slots.note_ran(attempt)
        {
            error!(attempt, error = %e, "agent self-update: could not record that the new build ran");
        }
    }

    /// The new build proved itself.
    pub fn commit(slots: Option<&mut AgentSlots>, attempt: &str) {
        info!(attempt, "agent self-update: committing the new build");
        if let Some(slots) = slots
            && let Err(e) = slots.commit(attempt)
        {
            error!(attempt, error = %e, "agent self-update: could not commit the new build");
        }
    }

    /// The new build failed: mark its version bad, with the reason.
    pub fn mark_bad(slots: Option<&mut AgentSlots>, attempt: &str, reason: &str) {
        warn!(
            attempt,
            reason, "agent self-update: marking the new build bad"
        );
        if let Some(slots) = slots
            && let Err(e) = slots.fail_attempt(reason, true)
        {
            error!(attempt, error = %e, "agent self-update: could not record the failed attempt");
        }
    }
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
