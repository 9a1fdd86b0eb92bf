//! The agent's core: one task that owns the root and the payload, and reacts
//! to events (check outcomes, payload events, timers, control requests).
//! Staging runs on a blocking thread that borrows the root meanwhile.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, anyhow};
use bank_layout::{BankId, LayoutError, Phase, Root};
use signing::{ReleaseError, VerifiedRelease};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::agent::checker::{self, CheckOutcome, CheckerSettings};
use crate::agent::control_socket::{self, Envelope};
use crate::agent::fetch::{self, ArtifactStream, Checked};
use crate::agent::schedule;
use crate::agent_id;
use crate::clock;
use crate::config::AgentConfig;
use crate::control::{Request, Response};
use crate::release::{self, StagePlan, open_root, stage_release, verify};
use crate::report::StatusReport;
use crate::setup::ReleaseSetup;
use crate::supervisor::{Listeners, Payload, PayloadEvent, PayloadSpec};

mod update;

/// First restart delay of a crashed payload; doubles per crash.
const FIRST_RESTART: Duration = Duration::from_millis(100);
/// Restarts never wait longer than this.
const MAX_RESTART: Duration = Duration::from_secs(30);
/// A payload up this long has recovered: the restart delay starts over.
const STABLE_AFTER: Duration = Duration::from_secs(60);
/// A failed staging is tried again after this (or the poll interval, if longer).
const STAGE_RETRY: Duration = Duration::from_secs(10);
/// Timeout of one health probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// A new version on probation.
struct Trial {
    /// Its version.
    version: String,
    /// Its release sequence.
    sequence: u64,
    /// When it must have proven itself.
    deadline: Instant,
    /// Exits and failed probes so far.
    failures: u32,
    /// When the next HTTP probe is due.
    next_probe: Instant,
}

/// The agent: state owned by the core task.
pub struct Agent {
    /// Validated configuration.
    config: AgentConfig,
    /// Console base URL.
    console: String,
    /// Root, channel and keys for verification.
    setup: ReleaseSetup,
    /// Stable identity of this machine.
    agent_id: String,
    /// The root; `None` while a staging thread owns it.
    root: Option<Root>,
    /// HTTPS client towards the console.
    http: reqwest::Client,
    /// Sockets handed to every payload generation.
    listeners: Listeners,
    /// The payload generation serving now.
    payload: Option<Payload>,
    /// The previous generation, serving until the new one is ready (sockets only).
    draining: Option<(Payload, Instant)>,
    /// When `payload` started.
    started_at: Instant,
    /// When a crashed payload is restarted.
    restart_at: Option<Instant>,
    /// The next restart delay.
    restart_delay: Duration,
    /// The version on probation, if any.
    trial: Option<Trial>,
    /// The staging thread, which returns the root.
    staging: Option<JoinHandle<(Root, Result<BankId, LayoutError>)>>,
    /// The release being staged.
    staging_release: Option<Box<VerifiedRelease>>,
    /// The last manifest and signature the console gave, re-evaluated after state changes.
    latest: Option<(Vec<u8>, Vec<u8>)>,
    /// Whether the console answered the last check (`None` before the first).
    console_up: Option<bool>,
    /// When the console was last asked.
    last_check: Option<SystemTime>,
    /// Status as last computed (answered while the root is borrowed).
    report: watch::Sender<Option<StatusReport>>,
    /// Wakes the checker for `bankswap check`.
    check_now: Arc<Notify>,
    /// Check outcomes from the checker.
    checks: mpsc::Receiver<CheckOutcome>,
    /// Requests from the control socket.
    control: mpsc::Receiver<Envelope>,
    /// Set when a trial has failed for good; the next tick rolls back.
    rollback_reason: Option<String>,
}

/// What woke the core.
enum Event {
    Shutdown,
    Payload(PayloadEvent),
    DrainingDone,
    RestartDue,
    TrialTick,
    Checked(CheckOutcome),
    PendingDue,
    Staged(Box<Root>, Result<BankId, LayoutError>),
    Control(Request, oneshot::Sender<Response>),
}

