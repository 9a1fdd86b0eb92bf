//! The pending agent release staged into the idle slot on a blocking thread,
//! then qualified by `--self-test` under a timeout: a pass is ready to exec,
//! a failure is marked bad.

use std::io::BufReader;

use bank_layout::{AgentPhase, AgentSlots, LayoutError, SlotId};
use tokio::time::Instant;
use tracing::{error, info, warn};

use super::selftest::{self, SelfTestReport, Target};
use super::{Work, ready_to_exec, stage_spec};
use crate::agent::core::{Agent, wall_wait};
use crate::agent::fetch::{self, ArtifactStream};
use crate::agent::staging::STAGE_RETRY;
use crate::clock;
use crate::release::effective_now;

/// Read buffer in front of an agent artifact stream (as for payloads).
const STAGE_BUFFER: usize = 256 * 1024;

impl Agent {
    /// When the pending agent release may be staged: never while the payload is
    /// being updated (staging, trial, draining, or a payload trial on disk), nor
    /// while an agent build is staged, tested or ready.
    pub(in crate::agent) fn agent_pending_due(&self) -> Option<Instant> {
        let su = self.self_update.as_ref()?;
        if !matches!(su.work, Work::Idle) || !self.payload_settled() {
            return None;
        }
        let slots = su.slots.as_ref()?;
        if slots.state().phase != AgentPhase::Committed {
            return None;
        }
        let pending = slots.state().pending.as_ref()?;
        let wait = wall_wait(self.now(), clock::from_unix(pending.not_before));
        Instant::now().checked_add(wait)
    }

    /// Re-verifies the pending agent release and hands the slots to a staging thread.
    pub(super) fn start_agent_staging(&mut self) {
        let now = self.now();
        let effective = self.root().map_or(now, |r| effective_now(r.state(), now));
        let http = self.http.clone();
        let timeouts = self.config.timeouts.clone();
        let console = self.console.clone();
        let Some(su) = self.self_update.as_mut() else {
            return;
        };
        let Some(mut slots) = su.slots.take() else {
            return;
        };
        let Some(pending) = slots.state().pending.clone() else {
            su.slots = Some(slots);
            return;
        };
        let verified = su.verify(
            slots.state(),
            pending.manifest.as_bytes(),
            pending.signature.as_bytes(),
            effective,
        );
        let release = match verified {
            Ok(release) => release,
            Err(e) => {
                warn!(version = pending.version, sequence = pending.sequence, error = %e, "pending agent release no longer valid");
                let message = format!(
                    "agent release {} (sequence {}): {e}",
                    pending.version, pending.sequence
                );
                if let Err(e) = slots
                    .clear_pending()
                    .and_then(|()| slots.set_last_error(Some(&message)))
                {
                    error!(error = %e, "could not save the agent state");
                }
                su.slots = Some(slots);
                return;
            }
        };
        let m = &release.manifest;
        let url = if m.artifact.path.starts_with("https://") {
            m.artifact.path.clone()
        } else {
            fetch::url(&console, &m.artifact.path)
        };
        let running = su.identity.slot;
        info!(version = %m.version, sequence = m.sequence, url, size = m.artifact.size, "agent build staging");
        let (stream, cancel) = ArtifactStream::open(http, url, m.artifact.size, timeouts);
        let owned = release.clone();
        let (manifest, signature) = (pending.manifest.clone(), pending.signature.clone());
        su.state_at_staging = Some(slots.state().clone());
        let thread = tokio::task::spawn_blocking(move || {
            let spec = stage_spec(&owned, manifest.as_bytes(), signature.as_bytes(), now);
            let result = slots.stage(
                BufReader::with_capacity(STAGE_BUFFER, stream),
                spec,
                running,
                &mut |_| {},
            );
            (slots, result)
        });
        su.work = Work::Staging {
            thread,
            release: Box::new(release),
            _cancel: cancel,
        };
    }

    /// The staging thread handed the slots back: self-test the build, or retry later.
    pub(super) fn on_agent_staged(
        &mut self,
        (mut slots, result): (AgentSlots, Result<SlotId, LayoutError>),
    ) {
        let retry = self.now() + STAGE_RETRY.max(self.config.poll_interval);
        let Some(su) = self.self_update.as_mut() else {
            return;
        };
        let Work::Staging { release, .. } = std::mem::replace(&mut su.work, Work::Idle) else {
            su.slots = Some(slots);
            return;
        };
        let version = release.manifest.version.to_string();
        let sequence = release.manifest.sequence;
        match result {
            Ok(slot) => {
                info!(
                    "agent build staged version={version} slot={slot} sha256={}",
                    release.manifest.artifact.sha256
                );
                let binary = slots.binary(slot);
                let target = Target::Config(su.config_path.clone());
                let timeout = su.settings.self_test_timeout;
                let task_version = version.clone();
                // On the core's task (the main thread): nothing is forked elsewhere.
                let task = tokio::spawn(async move {
                    selftest::qualify(&binary, &target, &task_version, timeout).await
                });
                su.work = Work::SelfTest {
                    task,
                    slot,
                    version,
                    sequence,
                    started: Instant::now(),
                };
            }
            Err(e) => {
                error!(version, sequence, error = %e, "agent staging failed; the running agent is untouched");
                let message = format!("staging agent {version} (sequence {sequence}): {e}");
                let saved = slots.state().pending.clone().map_or(Ok(()), |mut p| {
                    p.not_before = clock::unix(retry);
                    slots.schedule(p)
                });
                if let Err(e) = saved.and_then(|()| slots.set_last_error(Some(&message))) {
                    error!(error = %e, "could not save the agent state");
                }
            }
        }
        su.slots = Some(slots);
    }

    /// The self-test ended: a pass is ready to exec; a failure is marked bad (with
    /// its reason) and never retried.
    pub(super) fn on_self_tested(&mut self, result: Result<SelfTestReport, String>) {
        let Some(su) = self.self_update.as_mut() else {
            return;
        };
        let Work::SelfTest {
            slot,
            version,
            sequence,
            started,
            ..
        } = std::mem::replace(&mut su.work, Work::Idle)
        else {
            return;
        };
        let Some(slots) = su.slots.as_mut() else {
            return;
        };
        match result {
            Ok(report) => {
                let ms = started.elapsed().as_millis();
                info!("agent self-test passed version={version} ms={ms}");
                if let Err(e) = slots.set_handover_schemas(slot, report.handover_schemas) {
                    error!(error = %e, "could not record the build's hand-over schemas");
                    return;
                }
                ready_to_exec(slots, slot, &version);
                su.work = Work::Ready {
                    slot,
                    version,
                    sequence,
                };
            }
            Err(reason) => {
                warn!("agent self-test failed version={version} reason={reason}");
                let reason = format!("agent {version}: {reason}");
                if let Err(e) = slots.mark_bad(&version, sequence, &reason) {
                    error!(error = %e, "could not mark the agent build bad");
                }
            }
        }
    }
}
