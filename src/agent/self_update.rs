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

pub mod fault;
pub mod selftest;

use std::io::BufReader;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bank_layout::{
    AGENT_BINARY, AGENT_DIR, AgentAttempt, AgentBuild, AgentPhase, AgentSlots, AgentStageSpec,
    AgentState, ArchiveFormat, LayoutError, Pending, Phase, SlotId,
};
use signing::{
    ArtifactFormat, Expectations, KeyRing, ReleaseError, ReleaseKind, VerifiedRelease,
    check_kind_and_platform,
};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{error, info, warn};

use self::selftest::{SelfTestReport, Target};
use crate::agent::checker::CheckOutcome;
use crate::agent::core::{Agent, Disk, Mode, wall_wait};
use crate::agent::fetch::{self, ArtifactStream, Cancel, Checked};
use crate::agent::handover;
use crate::agent::reexec::{ExecPurpose, ExecTarget};
use crate::agent::schedule;
use crate::agent::staging::STAGE_RETRY;
use crate::clock;
use crate::config::SelfUpdateConfig;
use crate::platform::PLATFORM;
use crate::release::effective_now;
use crate::report::{BadReport, PendingReport, StatusReport};

/// The product of every agent release (a payload root pins its own product).
pub const AGENT_PRODUCT: &str = "bankswap";

/// This binary's own version (what the installed binary runs as).
pub const BUILD_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Read buffer in front of an agent artifact stream (as for payloads).
const STAGE_BUFFER: usize = 256 * 1024;

/// Which build this process runs: its release version and slot (`None` = the
/// installed binary, whose version is [`BUILD_VERSION`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Release version.
    pub version: String,
    /// The slot it runs from.
    pub slot: Option<SlotId>,
}

impl Identity {
    /// The build of `/proc/self/exe`: a slot of `root_dir` holding the same file
    /// (device and inode) gives its record's version; anything else is the
    /// installed binary. Reads only, no lock.
    pub fn of_self(root_dir: &Path) -> Identity {
        let installed = Identity {
            version: BUILD_VERSION.to_owned(),
            slot: None,
        };
        let Ok(exe) = std::fs::metadata("/proc/self/exe") else {
            return installed;
        };
        for slot in SlotId::ALL {
            let binary = root_dir
                .join(AGENT_DIR)
                .join(slot.dir_name())
                .join(AGENT_BINARY);
            let same = std::fs::metadata(&binary)
                .is_ok_and(|m| m.dev() == exe.dev() && m.ino() == exe.ino());
            if same && let Ok(Some(build)) = AgentSlots::read_record(root_dir, slot) {
                return Identity {
                    version: build.version,
                    slot: Some(slot),
                };
            }
        }
        installed
    }
}

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

/// Verifies an agent release: the payload policy (signature, product
/// [`AGENT_PRODUCT`], channel, expiry, sequence against the agent's own highest,
/// newer than `running`, not in the agent's own bad list), then kind agent and
/// this platform.
pub fn verify_agent(
    state: &AgentState,
    ring: &KeyRing,
    channel: &str,
    running: &str,
    manifest: &[u8],
    signature: &[u8],
    now: SystemTime,
) -> Result<VerifiedRelease, ReleaseError> {
    let running = semver::Version::parse(running).ok();
    // The one bad-version rule, over this agent's own marks.
    let marked_bad = crate::release::marks(&state.bad_versions);
    let release = signing::verify_release(
        manifest,
        signature,
        &Expectations {
            trusted_keys: &ring.trusted(),
            revoked_keys: &ring.revoked_ids(),
            product: Some(AGENT_PRODUCT),
            channel,
            highest_sequence: state.highest_sequence,
            running_version: running.as_ref(),
            marked_bad: &marked_bad,
            now,
        },
    )?;
    check_kind_and_platform(&release.manifest, ReleaseKind::Agent, PLATFORM)?;
    Ok(release)
}

/// The staging spec and slot record of a verified agent release.
pub fn stage_spec<'a>(
    release: &'a VerifiedRelease,
    manifest: &[u8],
    signature: &[u8],
    now: SystemTime,
) -> AgentStageSpec<'a> {
    let m = &release.manifest;
    AgentStageSpec {
        format: match m.artifact.format {
            ArtifactFormat::Tar => ArchiveFormat::Tar,
            ArtifactFormat::TarGz => ArchiveFormat::TarGz,
            ArtifactFormat::TarZst => ArchiveFormat::TarZst,
        },
        size: m.artifact.size,
        sha256: &m.artifact.sha256,
        build: AgentBuild {
            version: m.version.to_string(),
            sequence: m.sequence,
            sha256: m.artifact.sha256.clone(),
            size: 0,
            platform: m.platform.clone().unwrap_or_default(),
            channel: m.channel.clone(),
            staged_at: clock::unix(now),
            handover_schemas: Vec::new(),
            manifest: String::from_utf8_lossy(manifest).into_owned(),
            signature: String::from_utf8_lossy(signature).into_owned(),
        },
    }
}

