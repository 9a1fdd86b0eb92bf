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

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::push::{MAX_MANIFEST_BYTES, Release, read_release};
use super::rollout::{
    self, AgentReport, Gate, GateInput, MAX_PLAN_BYTES, PLAN_FILE, Plan, Progress, Tally,
    admission_hash, classify, threshold,
};
use super::rollout_view::{RolloutView, RolloutsView, WaveView};
use super::store::{FleetEntry, Store};
use crate::channel::{ChannelDir, MAX_SIGNATURE_BYTES, read_capped, signature_path};
use crate::clock;

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
    /// The agents that asked for this channel's manifest with their identity.
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

    /// An engine over `data` with these reports and memberships and every
    /// channel's rollout read, never started (`console rollout status --data`).
    pub fn offline(
        data: &Path,
        reports: &[FleetEntry],
        members: Vec<(String, String)>,
    ) -> Rollouts {
        let engine = Rollouts::new(data);
        {
            let mut inner = engine.lock();
            for entry in reports {
                inner
                    .reports
                    .insert(entry.agent_id.clone(), report_of(entry));
            }
            for (channel, agent) in members {
                inner
                    .channels
                    .entry(channel)
                    .or_default()
                    .members
                    .insert(agent);
            }
        }
        engine.refresh_all();
        engine
    }

    /// Loads the fleet's reports and memberships, every channel's rollout,
    /// and starts the gate task; it ends when `stop` is cancelled.
    pub async fn start(data: &Path, store: Store, stop: CancellationToken) -> Rollouts {
        let engine = Rollouts::new(data);
        match store.list().await {
            Ok(entries) => {
                let mut inner = engine.lock();
                for entry in &entries {
                    inner
                        .reports
                        .insert(entry.agent_id.clone(), report_of(entry));
                }
            }
            Err(e) => warn!(error = %e, "cannot read the fleet for rollouts"),
        }
        match store.members().await {
            Ok(members) => {
                let mut inner = engine.lock();
                for (channel, agent) in members {
                    inner
                        .channels
                        .entry(channel)
                        .or_default()
                        .members
                        .insert(agent);
                }
            }
            Err(e) => warn!(error = %e, "cannot read the channels' agents"),
        }
        engine.refresh_all_blocking().await;
        let task = engine.clone();
        tokio::spawn(async move { task.run(store, stop).await });
        engine
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
            ..
        } = &mut *inner;
        let entry = channels.entry(channel.to_string()).or_default();
        let newcomer = agent.filter(|a| !entry.members.contains(*a));
        if let Some(agent) = newcomer {
            entry.members.insert(agent.to_string());
            unsaved_members.push((channel.to_string(), agent.to_string()));
        }
        let Some(rollout) = entry
            .rollout
            .as_mut()
            .filter(|r| r.plan.sequence == sequence)
        else {
            return Serve::Current;
        };
        if let Some(agent) = newcomer
            && matches!(
                rollout.status.state,
                RolloutState::Paused | RolloutState::Halted
            )
        {
            rollout.latecomers.insert(agent.to_string());
        }
        let admitted = match rollout.status.state {
            RolloutState::Complete => true,
            RolloutState::Aborted => reports_sequence.is_some_and(|s| s >= rollout.plan.sequence),
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

    /// Notes an agent's new report.
    pub fn note_report(&self, entry: &FleetEntry) {
        let mut inner = self.lock();
        inner
            .reports
            .insert(entry.agent_id.clone(), report_of(entry));
    }

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
                Some(rollout.view(name, active, &channel.members, &inner.reports))
            })
            .collect();
        rollouts.sort_by(|a, b| a.channel.cmp(&b.channel));
        RolloutsView { rollouts }
    }

    /// One channel's rollout view, if it has one.
    pub fn view_of(&self, channel: &str) -> Option<RolloutView> {
        self.view()
            .rollouts
            .into_iter()
            .find(|r| r.channel == channel)
    }

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

    /// The gate task: evaluate, persist, until `stop`.
    async fn run(self, store: Store, stop: CancellationToken) {
        let mut tick = tokio::time::interval(EVALUATE_PERIOD);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let refresh_every = (REFRESH_PERIOD.as_millis() / EVALUATE_PERIOD.as_millis()).max(1);
        let mut ticks: u128 = 0;
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            ticks += 1;
            if ticks.is_multiple_of(refresh_every) {
                self.refresh_all_blocking().await;
            }
            if self.evaluate(now_ms()) {
                self.bump();
            }
            let members = std::mem::take(&mut self.lock().unsaved_members);
            if !members.is_empty()
                && let Err(e) = store.add_members(members).await
            {
                warn!(error = %e, "cannot store the channels' agents");
            }
            let this = self.clone();
            let _ = tokio::task::spawn_blocking(move || this.save_dirty_blocking()).await;
        }
        self.save_dirty_blocking();
        debug!("rollout engine stopped");
    }

    /// Runs the gate of every active rollout at `now`; true if admissions changed.
    pub fn evaluate(&self, now: u64) -> bool {
        let mut inner = self.lock();
        let Inner {
            channels, reports, ..
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
            changed |= rollout.evaluate(name, members, reports, now);
        }
        changed
    }

    /// Re-reads every channel's current sequence and plan (blocking, off the async threads).
    async fn refresh_all_blocking(&self) {
        let this = self.clone();
        let _ = tokio::task::spawn_blocking(move || this.refresh_all()).await;
    }

    /// Re-reads every channel of the data folder.
    pub fn refresh_all(&self) {
        let channels = self.data.join("v1").join("channels");
        let Ok(entries) = std::fs::read_dir(&channels) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if crate::config::check_channel(&name).is_err() {
                continue;
            }
            let dir = ChannelDir::new(&self.data, &name);
            let current = match read_release(&dir.manifest(), MAX_MANIFEST_BYTES) {
                Ok(Some(release)) => Some((release.etag, sequence_of(&release.bytes))),
                _ => None,
            };
            self.refresh_channel(&name, current);
        }
    }

    /// Notes the channel's current manifest and loads the plan for its
    /// sequence when the one in memory is for another (blocking file reads).
    /// The new current manifest is recorded only together with its plan:
    /// until then, requests that see it find the channel stale and read the
    /// plan too, so none serves a new release before its plan counts.
    fn refresh_channel(&self, channel: &str, current: Option<(String, u64)>) {
        let sequence = current.as_ref().map(|(_, s)| *s);
        let replaced = {
            let mut inner = self.lock();
            let entry = inner.channels.entry(channel.to_string()).or_default();
            let known = entry.current.as_ref().map(|(_, s)| *s);
            let has_plan = entry
                .rollout
                .as_ref()
                .is_some_and(|r| Some(r.plan.sequence) == sequence);
            if has_plan || (known >= sequence && entry.rollout.is_some()) {
                entry.advance(&current);
                return;
            }
            entry.rollout.as_ref().map(|r| Replaced {
                sequence: r.plan.sequence,
                state: r.status.state,
                previous_sequence: r.status.previous_sequence,
                previous_version: r.status.previous_version.clone(),
            })
        };
        let dir = ChannelDir::new(&self.data, channel);
        let plan = read_plan(&dir);
        let mut inner = self.lock();
        let entry = inner.channels.entry(channel.to_string()).or_default();
        let Some(plan) = plan else {
            entry.advance(&current);
            return;
        };
        // A plan for a release not (yet, or no longer) current is kept only
        // when nothing else is loaded, for `status`; one loaded meanwhile stays.
        let superfluous = entry
            .rollout
            .as_ref()
            .is_some_and(|r| r.plan.sequence == plan.sequence || Some(plan.sequence) != sequence);
        if superfluous {
            entry.advance(&current);
            return;
        }
        drop(inner);
        let mut rollout = self.load_rollout(channel, &dir, plan, replaced);
        let mut inner = self.lock();
        let entry = inner.channels.entry(channel.to_string()).or_default();
        entry.advance(&current);
        if entry
            .rollout
            .as_ref()
            .is_some_and(|r| r.plan.sequence == rollout.plan.sequence)
        {
            return; // another request loaded it meanwhile
        }
        if rollout.status.state == RolloutState::Running
            && rollout.status.thresholds.first() == Some(&0)
        {
            // The first wave opens with the plan: its agents are admitted from the first request.
            let first = rollout.threshold_now(0, &entry.members);
            if let Some(t) = rollout.status.thresholds.first_mut() {
                *t = first;
            }
        }
        info!(
            channel,
            sequence = rollout.plan.sequence,
            version = %rollout.plan.version,
            state = rollout.status.state.as_str(),
            "rollout loaded"
        );
        entry.rollout = Some(rollout);
        drop(inner);
        self.bump();
    }

    /// A rollout for `plan`: its saved state if any, else a new one whose first
    /// wave opens now. `replaced` is the rollout it replaces: if that one never
    /// finished, its previous release stays the one non-admitted agents get.
    fn load_rollout(
        &self,
        channel: &str,
        dir: &ChannelDir,
        plan: Plan,
        replaced: Option<Replaced>,
    ) -> Rollout {
        let saved = read_status(&self.state_file(channel)).filter(|s| s.sequence == plan.sequence);
        let now = now_ms();
        let status = match saved {
            Some(status) => status,
            None => {
                let (previous_sequence, previous_version) = match &replaced {
                    Some(old)
                        if Some(old.sequence) == plan.previous_sequence
                            && old.state != RolloutState::Complete =>
                    {
                        (old.previous_sequence, old.previous_version.clone())
                    }
                    _ => (plan.previous_sequence, None),
                };
                let mut status = Status {
                    sequence: plan.sequence,
                    state: RolloutState::Running,
                    wave: 0,
                    thresholds: vec![0; plan.waves.len()],
                    wave_opened_ms: now,
                    last_commit_ms: None,
                    excused_failures: 0,
                    halt_reason: None,
                    previous_version,
                    previous_sequence,
                    events: Vec::new(),
                };
                let first = plan.waves.first().copied().unwrap_or(100);
                let text = format!(
                    "rollout of {} (sequence {}) started: wave {first}% open",
                    plan.version, plan.sequence
                );
                info!(channel, "{text}");
                status.events.push(Event {
                    at: rfc3339_ms(now),
                    at_ms: now,
                    text,
                });
                status
            }
        };
        let previous = status
            .previous_sequence
            .and_then(|seq| read_previous(dir, seq));
        let mut status = status;
        if status.previous_version.is_none()
            && let Some(previous) = &previous
        {
            status.previous_version = version_of(&previous.manifest.bytes);
        }
        Rollout {
            plan,
            status,
            previous,
            hashes: HashMap::new(),
            committed: HashSet::new(),
            latecomers: HashSet::new(),
            gate: None,
            dirty: true,
        }
    }

    /// `DATA/rollouts/{channel}.json`.
    fn state_file(&self, channel: &str) -> PathBuf {
        self.data.join(STATE_DIR).join(format!("{channel}.json"))
    }

    /// Writes the state of every rollout that changed.
    pub fn save_dirty_blocking(&self) {
        let dirty: Vec<(String, Status)> = {
            let mut inner = self.lock();
            inner
                .channels
                .iter_mut()
                .filter_map(|(name, c)| {
                    let rollout = c.rollout.as_mut().filter(|r| r.dirty)?;
                    rollout.dirty = false;
                    Some((name.clone(), rollout.status.clone()))
                })
                .collect()
        };
        for (channel, status) in dirty {
            let path = self.state_file(&channel);
            let written = std::fs::create_dir_all(self.data.join(STATE_DIR))
                .map_err(anyhow::Error::from)
                .and_then(|()| Ok(serde_json::to_vec_pretty(&status)?))
                .and_then(|bytes| Ok(bank_layout::write_atomic(&path, &bytes)?));
            if let Err(e) = written {
                warn!(path = %path.display(), error = %e, "cannot save the rollout state");
            }
        }
    }
}

