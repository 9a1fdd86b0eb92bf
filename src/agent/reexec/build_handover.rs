//! Building the hand-over: the core's state (generations and their roles,
//! the payload trial, backoff, the exec's purpose) as a [`Handover`], and the
//! fds it names, borrowed from their owners until the exec.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::fs::MetadataExt;

use anyhow::{Context, anyhow, bail};

use super::{ExecPurpose, ExecTarget};
use crate::agent::core::{Agent, Disk, Generation, Mode};
use crate::agent::handover::{
    self, AgentRef, HANDOVER_SCHEMA, HandedGeneration, Handover, Purpose, Role, TrialState,
};
use crate::agent::inherit::FdRef;
use crate::clock;
use crate::supervisor::{Payload, mono};

impl Agent {
    /// The hand-over of the current state, and the fds it names (borrowed
    /// from their owners, which outlive the exec).
    pub(super) fn build_handover(
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
}