/// Fills the agent fields of `report` from the slots' `state` and the running build.
pub fn fill_status(
    report: &mut StatusReport,
    state: Option<&AgentState>,
    identity: &Identity,
    phase: String,
) {
    report.agent_version = Some(identity.version.clone());
    report.agent_platform = Some(PLATFORM.to_owned());
    report.agent_phase = Some(phase);
    report.agent_previous_version = state.and_then(|s| previous_version(s, identity));
    let Some(state) = state else { return };
    report.agent_last_error.clone_from(&state.last_error);
    report.agent_pending = state.pending.as_ref().map(|p| PendingReport {
        version: p.version.clone(),
        sequence: p.sequence,
        not_before: clock::rfc3339(clock::from_unix(p.not_before)),
        progress: None,
    });
    report.agent_bad_versions = state
        .bad_versions
        .iter()
        .map(|b| BadReport {
            version: b.version.clone(),
            sequence: b.sequence,
            reason: b.reason.clone(),
        })
        .collect();
}

/// The build a rollback of the agent would run: the attempt's origin, else (for a
/// slot build) the other committed slot or the installed binary; `None` for the
/// installed binary with nothing before it.
fn previous_version(state: &AgentState, identity: &Identity) -> Option<String> {
    if let Some(attempt) = &state.attempt {
        return Some(attempt.from_version.clone());
    }
    let slot = identity.slot?;
    Some(
        state
            .version_of(slot.other())
            .map_or_else(|| BUILD_VERSION.to_owned(), str::to_owned),
    )
}

/// The offline status (no agent running): the agent fields as the next start of
/// this binary would see them — the committed build if it is newer than this
/// one (the launcher runs it then), else this one.
pub fn fill_offline_status(report: &mut StatusReport, root_dir: &Path) {
    let state = AgentSlots::read_state(root_dir).ok().flatten();
    let mut identity = Identity::of_self(root_dir);
    let committed = state.as_ref().and_then(|s| {
        let slot = s.active?;
        let version = s.version_of(slot)?;
        let newer = semver::Version::parse(version)
            .ok()?
            .cmp_precedence(&semver::Version::parse(BUILD_VERSION).ok()?)
            .is_gt();
        newer.then(|| Identity {
            version: version.to_owned(),
            slot: Some(slot),
        })
    });
    if identity.slot.is_none()
        && let Some(committed) = committed
    {
        identity = committed;
    }
    let phase = state
        .as_ref()
        .map_or(AgentPhase::Committed, |s| s.phase)
        .to_string();
    fill_status(report, state.as_ref(), &identity, phase);
}

impl Agent {
    /// When the pending agent release may be staged: never while the payload is
    /// being updated (staging, trial, draining, or a payload trial on disk), nor
    /// while an agent build is staged, tested or ready.
    pub(super) fn agent_pending_due(&self) -> Option<Instant> {
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

    /// A qualified build waiting in its slot takes over once no payload update
    /// is in progress (called after every event): the trial marker is written
    /// (one write), then this process execs the build in place with the
    /// hand-over (same pid, the payload untouched). The new image commits
    /// within `[self_update] grace` or execs this build back. If the exec
    /// itself fails, this build keeps running and the version is marked bad
    /// with the reason, in the same write that ends the attempt.
    pub(super) fn take_over_with_ready_build(&mut self) {
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

    /// Re-evaluates the last agent manifest (after a payload update ended, too).
    /// [`Agent::evaluate_agent_latest`] of a release held back by a payload update,
    /// once that update has ended (called after every event).
    pub(super) fn evaluate_held_agent_release(&mut self) {
        let held = self
            .self_update
            .as_ref()
            .is_some_and(|su| su.held && matches!(su.work, Work::Idle));
        if held && self.payload_settled() {
            self.evaluate_agent_latest();
        }
    }

    pub(super) fn evaluate_agent_latest(&mut self) {
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
        let (Some((manifest, signature)), Some(slots)) = (su.latest.clone(), su.slots.as_mut())
        else {
            return;
        };
        let verified = verify_agent(
            slots.state(),
            &su.ring,
            &su.settings.channel,
            &su.identity.version,
            &manifest,
            &signature,
            now,
        );
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

    fn on_agent_checked(&mut self, outcome: CheckOutcome) {
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

    /// Re-verifies the pending agent release and hands the slots to a staging thread.
    fn start_agent_staging(&mut self) {
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
        let verified = verify_agent(
            slots.state(),
            &su.ring,
            &su.settings.channel,
            &su.identity.version,
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
    fn on_agent_staged(&mut self, (mut slots, result): (AgentSlots, Result<SlotId, LayoutError>)) {
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
    fn on_self_tested(&mut self, result: Result<SelfTestReport, String>) {
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

    /// The agent fields of `report`.
    pub(super) fn fill_agent_status(&self, report: &mut StatusReport) {
        match &self.self_update {
            Some(su) => fill_status(
                report,
                su.slots
                    .as_ref()
                    .map(AgentSlots::state)
                    .or(su.state_at_staging.as_ref()),
                &su.identity,
                su.phase(),
            ),
            // Self-update off: the build running, nothing staged or tried.
            None => fill_status(
                report,
                None,
                &self.identity,
                AgentPhase::Committed.to_string(),
            ),
        }
    }
}

/// The agent's own timeout for a blocking self-test (offline `apply`).
pub fn offline_timeout(settings: Option<&SelfUpdateConfig>) -> Duration {
    settings.map_or(crate::config::DEFAULT_SELF_TEST_TIMEOUT, |s| {
        s.self_test_timeout
    })
}
