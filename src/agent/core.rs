//! The agent's core: one task that owns the root and the payload and reacts to
//! events. Its state is two enums — who holds the root ([`Disk`]) and what runs
//! ([`Generation`] and [`Mode`]) — and the transitions live one file per
//! concern: `offers.rs` (check outcomes, scheduling), `staging.rs`, `trial.rs`
//! (swap, trial, commit, rollback), `generation.rs` (start, crash, restart),
//! `admin.rs` (control requests) and `status.rs`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bank_layout::{BankId, LayoutError, Phase, Root};
use signing::VerifiedRelease;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{error, info};

use crate::agent::checker::CheckOutcome;
use crate::agent::control_socket::Envelope;
use crate::agent::fetch::Cancel;
use crate::agent::generation::Restarts;
use crate::agent::reexec::{AdoptPlan, AgentTrial, ExecContext};
use crate::agent::reload::{ReloadRequest, ReloadState};
use crate::agent::self_update::{self, Identity, SelfUpdate, SelfUpdateEvent};
use crate::agent::status::LastError;
use crate::agent::trial::Trial;
use crate::agent::world::{Clock, Links, World};
use crate::config::AgentConfig;
use crate::control::{Request, Response};
use crate::report::StatusReport;
use crate::setup::ReleaseSetup;
use crate::supervisor::{Listeners, Payload, PayloadEvent, sleep_until};

/// What a staging thread hands back: the root, and the bank staged or why not.
pub type Staged = (Root, Result<BankId, LayoutError>);

/// Who holds the root.
// One value of it exists, in the core: boxing the large variant would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Disk {
    /// The core holds it.
    Idle(Root),
    /// A blocking thread stages `release` into the idle bank and hands the root back.
    Staging {
        /// The staging thread.
        thread: JoinHandle<Staged>,
        /// The release it stages.
        release: Box<VerifiedRelease>,
        /// Cancels its download (an admin rollback never waits for one).
        cancel: Cancel,
    },
    /// Only inside the one transition that hands the root to a staging thread;
    /// no event ever sees it.
    Handover,
}

/// The active bank's payload generation.
// One value of it exists, in the core: boxing the large variant would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Generation {
    /// Running.
    Running(Payload),
    /// Not running: a restart is due at `restart_at`, or (`None`) nothing to run.
    Down {
        /// When the next start is due.
        restart_at: Option<Instant>,
    },
}

/// Steady operation, or a new version on probation.
pub enum Mode {
    /// The active version is committed (or the root is empty).
    Steady {
        /// After an admin rollback with sockets: the generation left, serving
        /// until the new one is ready or this deadline passes.
        draining: Option<(Payload, Instant)>,
    },
    /// A new version is on trial.
    Trial(Trial),
}

/// The agent: everything the core task owns.
pub struct Agent {
    /// Validated configuration.
    pub(super) config: AgentConfig,
    /// Root, channel and keys for verification.
    pub(super) setup: ReleaseSetup,
    /// Stable identity of this machine.
    pub(super) agent_id: String,
    /// Console base URL.
    pub(super) console: String,
    /// HTTPS client towards the console and the health endpoint (the latest:
    /// take it before each request).
    pub(super) http: watch::Receiver<reqwest::Client>,
    /// Wall-clock time and randomness.
    pub(super) clock: Arc<dyn Clock>,
    /// Sockets handed to every payload generation.
    pub(super) listeners: Listeners,
    /// Who holds the root.
    pub(super) disk: Disk,
    /// The active bank's generation.
    pub(super) current: Generation,
    /// Steady or on trial.
    pub(super) mode: Mode,
    /// Restart backoff of the active generation.
    pub(super) restarts: Restarts,
    /// The last manifest and signature the console gave, re-evaluated after state changes.
    pub(super) latest: Option<(Vec<u8>, Vec<u8>)>,
    /// Whether the console answered the last check (`None` before the first).
    pub(super) console_up: Option<bool>,
    /// When the console was last asked.
    pub(super) last_check: Option<SystemTime>,
    /// The last error, kept until a later success of its kind.
    pub(super) last_error: Option<LastError>,
    /// Status as last computed (answered while the root is with a staging thread).
    pub(super) report: watch::Sender<Option<StatusReport>>,
    /// Wakes the checker for `bankswap check`.
    pub(super) check_now: Arc<Notify>,
    /// An admin rollback that cancelled a staging: answered once the staging
    /// thread hands the root back (the core keeps running meanwhile).
    pub(super) held_rollback: Option<oneshot::Sender<Response>>,
    /// The last reload, and `[health]` waiting for the next trial.
    pub(super) reload: ReloadState,
    /// Reloaded configs (SIGHUP).
    reloads: mpsc::Receiver<ReloadRequest>,
    /// What an in-place exec needs (config path, control socket fd).
    pub(super) exec: ExecContext,
    /// A self-update's trial in this (new) image: commit before its deadline.
    pub(super) agent_trial: Option<AgentTrial>,
    /// Self-update (`[self_update] enabled`), else `None`.
    pub(super) self_update: Option<SelfUpdate>,
    /// The agent build this process runs.
    pub(super) identity: Identity,
    /// Check outcomes from the checker.
    checks: mpsc::Receiver<CheckOutcome>,
    /// Requests from the control socket.
    control: mpsc::Receiver<Envelope>,
}