impl Channel {
    /// Records `current` (manifest ETag and sequence) unless a newer one was
    /// seen: a request that read the file before a publish cannot move the
    /// channel back. Its plan has been looked for.
    fn advance(&mut self, current: &Option<(String, u64)>) {
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
    fn active_rollout(&self) -> Option<&Rollout> {
        let current = self.current.as_ref().map(|(_, s)| *s);
        self.rollout
            .as_ref()
            .filter(|r| Some(r.plan.sequence) == current)
    }
}

impl Rollout {
    /// The admission hash of an agent (computed once).
    fn hash(&mut self, agent: &str) -> u64 {
        let sequence = self.plan.sequence;
        *self
            .hashes
            .entry(agent.to_string())
            .or_insert_with(|| admission_hash(agent, sequence))
    }

    /// Whether the open wave admits `agent`.
    fn admits(&mut self, agent: &str) -> bool {
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
    fn wave_of(&self, hash: u64) -> Option<usize> {
        (0..=self.status.wave).find(|&k| {
            self.plan.waves.get(k) == Some(&100)
                || hash < self.status.thresholds.get(k).copied().unwrap_or(0)
        })
    }

    /// The admitted agents by progress, with their wave.
    fn progress<'a>(
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
    fn tally(
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

    /// Records an event (and logs it).
    fn event(&mut self, channel: &str, now: u64, text: String) {
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

    /// The threshold of wave `wave` over the channel's agents now.
    fn threshold_now(&mut self, wave: usize, members: &HashSet<String>) -> u64 {
        let mut hashes: Vec<u64> = members.iter().map(|a| self.hash(a)).collect();
        hashes.sort_unstable();
        let percent = self.plan.waves.get(wave).copied().unwrap_or(100);
        threshold(percent, &hashes)
    }

    /// One run of the gate; true if admissions changed.
    fn evaluate(
        &mut self,
        channel: &str,
        members: &HashSet<String>,
        reports: &HashMap<String, AgentReport>,
        now: u64,
    ) -> bool {
        let state = self.status.state;
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
                "paused: the open wave met its success threshold; wave {}% stays shut until resumed",
                self.plan.waves.get(*next).copied().unwrap_or(100)
            ),
            (Gate::Complete, RolloutState::Paused) => {
                "paused: the last wave met its success threshold".to_string()
            }
            (Gate::Overdue(why), RolloutState::Paused) => format!("paused: {why}"),
            (Gate::Open(_) | Gate::Complete | Gate::Halt(_) | Gate::Overdue(_), _) => String::new(),
        })
        .filter(|text| !text.is_empty());
        match (gate, state) {
            (Gate::Halt(reason), _) => {
                failed.sort_unstable();
                let causes: Vec<String> = failed
                    .iter()
                    .take(MAX_CAUSES)
                    .map(|a| {
                        let cause = reports
                            .get(*a)
                            .and_then(|r| r.last_error.clone())
                            .unwrap_or_else(|| "no error reported".into());
                        let cause: String = cause.chars().take(MAX_CAUSE_CHARS).collect();
                        format!("{a}: {}", cause.replace(['\n', '\r'], " "))
                    })
                    .collect();
                let reason = format!("{reason}; causes: {}", causes.join("; "));
                warn!(
                    channel,
                    sequence = self.plan.sequence,
                    reason,
                    "rollout halted"
                );
                self.halt(channel, now, reason);
            }
            (Gate::Overdue(reason), RolloutState::Running) => {
                silent.sort_unstable();
                let names: Vec<&str> = silent.iter().take(MAX_CAUSES).copied().collect();
                let reason = format!("{reason} (silent: {})", names.join(", "));
                warn!(
                    channel,
                    sequence = self.plan.sequence,
                    reason,
                    "rollout halted"
                );
                self.halt(channel, now, reason);
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

    fn halt(&mut self, channel: &str, now: u64, reason: String) {
        self.status.state = RolloutState::Halted;
        self.status.halt_reason = Some(reason.clone());
        self.event(channel, now, format!("halted: {reason}"));
    }

    /// The JSON of this rollout.
    fn view(
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

fn past_tense(action: Action) -> &'static str {
    match action {
        Action::Pause => "paused",
        Action::Resume => "resumed",
        Action::Abort => "aborted",
    }
}

/// What the engine keeps of a stored report.
fn report_of(entry: &FleetEntry) -> AgentReport {
    let pending = entry.pending.as_ref();
    AgentReport {
        version: entry.version.clone(),
        phase: entry.phase.clone(),
        sequence: entry.sequence,
        pending_version: pending
            .and_then(|p| p.get("version"))
            .and_then(|v| v.as_str())
            .map(String::from),
        pending_sequence: pending
            .and_then(|p| p.get("sequence"))
            .and_then(|v| v.as_u64()),
        last_error_kind: entry.last_error_kind.clone(),
        last_error: entry.last_error.clone(),
    }
}

/// The `sequence` of a manifest's bytes (0 if it has none).
fn sequence_of(bytes: &[u8]) -> u64 {
    #[derive(Deserialize)]
    struct Sequence {
        #[serde(default)]
        sequence: u64,
    }
    serde_json::from_slice::<Sequence>(bytes).map_or(0, |s| s.sequence)
}

/// The `version` of a manifest's bytes.
fn version_of(bytes: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Version {
        version: String,
    }
    serde_json::from_slice::<Version>(bytes)
        .ok()
        .map(|v| v.version)
}

/// The channel's plan, if it has a readable one.
pub fn read_plan(dir: &ChannelDir) -> Option<Plan> {
    let path = dir.dir().join(PLAN_FILE);
    let bytes = match read_capped(&path, MAX_PLAN_BYTES) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            warn!(path = %path.display(), error = %e, "cannot read the rollout plan");
            return None;
        }
    };
    match serde_json::from_slice::<Plan>(&bytes)
        .map_err(|e| e.to_string())
        .and_then(|p| p.validate().map(|()| p))
    {
        Ok(plan) => Some(plan),
        Err(e) => {
            warn!(path = %path.display(), error = %e, "rollout plan refused");
            None
        }
    }
}

fn read_status(path: &Path) -> Option<Status> {
    let bytes = std::fs::read(path).ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(status) => Some(status),
        Err(e) => {
            warn!(path = %path.display(), error = %e, "rollout state unreadable; starting it again");
            None
        }
    }
}

/// The history entry `sequence` (manifest and signature) as served.
fn read_previous(dir: &ChannelDir, sequence: u64) -> Option<Previous> {
    let manifest_path = dir.history_manifest(sequence);
    let manifest = read_release(&manifest_path, MAX_MANIFEST_BYTES).ok()??;
    let signature = read_release(&signature_path(&manifest_path), MAX_SIGNATURE_BYTES).ok()??;
    Some(Previous {
        manifest: Arc::new(manifest),
        signature: Arc::new(signature),
    })
}

#[cfg(test)]
#[path = "rollout_engine_tests.rs"]
mod tests;
