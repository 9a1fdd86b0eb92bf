//! Opening `ROOT/agent`: the repairs it reports ([`AgentRecovery`]) and
//! [`AgentSlots::open`], which makes them (folder repairs, versions put in line with the
//! records, an unfinished attempt resolved, a crash loop ended).

use std::fmt;

use super::repair::{recover_slot, remove_leftovers};
use super::trial::resolve_attempt;
use super::{
    AGENT_DIR, AGENT_STATE_FILE, AgentBuild, AgentSlots, AgentState, MAX_ATTEMPT_TRIES,
    MAX_LAUNCH_FAILURES, SlotId,
};
use crate::root::make_bank_dir;
use crate::state::add_bad;
use crate::{LayoutError, Root};

/// One repair made by [`AgentSlots::open`]. `Display` is one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentRecovery {
    /// A leftover of an interrupted staging or hand-over was removed.
    LeftoverRemoved {
        /// Its name inside `ROOT/agent`.
        name: String,
    },
    /// A slot's old content was put back (the staged build never replaced it).
    SlotRestored {
        /// The slot.
        slot: SlotId,
    },
    /// A slot held files but no valid build: emptied.
    SlotWiped {
        /// The slot.
        slot: SlotId,
        /// What was wrong.
        reason: String,
    },
    /// `state.json` listed another version for a slot than its record; corrected.
    VersionCorrected {
        /// The slot.
        slot: SlotId,
        /// What `state.json` listed.
        listed: Option<String>,
        /// What the record says.
        actual: Option<String>,
    },
    /// The active slot holds no build: the installed binary runs.
    ActiveMissing {
        /// The slot that was active.
        slot: SlotId,
    },
    /// An unfinished self-update attempt was resolved (the previous build stays).
    AttemptResolved {
        /// The version that was on trial.
        version: String,
        /// Whether it was marked bad (else it is retried).
        marked_bad: bool,
        /// Why.
        reason: String,
    },
    /// A committed build that did not start [`MAX_LAUNCH_FAILURES`] times was marked bad.
    CrashLoop {
        /// Its version.
        version: String,
        /// What runs now (`None` = the installed binary).
        now_active: Option<SlotId>,
    },
}

impl fmt::Display for AgentRecovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AgentRecovery::LeftoverRemoved { name } => {
                write!(f, "removed agent/{} left over", name.escape_debug())
            }
            AgentRecovery::SlotRestored { slot } => {
                write!(f, "restored agent/{slot} (its staging was interrupted)")
            }
            AgentRecovery::SlotWiped { slot, reason } => {
                write!(f, "wiped agent/{slot}: {reason}")
            }
            AgentRecovery::VersionCorrected {
                slot,
                listed,
                actual,
            } => write!(
                f,
                "agent/{slot}: state listed {}, the slot holds {}",
                listed.as_deref().unwrap_or("nothing"),
                actual.as_deref().unwrap_or("nothing")
            ),
            AgentRecovery::ActiveMissing { slot } => write!(
                f,
                "agent/{slot} was active but holds no build; the installed binary runs"
            ),
            AgentRecovery::AttemptResolved {
                version,
                marked_bad,
                reason,
            } => {
                let what = if *marked_bad {
                    "marked bad"
                } else {
                    "will be retried"
                };
                write!(
                    f,
                    "agent {version}: unfinished self-update {what}: {reason}"
                )
            }
            AgentRecovery::CrashLoop {
                version,
                now_active,
            } => write!(
                f,
                "agent {version} did not start {MAX_LAUNCH_FAILURES} times in a row: marked bad; running {}",
                now_active.map_or("the installed binary".to_owned(), |s| format!("agent/{s}"))
            ),
        }
    }
}

impl AgentSlots {
    /// Opens `ROOT/agent` (created if missing) of the locked `root` — `&Root` is the
    /// proof of the lock — and recovers (see [`AgentRecovery`]). An unfinished
    /// attempt is resolved unless `receiving` is its nonce (the hand-over receiver
    /// resolves that one). A corrupt state file is [`LayoutError::CorruptAgentState`]
    /// and nothing is touched.
    pub fn open(
        root: &Root,
        receiving: Option<&str>,
    ) -> Result<(AgentSlots, Vec<AgentRecovery>), LayoutError> {
        let dir = root.dir().join(AGENT_DIR);
        let state_path = dir.join(AGENT_STATE_FILE);
        let stored = AgentState::read(&state_path)?;
        if !dir.is_dir() {
            make_bank_dir(&dir)?;
        }
        let mut notes = Vec::new();
        remove_leftovers(&dir, receiving, &mut notes)?;
        let mut records = [None, None];
        for slot in SlotId::ALL {
            records[slot.index()] = recover_slot(&dir, slot, &mut notes)?;
        }
        let mut state = stored.clone().unwrap_or_default();
        for slot in SlotId::ALL {
            let actual = records[slot.index()]
                .as_ref()
                .map(|r: &AgentBuild| r.version.clone());
            if state.version_of(slot) != actual.as_deref() {
                if stored.is_some() {
                    notes.push(AgentRecovery::VersionCorrected {
                        slot,
                        listed: state.version_of(slot).map(str::to_owned),
                        actual: actual.clone(),
                    });
                }
                state.set_version(slot, actual);
            }
        }
        if let Some(active) = state.active
            && records[active.index()].is_none()
        {
            state.active = None;
            notes.push(AgentRecovery::ActiveMissing { slot: active });
        }
        if let Some(attempt) = state.attempt.clone()
            && receiving != Some(attempt.nonce.as_str())
        {
            let (reason, bad) = if attempt.ran {
                (
                    format!(
                        "agent {}: the process ended during its trial (crash or kill)",
                        attempt.version
                    ),
                    true,
                )
            } else {
                (
                    format!(
                        "agent {}: interrupted before the new build ran",
                        attempt.version
                    ),
                    attempt.tries >= MAX_ATTEMPT_TRIES,
                )
            };
            resolve_attempt(&mut state, &attempt, &reason, bad);
            notes.push(AgentRecovery::AttemptResolved {
                version: attempt.version,
                marked_bad: bad,
                reason,
            });
        }
        if let Some(launch) = state.launch
            && launch.count >= MAX_LAUNCH_FAILURES
        {
            state.launch = None;
            if let Some(build) = &records[launch.slot.index()] {
                let reason = format!(
                    "agent {}: did not start {MAX_LAUNCH_FAILURES} times in a row",
                    build.version
                );
                add_bad(
                    &mut state.bad_versions,
                    &build.version,
                    build.sequence,
                    &reason,
                );
                state.last_error = Some(reason);
                if state.active == Some(launch.slot) {
                    let other = launch.slot.other();
                    let good = records[other.index()]
                        .as_ref()
                        .is_some_and(|b| state.is_bad(&b.version, b.sequence).is_none());
                    state.active = good.then_some(other);
                }
                notes.push(AgentRecovery::CrashLoop {
                    version: build.version.clone(),
                    now_active: state.active,
                });
            }
        }
        state.bound();
        let mut slots = AgentSlots {
            dir,
            state: stored.clone().unwrap_or_default(),
            records,
        };
        if stored.as_ref() != Some(&state) {
            slots.write(state)?;
        }
        Ok((slots, notes))
    }
}
