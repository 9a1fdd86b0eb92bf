//! Key rotation records (SPEC §13, issue 9 item 5): a channel's
//! `keys.json`, signed by a key the agent trusts now, that endorses new keys
//! and may revoke old ones, and [`verify_rotation`], which checks one
//! against a [`KeyRing`] and returns the ring it leads to.
//!
//! ```json
//! { "schema": 1, "channel": "stable", "sequence": 1,
//!   "endorse": ["RWQ…"], "revoke": ["RWQ…"],
//!   "published_at": "2026-11-22T10:00:00Z" }
//! ```
//!
//! Unlike a manifest, a rotation record refuses unknown fields: it is a
//! trust decision, and a field this crate does not know could carry a rule
//! (an expiry, a condition) that it would silently drop.
//!
//! **Decision (self-revocation):** the issue says configured keys stay
//! trusted "unless revoked by a record signed by another trusted key", so
//! that no key can lock the fleet out. We implement the purpose of that rule:
//! a record may revoke the very key that signs it only when the same record
//! endorses a replacement (`publish --key OLD.key --rotate-key NEW.pub
//! --revoke OLD.pub`), and no record may leave the ring without a trusted
//! key. A record that revokes its signer without a successor is refused.
//! (Requiring a second record signed by the successor would add no safety:
//! whoever holds OLD can endorse a key of their own and revoke OLD with it.)

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::error::{RotationError, SigningError};
use crate::keyring::KeyRing;
use crate::keys::{KeyId, PublicKey};
use crate::signature::Signature;
use crate::wire_time::rfc3339;

/// The rotation record schema this crate reads and writes.
pub const ROTATION_SCHEMA: u32 = 1;

/// Largest rotation record accepted, in bytes: a key is ~60 bytes of JSON,
/// so 64 KiB holds about a thousand while bounding what a hostile server can
/// make the agent read.
pub const MAX_ROTATION_BYTES: usize = 64 * 1024;

/// A channel's key rotation record, as published in `keys.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationRecord {
    /// The channel the record is for.
    pub channel: String,
    /// Increases with every rotation on the channel; defends against
    /// replayed records (its own counter, not the releases' sequence).
    pub sequence: u64,
    /// Keys to trust from now on.
    pub endorse: Vec<PublicKey>,
    /// Keys to refuse from now on, for good.
    pub revoke: Vec<PublicKey>,
    /// When the record was published.
    pub published_at: SystemTime,
}

/// The wire form: keys as bare base64 strings (`"RWQ…"`).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireRecord {
    /// Must be [`ROTATION_SCHEMA`].
    schema: u32,
    /// See [`RotationRecord::channel`].
    channel: String,
    /// See [`RotationRecord::sequence`].
    sequence: u64,
    /// See [`RotationRecord::endorse`].
    #[serde(default)]
    endorse: Vec<String>,
    /// See [`RotationRecord::revoke`].
    #[serde(default)]
    revoke: Vec<String>,
    /// See [`RotationRecord::published_at`].
    #[serde(with = "rfc3339")]
    published_at: SystemTime,
}

impl RotationRecord {
    /// The record as pretty JSON with a trailing newline: the exact bytes to
    /// sign and publish.
    pub fn to_json(&self) -> Vec<u8> {
        let wire = WireRecord {
            schema: ROTATION_SCHEMA,
            channel: self.channel.clone(),
            sequence: self.sequence,
            endorse: self.endorse.iter().map(PublicKey::to_base64).collect(),
            revoke: self.revoke.iter().map(PublicKey::to_base64).collect(),
            published_at: self.published_at,
        };
        match serde_json::to_vec_pretty(&wire) {
            Ok(mut json) => {
                json.push(b'\n');
                json
            }
            // Invariant: strings, numbers and a clamped time always serialize
            // into a Vec.
            Err(e) => unreachable!("a rotation record always serializes to JSON: {e}"),
        }
    }

