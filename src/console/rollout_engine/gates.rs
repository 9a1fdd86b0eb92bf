//! One run of a rollout's gate ([`rollout::decide`]): tally the admitted
//! agents, then open the next wave, complete, halt (with the causes the
//! agents reported), or wait.

use std::collections::{HashMap, HashSet};

use tracing::{info, warn};

use super::{Event, MAX_CAUSE_CHARS, MAX_CAUSES, MAX_EVENTS, Rollout, RolloutState, rfc3339_ms};
use crate::console::rollout::{self, AgentReport, Gate, GateInput, Progress, Tally};

impl Rollout {
    /// Records an event (and logs it).
    pub(super) fn event(&mut self, channel: &str, now: u64, text: String) {
        info!(channel, sequence = self.plan.sequence, "rollout: {text}");
        self.status.events.push(Event {
            at: rfc3339_ms(now),
            at_ms: now,
            text,
        });
        if self.status.events.len() > MAX_EVENTS {
            let extra = self.status.events.len() - MAX_EVENTS;
            self.status.events.drain(..extra);
        }
        self.dirty = true;
    }

    /// One run of the gate; true if admissions changed. On a `suspended`
    /// channel a running rollout is held as if paused (no wave opens, no
    /// share grows), but failures still halt it.
    pub(super) fn evaluate(
        &mut self,
        channel: &str,
        members: &HashSet<String>,
        reports: &HashMap<String, AgentReport>,
        now: u64,
        suspended: bool,
    ) -> bool {
        let (state, held) = match self.status.state {
            RolloutState::Running if suspended => (RolloutState::Paused, "channel suspended"),
            state => (state, "paused"),
        };
        if !matches!(state, RolloutState::Running | RolloutState::Paused) {
            return false;
        }
        let mut changed = false;
        let wave = self.status.wave;
        if state == RolloutState::Running {
            // Agents met after the wave opened get their share too; a threshold never shrinks.
            let floor = self.threshold_now(wave, members);
            if let Some(t) = self.status.thresholds.get_mut(wave)
                && floor > *t
            {
                *t = floor;
                self.dirty = true;
                changed = true;
            }
        }
        let progress = self.progress(members, reports);
        let mut tally = Tally::default();
        let mut newly_committed = Vec::new();
        let mut failed: Vec<&str> = Vec::new();
        let mut silent: Vec<&str> = Vec::new();
        for (agent, _, p) in &progress {
            tally.add(*p);
            match p {
                Progress::Committed if !self.committed.contains(*agent) => {
                    newly_committed.push(agent.to_string());
                }
                Progress::Failed => failed.push(agent),
                Progress::Pending => silent.push(agent),
                _ => {}
            }
        }
        if !newly_committed.is_empty() {
            self.committed.extend(newly_committed);
            self.status.last_commit_ms = Some(now);
            self.dirty = true;
        }
        let gate = rollout::decide(&GateInput {
            plan: &self.plan,
            wave,
            tally,
            excused_failures: self.status.excused_failures,
            now_ms: now,
            wave_opened_ms: self.status.wave_opened_ms,
            last_commit_ms: self.status.last_commit_ms,
        });
        self.gate = Some(match (&gate, state) {
            (Gate::Wait(why), _) => why.clone(),
            (Gate::Open(next), RolloutState::Paused) => format!(
                "{held}: the open wave met its success threshold; wave {}% stays shut until resumed",
                self.plan.waves.get(*next).copied().unwrap_or(100)
            ),
            (Gate::Complete, RolloutState::Paused) => {
                format!("{held}: the last wave met its success threshold")
            }
            (Gate::Overdue(why), RolloutState::Paused) => format!("{held}: {why}"),
            (Gate::Open(_) | Gate::Complete | Gate::Halt(_) | Gate::Overdue(_), _) => String::new(),
        })
        .filter(|text| !text.is_empty());
        match (gate, state) {
            (Gate::Halt(reason), _) => {
                failed.sort_unstable();
                let causes: Vec<String> = failed
                    .iter()
                    .take(MAX_CAUSES)
                    .map(|a| format!("{a}: {}", cause_of(reports.get(*a))))
                    .collect();
                self.halt(
                    channel,
                    now,
                    format!("{reason}; causes: {}", causes.join("; ")),
                );
            }
            (Gate::Overdue(reason), RolloutState::Running) => {
                silent.sort_unstable();
                let names: Vec<&str> = silent.iter().take(MAX_CAUSES).copied().collect();
                self.halt(
                    channel,
                    now,
                    format!("{reason} (silent: {})", names.join(", ")),
                );
            }
            (Gate::Open(next), RolloutState::Running) => {
                let floor = self.threshold_now(next, members);
                let previous = self.status.thresholds.get(wave).copied().unwrap_or(0);
                if let Some(t) = self.status.thresholds.get_mut(next) {
                    *t = floor.max(previous);
                }
                self.status.wave = next;
                self.status.wave_opened_ms = now;
                let admitted = self.tally(members, reports).admitted;
                let percent = self.plan.waves.get(next).copied().unwrap_or(100);
                self.event(
                    channel,
                    now,
                    format!(
                        "wave {percent}% opened ({admitted} agents admitted; {} of {} committed before)",
                        tally.committed, tally.admitted
                    ),
                );
                changed = true;
            }
            (Gate::Complete, RolloutState::Running) => {
                self.status.state = RolloutState::Complete;
                self.event(
                    channel,
                    now,
                    format!(
                        "complete: {} of {} agents committed {}",
                        tally.committed, tally.admitted, self.plan.version
                    ),
                );
                changed = true;
            }
            _ => {}
        }
        changed
    }

    /// Stops admissions for `reason`: logged as a warning, kept for the
    /// page and `status`, and an event.
    pub(super) fn halt(&mut self, channel: &str, now: u64, reason: String) {
        warn!(
            channel,
            sequence = self.plan.sequence,
            reason,
            "rollout halted"
        );
        self.status.state = RolloutState::Halted;
        self.status.halt_reason = Some(reason.clone());
        self.event(channel, now, format!("halted: {reason}"));
    }
}

/// The cause an agent reported (its last error), on one line and at most
/// [`MAX_CAUSE_CHARS`] long.
fn cause_of(report: Option<&AgentReport>) -> String {
    let cause = report
        .and_then(|r| r.last_error.as_deref())
        .unwrap_or("no error reported");
    cause
        .chars()
        .take(MAX_CAUSE_CHARS)
        .collect::<String>()
        .replace(['\n', '\r'], " ")
}