impl Agent {
    /// Takes the root, binds sockets, starts the payload and the background tasks.
    pub async fn start(config: AgentConfig, console: String) -> anyhow::Result<Agent> {
        let root = open_root(&config.root)?;
        let agent_id = agent_id::ensure(root.dir()).context("writing the agent id")?;
        let listeners = Listeners::bind(&config.listen).context("binding [[listen]] sockets")?;
        let http = fetch::client(&config)?;
        let setup = ReleaseSetup {
            root: config.root.clone(),
            channel: config.channel.clone(),
            trusted_keys: config.trusted_keys.clone(),
        };
        let (report, report_rx) = watch::channel(None);
        let (check_tx, checks) = mpsc::channel(4);
        let (control_tx, control) = mpsc::channel(8);
        let check_now = Arc::new(Notify::new());
        control_socket::serve(root.dir(), control_tx)?;
        tokio::spawn(checker::run_checker(
            http.clone(),
            CheckerSettings {
                console: console.clone(),
                channel: config.channel.clone(),
                poll_interval: config.poll_interval,
            },
            check_now.clone(),
            check_tx,
        ));
        tokio::spawn(checker::run_reporter(
            http.clone(),
            console.clone(),
            agent_id.clone(),
            report_rx,
        ));
        info!(agent_id, root = %config.root.display(), console, channel = config.channel, "agent starting");
        let mut agent = Agent {
            config,
            console,
            setup,
            agent_id,
            root: Some(root),
            http,
            listeners,
            payload: None,
            draining: None,
            started_at: Instant::now(),
            restart_at: None,
            restart_delay: FIRST_RESTART,
            trial: None,
            staging: None,
            staging_release: None,
            latest: None,
            console_up: None,
            last_check: None,
            report,
            check_now,
            checks,
            control,
            rollback_reason: None,
        };
        if let Some(root) = &agent.root
            && root.state().phase == Phase::Trial
        {
            let bank = root.active_bank();
            info!(bank = %bank, "resuming the trial interrupted by a restart");
            agent.begin_trial(bank);
        }
        agent.start_payload();
        agent.publish_status();
        Ok(agent)
    }

