//! The active bank's payload generation: start it, react to what it does
//! (ready, exit, watchdog), restart it with backoff, and stop the generation
//! left by a swap once it is no longer needed.

use std::time::{Duration, SystemTime};

use bank_layout::BankId;
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::agent::core::{Agent, Generation, Mode};
use crate::agent::status::ErrorKind;
use crate::clock;
use crate::report::RestartsReport;
use crate::supervisor::{Payload, PayloadEvent, PayloadSpec};

/// First restart delay of a crashed payload; doubles per crash.
const FIRST_RESTART: Duration = Duration::from_millis(100);
/// Restarts never wait longer than this.
const MAX_RESTART: Duration = Duration::from_secs(30);
/// A payload up this long has recovered: the restart delay starts over.
const STABLE_AFTER: Duration = Duration::from_secs(60);

/// Restart backoff of the active generation, and what `status` says about it.
#[derive(Debug, Clone)]
pub struct Restarts {
    /// The delay before the next restart.
    delay: Duration,
    /// When the current generation started.
    started_at: Instant,
    /// Failures since the payload last ran [`STABLE_AFTER`] (or since the last
    /// new version), with the last one and when the streak began.
    streak: Option<RestartsReport>,
}

impl Restarts {
    /// No crash yet.
    pub fn new() -> Restarts {
        Restarts {
            delay: FIRST_RESTART,
            started_at: Instant::now(),
            streak: None,
        }
    }

    /// A new version starts afresh.
    pub fn reset(&mut self) {
        self.delay = FIRST_RESTART;
        self.streak = None;
    }

    /// The backoff as handed to the next agent image.
    pub fn handover_state(&self) -> crate::agent::handover::RestartsState {
        crate::agent::handover::RestartsState {
            delay_ms: crate::agent::handover::millis(self.delay),
            started_at_mono_ms: crate::supervisor::mono::from_instant(self.started_at),
            streak: self.streak.clone(),
        }
    }

    /// The backoff handed over by the previous agent image (the delay bounded
    /// by [`MAX_RESTART`] whatever it says).
    pub fn from_handover(state: &crate::agent::handover::RestartsState) -> Restarts {
        Restarts {
            delay: Duration::from_millis(state.delay_ms).clamp(FIRST_RESTART, MAX_RESTART),
            started_at: crate::supervisor::mono::to_instant(state.started_at_mono_ms),
            streak: state.streak.clone(),
        }
    }

    /// The current streak of failures, for `status`.
    pub fn report(&self) -> Option<&RestartsReport> {
        self.streak.as_ref()
    }

    /// When the generation running now counts as recovered (only during a streak).
    pub fn stable_at(&self) -> Option<Instant> {
        self.streak.as_ref().map(|_| self.started_at + STABLE_AFTER)
    }

    /// The generation started now.
    fn started(&mut self) {
        self.started_at = Instant::now();
    }

    /// Records a failure (`what`, at wall-clock `now`) and says when the generation is
    /// started again: the delay doubles up to [`MAX_RESTART`], and starts over (with
    /// the streak) after [`STABLE_AFTER`] of uptime.
    fn failed(&mut self, what: &str, now: SystemTime) -> Instant {
        if self.started_at.elapsed() > STABLE_AFTER {
            self.delay = FIRST_RESTART;
            self.streak = None;
        }
        let streak = self.streak.get_or_insert_with(|| RestartsReport {
            count: 0,
            last_exit: String::new(),
            since: clock::rfc3339(now),
        });
        streak.count += 1;
        what.clone_into(&mut streak.last_exit);
        let at = Instant::now() + self.delay;
        self.delay = (self.delay * 2).min(MAX_RESTART);
        at
    }
}

