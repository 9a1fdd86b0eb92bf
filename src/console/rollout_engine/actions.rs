//! The admins' actions on a rollout: pause, resume, abort (SPEC §11), and
//! the events they leave.

use super::{Inner, RolloutState, Rollouts, now_ms};
use crate::console::rollout_view::RolloutView;

/// Why an admin action was refused.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    /// No rollout on that channel.
    #[error("channel {0} has no rollout (publish with --waves)")]
    NoRollout(String),
    /// The rollout is not in a state the action applies to.
    #[error("the rollout of {channel} is {state}; {action} applies to {applies}")]
    WrongState {
        /// The channel.
        channel: String,
        /// Its state.
        state: &'static str,
        /// The action.
        action: &'static str,
        /// The states it applies to.
        applies: &'static str,
    },
    /// A channel suspension that cannot be done (already, not, or not saved).
    #[error("{0}")]
    Suspension(String),
}

/// An admin action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Stop admitting.
    Pause,
    /// Admit again (after a pause or a halt).
    Resume,
    /// Stop, and give the previous release to everyone who has not taken this one.
    Abort,
}

impl Action {
    /// Parses the last segment of `/v1/rollouts/{channel}/{action}`.
    pub fn parse(text: &str) -> Option<Action> {
        match text {
            "pause" => Some(Action::Pause),
            "resume" => Some(Action::Resume),
            "abort" => Some(Action::Abort),
            _ => None,
        }
    }

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Abort => "abort",
        }
    }
}

impl Rollouts {
    /// Pauses, resumes or aborts the rollout of `channel`; `by` names the admin.
    pub fn act(&self, channel: &str, action: Action, by: &str) -> Result<RolloutView, ActionError> {
        let now = now_ms();
        {
            let mut inner = self.lock();
            let Inner {
                channels, reports, ..
            } = &mut *inner;
            let entry = channels
                .get_mut(channel)
                .filter(|c| c.active_rollout().is_some())
                .ok_or_else(|| ActionError::NoRollout(channel.to_string()))?;
            let members = entry.members.clone();
            let Some(rollout) = entry.rollout.as_mut() else {
                return Err(ActionError::NoRollout(channel.to_string()));
            };
            let state = rollout.status.state;
            let wrong = |applies| ActionError::WrongState {
                channel: channel.to_string(),
                state: state.as_str(),
                action: action.as_str(),
                applies,
            };
            let next = match (action, state) {
                (Action::Pause, RolloutState::Running) => RolloutState::Paused,
                (Action::Pause, _) => return Err(wrong("a running rollout")),
                (Action::Resume, RolloutState::Paused | RolloutState::Halted) => {
                    RolloutState::Running
                }
                (Action::Resume, _) => return Err(wrong("a paused or halted rollout")),
                (
                    Action::Abort,
                    RolloutState::Running | RolloutState::Paused | RolloutState::Halted,
                ) => RolloutState::Aborted,
                (Action::Abort, _) => return Err(wrong("an unfinished rollout")),
            };
            if action == Action::Resume && state == RolloutState::Halted {
                // The failures that halted it are the admin's call now; new ones count.
                let tally = rollout.tally(&members, reports);
                rollout.status.excused_failures = tally.failed;
                rollout.status.wave_opened_ms = now;
                rollout.status.halt_reason = None;
            }
            if next == RolloutState::Running {
                rollout.latecomers.clear();
            }
            rollout.status.state = next;
            rollout.event(channel, now, format!("{} by {by}", past_tense(action)));
        }
        self.bump();
        self.view_of(channel)
            .ok_or_else(|| ActionError::NoRollout(channel.to_string()))
    }

    /// Records an event on the channel's rollout (e.g. a published rollback).
    pub fn note(&self, channel: &str, text: String) {
        let mut inner = self.lock();
        if let Some(rollout) = inner
            .channels
            .get_mut(channel)
            .and_then(|c| c.rollout.as_mut())
        {
            rollout.event(channel, now_ms(), text);
        }
    }
}

fn past_tense(action: Action) -> &'static str {
    match action {
        Action::Pause => "paused",
        Action::Resume => "resumed",
        Action::Abort => "aborted",
    }
}
