//! The rollout engine of the console (SPEC §11): which manifest an agent is
//! served while a release rolls out in waves, the agents of each channel and
//! their latest reports (in memory, from the fleet database and every new
//! report), and the task that runs the gate ([`rollout::decide`]) every
//! [`EVALUATE_PERIOD`] and persists each rollout's state.
//!
//! ```text
//! DATA/v1/channels/{c}/rollout.json    the plan (publish --waves), written before the release
//! DATA/v1/channels/{c}/rollback.json   the prepared signed rollback (+ .minisig), optional
//! DATA/rollouts/{c}.json               the console's state of the channel's rollout
//! ```
//!
//! A rollout is *active* while its plan's sequence is the channel's current
//! one. Then an admitted agent (its admission hash below the open wave's
//! threshold) gets the current manifest; every other agent gets the previous
//! release's manifest and signature from the channel's history, which it
//! already runs or accepts. Held requests wait on [`Rollouts::subscribe`] too,
//! so a wave that opens answers its newly admitted agents at once.
//!
//! **Architecture Invariant:** the engine never signs and never changes a
//! release; it only chooses which of two signed manifests an agent sees.
//!
//! The parts: `admission.rs` (who is served what, the admission rule),
//! `gates.rs` (one run of the gate per rollout), `actions.rs` (pause, resume,
//! abort), `view.rs` (the JSON), `disk.rs` (loading plans and releases,
//! saving the state), `suspend.rs` (suspended channels), `task.rs` (the
//! gate task).

mod actions;
mod admission;
mod disk;
mod gates;
mod suspend;
mod task;
mod view;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::push::Release;
use super::rollout::{AgentReport, Plan};
use super::store::FleetEntry;
use crate::clock;
use disk::report_of;

pub use actions::{Action, ActionError};

/// How often the gate runs: a wave opens, and a halt stops admissions, at most
/// this long after the report that decides it (SPEC §8: within 2 s).
pub const EVALUATE_PERIOD: Duration = Duration::from_millis(200);

/// How often the engine looks for plans and releases written into the data
/// folder by `publish --to` (a request for a changed manifest looks at once).
const REFRESH_PERIOD: Duration = Duration::from_secs(1);

/// Events kept per rollout (the oldest go first): enough for every wave,
/// halt and admin action of one release.
const MAX_EVENTS: usize = 100;

/// Agents named in a halt reason: the page and `status` show the causes of a
/// few; the count says how many there are.
const MAX_CAUSES: usize = 5;

/// The longest cause quoted from an agent's last error.
const MAX_CAUSE_CHARS: usize = 200;

/// The folder of the engine's state files, in the data folder.
const STATE_DIR: &str = "rollouts";

/// The suspended channels, in [`STATE_DIR`] (`{"stable": {"by", "at"}}`).
const SUSPENDED_FILE: &str = "suspended-channels.json";

/// Where a rollout stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RolloutState {
    /// Waves open as their predecessors succeed.
    Running,
    /// An admin paused it: nobody new is admitted.
    Paused,
    /// The gate stopped it (failures, or a wave overdue): nobody new is admitted.
    Halted,
    /// An admin aborted it: only agents that already took the release keep it.
    Aborted,
    /// The last wave succeeded: everyone gets the release.
    Complete,
}

impl RolloutState {
    /// The word of the JSON and of `status`.
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::Running => "running",
            RolloutState::Paused => "paused",
            RolloutState::Halted => "halted",
            RolloutState::Aborted => "aborted",
            RolloutState::Complete => "complete",
        }
    }
}

/// One line of a rollout's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// When (RFC 3339).
    pub at: String,
    /// When, in unix milliseconds (for measurements).
    pub at_ms: u64,
    /// What happened.
    pub text: String,
}

/// What the console keeps of a rollout (`DATA/rollouts/{channel}.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Status {
    /// The release's sequence (a state of another sequence is stale).
    sequence: u64,
    /// Where it stands.
    state: RolloutState,
    /// The open wave (index into the plan's waves).
    wave: usize,
    /// Each opened wave's admission threshold; only ever grows.
    thresholds: Vec<u64>,
    /// When the open wave opened (or the rollout was resumed), unix ms.
    wave_opened_ms: u64,
    /// When an admitted agent last committed, unix ms.
    last_commit_ms: Option<u64>,
    /// Failures waved through by `resume` after a halt.
    excused_failures: u32,
    /// Why it halted.
    halt_reason: Option<String>,
    /// The version non-admitted agents keep.
    previous_version: Option<String>,
    /// The previous release's sequence actually served (a rollout published
    /// over an unfinished one keeps that one's previous release).
    previous_sequence: Option<u64>,
    /// What happened, oldest first.
    events: Vec<Event>,
}

/// The previous release, served to agents not admitted.
#[derive(Debug, Clone)]
pub struct Previous {
    /// Its manifest.
    pub manifest: Arc<Release>,
    /// Its signature.
    pub signature: Arc<Release>,
}

/// A channel's rollout in memory.
struct Rollout {
    /// What `publish --waves` asked for.
    plan: Plan,
    /// Where it stands (persisted).
    status: Status,
    /// What non-admitted agents get (`None`: there was no earlier release: 404).
    previous: Option<Previous>,
    /// Admission hashes of the channel's agents, computed once each.
    hashes: HashMap<String, u64>,
    /// Agents seen committed (a new one moves `last_commit_ms`).
    committed: HashSet<String>,
    /// Agents first met while the rollout was paused or halted: not admitted
    /// (whatever their hash) until it is resumed.
    latecomers: HashSet<String>,
    /// What the gate said last, for `status` (e.g. what a paused rollout waits for).
    gate: Option<String>,
    /// The status changed since it was saved.
    dirty: bool,
}

