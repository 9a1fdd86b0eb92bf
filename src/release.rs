//! A release's way onto a root, shared by `apply` and the agent: open the root,
//! [`verify`] a manifest with what the root knows, [`stage_release`] its archive
//! into the idle bank (or [`stage_delta`] its changed files, issue 14), and [`roll_back`] (swap back and mark the version left bad).

use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use bank_layout::{
    ArchiveFormat, BankId, BankRecord, Index, LayoutError, ObjectSource, Root, SpacePlan,
    StageSpec, State,
};
use sha2::{Digest, Sha256};
use signing::{
    ArtifactFormat, Expectations, IndexRef, KeyRing, Manifest, ReleaseError, ReleaseKind,
    VerifiedRelease,
};
use tracing::{info, warn};

use crate::agent::delta_fetch;
use crate::channel::ChannelDir;
use crate::clock;
use crate::keyring;
use crate::platform::PLATFORM;
use crate::progress::Progress;
use crate::setup::ReleaseSetup;

/// Read buffer in front of an offline bundle's object files: large enough that the
/// decompressor sees big chunks, small next to the agent's idle memory.
const STAGE_BUFFER: usize = 256 * 1024;

/// How far ahead of the clock a release's `published_at`, or behind the latest
/// known time the clock, may be before it is reported: a day covers any honest
/// clock skew; beyond it one of the two clocks is wrong.
pub const CLOCK_SKEW_WARNING: Duration = Duration::from_secs(24 * 60 * 60);

/// The time expiry is checked against: the later of the clock and the latest
/// trustworthy time the root has seen, so a clock set back (or a stale NTP)
/// cannot revive an expired manifest.
pub fn effective_now(state: &State, clock: SystemTime) -> SystemTime {
    match state.latest_time {
        Some(latest) => clock.max(clock::from_unix(latest)),
        None => clock,
    }
}

/// What `status` says when the clock is more than [`CLOCK_SKEW_WARNING`] behind
/// the latest known time; `None` while they agree.
pub fn clock_warning(state: &State, clock: SystemTime) -> Option<String> {
    let latest = state.latest_time?;
    let behind = latest.saturating_sub(clock::unix(clock));
    // Stable text (no running clock in it), so the report does not change every second.
    (behind > CLOCK_SKEW_WARNING.as_secs()).then(|| {
        format!(
            "the clock is more than {} behind the latest known time ({}); expiry is checked against the latter",
            humantime::format_duration(CLOCK_SKEW_WARNING),
            clock::rfc3339(clock::from_unix(latest))
        )
    })
}

/// The `published_at` of `release` worth recording as a trustworthy time: a
/// release published more than [`CLOCK_SKEW_WARNING`] after the clock is
/// reported and not recorded, so one future-dated manifest cannot expire
/// everything after it.
fn trusted_publication(release: &VerifiedRelease, clock: SystemTime) -> Option<u64> {
    let published = release.manifest.published_at;
    if published > clock + CLOCK_SKEW_WARNING {
        warn!(
            version = %release.manifest.version,
            published_at = %clock::rfc3339(published),
            clock = %clock::rfc3339(clock),
            "the release was published far ahead of this clock; not taking it as the latest known time"
        );
        return None;
    }
    Some(clock::unix(published))
}

/// Opens the root (lock + recovery) and logs what recovery did.
pub fn open_root(dir: &Path) -> anyhow::Result<Root> {
    let (root, recoveries) = Root::open(dir).with_context(|| format!("root {}", dir.display()))?;
    for note in recoveries {
        warn!(root = %dir.display(), "recovered: {note}");
    }
    Ok(root)
}

/// Opens the root like [`open_root`], but when another process holds its lock,
/// looks again until `wait` has passed: a short-lived command (an offline
/// `rollback`) must not keep the agent from starting. A second agent holds the
/// lock for good and is still refused, with the holder named.
pub fn open_root_waiting(dir: &Path, wait: Duration) -> anyhow::Result<Root> {
    let (root, recoveries) =
        Root::open_waiting(dir, wait).with_context(|| format!("root {}", dir.display()))?;
    for note in recoveries {
        warn!(root = %dir.display(), "recovered: {note}");
    }
    Ok(root)
}