/// What woke the core.
enum Event {
    Shutdown,
    Payload(PayloadEvent),
    DrainingDone,
    RestartDue,
    Stable,
    TrialTick,
    Checked(CheckOutcome),
    PendingDue,
    Staged(Box<Staged>),
    Control(Request, oneshot::Sender<Response>),
    Reload(ReloadRequest),
    AgentTrialDue,
    SelfProbed(bool),
    SelfUpdate(SelfUpdateEvent),
}

/// Runs the agent on `world` until `shutdown` resolves, then stops the payload.
#[cfg(test)]
pub async fn run(
    config: AgentConfig,
    world: World,
    links: Links,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    run_with(config, world, links, None, shutdown, None).await
}

/// [`run`] with self-update (`[self_update] enabled`), adopting the
/// generations of a hand-over (an in-place exec) instead of starting the
/// payload when `plan` is given.
pub async fn run_with(
    config: AgentConfig,
    world: World,
    links: Links,
    self_update: Option<SelfUpdate>,
    shutdown: impl Future<Output = ()>,
    plan: Option<AdoptPlan>,
) -> anyhow::Result<()> {
    let mut agent = Agent::new(config, world, links);
    if let Some(su) = self_update {
        agent.identity = su.identity().clone();
        agent.self_update = Some(su);
    }
    match plan {
        Some(plan) => agent.adopt(plan),
        None => {
            agent.resume();
            crate::agent::reexec::log_start(&agent.identity.version, 0);
        }
    }
    agent.run(shutdown).await
}

impl Agent {
    pub(super) fn new(config: AgentConfig, world: World, links: Links) -> Agent {
        let setup = ReleaseSetup {
            root: config.root.clone(),
            channel: config.channel.clone(),
            trusted_keys: config.trusted_keys.clone(),
            allow_in_place: config.update.allow_in_place,
        };
        let last_error = world
            .root
            .state()
            .last_error
            .clone()
            .map(LastError::earlier);
        let identity = Identity::of_self(world.root.dir());
        Agent {
            config,
            setup,
            agent_id: world.agent_id,
            console: world.console,
            http: world.http,
            clock: world.clock,
            listeners: world.listeners,
            exec: world.exec,
            agent_trial: None,
            disk: Disk::Idle(world.root),
            current: Generation::Down { restart_at: None },
            mode: Mode::Steady { draining: None },
            restarts: Restarts::new(),
            latest: None,
            console_up: None,
            last_check: None,
            last_error,
            report: links.report,
            check_now: links.check_now,
            held_rollback: None,
            reload: ReloadState::default(),
            reloads: links.reloads,
            self_update: None,
            identity,
            checks: links.checks,
            control: links.control,
        }
    }

    /// Starts the active bank's payload, resuming a trial a restart interrupted.
    pub(super) fn resume(&mut self) {
        if let Some(root) = self.root()
            && root.state().phase == Phase::Trial
        {
            let bank = root.active_bank();
            info!(bank = %bank, "resuming the trial interrupted by a restart");
            self.begin_trial(bank, None);
        }
        self.start_payload();
        self.publish_status();
    }

    /// Handles events until `shutdown` resolves, then stops every generation.
    async fn run(mut self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        tokio::pin!(shutdown);
        // A resumed trial whose payload could not even start is judged at once.
        self.judge_trial().await;
        loop {
            match self.next_event(&mut shutdown).await {
                Event::Shutdown => break,
                Event::Payload(e) => self.on_payload_event(e).await,
                Event::DrainingDone => self.finish_draining().await,
                Event::RestartDue => self.start_payload(),
                Event::Stable => self.on_stable(),
                Event::TrialTick => self.on_trial_tick().await,
                Event::Checked(outcome) => self.on_checked(outcome),
                Event::PendingDue => self.start_staging(),
                Event::Staged(staged) => self.on_staged(*staged).await,
                Event::Control(request, reply) => self.on_control_request(request, reply).await,
                Event::Reload(request) => self.on_reload(request),
                Event::AgentTrialDue => self.on_agent_trial_due().await,
                Event::SelfProbed(ok) => self.on_self_probed(ok).await,
                Event::SelfUpdate(e) => self.on_self_update_event(e).await,
            }
            // A payload update that ended may have held an agent release back.
            self.evaluate_held_agent_release();
            // A qualified agent build takes over once the payload is settled.
            self.take_over_with_ready_build();
            self.judge_trial().await;
            self.settle_reload();
            self.save_last_error();
            self.publish_status();
        }
        self.stop_all().await;
        Ok(())
    }

