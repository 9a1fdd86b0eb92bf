//! The one release verification function, [`verify_release`], with its rules
//! in the order of SPEC §4. It runs before any artifact byte is requested.
//!
//! Each rule quotes the SPEC next to the code that implements it. The rules
//! are ordered so that nothing in the manifest is trusted (not even parsed)
//! before its signature is checked.

use std::time::SystemTime;

use semver::Version;

use crate::error::{ReleaseError, SigningError};
use crate::keys::{KeyId, PublicKey};
use crate::manifest::{Manifest, ReleaseKind};
use crate::signature::Signature;
use crate::wire_time::format_rfc3339;

/// Largest manifest accepted, in bytes. A real manifest is under 1 KiB; 64 KiB
/// leaves room for long argument lists while bounding what a hostile server
/// can make the agent read and parse (SPEC §4).
pub const MAX_MANIFEST_BYTES: usize = 64 * 1024;

/// Largest signature file accepted, in bytes: the one limit every reader of
/// a `.minisig` uses (the binary re-exports it as
/// `channel::MAX_SIGNATURE_BYTES`). minisign caps the trusted comment at
/// 8 KiB; the other three lines are under 300 bytes, and the rest is room.
pub const MAX_SIGNATURE_BYTES: usize = 16 * 1024;

/// A version this agent marked bad: it stays refused for every manifest with
/// a sequence at or below `sequence`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadVersion {
    /// The version that failed.
    pub version: Version,
    /// The sequence of the manifest that brought it; re-publishing it with
    /// a higher sequence clears the mark.
    pub sequence: u64,
}

/// What the agent knows and expects, against which a release is checked.
#[derive(Debug, Clone)]
pub struct Expectations<'a> {
    /// Keys whose signatures are accepted ([`KeyRing::trusted`](crate::KeyRing::trusted)
    /// once rotation records are applied).
    pub trusted_keys: &'a [PublicKey],
    /// Ids of keys revoked by rotation records
    /// ([`KeyRing::revoked_ids`](crate::KeyRing::revoked_ids)): a release they
    /// signed fails with [`ReleaseError::RevokedKey`], even if a caller
    /// still lists the key as trusted.
    pub revoked_keys: &'a [KeyId],
    /// The product this agent runs; `None` on a fresh root accepts any.
    pub product: Option<&'a str>,
    /// The channel this agent follows.
    pub channel: &'a str,
    /// Highest sequence accepted so far (0 on a fresh root).
    pub highest_sequence: u64,
    /// The version running now, if any.
    pub running_version: Option<&'a Version>,
    /// Versions this agent marked bad.
    pub bad_versions: &'a [BadVersion],
    /// The current time (passed in: this crate never reads the clock).
    pub now: SystemTime,
}

/// A manifest that passed every rule, and the key that signed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedRelease {
    /// The verified manifest.
    pub manifest: Manifest,
    /// The id of the trusted key that signed it.
    pub key_id: KeyId,
}