    /// Handles events until `shutdown` resolves, then stops the payload.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        tokio::pin!(shutdown);
        loop {
            let event = self.next_event(&mut shutdown).await;
            match event {
                Event::Shutdown => break,
                Event::Payload(e) => self.on_payload_event(e).await,
                Event::DrainingDone => self.finish_draining().await,
                Event::RestartDue => {
                    self.restart_at = None;
                    self.start_payload();
                }
                Event::TrialTick => self.on_trial_tick().await,
                Event::Checked(outcome) => self.on_checked(outcome),
                Event::PendingDue => self.start_staging(),
                Event::Staged(root, result) => self.on_staged(*root, result).await,
                Event::Control(request, reply) => {
                    let response = self.on_control(request).await;
                    let _ = reply.send(response);
                }
            }
            self.publish_status();
        }
        if let Some((old, _)) = self.draining.take() {
            old.stop().await;
        }
        if let Some(payload) = self.payload.take() {
            info!(
                version = payload.version(),
                pid = payload.pid(),
                "stopping the payload"
            );
            payload.stop().await;
        }
        Ok(())
    }

    async fn next_event(
        &mut self,
        shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> Event {
        let trial_tick = self.trial.as_ref().map(|t| {
            if self.config.health.http.is_some() {
                t.next_probe.min(t.deadline)
            } else {
                t.deadline
            }
        });
        let pending_due = self.pending_due();
        // During a trial the trial decides when the previous generation stops.
        let draining_due = match self.trial {
            Some(_) => None,
            None => self.draining.as_ref().map(|(_, due)| *due),
        };
        tokio::select! {
            () = shutdown.as_mut() => Event::Shutdown,
            e = next_payload_event(&mut self.payload) => Event::Payload(e),
            () = sleep_until(draining_due) => Event::DrainingDone,
            () = sleep_until(self.restart_at) => Event::RestartDue,
            () = sleep_until(trial_tick) => Event::TrialTick,
            Some(outcome) = self.checks.recv() => Event::Checked(outcome),
            () = sleep_until(pending_due) => Event::PendingDue,
            result = join_staging(&mut self.staging) => match result {
                Ok((root, staged)) => Event::Staged(Box::new(root), staged),
                Err(e) => {
                    // The staging thread panicked: the root is lost with it. Nothing sane remains.
                    error!(error = %e, "staging thread failed");
                    Event::Shutdown
                }
            },
            Some((request, reply)) = self.control.recv() => Event::Control(request, reply),
        }
    }

    /// When the pending release may be staged (never during a trial or another staging).
    fn pending_due(&self) -> Option<Instant> {
        if self.trial.is_some() || self.staging.is_some() {
            return None;
        }
        let pending = self.root.as_ref()?.state().pending.as_ref()?;
        let wait = clock::from_unix(pending.not_before)
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        Some(Instant::now() + wait)
    }

    // ----- the payload -------------------------------------------------------------------

    /// The spec of the payload in `bank`, from its bank record.
    fn payload_spec(&self, bank: BankId) -> Option<PayloadSpec> {
        let root = self.root.as_ref()?;
        let record = root.bank_record(bank)?;
        let bank_dir = root.bank_dir(bank);
        Some(PayloadSpec {
            version: record.version.clone(),
            bank,
            command: bank_dir.join(&record.command),
            bank_dir,
            args: record.args.clone(),
            env: self.config.payload.env.clone(),
            user: self.config.payload.user.clone(),
            stop_timeout: self.config.payload.stop_timeout,
            watchdog: self.config.health.watchdog,
        })
    }

    /// Starts the active bank's payload (nothing on an empty root).
    fn start_payload(&mut self) {
        let Some(bank) = self.root.as_ref().map(Root::active_bank) else {
            return;
        };
        let Some(spec) = self.payload_spec(bank) else {
            info!(bank = %bank, "no version installed yet; waiting for a release");
            return;
        };
        match Payload::start(&spec, &self.listeners) {
            Ok(payload) => {
                self.payload = Some(payload);
                self.started_at = Instant::now();
            }
            Err(e) => {
                let message = format!("starting {} from {bank}: {e}", spec.version);
                error!(version = spec.version, bank = %bank, error = %e, "payload did not start");
                self.note_failure(&message);
            }
        }
    }

    async fn on_payload_event(&mut self, event: PayloadEvent) {
        match event {
            PayloadEvent::Ready => {
                info!(
                    version = self.payload.as_ref().map(Payload::version),
                    "payload ready"
                );
                if self.trial.is_some() {
                    self.commit().await;
                } else if self.draining.is_some() {
                    self.finish_draining().await;
                }
            }
            PayloadEvent::Status(text) => info!(status = text, "payload status"),
            PayloadEvent::Stopping => info!("payload is stopping"),
            PayloadEvent::WatchdogExpired => {
                warn!("payload watchdog expired; restarting it");
                if let Some(payload) = self.payload.take() {
                    payload.stop().await;
                }
                self.note_failure("the payload stopped sending WATCHDOG=1");
            }
            PayloadEvent::Exited(status) => {
                let version = self
                    .payload
                    .take()
                    .map(|p| p.version().to_string())
                    .unwrap_or_default();
                warn!(version, %status, "payload exited");
                self.note_failure(&format!("{version} exited ({status})"));
            }
        }
    }

    /// A payload failure: counts against a trial, or schedules a restart with backoff.
    fn note_failure(&mut self, what: &str) {
        if let Some(trial) = &mut self.trial {
            trial.failures += 1;
            let failures = trial.failures;
            if failures >= self.config.health.max_failures {
                let reason = format!("{what}; {failures} failures during its trial");
                // The rollback itself is async; do it at the next tick.
                trial.deadline = Instant::now();
                trial.next_probe = Instant::now();
                self.rollback_reason = Some(reason);
                return;
            }
        }
        if self.started_at.elapsed() > STABLE_AFTER {
            self.restart_delay = FIRST_RESTART;
        }
        self.restart_at = Some(Instant::now() + self.restart_delay);
        self.restart_delay = (self.restart_delay * 2).min(MAX_RESTART);
    }

    async fn finish_draining(&mut self) {
        if let Some((old, _)) = self.draining.take() {
            info!(
                version = old.version(),
                pid = old.pid(),
                "draining the previous generation"
            );
            old.stop().await;
        }
    }
}

async fn next_payload_event(payload: &mut Option<Payload>) -> PayloadEvent {
    match payload {
        Some(p) => p.next_event().await,
        None => std::future::pending().await,
    }
}

async fn join_staging(
    staging: &mut Option<JoinHandle<(Root, Result<BankId, LayoutError>)>>,
) -> Result<(Root, Result<BankId, LayoutError>), tokio::task::JoinError> {
    match staging {
        Some(handle) => {
            let result = handle.await;
            *staging = None;
            result
        }
        None => std::future::pending().await,
    }
}

async fn sleep_until(when: Option<Instant>) {
    match when {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