/// What a new plan needs of the rollout it replaces.
struct Replaced {
    /// Its release's sequence.
    sequence: u64,
    /// Where it stood.
    state: RolloutState,
    /// The previous release it served.
    previous_sequence: Option<u64>,
    /// That release's version.
    previous_version: Option<String>,
}

/// One channel as the engine knows it.
#[derive(Default)]
struct Channel {
    /// ETag and sequence of the newest current manifest seen (never goes back).
    current: Option<(String, u64)>,
    /// The highest sequence whose plan was looked for.
    plan_checked: Option<u64>,
    /// The rollout of the newest plan read (active only for the current sequence).
    rollout: Option<Rollout>,
    /// The channel's known fleet: the agents that asked for its manifest with
    /// their identity, or whose latest report names it.
    members: HashSet<String>,
}

/// Everything behind the engine's lock.
#[derive(Default)]
struct Inner {
    /// By channel name.
    channels: HashMap<String, Channel>,
    /// Every agent's latest report.
    reports: HashMap<String, AgentReport>,
    /// Channel memberships not yet written to the database.
    unsaved_members: Vec<(String, String)>,
    /// The suspended channels (persisted in [`SUSPENDED_FILE`]).
    suspended: BTreeMap<String, Suspension>,
}

/// Why a channel admits nobody (`console channel suspend`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suspension {
    /// The admin who suspended it.
    pub by: String,
    /// When (RFC 3339).
    pub at: String,
}

impl Inner {
    /// Loads what the fleet database holds: the channels' agents met by
    /// their manifest requests, then every stored report (a report names the
    /// channel its agent follows now, so it comes last).
    fn load(&mut self, members: Vec<(String, String)>, reports: &[FleetEntry]) {
        for (channel, agent) in members {
            self.channels
                .entry(channel)
                .or_default()
                .members
                .insert(agent);
        }
        for entry in reports {
            self.know(entry);
        }
    }

    /// Keeps an agent's latest report, and counts the agent in the known
    /// fleet of the channel the report names (and in no other: it moved).
    ///
    /// The known fleet is every agent that reported a channel or asked for
    /// its manifest, not only those that asked since the release: a wave's
    /// share is taken of it, so a 1 % wave opened while some agents have not
    /// asked yet still admits 1 % of the fleet, not 1 % of the first askers
    /// plus whoever hashes below them. (The registry of enrolled agents names
    /// no channel: an agent enrolled that never reported is met at its first
    /// request.) A report is taken from whoever may ask for a manifest under
    /// the same id, so this lets nobody new move a threshold.
    fn know(&mut self, entry: &FleetEntry) {
        self.reports
            .insert(entry.agent_id.clone(), report_of(entry));
        let Some(channel) = entry
            .channel
            .as_deref()
            .filter(|c| crate::config::check_channel(c).is_ok())
        else {
            return;
        };
        for (name, other) in &mut self.channels {
            if name != channel {
                other.members.remove(&entry.agent_id);
            }
        }
        self.channels
            .entry(channel.to_string())
            .or_default()
            .meet(&entry.agent_id);
    }
}

/// Which manifest an agent gets.
#[derive(Debug, Clone)]
pub enum Serve {
    /// The channel's current release.
    Current,
    /// The previous release (not admitted).
    Previous(Previous),
    /// Nothing (not admitted, and there is no earlier release).
    Missing,
}

/// The rollouts of every channel; cheap to clone.
#[derive(Clone)]
pub struct Rollouts {
    /// The state.
    inner: Arc<Mutex<Inner>>,
    /// Bumped whenever who is admitted changes: held requests look again.
    changed: Arc<watch::Sender<u64>>,
    /// The console data folder.
    data: PathBuf,
}

/// Now, in unix milliseconds.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// RFC 3339 of unix milliseconds (whole seconds).
fn rfc3339_ms(ms: u64) -> String {
    clock::rfc3339(clock::from_unix(ms / 1000))
}

impl Rollouts {
    /// An engine over `data` with nothing loaded (tests; [`Rollouts::start`] loads).
    pub fn new(data: &Path) -> Rollouts {
        Rollouts {
            inner: Arc::default(),
            changed: Arc::new(watch::Sender::new(0)),
            data: data.to_path_buf(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A receiver that changes whenever who is admitted changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Notes an agent's new report (and the channel it names: see [`Inner::know`]).
    pub fn note_report(&self, entry: &FleetEntry) {
        self.lock().know(entry);
    }

    /// Runs the gate of every active rollout at `now`; true if admissions changed.
    pub fn evaluate(&self, now: u64) -> bool {
        let mut inner = self.lock();
        let Inner {
            channels,
            reports,
            suspended,
            ..
        } = &mut *inner;
        let mut changed = false;
        for (name, channel) in channels.iter_mut() {
            let Channel {
                current,
                rollout,
                members,
                ..
            } = channel;
            let Some(rollout) = rollout
                .as_mut()
                .filter(|r| current.as_ref().map(|(_, s)| *s) == Some(r.plan.sequence))
            else {
                continue;
            };
            let suspended = suspended.contains_key(name);
            changed |= rollout.evaluate(name, members, reports, now, suspended);
        }
        changed
    }
}

#[cfg(test)]
mod tests;
