//! Who is admitted (SPEC §11): which manifest an agent is served, and the
//! admission rule — an agent's stable hash against the open wave's share of
//! the channel's known fleet.

use std::collections::{HashMap, HashSet};

use super::disk::sequence_of;
use super::{Channel, Inner, Rollout, RolloutState, Rollouts, Serve};
use crate::console::push::Release;
use crate::console::rollout::{AgentReport, Progress, Tally, admission_hash, classify, threshold};

impl Rollouts {
    /// Which manifest `agent` (its id, if it gave one) gets on `channel`,
    /// whose current manifest is `current`. Reads the channel's plan from
    /// disk when the current manifest changed (once per publish).
    pub fn serve(&self, channel: &str, agent: Option<&str>, current: &Release) -> Serve {
        // Decided for the sequence of the very bytes to be served, never for a
        // channel state another request may just have moved.
        let sequence = sequence_of(&current.bytes);
        let needs_plan = {
            let inner = self.lock();
            inner.channels.get(channel).is_none_or(|c| {
                c.rollout.as_ref().map(|r| r.plan.sequence) != Some(sequence)
                    && c.plan_checked.is_none_or(|checked| checked < sequence)
            })
        };
        if needs_plan {
            self.refresh_channel(channel, Some((current.etag.clone(), sequence)));
        }
        let mut inner = self.lock();
        let reports_sequence = agent
            .and_then(|a| inner.reports.get(a))
            .and_then(|r| r.sequence);
        let Inner {
            channels,
            unsaved_members,
            suspended,
            ..
        } = &mut *inner;
        let suspended = suspended.contains_key(channel);
        let entry = channels.entry(channel.to_string()).or_default();
        if let Some(agent) = agent
            && entry.meet(agent)
        {
            unsaved_members.push((channel.to_string(), agent.to_string()));
        }
        let Some(rollout) = entry
            .rollout
            .as_mut()
            .filter(|r| r.plan.sequence == sequence)
        else {
            return Serve::Current;
        };
        // Aborted, or on a suspended channel, only the agents that took the
        // release keep it (serving them the older one would change nothing:
        // they refuse it as not newer); everyone else waits.
        let took_it = reports_sequence.is_some_and(|s| s >= rollout.plan.sequence);
        let admitted = match rollout.status.state {
            RolloutState::Complete => true,
            RolloutState::Aborted => took_it,
            _ if suspended => took_it,
            _ => agent.is_some_and(|a| rollout.admits(a)),
        };
        if admitted {
            return Serve::Current;
        }
        match &rollout.previous {
            Some(previous) => Serve::Previous(previous.clone()),
            None => Serve::Missing,
        }
    }
}

impl Channel {
    /// Counts `agent` in the channel's known fleet (the agents a wave's
    /// share is taken of); true if it is new. An agent first met while the
    /// rollout is paused or halted is a latecomer: not admitted, whatever its
    /// hash, until the rollout is resumed.
    pub(super) fn meet(&mut self, agent: &str) -> bool {
        if !self.members.insert(agent.to_string()) {
            return false;
        }
        if let Some(rollout) = self.rollout.as_mut()
            && matches!(
                rollout.status.state,
                RolloutState::Paused | RolloutState::Halted
            )
        {
            rollout.latecomers.insert(agent.to_string());
        }
        true
    }

    /// Records `current` (manifest ETag and sequence) unless a newer one was
    /// seen: a request that read the file before a publish cannot move the
    /// channel back. Its plan has been looked for.
    pub(super) fn advance(&mut self, current: &Option<(String, u64)>) {
        let Some((_, sequence)) = current else { return };
        if self
            .current
            .as_ref()
            .is_none_or(|(_, known)| known <= sequence)
        {
            self.current.clone_from(current);
        }
        self.plan_checked = self.plan_checked.max(Some(*sequence));
    }

    /// The rollout, if it is for the current release.
    pub(super) fn active_rollout(&self) -> Option<&Rollout> {
        let current = self.current.as_ref().map(|(_, s)| *s);
        self.rollout
            .as_ref()
            .filter(|r| Some(r.plan.sequence) == current)
    }
}

impl Rollout {
    /// The admission hash of an agent (computed once).
    pub(super) fn hash(&mut self, agent: &str) -> u64 {
        let sequence = self.plan.sequence;
        *self
            .hashes
            .entry(agent.to_string())
            .or_insert_with(|| admission_hash(agent, sequence))
    }

    /// Whether the open wave admits `agent`.
    pub(super) fn admits(&mut self, agent: &str) -> bool {
        if self.latecomers.contains(agent) {
            return false;
        }
        if self.plan.waves.get(self.status.wave) == Some(&100) {
            return true;
        }
        let limit = self
            .status
            .thresholds
            .get(self.status.wave)
            .copied()
            .unwrap_or(0);
        self.hash(agent) < limit
    }

    /// The wave that admitted `hash` (None: not admitted).
    pub(super) fn wave_of(&self, hash: u64) -> Option<usize> {
        (0..=self.status.wave).find(|&k| {
            self.plan.waves.get(k) == Some(&100)
                || hash < self.status.thresholds.get(k).copied().unwrap_or(0)
        })
    }

    /// The admitted agents by progress, with their wave.
    pub(super) fn progress<'a>(
        &mut self,
        members: &'a HashSet<String>,
        reports: &HashMap<String, AgentReport>,
    ) -> Vec<(&'a str, usize, Progress)> {
        let mut out = Vec::new();
        for agent in members {
            if self.latecomers.contains(agent) {
                continue;
            }
            let hash = self.hash(agent);
            if let Some(wave) = self.wave_of(hash) {
                let progress = classify(reports.get(agent), &self.plan.version, self.plan.sequence);
                out.push((agent.as_str(), wave, progress));
            }
        }
        out
    }

    /// The admitted agents' tally.
    pub(super) fn tally(
        &mut self,
        members: &HashSet<String>,
        reports: &HashMap<String, AgentReport>,
    ) -> Tally {
        let mut tally = Tally::default();
        for (_, _, progress) in self.progress(members, reports) {
            tally.add(progress);
        }
        tally
    }

    /// The threshold of wave `wave` over the channel's agents now.
    pub(super) fn threshold_now(&mut self, wave: usize, members: &HashSet<String>) -> u64 {
        let mut hashes: Vec<u64> = members.iter().map(|a| self.hash(a)).collect();
        hashes.sort_unstable();
        let percent = self.plan.waves.get(wave).copied().unwrap_or(100);
        threshold(percent, &hashes)
    }
}
