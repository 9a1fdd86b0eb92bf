//! The one verification of a payload release against what a root knows: its
//! product, highest sequence, running version, bad marks and key ring; and
//! [`verify_known`], the policy under it that an agent release goes through too.

use std::time::SystemTime;

use bank_layout::{BadVersion, Root, State};
use signing::{Expectations, KeyRing, ReleaseError, ReleaseKind, VerifiedRelease};

use crate::keyring;
use crate::platform::PLATFORM;
use crate::release::trusted_time::effective_now;
use crate::setup::ReleaseSetup;

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
    let known = Known {
        product: state.product.as_deref(),
        channel: &setup.channel,
        highest_sequence: state.highest_sequence,
        running: running.as_ref(),
        bad_versions: &state.bad_versions,
        // A payload channel carries payload releases, for this platform or any.
        kind: ReleaseKind::Payload,
    };
    verify_known(&known, ring, manifest, signature, effective_now(state, now))
}

/// What a release is checked against besides its keys: what a root (for a
/// payload) or the agent slots (for the agent) know, and the kind of release
/// their channel carries.
pub struct Known<'a> {
    /// The product pinned (`None`: a fresh root accepts any).
    pub product: Option<&'a str>,
    /// The channel followed.
    pub channel: &'a str,
    /// The highest sequence accepted so far (0 when fresh).
    pub highest_sequence: u64,
    /// The version running now, if any.
    pub running: Option<&'a semver::Version>,
    /// The versions marked bad, as stored.
    pub bad_versions: &'a [BadVersion],
    /// The kind of release the channel carries.
    pub kind: ReleaseKind,
}

/// The one verification policy, payload or agent: [`signing::verify_release`]
/// with `ring`'s trusted and revoked keys and what is `known` (its bad marks
/// asked of the one bad-version rule, [`marks`]), then the kind and this platform.
pub fn verify_known(
    known: &Known<'_>,
    ring: &KeyRing,
    manifest: &[u8],
    signature: &[u8],
    now: SystemTime,
) -> Result<VerifiedRelease, ReleaseError> {
    let marked_bad = marks(known.bad_versions);
    let release = signing::verify_release(
        manifest,
        signature,
        &Expectations {
            trusted_keys: &ring.trusted(),
            revoked_keys: &ring.revoked_ids(),
            product: known.product,
            channel: known.channel,
            highest_sequence: known.highest_sequence,
            running_version: known.running,
            marked_bad: &marked_bad,
            now,
        },
    )?;
    signing::check_kind_and_platform(&release.manifest, known.kind, PLATFORM)?;
    Ok(release)
}

/// The release policy's [`signing::MarkedBad`] question, answered by the one
/// bad-version rule (`bank_layout::marked_bad`) over `bad_versions` as stored.
pub fn marks(bad_versions: &[BadVersion]) -> impl Fn(&semver::Version, u64) -> Option<u64> + '_ {
    move |version, sequence| {
        bank_layout::marked_bad(bad_versions, &version.to_string(), sequence)
            .map(|mark| mark.sequence)
    }
}
