//! The agent fields of a status report: the running build, the slots' phase,
//! the pending release, the bad list and the build a rollback would run —
//! from the running agent, or offline from the root.

use std::path::Path;

use bank_layout::{AgentPhase, AgentSlots, AgentState};

use super::{BUILD_VERSION, Identity};
use crate::agent::core::Agent;
use crate::platform::PLATFORM;
use crate::report::{BadReport, PendingReport, StatusReport};

/// Fills the agent fields of `report` from the slots' `state` and the running build.
pub fn fill_status(
    report: &mut StatusReport,
    state: Option<&AgentState>,
    identity: &Identity,
    phase: String,
) {
    report.agent_version = Some(identity.version.clone());
    report.agent_platform = Some(PLATFORM.to_owned());
    report.agent_phase = Some(phase);
    report.agent_previous_version = state.and_then(|s| previous_version(s, identity));
    let Some(state) = state else { return };
    report.agent_last_error.clone_from(&state.last_error);
    report.agent_pending = state.pending.as_ref().map(PendingReport::from);
    report.agent_bad_versions = state.bad_versions.iter().map(BadReport::from).collect();
}

/// The build a rollback of the agent would run: the attempt's origin, else (for a
/// slot build) the other committed slot or the installed binary; `None` for the
/// installed binary with nothing before it.
fn previous_version(state: &AgentState, identity: &Identity) -> Option<String> {
    if let Some(attempt) = &state.attempt {
        return Some(attempt.from_version.clone());
    }
    let slot = identity.slot?;
    Some(
        state
            .version_of(slot.other())
            .map_or_else(|| BUILD_VERSION.to_owned(), str::to_owned),
    )
}

/// The offline status (no agent running): the agent fields as the next start of
/// this binary would see them — the committed build if it is newer than this
/// one (the launcher runs it then), else this one.
pub fn fill_offline_status(report: &mut StatusReport, root_dir: &Path) {
    let state = AgentSlots::read_state(root_dir).ok().flatten();
    let mut identity = Identity::of_self(root_dir);
    let committed = state.as_ref().and_then(|s| {
        let slot = s.active?;
        let version = s.version_of(slot)?;
        let newer = semver::Version::parse(version)
            .ok()?
            .cmp_precedence(&semver::Version::parse(BUILD_VERSION).ok()?)
            .is_gt();
        newer.then(|| Identity {
            version: version.to_owned(),
            slot: Some(slot),
        })
    });
    if identity.slot.is_none()
        && let Some(committed) = committed
    {
        identity = committed;
    }
    let phase = state
        .as_ref()
        .map_or(AgentPhase::Committed, |s| s.phase)
        .to_string();
    fill_status(report, state.as_ref(), &identity, phase);
}

impl Agent {
    /// The agent fields of `report`.
    pub(in crate::agent) fn fill_agent_status(&self, report: &mut StatusReport) {
        match &self.self_update {
            Some(su) => fill_status(
                report,
                su.slots
                    .as_ref()
                    .map(AgentSlots::state)
                    .or(su.state_at_staging.as_ref()),
                &su.identity,
                su.phase(),
            ),
            // Self-update off: the build running, nothing staged or tried.
            None => fill_status(
                report,
                None,
                &self.identity,
                AgentPhase::Committed.to_string(),
            ),
        }
    }
}