    /// Parses record JSON: schema, keys and time bounds. The rules that need
    /// a key ring are [`verify_rotation`]'s.
    pub fn from_json(json: &[u8]) -> Result<RotationRecord, RotationError> {
        let malformed = |reason: String| RotationError::Malformed { reason };
        let wire: WireRecord =
            serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(json))
                .map_err(|e| malformed(crate::manifest::path_error(&e)))?;
        if wire.schema > ROTATION_SCHEMA {
            return Err(malformed(format!(
                "schema {} is newer than this agent's ({ROTATION_SCHEMA}): update the agent first",
                wire.schema
            )));
        }
        if wire.schema != ROTATION_SCHEMA {
            return Err(malformed(format!(
                "schema {} is not supported (expected {ROTATION_SCHEMA})",
                wire.schema
            )));
        }
        let keys = |field: &str, texts: &[String]| {
            texts
                .iter()
                .map(|text| {
                    PublicKey::parse(text).map_err(|e| malformed(format!("{field}: {text:?}: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(RotationRecord {
            endorse: keys("endorse", &wire.endorse)?,
            revoke: keys("revoke", &wire.revoke)?,
            channel: wire.channel,
            sequence: wire.sequence,
            published_at: wire.published_at,
        })
    }
}

/// A rotation record that passed every rule, the key that signed it, and
/// the ring it leads to (what the agent persists).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedRotation {
    /// The verified record.
    pub record: RotationRecord,
    /// The id of the trusted key that signed it.
    pub key_id: KeyId,
    /// The ring once the record is applied.
    pub ring: KeyRing,
}

/// Checks a channel's rotation record and its minisign signature against
/// the keys trusted now. The first rule that fails decides the error, and a
/// refused record changes nothing (the ring is a value; only the returned
/// one carries the change).
pub fn verify_rotation(
    record: &[u8],
    signature: &[u8],
    ring: &KeyRing,
    channel: &str,
) -> Result<VerifiedRotation, RotationError> {
    // 1. Size cap: a hostile server cannot make us parse megabytes.
    if record.len() > MAX_ROTATION_BYTES {
        return Err(RotationError::TooLarge {
            size: record.len(),
            limit: MAX_ROTATION_BYTES,
        });
    }

    // 2. "signed by a currently trusted key": a revoked key signs nothing
    //    any more, and a record signed by an untrusted key changes nothing.
    let signature = crate::policy::read_signature(signature)
        .map_err(|reason| RotationError::MalformedSignature { reason })?;
    if ring.is_revoked(signature.key_id()) {
        return Err(RotationError::RevokedKey {
            key_id: signature.key_id(),
        });
    }
    let trusted = ring.trusted();
    let signer = verify_signature(&signature, &trusted, record)?;

    // Only now is the record worth parsing: it comes from a trusted key.
    let parsed = RotationRecord::from_json(record)?;

    // 3. The record is for this channel: a record of another channel (with
    //    its own sequence) must not be replayed here.
    if parsed.channel != channel {
        return Err(RotationError::WrongChannel {
            expected: channel.to_owned(),
            found: parsed.channel,
        });
    }

    // 4. Replay: "a replayed (lower or equal sequence) record is refused".
    //    Equal is refused too: that record is applied already, and applying
    //    it again must not be mistaken for a new decision.
    if parsed.sequence <= ring.sequence() {
        return Err(RotationError::Replayed {
            sequence: parsed.sequence,
            highest: ring.sequence(),
        });
    }

    // 5. A record says one thing per key: not endorse and revoke one key,
    //    and revocation is for good (a revoked key is never endorsed again).
    for key in &parsed.endorse {
        let id = key.key_id();
        if parsed.revoke.iter().any(|k| k.key_id() == id) || ring.is_revoked(id) {
            return Err(RotationError::EndorsesRevoked { key_id: id });
        }
    }

    // 6. "A key cannot revoke itself to lock the fleet out": revoking the
    //    signer needs a replacement endorsed in the same record. With rule 5
    //    this keeps the fleet trusting at least one key: the signer, or its
    //    successor.
    if parsed.revoke.iter().any(|k| k.key_id() == signer) && parsed.endorse.is_empty() {
        return Err(RotationError::SelfRevocation { key_id: signer });
    }

    let rotated = ring.rotated(parsed.sequence, &parsed.endorse, &parsed.revoke);
    Ok(VerifiedRotation {
        record: parsed,
        key_id: signer,
        ring: rotated,
    })
}

/// Checks the signature over exactly the bytes received.
fn verify_signature(
    signature: &Signature,
    trusted: &[PublicKey],
    record: &[u8],
) -> Result<KeyId, RotationError> {
    match signature.verify(trusted, record) {
        Ok(key) => Ok(key.key_id()),
        Err(SigningError::UnknownKey { key_id, trusted }) => {
            Err(RotationError::UnknownKey { key_id, trusted })
        }
        Err(SigningError::BadSignature { key_id }) => Err(RotationError::BadSignature { key_id }),
        Err(other) => Err(RotationError::MalformedSignature {
            reason: other.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests;
