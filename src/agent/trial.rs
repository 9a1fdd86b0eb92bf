//! Swap, trial, commit, rollback: a staged bank is activated and its payload
//! started on probation; [`verdict::decide`](crate::agent::verdict::decide)
//! judges it after every event; the verdict commits it, or rolls back to the
//! other bank and marks it bad (the previous generation, if it never stopped
//! serving, simply stays).

use std::time::Duration;

use anyhow::anyhow;
use bank_layout::BankId;
use tokio::time::Instant;
use tracing::{error, info};

use crate::agent::core::{Agent, Generation, Mode};
use crate::agent::fetch;
use crate::agent::status::ErrorKind;
use crate::agent::verdict::{self, Evidence, Policy, Verdict};
use crate::clock;
use crate::release;
use crate::supervisor::Payload;

/// Timeout of one health probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Probes are never closer together than this.
const MIN_PROBE_INTERVAL: Duration = Duration::from_millis(100);

/// A new version on probation.
pub struct Trial {
    /// Its version.
    pub version: String,
    /// Its release sequence.
    pub sequence: u64,
    /// When it must have proven itself.
    pub deadline: Instant,
    /// When the next HTTP probe is due.
    pub next_probe: Instant,
    /// What it has shown so far.
    pub seen: Evidence,
    /// The previous generation, serving on the shared sockets until the verdict.
    pub draining: Option<Payload>,
}

impl Trial {
    /// When the trial must be looked at next without an event: the next probe,
    /// or (without probes) the end of the grace period.
    pub fn next_tick(&self, probes: bool) -> Instant {
        if probes {
            self.next_probe
        } else {
            self.deadline
        }
    }

    /// Stops the previous generation, if it still serves.
    pub async fn stop_draining(self) {
        if let Some(old) = self.draining {
            info!(
                version = old.version(),
                pid = old.pid(),
                "draining the previous generation"
            );
            old.stop().await;
        }
    }
}

impl Agent {
    /// Activates `bank` and starts its payload on probation. With sockets the old
    /// generation keeps serving until the verdict; without, it stops first.
    pub(super) async fn swap_to(&mut self, bank: BankId) {
        let Some(spec) = self.payload_spec(bank) else {
            return;
        };
        self.finish_draining().await;
        let mut old = match self.take_current() {
            Generation::Running(p) => Some(p),
            Generation::Down { .. } => None,
        };
        if self.listeners.is_empty()
            && let Some(p) = old.take()
        {
            p.stop().await;
        }
        let now = clock::unix(self.now());
        let activated = match self.root_mut() {
            Some(root) => root.activate(bank, now).map_err(anyhow::Error::from),
            None => Err(anyhow!("the root is with a staging thread")),
        };
        if let Err(e) = activated {
            error!(error = %e, "could not activate the new bank; staying on the old version");
            self.set_error(ErrorKind::Staging, format!("activating {bank}: {e}"));
            match old {
                Some(p) => self.current = Generation::Running(p),
                None => self.start_payload(),
            }
            return;
        }
        info!(version = spec.version, bank = %bank, "swapped; the new version is on trial");
        self.begin_trial(bank, old);
        self.start_payload();
    }

    /// Starts the probation of the version in `bank`; `draining` serves meanwhile.
    pub(super) fn begin_trial(&mut self, bank: BankId, draining: Option<Payload>) {
        let (version, sequence) = self
            .root()
            .and_then(|r| r.bank_record(bank))
            .map(|r| (r.version.clone(), r.sequence))
            .unwrap_or_default();
        let grace = self.config.health.grace;
        let now = Instant::now();
        self.mode = Mode::Trial(Trial {
            version,
            sequence,
            deadline: now + grace,
            next_probe: now + PROBE_TIMEOUT.min(grace / 10),
            seen: Evidence::default(),
            draining,
        });
        self.restarts.reset();
    }

    /// A probe is due (or the grace period is over): probe when configured.
    pub(super) async fn on_trial_tick(&mut self) {
        let Some(url) = self.config.health.http.clone() else {
            return; // the end of the grace period: judged right after
        };
        let interval = (self.config.health.grace / 10).max(MIN_PROBE_INTERVAL);
        let http = self.http.borrow().clone();
        let outcome = probe(&http, url.as_str()).await;
        if let Mode::Trial(trial) = &mut self.mode {
            if let Err(e) = &outcome {
                info!(version = trial.version, error = %e, "health probe failed");
            }
            trial.next_probe = Instant::now() + interval;
            trial.seen.probe = Some(outcome);
        }
    }