impl Agent {
    /// The spec of the payload in `bank`, from its bank record.
    pub(super) fn payload_spec(&self, bank: BankId) -> Option<PayloadSpec> {
        let root = self.root()?;
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

    /// Takes the active generation out, leaving nothing running or due.
    pub(super) fn take_current(&mut self) -> Generation {
        std::mem::replace(&mut self.current, Generation::Down { restart_at: None })
    }

    /// Starts the active bank's payload (nothing on an empty root). Called only
    /// when no generation runs.
    pub(super) fn start_payload(&mut self) {
        if let Generation::Running(_) = self.current {
            return;
        }
        self.current = Generation::Down { restart_at: None };
        let Some(bank) = self.root().map(|r| r.active_bank()) else {
            return;
        };
        let Some(spec) = self.payload_spec(bank) else {
            info!(bank = %bank, "no version installed yet; waiting for a release");
            return;
        };
        match Payload::start(&spec, &self.listeners) {
            Ok(payload) => {
                self.current = Generation::Running(payload);
                self.restarts.started();
            }
            Err(e) => {
                let message = format!("starting {} from {bank}: {e}", spec.version);
                error!(version = spec.version, bank = %bank, error = %e, "payload did not start");
                self.note_failure(message);
            }
        }
    }

    pub(super) async fn on_payload_event(&mut self, event: PayloadEvent) {
        match event {
            PayloadEvent::Ready => {
                let version = match &self.current {
                    Generation::Running(p) => Some(p.version().to_string()),
                    Generation::Down { .. } => None,
                };
                info!(version, "payload ready");
                match &mut self.mode {
                    Mode::Trial(trial) => trial.seen.ready = true,
                    Mode::Steady { .. } => self.finish_draining().await,
                }
            }
            PayloadEvent::Status(text) => info!(status = text, "payload status"),
            PayloadEvent::Stopping => info!("payload is stopping"),
            PayloadEvent::WatchdogExpired => {
                warn!("payload watchdog expired; restarting it");
                if let Generation::Running(payload) = self.take_current() {
                    payload.stop().await;
                }
                self.note_failure("the payload stopped sending WATCHDOG=1".to_string());
            }
            PayloadEvent::Exited(status) => {
                let version = match self.take_current() {
                    Generation::Running(p) => p.version().to_string(),
                    Generation::Down { .. } => String::new(),
                };
                warn!(version, %status, "payload exited");
                self.note_failure(format!("{version} exited ({status})"));
            }
        }
    }

    /// A payload failure: evidence against a trial (which is then judged), and a
    /// restart with backoff. A committed payload that keeps failing says so in
    /// `last_error` (kind `payload`), so that status and the fleet show it.
    fn note_failure(&mut self, what: String) {
        let now = self.now();
        let restart_at = self.restarts.failed(&what, now);
        match &mut self.mode {
            Mode::Trial(trial) => {
                trial.seen.failures += 1;
                trial.seen.last_failure = Some(what);
                if trial.seen.failures >= self.config.health.max_failures {
                    return; // judged right after this event: the trial fails
                }
            }
            Mode::Steady { .. } => {
                if let Some(streak) = self.restarts.report() {
                    let message = format!(
                        "{what}; restarted {} times since {}",
                        streak.count, streak.since
                    );
                    self.set_error(ErrorKind::Payload, message);
                }
            }
        }
        self.current = Generation::Down {
            restart_at: Some(restart_at),
        };
    }

    /// Schedules a restart of the active generation, with backoff, after `what`.
    pub(super) fn restart_after_failure(&mut self, what: &str) {
        let restart_at = self.restarts.failed(what, self.now());
        self.current = Generation::Down {
            restart_at: Some(restart_at),
        };
    }

    /// The payload has run long enough since its last failure: the streak is over.
    pub(super) fn on_stable(&mut self) {
        info!("the payload has recovered");
        self.restarts.reset();
        self.clear_error(ErrorKind::Payload);
    }

    /// Stops the generation left by an admin rollback (steady mode only: during a
    /// trial the trial decides when the previous generation stops).
    pub(super) async fn finish_draining(&mut self) {
        if let Mode::Steady { draining } = &mut self.mode
            && let Some((old, _)) = draining.take()
        {
            info!(
                version = old.version(),
                pid = old.pid(),
                "draining the previous generation"
            );
            old.stop().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn restart_backoff_crosses_an_in_place_exec() {
        let mut restarts = Restarts::new();
        restarts.failed("1.0.0 exited (exit status: 1)", SystemTime::now());
        restarts.failed("1.0.0 exited (exit status: 1)", SystemTime::now());
        let handed = restarts.handover_state();
        let back = Restarts::from_handover(&handed);
        assert_eq!(back.delay, restarts.delay);
        assert_eq!(back.report(), restarts.report());
        assert_eq!(back.report().map(|s| s.count), Some(2));
        // A hostile delay is bounded.
        let mut wild = handed;
        wild.delay_ms = u64::MAX;
        assert_eq!(Restarts::from_handover(&wild).delay, MAX_RESTART);
    }
}
