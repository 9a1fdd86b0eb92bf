//! A qualified build takes over: the trial marker is written into the agent
//! slots (one write), then this process execs the build in place; a failed
//! exec ends the attempt, marking the version bad unless a stop came first.

use bank_layout::{AgentAttempt, AgentSlots, SlotId};
use tracing::{error, info};

use super::{Work, fault};
use crate::agent::core::Agent;
use crate::agent::handover;
use crate::agent::reexec::{ExecPurpose, ExecTarget};
use crate::clock;

/// The point where a qualified build waits in `slot`: the in-place exec takes over
/// from here (the `suexec` half: hand-over, `begin_attempt`, exec, trial). Until it
/// is connected this logs `agent update ready version=.. slot=..` and leaves the
/// build staged (`agent_phase` = `ready`); nothing else changes.
pub fn ready_to_exec(slots: &mut AgentSlots, slot: SlotId, version: &str) {
    info!(
        binary = %slots.binary(slot).display(),
        "agent update ready version={version} slot={slot}"
    );
}

impl Agent {
    /// A qualified build waiting in its slot takes over once no payload update
    /// is in progress (called after every event): the trial marker is written
    /// (one write), then this process execs the build in place with the
    /// hand-over (same pid, the payload untouched). The new image commits
    /// within `[self_update] grace` or execs this build back. If the exec
    /// itself fails, this build keeps running and the version is marked bad
    /// with the reason, in the same write that ends the attempt.
    pub(in crate::agent) fn take_over_with_ready_build(&mut self) {
        if !self.payload_settled()
            || self.held_rollback.is_some()
            || crate::agent::reexec::stop_requested()
        {
            return;
        }
        let now = clock::unix(self.now());
        let grace = self.config.self_update.grace;
        let Some(su) = self.self_update.as_mut() else {
            return;
        };
        if !matches!(su.work, Work::Ready { .. }) {
            return;
        }
        let Work::Ready {
            slot,
            version,
            sequence,
        } = std::mem::replace(&mut su.work, Work::Idle)
        else {
            return;
        };
        let Some(slots) = su.slots.as_mut() else {
            return;
        };
        let previous_exe = match std::fs::read_link("/proc/self/exe") {
            Ok(exe) => exe,
            Err(e) => {
                error!(error = %e, "agent update: cannot read /proc/self/exe; not taking over");
                return;
            }
        };
        let nonce = handover::new_nonce();
        let attempt = AgentAttempt {
            version: version.clone(),
            sequence,
            slot,
            from: su.identity.slot,
            from_version: su.identity.version.clone(),
            from_exe: previous_exe.clone(),
            nonce: nonce.clone(),
            started_at: now,
            ran: false,
            tries: 0,
        };
        fault::stop_at("before-replace", &version);
        if let Err(e) = slots.begin_attempt(attempt) {
            error!(error = %e, "agent update: cannot write the trial marker; not taking over");
            return;
        }
        let exe = slots.binary(slot);
        info!(version, slot = %slot, binary = %exe.display(), "agent update: executing the new build in place");
        let target = ExecTarget {
            exe,
            purpose: ExecPurpose::SelfUpdate {
                attempt: nonce,
                grace,
                previous_exe,
            },
        };
        fault::stop_at("before-exec", &version);
        let err = self.exec_in_place(&target);
        let reason = format!("agent {version}: could not take over: {err:#}");
        error!(reason, "agent update failed; this build keeps running");
        // A stop that came first is not the build's fault: tried again at the next start.
        let mark_bad = !crate::agent::reexec::stop_requested();
        if let Some(slots) = self.self_update.as_mut().and_then(|su| su.slots.as_mut())
            && let Err(e) = slots.fail_attempt(&reason, mark_bad)
        {
            error!(error = %e, "could not record the failed agent update");
        }
    }
}