    /// Judges the trial, if one runs, and carries out the verdict.
    pub(super) async fn judge_trial(&mut self) {
        let Mode::Trial(trial) = &mut self.mode else {
            return;
        };
        trial.seen.running = matches!(self.current, Generation::Running(_));
        trial.seen.past_deadline = Instant::now() >= trial.deadline;
        let health = &self.config.health;
        let policy = Policy {
            max_failures: health.max_failures,
            notify: health.notify,
            probes: health.http.is_some(),
            grace: health.grace,
        };
        let verdict = verdict::decide(&policy, &trial.seen);
        trial.seen.probe = None;
        match verdict {
            Verdict::Wait => {}
            Verdict::Commit => self.commit().await,
            Verdict::RollBack(reason) => self.rollback_trial(&reason).await,
        }
    }

    /// Ends the trial: steady again, the trial handed back.
    fn end_trial(&mut self) -> Option<Trial> {
        match std::mem::replace(&mut self.mode, Mode::Steady { draining: None }) {
            Mode::Trial(trial) => Some(trial),
            steady @ Mode::Steady { .. } => {
                self.mode = steady;
                None
            }
        }
    }

    async fn commit(&mut self) {
        let Some(trial) = self.end_trial() else {
            return;
        };
        if let Some(Err(e)) = self.root_mut().map(|r| r.commit()) {
            error!(error = %e, "could not commit");
            trial.stop_draining().await;
            return;
        }
        info!(
            version = trial.version,
            sequence = trial.sequence,
            "committed"
        );
        self.clear_errors();
        trial.stop_draining().await;
        self.evaluate_latest();
    }

    /// The version on trial failed: back to the other bank, marked bad.
    async fn rollback_trial(&mut self, reason: &str) {
        let Some(trial) = self.end_trial() else {
            return;
        };
        error!(
            version = trial.version,
            sequence = trial.sequence,
            reason,
            "trial failed; rolling back"
        );
        if let Generation::Running(payload) = self.take_current() {
            payload.stop().await;
        }
        let message = format!("{} rolled back: {reason}", trial.version);
        let rolled_back = match self.root_mut() {
            Some(root) => release::roll_back(root, &message).map_err(anyhow::Error::from),
            None => Err(anyhow!("a release is being staged")),
        };
        match rolled_back {
            Ok(done) => {
                self.set_error(ErrorKind::Trial, message);
                self.restarts.reset();
                match trial.draining {
                    // It never stopped serving: it simply stays.
                    Some(old) => self.current = Generation::Running(old),
                    None => self.start_payload(),
                }
                info!(bank = %done.to, "rolled back");
            }
            Err(e) => self.keep_without_fallback(&trial, &message, &e),
        }
        self.evaluate_latest();
    }

    /// A trial failed with nothing to roll back to (a first install, or a previous
    /// version marked bad): going dark helps nobody. The version stays, committed
    /// and marked bad (any newer release replaces it), and runs with restart
    /// backoff; the error says why.
    fn keep_without_fallback(&mut self, trial: &Trial, message: &str, why: &anyhow::Error) {
        error!(version = trial.version, error = %why, "rollback failed; the version on trial keeps running");
        let kept = match self.root_mut() {
            Some(root) => root
                .commit()
                .and_then(|()| root.mark_bad(&trial.version, trial.sequence, message)),
            None => Ok(()),
        };
        if let Err(e) = kept {
            error!(error = %e, "could not record the failed trial");
        }
        self.set_error(
            ErrorKind::Trial,
            format!("{message}; not rolled back ({why:#}): it keeps running"),
        );
        self.restart_after_failure(message);
    }
}

/// One HTTP health probe: 2xx within the timeout.
async fn probe(http: &reqwest::Client, url: &str) -> Result<(), String> {
    let response = http
        .get(url)
        .timeout(PROBE_TIMEOUT)
        .send()
        .await
        .map_err(|e| format!("{url}: {}", fetch::describe(&e)))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("{url} answered {}", response.status()))
    }
}
