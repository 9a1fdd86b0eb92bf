//! The one verification of a payload release against what a root knows: its
//! product, highest sequence, running version, bad marks and key ring.

use std::time::SystemTime;

use bank_layout::{Root, State};
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
