//! An agent release offered on the self-update channel: verified (once the
//! payload is settled), then scheduled by the rollout slot and random delay
//! — or found already staged and qualified, and ready again at once.

use bank_layout::{Pending, SlotId};
use signing::ReleaseError;
use tracing::{error, info, warn};

use super::{Work, ready_to_exec};
use crate::agent::checker::CheckOutcome;
use crate::agent::core::Agent;
use crate::agent::fetch::Checked;
use crate::agent::schedule;
use crate::clock;
use crate::release::effective_now;

impl Agent {
    /// [`Agent::evaluate_agent_latest`] of a release held back by a payload update,
    /// once that update has ended (called after every event).
    pub(in crate::agent) fn evaluate_held_agent_release(&mut self) {
        let held = self
            .self_update
            .as_ref()
            .is_some_and(|su| su.held && matches!(su.work, Work::Idle));
        if held && self.payload_settled() {
            self.evaluate_agent_latest();
        }
    }

    /// Re-evaluates the last agent manifest (after a payload update ended, too).
    pub(in crate::agent) fn evaluate_agent_latest(&mut self) {
        let settled = self.payload_settled();
        if let Some(su) = self.self_update.as_mut() {
            su.held = !settled;
        }
        if !settled {
            return; // looked at again once the payload update ends
        }
        let now = self
            .root()
            .map_or(self.now(), |r| effective_now(r.state(), self.now()));
        let clock_now = self.now();
        let agent_id = self.agent_id.clone();
        let max_delay = self.config.max_delay;
        let random = self.clock.random();
        let Some(su) = self.self_update.as_mut() else {
            return;
        };
        if !matches!(su.work, Work::Idle) {
            su.held = true;
            return; // looked at again when the work ends
        }
        let Some((manifest, signature)) = su.latest.clone() else {
            return;
        };
        let verified = su
            .slots
            .as_ref()
            .map(|slots| su.verify(slots.state(), &manifest, &signature, now));
        let (Some(verified), Some(slots)) = (verified, su.slots.as_mut()) else {
            return;
        };
        let release = match verified {
            Ok(release) => release,
            Err(ReleaseError::OtherPlatform { platform, ours }) => {
                let sequence = signing::Manifest::from_json(&manifest).map_or(0, |m| m.sequence);
                if su.other_platform != Some(sequence) {
                    su.other_platform = Some(sequence);
                    warn!(
                        platform,
                        ours, sequence, "ignoring an agent release for another platform"
                    );
                    let message = format!(
                        "agent release (sequence {sequence}) is for platform {platform}, this agent runs {ours}: ignored"
                    );
                    if let Err(e) = slots.set_last_error(Some(&message)) {
                        error!(error = %e, "could not save the agent's last error");
                    }
                }
                return;
            }
            Err(ReleaseError::NotNewer { version, running }) if version == running => return,
            Err(e) => {
                let message = format!("agent release: {e}");
                if su.rejected.as_deref() != Some(message.as_str()) {
                    warn!(error = %e, "agent release rejected");
                    su.rejected = Some(message.clone());
                    if let Err(e) = slots.set_last_error(Some(&message)) {
                        error!(error = %e, "could not save the agent's last error");
                    }
                }
                return;
            }
        };
        let m = &release.manifest;
        // Already staged and qualified (a restart found it): ready again at once.
        let staged = SlotId::ALL.into_iter().find(|slot| {
            Some(*slot) != su.identity.slot
                && slots.record(*slot).is_some_and(|b| {
                    b.sequence == m.sequence
                        && b.version == m.version.to_string()
                        && !b.handover_schemas.is_empty()
                })
        });
        if let Some(slot) = staged {
            let version = m.version.to_string();
            ready_to_exec(slots, slot, &version);
            su.work = Work::Ready {
                slot,
                version,
                sequence: m.sequence,
            };
            return;
        }
        if slots
            .state()
            .pending
            .as_ref()
            .is_some_and(|p| p.sequence == m.sequence)
        {
            return; // already scheduled: a restart neither re-rolls nor forgets it
        }
        let not_before = schedule::not_before(
            clock_now,
            m.rollout.as_ref(),
            &agent_id,
            m.sequence,
            max_delay,
            random,
        );
        let pending = Pending {
            version: m.version.to_string(),
            sequence: m.sequence,
            not_before: clock::unix(not_before),
            manifest: String::from_utf8_lossy(&manifest).into_owned(),
            signature: String::from_utf8_lossy(&signature).into_owned(),
        };
        info!(version = %m.version, sequence = m.sequence, not_before = %clock::rfc3339(not_before), "agent release scheduled");
        su.rejected = None;
        if let Err(e) = slots
            .schedule(pending)
            .and_then(|()| slots.set_last_error(None))
        {
            error!(error = %e, "could not save the agent release's schedule");
        }
    }

    pub(super) fn on_agent_checked(&mut self, outcome: CheckOutcome) {
        let Some(su) = self.self_update.as_mut() else {
            return;
        };
        match outcome {
            Ok(Checked::Unchanged) => {}
            Ok(Checked::Release {
                manifest,
                signature,
                ..
            }) => {
                su.latest = Some((manifest, signature));
                self.evaluate_agent_latest();
            }
            // The payload checker reports an unreachable console; a channel without
            // agent releases is the normal case.
            Err(message) => tracing::debug!(error = message, "agent channel check failed"),
        }
    }
}