/// Runs the one verification policy with what this root knows: its product, the
/// highest sequence it accepted, the running version, the versions marked bad, and
/// its key ring (the configured keys plus those a rotation record endorsed).
pub fn verify(
    root: &Root,
    setup: &ReleaseSetup,
    manifest: &[u8],
    signature: &[u8],
    now: SystemTime,
) -> Result<VerifiedRelease, ReleaseError> {
    let ring = keyring::load_or_trust_nothing(root.dir(), &setup.trusted_keys);
    verify_with(root.state(), setup, &ring, manifest, signature, now)
}

/// [`verify`] against a state read without taking the root (`bankswap doctor`).
pub fn verify_against(
    state: &State,
    setup: &ReleaseSetup,
    manifest: &[u8],
    signature: &[u8],
    now: SystemTime,
) -> Result<VerifiedRelease, ReleaseError> {
    let ring = keyring::load_or_trust_nothing(&setup.root, &setup.trusted_keys);
    verify_with(state, setup, &ring, manifest, signature, now)
}

/// [`verify`] with the state and the key ring given.
pub fn verify_with(
    state: &State,
    setup: &ReleaseSetup,
    ring: &KeyRing,
    manifest: &[u8],
    signature: &[u8],
    now: SystemTime,
) -> Result<VerifiedRelease, ReleaseError> {
    let running = state
        .version_of(state.active)
        .and_then(|v| semver::Version::parse(v).ok());
    // The one bad-version rule, over the marks as the root stores them.
    let marked_bad = marks(&state.bad_versions);
    let release = signing::verify_release(
        manifest,
        signature,
        &Expectations {
            trusted_keys: &ring.trusted(),
            revoked_keys: &ring.revoked_ids(),
            product: state.product.as_deref(),
            channel: &setup.channel,
            highest_sequence: state.highest_sequence,
            running_version: running.as_ref(),
            marked_bad: &marked_bad,
            now: effective_now(state, now),
        },
    )?;
    // A payload channel carries payload releases, for this platform or any.
    signing::check_kind_and_platform(&release.manifest, ReleaseKind::Payload, PLATFORM)?;
    Ok(release)
}

/// The release policy's [`signing::MarkedBad`] question, answered by the one
/// bad-version rule (`bank_layout::marked_bad`) over `bad_versions` as stored.
pub fn marks(
    bad_versions: &[bank_layout::BadVersion],
) -> impl Fn(&semver::Version, u64) -> Option<u64> + '_ {
    move |version, sequence| {
        bank_layout::marked_bad(bad_versions, &version.to_string(), sequence)
            .map(|mark| mark.sequence)
    }
}

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

/// Offline (`apply --bundle`): stages `manifest`'s release from the bundle
/// folder `channel`. With the `artifact` file, as always (its record keeps the
/// index's per-file digests when the bundle has the signed index); without
/// it (a delta bundle: manifest, index and objects), by delta from the
/// bundle's objects, with the same checks as online.
pub fn stage_bundle(
    root: &mut Root,
    channel: &ChannelDir,
    manifest: &Manifest,
    artifact: Option<impl Read + Send>,
    mut plan: StagePlan,
) -> Result<BankId, LayoutError> {
    let index = manifest
        .index
        .as_ref()
        .filter(|i| !i.path.starts_with("https://"));
    let Some(artifact_file) = artifact else {
        let Some(pointer) = index else {
            return Err(LayoutError::BadIndex {
                reason: "a bundle without its artifact needs a file index under v1/".to_owned(),
            });
        };
        let path = channel.artifact(&pointer.path);
        let index = read_index(&path, pointer)?;
        plan.remember_files(&index);
        let delta = root.delta_plan(&index).ok_or(LayoutError::NoDelta)?;
        let objects_dir = path
            .parent()
            .map_or_else(|| PathBuf::from(OBJECTS_DIR), |p| p.join(OBJECTS_DIR));
        let version = plan.version().to_owned();
        let bank = stage_delta(root, &index, &mut BundleObjects { dir: objects_dir }, plan)?;
        info!(
            version,
            objects = delta.fetch.len(),
            reused = delta.reused_files,
            "staged {version} from {} reused files and {} objects",
            delta.reused_files,
            delta.fetch.len()
        );
        // The same record as online: "downloaded" is what was read from the bundle.
        let read = pointer.size.saturating_add(delta.fetch_bytes);
        let staged = delta_fetch::outcome(&version, read, manifest.artifact.size, None);
        delta_fetch::record_staging(root.dir(), &staged);
        return Ok(bank);
    };
    if let Some(pointer) = index {
        match read_index(&channel.artifact(&pointer.path), pointer) {
            Ok(index) => plan.remember_files(&index),
            Err(e) => {
                warn!(error = %e, "the bundle's file index is unusable; the next update downloads in full")
            }
        }
    }
    let (version, size) = (plan.version().to_owned(), plan.artifact_size());
    let bank = stage_release(root, artifact_file, plan)?;
    let why = "the bundle carries the full artifact".to_owned();
    delta_fetch::record_staging(
        root.dir(),
        &delta_fetch::outcome(&version, size, size, Some(why)),
    );
    Ok(bank)
}

