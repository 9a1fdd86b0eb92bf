//! The JSON of the rollouts (`GET /v1/rollouts`, `console rollout status`),
//! built from the engine's state.

use std::collections::{HashMap, HashSet};

use super::{Rollout, RolloutState, Rollouts};
use crate::console::rollout::{AgentReport, Progress, admission_hash, classify};
use crate::console::rollout_view::{RolloutView, RolloutsView, WaveView};

impl Rollouts {
    /// The JSON of every rollout (`GET /v1/rollouts`).
    pub fn view(&self) -> RolloutsView {
        let inner = self.lock();
        let mut rollouts: Vec<RolloutView> = inner
            .channels
            .iter()
            .filter_map(|(name, channel)| {
                let rollout = channel.rollout.as_ref()?;
                let active =
                    channel.current.as_ref().map(|(_, s)| *s) == Some(rollout.plan.sequence);
                let mut view = rollout.view(name, active, &channel.members, &inner.reports);
                view.suspended = inner.suspended.get(name).cloned();
                Some(view)
            })
            .collect();
        rollouts.sort_by(|a, b| a.channel.cmp(&b.channel));
        RolloutsView {
            rollouts,
            suspended: inner.suspended.clone(),
        }
    }

    /// One channel's rollout view, if it has one.
    pub fn view_of(&self, channel: &str) -> Option<RolloutView> {
        self.view()
            .rollouts
            .into_iter()
            .find(|r| r.channel == channel)
    }
}

impl Rollout {
    /// The JSON of this rollout.
    pub(super) fn view(
        &self,
        channel: &str,
        active: bool,
        members: &HashSet<String>,
        reports: &HashMap<String, AgentReport>,
    ) -> RolloutView {
        let mut waves: Vec<WaveView> = self
            .plan
            .waves
            .iter()
            .enumerate()
            .map(|(k, &percent)| WaveView {
                percent,
                state: match (self.status.state, k.cmp(&self.status.wave)) {
                    (_, std::cmp::Ordering::Less) | (RolloutState::Complete, _) => "done",
                    (_, std::cmp::Ordering::Equal) => "open",
                    (_, std::cmp::Ordering::Greater) => "waiting",
                }
                .to_string(),
                ..WaveView::default()
            })
            .collect();
        let mut not_admitted = 0;
        for agent in members {
            if self.latecomers.contains(agent) {
                not_admitted += 1;
                continue;
            }
            let hash = self
                .hashes
                .get(agent)
                .copied()
                .unwrap_or_else(|| admission_hash(agent, self.plan.sequence));
            let Some(k) = self.wave_of(hash) else {
                not_admitted += 1;
                continue;
            };
            let Some(wave) = waves.get_mut(k) else {
                continue;
            };
            wave.admitted += 1;
            match classify(reports.get(agent), &self.plan.version, self.plan.sequence) {
                Progress::Committed => wave.committed += 1,
                Progress::Trial => wave.trial += 1,
                Progress::Staging => wave.staging += 1,
                Progress::Failed => wave.failed += 1,
                Progress::Pending => wave.pending += 1,
            }
        }
        RolloutView {
            channel: channel.to_string(),
            sequence: self.plan.sequence,
            version: self.plan.version.clone(),
            previous_version: self.status.previous_version.clone(),
            state: self.status.state.as_str().to_string(),
            halt_reason: self.status.halt_reason.clone(),
            suspended: None,
            success: self.plan.success,
            halt_on: self.plan.halt_on,
            soak_secs: self.plan.soak_secs,
            report_deadline_secs: self.plan.report_deadline_secs,
            active,
            gate: self.gate.clone(),
            wave: self.status.wave,
            agents: u32::try_from(members.len()).unwrap_or(u32::MAX),
            not_admitted,
            waves,
            events: self.status.events.clone(),
        }
    }
}
