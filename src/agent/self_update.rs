//! Self-update, first half (SPEC §9, docs/design/self-update.md): the agent
//! follows its own channel beside the payload's, verifies an agent release
//! exactly like a payload one (with its own highest sequence and bad list, kept
//! in `ROOT/agent/state.json`), schedules it with the same rollout slot and
//! random delay, stages it into the idle agent slot, qualifies it with
//! `--self-test` under a timeout, and ends at [`ready_to_exec`]: "a qualified
//! build in slot N". The exec hand-over is the other half (`suexec`).
//!
//! Never two updates at once: an agent release is staged only while the payload
//! is committed with no staging, trial or draining generation, and the payload's
//! pending release waits while an agent build is staged or self-tested.
//!
//! This file holds the state ([`SelfUpdate`], its work and events); the steps
//! live beside it: [`identity`] (which build runs), [`verify`] (an agent
//! release checked, and its staging spec), [`offer`] (a release seen on the
//! channel, scheduled), [`stage`] (staged into the idle slot and
//! self-tested), [`take_over`] (the trial marker, then the exec) and
//! [`status`] (the agent fields of a status report).

pub mod fault;
mod identity;
mod offer;
pub mod selftest;
mod stage;
mod status;
mod take_over;
mod verify;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bank_layout::{AgentPhase, AgentSlots, AgentState, LayoutError, Phase, SlotId};
use signing::{KeyRing, VerifiedRelease};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::error;

pub use self::identity::Identity;
use self::selftest::SelfTestReport;
pub use self::status::fill_offline_status;
pub use self::take_over::ready_to_exec;
pub use self::verify::{stage_spec, verify_agent};
use crate::agent::checker::CheckOutcome;
use crate::agent::core::{Agent, Disk, Mode};
use crate::agent::fetch::Cancel;
use crate::config::SelfUpdateConfig;

/// The product of every agent release (a payload root pins its own product).
pub const AGENT_PRODUCT: &str = "bankswap";

/// This binary's own version (what the installed binary runs as).
pub const BUILD_VERSION: &str = env!("CARGO_PKG_VERSION");

/// What self-update is doing.
enum Work {
    /// Nothing: waiting for a release or its slot.
    Idle,
    /// A blocking thread stages `release` into the idle slot, holding the slots.
    Staging {
        thread: JoinHandle<(AgentSlots, Result<SlotId, LayoutError>)>,
        release: Box<VerifiedRelease>,
        /// Cancels the download at shutdown.
        _cancel: Cancel,
    },
    /// The staged build in `slot` runs `--self-test`.
    SelfTest {
        task: JoinHandle<Result<SelfTestReport, String>>,
        slot: SlotId,
        version: String,
        sequence: u64,
        started: Instant,
    },
    /// A qualified build waits in `slot` (see [`ready_to_exec`]).
    Ready {
        slot: SlotId,
        version: String,
        sequence: u64,
    },
}

/// The self-update half of the agent core: held by [`Agent`] when
/// `[self_update] enabled`.
pub struct SelfUpdate {
    /// `--config` of this agent (the staged build self-tests against it).
    config_path: PathBuf,
    /// `[self_update]`.
    settings: SelfUpdateConfig,
    /// Keys trusted for agent releases.
    ring: KeyRing,
    /// The slots; `None` while a staging thread holds them.
    slots: Option<AgentSlots>,
    /// The slots' state when a staging thread took them (status meanwhile).
    state_at_staging: Option<AgentState>,
    /// The build running.
    identity: Identity,
    /// Check outcomes of the agent channel.
    checks: mpsc::Receiver<CheckOutcome>,
    /// Wakes the agent channel's checker (`bankswap check`).
    check_now: Arc<Notify>,
    /// The last agent manifest and signature seen.
    latest: Option<(Vec<u8>, Vec<u8>)>,
    /// What is going on.
    work: Work,
    /// The sequence of the last other-platform release logged (logged once).
    other_platform: Option<u64>,
    /// The last rejection logged (logged once per message).
    rejected: Option<String>,
    /// A release was seen while the payload was being updated: evaluated once it ends.
    held: bool,
}

/// What woke the core for self-update.
pub enum SelfUpdateEvent {
    /// The agent channel's checker answered.
    Checked(CheckOutcome),
    /// The pending agent release is due.
    PendingDue,
    /// The staging thread handed the slots back.
    Staged(Box<(AgentSlots, Result<SlotId, LayoutError>)>),
    /// The self-test ended.
    SelfTested(Result<SelfTestReport, String>),
}

