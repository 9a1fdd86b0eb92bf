//! An agent release checked like a payload one (with the agent's own sequence
//! and bad list, then kind agent and this platform), and the staging spec of a
//! verified one.

use std::time::SystemTime;

use bank_layout::{AgentBuild, AgentStageSpec, AgentState, ArchiveFormat};
use signing::{ArtifactFormat, KeyRing, ReleaseError, ReleaseKind, VerifiedRelease};

use super::{AGENT_PRODUCT, SelfUpdate};
use crate::clock;
use crate::release::{Known, verify_known};

/// Verifies an agent release: the payload policy (signature, product
/// [`AGENT_PRODUCT`], channel, expiry, sequence against the agent's own highest,
/// newer than `running`, not in the agent's own bad list), then kind agent and
/// this platform.
pub fn verify_agent(
    state: &AgentState,
    ring: &KeyRing,
    channel: &str,
    running: &str,
    manifest: &[u8],
    signature: &[u8],
    now: SystemTime,
) -> Result<VerifiedRelease, ReleaseError> {
    let running = semver::Version::parse(running).ok();
    let known = Known {
        product: Some(AGENT_PRODUCT),
        channel,
        highest_sequence: state.highest_sequence,
        running: running.as_ref(),
        bad_versions: &state.bad_versions,
        kind: ReleaseKind::Agent,
    };
    verify_known(&known, ring, manifest, signature, now)
}

impl SelfUpdate {
    /// [`verify_agent`] with this agent's key ring, channel and running build,
    /// against the slots' `state` (the slots may be out of `self` meanwhile).
    pub(super) fn verify(
        &self,
        state: &AgentState,
        manifest: &[u8],
        signature: &[u8],
        now: SystemTime,
    ) -> Result<VerifiedRelease, ReleaseError> {
        verify_agent(
            state,
            &self.ring,
            &self.settings.channel,
            &self.identity.version,
            manifest,
            signature,
            now,
        )
    }
}

/// The staging spec and slot record of a verified agent release.
pub fn stage_spec<'a>(
    release: &'a VerifiedRelease,
    manifest: &[u8],
    signature: &[u8],
    now: SystemTime,
) -> AgentStageSpec<'a> {
    let m = &release.manifest;
    AgentStageSpec {
        format: match m.artifact.format {
            ArtifactFormat::Tar => ArchiveFormat::Tar,
            ArtifactFormat::TarGz => ArchiveFormat::TarGz,
            ArtifactFormat::TarZst => ArchiveFormat::TarZst,
        },
        size: m.artifact.size,
        sha256: &m.artifact.sha256,
        build: AgentBuild {
            version: m.version.to_string(),
            sequence: m.sequence,
            sha256: m.artifact.sha256.clone(),
            size: 0,
            platform: m.platform.clone().unwrap_or_default(),
            channel: m.channel.clone(),
            staged_at: clock::unix(now),
            handover_schemas: Vec::new(),
            manifest: String::from_utf8_lossy(manifest).into_owned(),
            signature: String::from_utf8_lossy(signature).into_owned(),
        },
    }
}
