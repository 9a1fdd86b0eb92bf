//! The two error types of this crate: [`SigningError`] for keys and minisign
//! signatures, [`ReleaseError`] for the release verification policy.
//!
//! Every variant carries the values it is about (key ids, versions,
//! sequences, times as RFC 3339 strings), and its `Display` is one line that
//! says why, so the binary can print `error: <what>: <why>` without more work.

use std::fmt;

use semver::Version;
use thiserror::Error;

use crate::keys::KeyId;

/// Why a key or a minisign signature was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SigningError {
    /// The text is not a well-formed minisign key or signature.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// What was being read: "public key", "secret key" or "signature".
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The secret key is encrypted with a password (kdf "Sc").
    #[error(
        "the key is encrypted; use an unencrypted key (minisign -G -W), \
         or remove the password with `minisign -C -W -s <key file>`"
    )]
    EncryptedKey,
    /// No trusted key has the key id the signature names.
    #[error("signed by unknown key {key_id}; trusted: {}", KeyIdList(trusted))]
    UnknownKey {
        /// The key id found in the signature.
        key_id: KeyId,
        /// The ids of the keys that are trusted.
        trusted: Vec<KeyId>,
    },
    /// The key is known but the signature, or the signature over the trusted
    /// comment, does not verify: the data or the comment was changed.
    #[error("signature by key {key_id} does not verify (data or trusted comment was changed)")]
    BadSignature {
        /// The key id of the key that was tried.
        key_id: KeyId,
    },
    /// A legacy (non-prehashed, "Ed") signature cannot be checked against a
    /// BLAKE2b-512 prehash: the caller must pass the data itself.
    #[error(
        "signature by key {key_id} is a legacy (not prehashed) signature; verify the data itself"
    )]
    NotPrehashed {
        /// The key id found in the signature.
        key_id: KeyId,
    },
    /// The operating system's random source failed while generating a key.
    #[error("the operating system's random source failed: {reason}")]
    Randomness {
        /// The error reported by the OS.
        reason: String,
    },
}