/// Checks a downloaded manifest and its minisign signature against what the
/// agent expects. The first rule that fails decides the error.
pub fn verify_release(
    manifest: &[u8],
    signature: &[u8],
    expect: &Expectations<'_>,
) -> Result<VerifiedRelease, ReleaseError> {
    // 1. "manifest size cap (64 KiB)"
    if manifest.len() > MAX_MANIFEST_BYTES {
        return Err(ReleaseError::TooLarge {
            size: manifest.len(),
            limit: MAX_MANIFEST_BYTES,
        });
    }

    // 2. "signature by a trusted key": over exactly the bytes received.
    //    SPEC §13: "a revoked key is refused", whoever still lists it.
    let signature = parse_signature(signature)?;
    if expect.revoked_keys.contains(&signature.key_id()) {
        return Err(ReleaseError::RevokedKey {
            key_id: signature.key_id(),
        });
    }
    let key = signature
        .verify(expect.trusted_keys, manifest)
        .map_err(signature_error)?;
    let key_id = key.key_id();

    // Only now is the manifest worth parsing: it comes from a trusted key.
    let manifest = Manifest::from_json(manifest)?;

    // 3. "product and channel match"
    if let Some(expected) = expect.product
        && manifest.product != expected
    {
        return Err(ReleaseError::WrongProduct {
            expected: expected.to_owned(),
            found: manifest.product,
        });
    }
    if manifest.channel != expect.channel {
        return Err(ReleaseError::WrongChannel {
            expected: expect.channel.to_owned(),
            found: manifest.channel,
        });
    }

    // 4. "not expired": expires_at is the first instant it is refused.
    if expect.now >= manifest.expires_at {
        return Err(ReleaseError::Expired {
            expires_at: format_rfc3339(manifest.expires_at),
        });
    }

    // 5. "sequence not lower than the highest seen": equal is the same
    //    release seen again (a restart, a re-poll), which is fine.
    if manifest.sequence < expect.highest_sequence {
        return Err(ReleaseError::Replayed {
            sequence: manifest.sequence,
            highest: expect.highest_sequence,
        });
    }

    // 6. "version newer than the running one unless `downgrade`": the very
    //    same version is never an update, downgrade or not. Build metadata
    //    does not count (semver precedence).
    if let Some(running) = expect.running_version {
        let order = manifest.version.cmp_precedence(running);
        if order.is_eq() || (order.is_lt() && !manifest.downgrade) {
            return Err(ReleaseError::NotNewer {
                version: manifest.version,
                running: running.clone(),
            });
        }
    }

    // 7. "version not marked bad by this agent (a higher sequence
    //    re-publishing it clears that)"
    if let Some(bad) = expect
        .bad_versions
        .iter()
        .find(|bad| bad.version == manifest.version && bad.sequence >= manifest.sequence)
    {
        return Err(ReleaseError::MarkedBad {
            version: manifest.version,
            sequence: bad.sequence,
        });
    }

    Ok(VerifiedRelease { manifest, key_id })
}

/// The kind and platform rules, checked by the caller on a [`VerifiedRelease`]
/// (after the signature, so an unsigned manifest never gets this far): the
/// manifest must be of `kind`, and built for `ours` — a payload release without
/// a platform runs anywhere, an agent release must name its platform.
pub fn check_kind_and_platform(
    manifest: &Manifest,
    kind: ReleaseKind,
    ours: &str,
) -> Result<(), ReleaseError> {
    if manifest.kind != kind {
        return Err(ReleaseError::WrongKind {
            kind: manifest.kind,
            expected: kind,
        });
    }
    match (&manifest.platform, manifest.kind) {
        (Some(platform), _) if platform != ours => Err(ReleaseError::OtherPlatform {
            platform: platform.clone(),
            ours: ours.to_owned(),
        }),
        (None, ReleaseKind::Agent) => Err(ReleaseError::OtherPlatform {
            platform: "none".to_owned(),
            ours: ours.to_owned(),
        }),
        _ => Ok(()),
    }
}

/// Reads the signature file, within [`MAX_SIGNATURE_BYTES`].
fn parse_signature(bytes: &[u8]) -> Result<Signature, ReleaseError> {
    read_signature(bytes).map_err(|reason| ReleaseError::MalformedSignature { reason })
}

/// Reads a signature file (of a release or a rotation record) within
/// [`MAX_SIGNATURE_BYTES`]; the error says why it is malformed.
pub(crate) fn read_signature(bytes: &[u8]) -> Result<Signature, String> {
    if bytes.len() > MAX_SIGNATURE_BYTES {
        return Err(format!(
            "{} bytes, more than the {MAX_SIGNATURE_BYTES}-byte limit",
            bytes.len()
        ));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_owned())?;
    Signature::parse(text).map_err(|e| match e {
        SigningError::Malformed { reason, .. } => reason,
        other => other.to_string(),
    })
}

/// Maps a signature-level error to the release error the policy reports.
fn signature_error(err: SigningError) -> ReleaseError {
    match err {
        SigningError::UnknownKey { key_id, trusted } => {
            ReleaseError::UnknownKey { key_id, trusted }
        }
        SigningError::BadSignature { key_id } => ReleaseError::BadSignature { key_id },
        SigningError::Malformed { reason, .. } => ReleaseError::MalformedSignature { reason },
        other => ReleaseError::MalformedSignature {
            reason: other.to_string(),
        },
    }
}
