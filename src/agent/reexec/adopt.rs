//! The receiving side: the new image adopts the handed-over generations
//! (killing any that does not match the root), restores the payload trial,
//! backoff and restart due, logs its start line, and begins a self-update's
//! trial or records a bounce.

use std::os::fd::OwnedFd;

use tokio::time::Instant;
use tracing::{error, info, warn};

use super::AgentTrial;
use super::hooks;
use crate::agent::core::{Agent, Generation, Mode};
use crate::agent::handover::{HandedGeneration, Handover, Purpose, Received, Role};
use crate::agent::self_update::fault;
use crate::agent::trial::Trial;
use crate::agent::verdict::Evidence;
use crate::clock;
use crate::supervisor::{Payload, mono};

impl Agent {
    /// The new image's start: adopts the handed-over generations instead of
    /// starting one (any that cannot be adopted is killed and started
    /// afresh), restores the trial and backoff, and logs the start line.
    pub(in crate::agent) fn adopt(&mut self, plan: AdoptPlan) {
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