/// Why a release (manifest + signature) was refused. The variants follow the
/// order in which [`verify_release`](crate::verify_release) checks its rules.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ReleaseError {
    /// The manifest is larger than the size cap.
    #[error("manifest is {size} bytes, more than the {limit}-byte limit")]
    TooLarge {
        /// The manifest's size in bytes.
        size: usize,
        /// The cap ([`MAX_MANIFEST_BYTES`](crate::MAX_MANIFEST_BYTES)).
        limit: usize,
    },
    /// The signature file cannot be read.
    #[error("malformed signature: {reason}")]
    MalformedSignature {
        /// What is wrong with it.
        reason: String,
    },
    /// The signature names a key that is not trusted.
    #[error("signed by unknown key {key_id}; trusted: {}", KeyIdList(trusted))]
    UnknownKey {
        /// The key id found in the signature.
        key_id: KeyId,
        /// The ids of the keys that are trusted.
        trusted: Vec<KeyId>,
    },
    /// The signature is by a key that a verified rotation record revoked.
    #[error(
        "signed by key {key_id}, which a key rotation record revoked; \
         publish the release again with a trusted key"
    )]
    RevokedKey {
        /// The revoked key's id, found in the signature.
        key_id: KeyId,
    },
    /// The signature by a trusted key does not match the manifest bytes or
    /// the trusted comment.
    #[error("signature by key {key_id} does not match the manifest (tampered or corrupted)")]
    BadSignature {
        /// The trusted key that was tried.
        key_id: KeyId,
    },
    /// The signed manifest is not valid: bad JSON, unknown fields, bad
    /// schema, bad artifact path or sha256, empty command, zero size.
    #[error("malformed manifest: {reason}")]
    Malformed {
        /// What is wrong with it.
        reason: String,
    },
    /// The manifest is for another product.
    #[error("manifest is for product {found:?}, expected {expected:?}")]
    WrongProduct {
        /// The product this agent runs.
        expected: String,
        /// The product named in the manifest.
        found: String,
    },
    /// The manifest is for another channel.
    #[error("manifest is for channel {found:?}, expected {expected:?}")]
    WrongChannel {
        /// The channel this agent follows.
        expected: String,
        /// The channel named in the manifest.
        found: String,
    },
    /// The manifest carries another kind of release than the channel is
    /// followed for (an agent build on a payload channel, or the reverse).
    #[error("manifest is of kind {kind}, expected {expected}")]
    WrongKind {
        /// The manifest's kind.
        kind: crate::ReleaseKind,
        /// The kind expected.
        expected: crate::ReleaseKind,
    },
    /// The release is built for another platform than this agent runs on
    /// (an agent release must name one: absent is `"none"`).
    #[error("release is for platform {platform}, this agent runs {ours}")]
    OtherPlatform {
        /// The manifest's platform (`"none"` for an agent release without one).
        platform: String,
        /// This agent's platform.
        ours: String,
    },
    /// The manifest's `expires_at` is not after `now`.
    #[error("manifest expired at {expires_at}")]
    Expired {
        /// The manifest's `expires_at`, RFC 3339.
        expires_at: String,
    },
    /// The manifest's sequence is lower than one already seen.
    #[error("sequence {sequence} is lower than {highest} already seen (replayed manifest)")]
    Replayed {
        /// The manifest's sequence.
        sequence: u64,
        /// The highest sequence this agent has accepted.
        highest: u64,
    },
    /// The version is not newer than the running one (and the release does
    /// not allow a downgrade, or it is the very same version).
    #[error("{}", not_newer_reason(version, running))]
    NotNewer {
        /// The manifest's version.
        version: Version,
        /// The version running now.
        running: Version,
    },
    /// This agent marked the version bad, and no higher sequence has
    /// re-published it since.
    #[error(
        "version {version} was marked bad by this agent (at sequence {sequence}); \
         only a re-publish with a higher sequence clears it"
    )]
    MarkedBad {
        /// The manifest's version.
        version: Version,
        /// The sequence at or below which the version is bad (from the
        /// matching [`BadVersion`](crate::BadVersion)).
        sequence: u64,
    },
}

/// Why a key rotation record was refused. The variants follow the order in
/// which [`verify_rotation`](crate::verify_rotation) checks its rules; a
/// refused record changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RotationError {
    /// The record is larger than the size cap.
    #[error("rotation record is {size} bytes, more than the {limit}-byte limit")]
    TooLarge {
        /// The record's size in bytes.
        size: usize,
        /// The cap ([`MAX_ROTATION_BYTES`](crate::MAX_ROTATION_BYTES)).
        limit: usize,
    },
    /// The signature file cannot be read.
    #[error("malformed signature: {reason}")]
    MalformedSignature {
        /// What is wrong with it.
        reason: String,
    },
    /// The signing key was revoked by an earlier record.
    #[error("rotation record signed by revoked key {key_id}")]
    RevokedKey {
        /// The revoked key's id.
        key_id: KeyId,
    },
    /// The record is signed by a key that is not trusted now.
    #[error(
        "rotation record signed by untrusted key {key_id}; trusted: {}",
        KeyIdList(trusted)
    )]
    UnknownKey {
        /// The key id found in the signature.
        key_id: KeyId,
        /// The ids of the keys that are trusted.
        trusted: Vec<KeyId>,
    },
    /// The signature by a trusted key does not match the record.
    #[error("rotation record signature by key {key_id} does not verify (tampered or corrupted)")]
    BadSignature {
        /// The trusted key that was tried.
        key_id: KeyId,
    },
    /// The signed record is not valid JSON of the record's shape.
    #[error("malformed rotation record: {reason}")]
    Malformed {
        /// What is wrong with it.
        reason: String,
    },
    /// The record is for another channel.
    #[error("rotation record is for channel {found:?}, expected {expected:?}")]
    WrongChannel {
        /// The channel this agent follows.
        expected: String,
        /// The channel named in the record.
        found: String,
    },
    /// The record's sequence is not above the highest applied.
    #[error(
        "rotation record sequence {sequence} is not above {highest} already applied (replayed record)"
    )]
    Replayed {
        /// The record's sequence.
        sequence: u64,
        /// The highest rotation sequence applied.
        highest: u64,
    },
    /// The record endorses a key it also revokes, or one revoked before.
    #[error("rotation record endorses key {key_id}, which is revoked; revocation is for good")]
    EndorsesRevoked {
        /// The key both endorsed and revoked.
        key_id: KeyId,
    },
    /// The record revokes the key that signs it without endorsing a successor.
    #[error(
        "rotation record revokes its own signing key {key_id} without endorsing a replacement \
         (that would lock the fleet out); add --rotate-key NEW.pub"
    )]
    SelfRevocation {
        /// The signing key.
        key_id: KeyId,
    },
}

