//! The engine and the disk: loading the fleet, the channels' releases and
//! plans (read again when a manifest changes), and saving each rollout's
//! state (`DATA/rollouts/{channel}.json`).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use tracing::{info, warn};

use super::{
    Event, Previous, Replaced, Rollout, RolloutState, Rollouts, STATE_DIR, Status, now_ms,
    rfc3339_ms,
};
use crate::channel::{ChannelDir, MAX_SIGNATURE_BYTES, read_capped, signature_path};
use crate::console::push::{MAX_MANIFEST_BYTES, read_release};
use crate::console::rollout::{AgentReport, MAX_PLAN_BYTES, PLAN_FILE, Plan};
use crate::console::store::FleetEntry;

impl Rollouts {
    /// An engine over `data` with these reports and memberships and every
    /// channel's rollout read, never started (`console rollout status --data`).
    pub fn offline(
        data: &Path,
        reports: &[FleetEntry],
        members: Vec<(String, String)>,
    ) -> Rollouts {
        let engine = Rollouts::new(data);
        engine.lock().load(members, reports);
        engine.load_suspended();
        engine.refresh_all();
        engine
    }

    /// Re-reads every channel's current sequence and plan (blocking, off the async threads).
    pub(super) async fn refresh_all_blocking(&self) {
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
    pub(super) fn refresh_channel(&self, channel: &str, current: Option<(String, u64)>) {
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
    pub(super) fn load_rollout(
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
    pub(super) fn state_file(&self, channel: &str) -> PathBuf {
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

/// What the engine keeps of a stored report.
pub(super) fn report_of(entry: &FleetEntry) -> AgentReport {
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
pub(super) fn sequence_of(bytes: &[u8]) -> u64 {
    #[derive(Deserialize)]
    struct Sequence {
        #[serde(default)]
        sequence: u64,
    }
    serde_json::from_slice::<Sequence>(bytes).map_or(0, |s| s.sequence)
}

/// The `version` of a manifest's bytes.
pub(super) fn version_of(bytes: &[u8]) -> Option<String> {
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

pub(super) fn read_status(path: &Path) -> Option<Status> {
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
pub(super) fn read_previous(dir: &ChannelDir, sequence: u64) -> Option<Previous> {
    let manifest_path = dir.history_manifest(sequence);
    let manifest = read_release(&manifest_path, MAX_MANIFEST_BYTES).ok()??;
    let signature = read_release(&signature_path(&manifest_path), MAX_SIGNATURE_BYTES).ok()??;
    Some(Previous {
        manifest: Arc::new(manifest),
        signature: Arc::new(signature),
    })
}