/// Reads the file index at `path`, which must be the one `pointer` (signed) names.
fn read_index(path: &Path, pointer: &IndexRef) -> Result<Index, LayoutError> {
    let io_error = |cause| LayoutError::Io {
        path: path.to_path_buf(),
        cause,
    };
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|f| {
            f.take(pointer.size.saturating_add(1))
                .read_to_end(&mut bytes)
        })
        .map_err(io_error)?;
    let actual = hex::encode(Sha256::digest(&bytes));
    if bytes.len() as u64 != pointer.size || actual != pointer.sha256 {
        return Err(LayoutError::BadIndex {
            reason: format!(
                "{} does not match the manifest: {} bytes with sha256 {actual}, expected {} bytes with sha256 {}",
                path.display(),
                bytes.len(),
                pointer.size,
                pointer.sha256
            ),
        });
    }
    Index::from_json(&bytes)
}

/// Where a file index's objects are, beside it (`publish` writes them there).
pub const OBJECTS_DIR: &str = "objects";

/// The objects of an offline bundle: files `objects/<sha256>.zst`.
struct BundleObjects {
    /// The bundle's objects folder.
    dir: PathBuf,
}

impl ObjectSource for BundleObjects {
    fn object(&mut self, sha256: &str, _packed: u64) -> io::Result<Box<dyn Read + '_>> {
        let path = self.dir.join(format!("{sha256}.zst"));
        let file = File::open(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        Ok(Box::new(BufReader::with_capacity(STAGE_BUFFER, file)))
    }
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

/// Why an admin's rollback (offline or through the agent) marks the version left bad.
pub const ADMIN_REASON: &str = "rolled back by an admin";

/// What a rollback did.
#[derive(Debug, Clone)]
pub struct RolledBack {
    /// The bank left.
    pub from: BankId,
    /// The bank now active.
    pub to: BankId,
    /// The version left in `from`, now marked bad (none on a bank without a release).
    pub left: Option<String>,
    /// The version now running.
    pub running: Option<String>,
}

impl fmt::Display for RolledBack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let running = self.running.as_deref().unwrap_or("none");
        write!(f, "rolled back to {running} in {}", self.to)?;
        if let Some(left) = &self.left {
            write!(f, "; {left} stays in {}, marked bad", self.from)?;
        }
        Ok(())
    }
}

/// The one rollback: swaps back to the other bank and marks the version left
/// bad with `reason`, in one state write (a crash cannot forget the mark), so that
/// it is not installed again until a higher sequence re-publishes it. Refused, with
/// nothing changed, when the other bank holds no good release.
pub fn roll_back(root: &mut Root, reason: &str) -> Result<RolledBack, LayoutError> {
    let done = root.rollback_marking_bad(reason)?;
    Ok(RolledBack {
        from: done.from,
        to: done.to,
        left: done.left,
        running: root.state().version_of(done.to).map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_uses_the_later_of_the_clock_and_the_latest_known_time() {
        let mut state = State::default();
        let clock = clock::from_unix(1_000_000);
        assert_eq!(effective_now(&state, clock), clock);
        state.note_time(2_000_000);
        assert_eq!(effective_now(&state, clock), clock::from_unix(2_000_000));
        let later = clock::from_unix(3_000_000);
        assert_eq!(effective_now(&state, later), later);
    }

    #[test]
    fn a_clock_warning_only_beyond_the_named_skew() {
        let mut state = State::default();
        let clock = clock::from_unix(10_000_000);
        assert_eq!(clock_warning(&state, clock), None);
        state.note_time(10_000_000 + CLOCK_SKEW_WARNING.as_secs());
        assert_eq!(clock_warning(&state, clock), None);
        state.note_time(10_000_001 + CLOCK_SKEW_WARNING.as_secs());
        assert!(clock_warning(&state, clock).is_some_and(|w| w.contains("behind")));
    }
}