/// The one-line reason for [`ReleaseError::NotNewer`].
fn not_newer_reason(version: &Version, running: &Version) -> String {
    if version.cmp_precedence(running).is_eq() {
        format!("version {version} is the version already running")
    } else {
        format!(
            "version {version} is not newer than running {running} \
             and the release does not allow a downgrade"
        )
    }
}

/// Formats key ids as "A, B" or "none".
struct KeyIdList<'a>(&'a [KeyId]);

impl fmt::Display for KeyIdList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        for (i, id) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{id}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> Version {
        Version::parse(text).unwrap()
    }

    #[test]
    fn not_newer_message_names_both_versions() {
        let err = ReleaseError::NotNewer {
            version: v("1.0.0"),
            running: v("1.1.0"),
        };
        assert_eq!(
            err.to_string(),
            "version 1.0.0 is not newer than running 1.1.0 and the release does not allow a downgrade"
        );
    }

    #[test]
    fn not_newer_message_for_the_same_version() {
        let err = ReleaseError::NotNewer {
            version: v("1.1.0"),
            running: v("1.1.0"),
        };
        assert_eq!(
            err.to_string(),
            "version 1.1.0 is the version already running"
        );
    }

    #[test]
    fn unknown_key_lists_trusted_keys() {
        let err = ReleaseError::UnknownKey {
            key_id: KeyId([1, 0, 0, 0, 0, 0, 0, 0]),
            trusted: vec![
                KeyId([2, 0, 0, 0, 0, 0, 0, 0]),
                KeyId([3, 0, 0, 0, 0, 0, 0, 0]),
            ],
        };
        assert_eq!(
            err.to_string(),
            "signed by unknown key 0000000000000001; trusted: 0000000000000002, 0000000000000003"
        );
        let none = SigningError::UnknownKey {
            key_id: KeyId([0; 8]),
            trusted: vec![],
        };
        assert_eq!(
            none.to_string(),
            "signed by unknown key 0000000000000000; trusted: none"
        );
    }

    #[test]
    fn replayed_and_expired_messages() {
        let err = ReleaseError::Replayed {
            sequence: 3,
            highest: 5,
        };
        assert_eq!(
            err.to_string(),
            "sequence 3 is lower than 5 already seen (replayed manifest)"
        );
        let err = ReleaseError::Expired {
            expires_at: "2026-12-22T10:00:00Z".into(),
        };
        assert_eq!(err.to_string(), "manifest expired at 2026-12-22T10:00:00Z");
    }

    #[test]
    fn encrypted_key_message_says_what_to_do() {
        let text = SigningError::EncryptedKey.to_string();
        assert!(text.starts_with("the key is encrypted; use an unencrypted key (minisign -G -W)"));
        assert!(!text.contains('\n'));
    }
}