impl SelfUpdate {
    /// Self-update over `slots` (opened on the locked root), following
    /// `settings.channel` through `checks`.
    pub fn new(
        config_path: PathBuf,
        settings: SelfUpdateConfig,
        agent_keys: &[signing::PublicKey],
        slots: AgentSlots,
        identity: Identity,
        checks: mpsc::Receiver<CheckOutcome>,
        check_now: Arc<Notify>,
    ) -> SelfUpdate {
        let keys = settings
            .trusted_keys
            .clone()
            .unwrap_or_else(|| agent_keys.to_vec());
        SelfUpdate {
            config_path,
            settings,
            ring: KeyRing::new(keys),
            slots: Some(slots),
            state_at_staging: None,
            identity,
            checks,
            check_now,
            latest: None,
            work: Work::Idle,
            other_platform: None,
            rejected: None,
            held: false,
        }
    }

    /// Asks the agent channel's checker to check now (`bankswap check`).
    pub fn check_now(&self) {
        self.check_now.notify_one();
    }

    /// The slots, unless a staging thread holds them (for the exec half's
    /// `note_ran` / `commit` / `fail_attempt`, `reexec.rs`).
    pub(super) fn slots_mut(&mut self) -> Option<&mut AgentSlots> {
        self.slots.as_mut()
    }

    /// The build running.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The qualified build waiting to take over: slot, version, sequence (for the
    /// exec half, which picks up from [`ready_to_exec`]).
    // Read by the exec half (branch `suexec`) once the integrator connects it.
    #[allow(dead_code)]
    pub fn ready(&self) -> Option<(SlotId, &str, u64)> {
        match &self.work {
            Work::Ready {
                slot,
                version,
                sequence,
            } => Some((*slot, version.as_str(), *sequence)),
            _ => None,
        }
    }

    /// Whether an agent build is being staged or self-tested (a payload update waits).
    pub fn busy(&self) -> bool {
        matches!(self.work, Work::Staging { .. } | Work::SelfTest { .. })
    }

    /// `agent_phase` in status: `staging`, `self-test`, `ready`, or the slots' phase.
    fn phase(&self) -> String {
        match &self.work {
            Work::Staging { .. } => "staging".to_owned(),
            Work::SelfTest { .. } => "self-test".to_owned(),
            Work::Ready { .. } => "ready".to_owned(),
            Work::Idle => self
                .slots
                .as_ref()
                .map_or(AgentPhase::Committed, |s| s.state().phase)
                .to_string(),
        }
    }
}

/// The next self-update event (pending forever when self-update is off).
pub async fn next_event(
    self_update: &mut Option<SelfUpdate>,
    pending_due: Option<Instant>,
) -> SelfUpdateEvent {
    let Some(su) = self_update else {
        return std::future::pending().await;
    };
    tokio::select! {
        Some(outcome) = su.checks.recv() => SelfUpdateEvent::Checked(outcome),
        () = crate::supervisor::sleep_until(pending_due) => SelfUpdateEvent::PendingDue,
        event = join_work(&mut su.work) => event,
    }
}

/// Waits for the staging thread or the self-test (never for anything else).
async fn join_work(work: &mut Work) -> SelfUpdateEvent {
    match work {
        Work::Staging {
            thread, release, ..
        } => match thread.await {
            Ok(staged) => SelfUpdateEvent::Staged(Box::new(staged)),
            Err(e) => {
                // The thread panicked and the slots went with it: self-update stops
                // here (the payload is untouched); the next start reopens them.
                error!(version = %release.manifest.version, error = %e, "agent staging thread failed; self-update is off until the next start");
                std::future::pending().await
            }
        },
        Work::SelfTest { task, .. } => match task.await {
            Ok(result) => SelfUpdateEvent::SelfTested(result),
            Err(e) => SelfUpdateEvent::SelfTested(Err(format!("self-test: task failed: {e}"))),
        },
        Work::Idle | Work::Ready { .. } => std::future::pending().await,
    }
}

impl Agent {
    /// Whether no payload update is in progress: the core holds the root, it is
    /// committed, no trial and no draining generation.
    fn payload_settled(&self) -> bool {
        matches!(self.mode, Mode::Steady { draining: None })
            && matches!(&self.disk, Disk::Idle(root) if root.state().phase == Phase::Committed)
    }

    /// Whether an agent build is staged or self-tested now (the payload's pending
    /// release waits for it).
    pub(super) fn agent_update_busy(&self) -> bool {
        self.self_update.as_ref().is_some_and(SelfUpdate::busy)
    }

    /// Handles a self-update event.
    pub(super) async fn on_self_update_event(&mut self, event: SelfUpdateEvent) {
        match event {
            SelfUpdateEvent::Checked(outcome) => self.on_agent_checked(outcome),
            SelfUpdateEvent::PendingDue => self.start_agent_staging(),
            SelfUpdateEvent::Staged(staged) => self.on_agent_staged(*staged),
            SelfUpdateEvent::SelfTested(result) => self.on_self_tested(result),
        }
    }
}

/// The agent's own timeout for a blocking self-test (offline `apply`).
pub fn offline_timeout(settings: Option<&SelfUpdateConfig>) -> Duration {
    settings.map_or(crate::config::DEFAULT_SELF_TEST_TIMEOUT, |s| {
        s.self_test_timeout
    })
}
