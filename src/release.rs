//! A release's way onto a root, shared by `apply` and the agent: open the root,
//! [`verify`] a manifest with what the root knows, [`stage_release`] its archive
//! into the idle bank, and [`roll_back`] (swap back and mark the version left bad).

use std::fmt;
use std::io::{BufReader, Read};
use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use bank_layout::{ArchiveFormat, BankId, BankRecord, LayoutError, Root, StageSpec, State};
use signing::{ArtifactFormat, Expectations, KeyRing, ReleaseError, ReleaseKind, VerifiedRelease};
use tracing::warn;

use crate::clock;
use crate::keyring;
use crate::platform::PLATFORM;
use crate::progress::Progress;
use crate::setup::ReleaseSetup;

/// Read buffer in front of the archive stream: large enough that the hasher and
/// the decompressor see big chunks, small next to the agent's idle memory.
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
    let bad_versions: Vec<signing::BadVersion> = state
        .bad_versions
        .iter()
        .filter_map(|b| {
            Some(signing::BadVersion {
                version: semver::Version::parse(&b.version).ok()?,
                sequence: b.sequence,
            })
        })
        .collect();
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
            bad_versions: &bad_versions,
            now: effective_now(state, now),
        },
    )?;
    // A payload channel carries payload releases, for this platform or any.
    signing::check_kind_and_platform(&release.manifest, ReleaseKind::Payload, PLATFORM)?;
    Ok(release)
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
}

impl StagePlan {
    /// The plan for `release`, whose signed bytes are `manifest` and `signature`.
    pub fn new(
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
            },
            published_at: trusted_publication(release, now),
        }
    }
}

/// Streams `source` (a file offline, an HTTPS stream online) into the idle bank
/// under the plan's size, digest and archive rules, showing progress; writes the
/// bank record last. The active bank is never touched.
pub fn stage_release(
    root: &mut Root,
    source: impl Read + Send,
    plan: StagePlan,
) -> Result<BankId, LayoutError> {
    let mut progress = Progress::new(&plan.label, plan.size);
    let result = root.stage(
        BufReader::with_capacity(STAGE_BUFFER, source),
        StageSpec {
            format: plan.format,
            size: plan.size,
            sha256: &plan.sha256,
            record: plan.record,
            unpacked_size: plan.unpacked_size,
            entries: plan.entries,
            // Staging never gives up the rollback target unless told to (not yet configurable).
            allow_in_place: false,
        },
        &mut |done| progress.update(done),
    );
    progress.finish();
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
