//! The JSON of rollouts (`GET /v1/rollouts`, `console rollout status --json`):
//! a contract the fleet page is built against, so names only ever get added.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::rollout_engine::{Event, Suspension};

/// `GET /v1/rollouts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutsView {
    /// One per channel with a rollout, by channel name.
    pub rollouts: Vec<RolloutView>,
    /// The suspended channels (`console channel suspend`), with or without a rollout.
    #[serde(default)]
    pub suspended: BTreeMap<String, Suspension>,
}

/// One channel's rollout, as the page and `console rollout status` show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutView {
    /// The channel.
    pub channel: String,
    /// The release's sequence.
    pub sequence: u64,
    /// The release's version.
    pub version: String,
    /// The version non-admitted agents keep.
    pub previous_version: Option<String>,
    /// `running`, `paused`, `halted`, `aborted` or `complete`.
    pub state: String,
    /// Why it halted, with the causes the agents reported.
    pub halt_reason: Option<String>,
    /// Set while its channel is suspended: nobody new is admitted.
    #[serde(default)]
    pub suspended: Option<Suspension>,
    /// The success threshold (0-1).
    pub success: f64,
    /// The halt threshold (0-1).
    pub halt_on: f64,
    /// The soak after the last commit before a wave opens.
    pub soak_secs: u64,
    /// How long a wave's agents have to report.
    pub report_deadline_secs: u64,
    /// Whether this is the channel's current release (false once another is published).
    pub active: bool,
    /// What the gate waits for, e.g. `wave 10%: 3 of 5 admitted agents committed (need 95%)`.
    pub gate: Option<String>,
    /// The open wave (index into `waves`).
    pub wave: usize,
    /// Agents known on the channel.
    pub agents: u32,
    /// Of them, not admitted yet.
    pub not_admitted: u32,
    /// Each wave's agents (those it admitted) by progress.
    pub waves: Vec<WaveView>,
    /// What happened, oldest first.
    pub events: Vec<Event>,
}

/// One wave.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WaveView {
    /// Cumulative share of the fleet.
    pub percent: u8,
    /// `open`, `waiting` or `done`.
    pub state: String,
    /// Agents this wave admitted.
    pub admitted: u32,
    /// Of them, committed on the release.
    pub committed: u32,
    /// On trial.
    pub trial: u32,
    /// Scheduled or staging.
    pub staging: u32,
    /// Rolled back or failing.
    pub failed: u32,
    /// Not reported yet.
    pub pending: u32,
}
