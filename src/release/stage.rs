//! Staging a verified release into the idle bank: the [`StagePlan`] it is
//! staged under, and the one [`stage_release`] (the archive stream) with its
//! delta twin [`stage_delta`], each ending with the release's publication
//! time recorded as the latest known time.

use std::io::Read;
use std::time::SystemTime;

use bank_layout::{
    ArchiveFormat, BankId, BankRecord, Index, LayoutError, ObjectSource, Root, SpacePlan, StageSpec,
};
use signing::{ArtifactFormat, VerifiedRelease};
use tracing::warn;

use crate::clock;
use crate::progress::Progress;
use crate::release::trusted_time::trusted_publication;
use crate::setup::ReleaseSetup;

/// Everything staging needs from a verified release, owned, so that it can move
/// onto the blocking thread that stages.
#[derive(Debug, Clone)]
pub struct StagePlan {
    /// What is staged, for progress lines.
    label: String,
    /// The archive's container format.
    format: ArchiveFormat,
    /// The announced archive size.
    size: u64,
    /// The announced archive digest (hex).
    sha256: String,
    /// The announced size of the unpacked tree, and its entry count (bounds of staging).
    unpacked_size: Option<u64>,
    /// The announced number of archive entries.
    entries: Option<u64>,
    /// The bank record written once the bank is complete.
    record: BankRecord,
    /// The release's `published_at`, recorded as the latest known time once staged
    /// (`None` when it is too far ahead of the clock to be trusted).
    published_at: Option<u64>,
    /// `[update] allow_in_place`: stage over the idle bank when only that fits.
    allow_in_place: bool,
}

impl StagePlan {
    /// The plan for `release`, whose signed bytes are `manifest` and `signature`,
    /// under `setup` (whether it may be staged in place).
    pub fn new(
        setup: &ReleaseSetup,
        release: &VerifiedRelease,
        manifest: &[u8],
        signature: &[u8],
        now: SystemTime,
    ) -> StagePlan {
        let m = &release.manifest;
        StagePlan {
            label: format!("staging {}", m.version),
            format: archive_format(m.artifact.format),
            size: m.artifact.size,
            sha256: m.artifact.sha256.clone(),
            unpacked_size: m.artifact.unpacked_size,
            entries: m.artifact.entries,
            record: BankRecord {
                version: m.version.to_string(),
                sequence: m.sequence,
                sha256: m.artifact.sha256.clone(),
                staged_at: clock::unix(now),
                product: m.product.clone(),
                channel: m.channel.clone(),
                command: m.entrypoint.command.clone(),
                args: m.entrypoint.args.clone(),
                manifest: String::from_utf8_lossy(manifest).into_owned(),
                signature: String::from_utf8_lossy(signature).into_owned(),
                files: None,
            },
            published_at: trusted_publication(release, now),
            allow_in_place: setup.allow_in_place,
        }
    }

    /// The announced size of the full artifact.
    pub fn artifact_size(&self) -> u64 {
        self.size
    }

    /// The version staged.
    pub fn version(&self) -> &str {
        &self.record.version
    }

    /// Keeps the per-file digests of the release's verified `index` in the bank
    /// record, so that the next update can be a delta (issue 14).
    pub fn remember_files(&mut self, index: &Index) {
        self.record.files = Some(index.digests());
    }

    /// The layout crate's staging spec of this plan.
    fn spec(&self) -> StageSpec<'_> {
        StageSpec {
            format: self.format,
            size: self.size,
            sha256: &self.sha256,
            record: self.record.clone(),
            unpacked_size: self.unpacked_size,
            entries: self.entries,
            allow_in_place: self.allow_in_place,
        }
    }

    /// What `status` and the log say before staging starts when the root's file
    /// system has room only for an in-place staging, the plan allows it, and it
    /// gives up a release (the rollback target). `None` when a scratch copy fits,
    /// when nothing would be lost, when the space cannot be read (staging reports
    /// that itself), or when in place is not allowed: staging then fails with
    /// [`LayoutError::InPlaceOnly`], which says why, and touches nothing.
    pub fn space_notice(&self, root: &Root) -> Option<String> {
        if !self.allow_in_place {
            return None;
        }
        let SpacePlan::InPlace {
            needed,
            free,
            loses: Some(loses),
            ..
        } = root.space_plan(&self.spec()).ok()?
        else {
            return None;
        };
        Some(format!(
            "staging {} in place: it needs {} MiB, {} MiB free beside both banks, so {loses} in the idle bank (the rollback target) is removed first ([update] allow_in_place = true)",
            self.record.version,
            needed.div_ceil(MIB),
            free.div_ceil(MIB)
        ))
    }
}

/// Bytes in the MiB that space notices count in (rounded up, as the layout crate's
/// errors do).
const MIB: u64 = 1024 * 1024;

/// Streams `source` (a file offline, an HTTPS stream online) into the idle bank
/// under the plan's size, digest and archive rules, showing progress; writes the
/// bank record last. The active bank is never touched, and the idle bank (the
/// rollback target) only by a complete release, unless the plan allows an
/// in-place staging and only that fits: the log says so first
/// ([`StagePlan::space_notice`]).
pub fn stage_release(
    root: &mut Root,
    source: impl Read + Send,
    plan: StagePlan,
) -> Result<BankId, LayoutError> {
    if let Some(notice) = plan.space_notice(root) {
        warn!(version = %plan.record.version, "{notice}");
    }
    let mut progress = Progress::new(&plan.label, plan.size);
    // No buffer in front: the stager reads in large chunks of its own.
    let result = root.stage(source, plan.spec(), &mut |done| progress.update(done));
    progress.finish();
    staged(root, &plan, result)
}

/// The delta way of [`stage_release`] (issue 14): builds the idle bank from
/// the active one plus the `objects` that changed, checked against the
/// release's verified `index`, then swaps as [`stage_release`] does. The
/// caller chose this way with [`Root::delta_plan`].
pub fn stage_delta(
    root: &mut Root,
    index: &Index,
    objects: &mut dyn ObjectSource,
    mut plan: StagePlan,
) -> Result<BankId, LayoutError> {
    plan.remember_files(index);
    if let Some(notice) = plan.space_notice(root) {
        warn!(version = %plan.record.version, "{notice}");
    }
    let mut progress = Progress::new(&plan.label, index.unpacked_size());
    let result = root.stage_delta(index, plan.spec(), objects, &mut |done| {
        progress.update(done)
    });
    progress.finish();
    staged(root, &plan, result)
}

/// After a staging: the release's publication time becomes the latest known time.
fn staged(
    root: &mut Root,
    plan: &StagePlan,
    result: Result<BankId, LayoutError>,
) -> Result<BankId, LayoutError> {
    let bank = result?;
    if let Some(published) = plan.published_at {
        root.update_state(|s| s.note_time(published))?;
    }
    Ok(bank)
}

/// The layout crate's name for a manifest's archive format.
fn archive_format(format: ArtifactFormat) -> ArchiveFormat {
    match format {
        ArtifactFormat::Tar => ArchiveFormat::Tar,
        ArtifactFormat::TarGz => ArchiveFormat::TarGz,
        ArtifactFormat::TarZst => ArchiveFormat::TarZst,
    }
}