    async fn next_event(&mut self, shutdown: &mut Pin<&mut impl Future<Output = ()>>) -> Event {
        let trial_tick = match &self.mode {
            Mode::Trial(trial) => Some(trial.next_tick(self.config.health.http.is_some())),
            Mode::Steady { .. } => None,
        };
        let draining_due = match &self.mode {
            Mode::Steady {
                draining: Some((_, due)),
            } => Some(*due),
            _ => None,
        };
        let (restart_due, stable_due) = match self.current {
            Generation::Down { restart_at } => (restart_at, None),
            Generation::Running(_) => (None, self.restarts.stable_at()),
        };
        // Never two updates at once: a payload release waits for the agent's trial.
        let pending_due = match self.agent_trial {
            Some(_) => None,
            None => self.pending_due(),
        };
        let agent_trial_due = self.agent_trial.as_ref().map(|t| t.deadline);
        let agent_due = self.agent_pending_due();
        tokio::select! {
            () = shutdown.as_mut() => Event::Shutdown,
            e = next_payload_event(&mut self.current) => Event::Payload(e),
            () = sleep_until(draining_due) => Event::DrainingDone,
            () = sleep_until(restart_due) => Event::RestartDue,
            () = sleep_until(stable_due) => Event::Stable,
            () = sleep_until(trial_tick) => Event::TrialTick,
            Some(outcome) = self.checks.recv() => Event::Checked(outcome),
            () = sleep_until(pending_due) => Event::PendingDue,
            staged = join_staging(&mut self.disk) => match staged {
                Ok(staged) => Event::Staged(Box::new(staged)),
                Err(e) => {
                    // The staging thread panicked: the root is lost with it. Nothing sane remains.
                    error!(error = %e, "staging thread failed");
                    Event::Shutdown
                }
            },
            Some((request, reply)) = self.control.recv() => Event::Control(request, reply),
            Some(request) = self.reloads.recv() => Event::Reload(request),
            () = sleep_until(agent_trial_due) => Event::AgentTrialDue,
            ok = join_probe(&mut self.agent_trial) => Event::SelfProbed(ok),
            e = self_update::next_event(&mut self.self_update, agent_due) => Event::SelfUpdate(e),
        }
    }

    /// The root, unless a staging thread holds it.
    pub(super) fn root(&self) -> Option<&Root> {
        match &self.disk {
            Disk::Idle(root) => Some(root),
            _ => None,
        }
    }

    /// The root, mutably, unless a staging thread holds it.
    pub(super) fn root_mut(&mut self) -> Option<&mut Root> {
        match &mut self.disk {
            Disk::Idle(root) => Some(root),
            _ => None,
        }
    }

    /// The wall-clock time now, from the injected clock.
    pub(super) fn now(&self) -> SystemTime {
        self.clock.now()
    }

    /// Stops every generation (the end of `run`).
    pub(super) async fn stop_all(&mut self) {
        match std::mem::replace(&mut self.mode, Mode::Steady { draining: None }) {
            Mode::Steady {
                draining: Some((old, _)),
            } => {
                old.stop().await;
            }
            Mode::Trial(trial) => trial.stop_draining().await,
            Mode::Steady { draining: None } => {}
        }
        if let Generation::Running(payload) = self.take_current() {
            info!(
                version = payload.version(),
                pid = payload.pid(),
                "stopping the payload"
            );
            payload.stop().await;
        }
    }
}

async fn next_payload_event(current: &mut Generation) -> PayloadEvent {
    match current {
        Generation::Running(p) => p.next_event().await,
        Generation::Down { .. } => std::future::pending().await,
    }
}

/// The self-probe's answer (pending while none runs). Cancel-safe.
async fn join_probe(trial: &mut Option<AgentTrial>) -> bool {
    let Some(handle) = trial.as_mut().and_then(|t| t.probe.as_mut()) else {
        return std::future::pending().await;
    };
    let ok = handle.await.unwrap_or(false);
    if let Some(t) = trial.as_mut() {
        t.probe = None;
    }
    ok
}

async fn join_staging(disk: &mut Disk) -> Result<Staged, tokio::task::JoinError> {
    match disk {
        Disk::Staging { thread, .. } => thread.await,
        _ => std::future::pending().await,
    }
}

/// How long until `when` on the wall clock, never negative.
pub(super) fn wall_wait(now: SystemTime, when: SystemTime) -> Duration {
    when.duration_since(now).unwrap_or(Duration::ZERO)
}
