//! The keys a root trusts beyond its configuration (SPEC §13 "Key
//! rotation"): `ROOT/keys.json` keeps what verified rotation records
//! endorsed and revoked, and [`accept_rotation`] reads a channel folder's
//! record (`v1/channels/{channel}/keys.json` + `.minisig`, e.g. in an offline
//! bundle), verifies it with [`signing::verify_rotation`] and persists the
//! ring it leads to.
//!
//! The configured keys are never written here: they come from the config
//! (or `--trust`) every time, so editing the config still works; only what
//! rotation records added or took away is kept.

use std::io;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use serde::{Deserialize, Serialize};
use signing::{KeyRing, PublicKey};
use tracing::{info, warn};

use crate::channel::{ChannelDir, MAX_SIGNATURE_BYTES, read_capped};

/// The file in the root that holds the persisted ring.
pub const KEYS_FILE: &str = "keys.json";

/// Schema of [`KEYS_FILE`].
const KEYS_SCHEMA: u32 = 1;

/// The largest `keys.json` read: ~60 bytes per key, so 1 MiB is thousands
/// of rotations while bounding what a damaged file can make us parse.
const MAX_KEYS_FILE_BYTES: u64 = 1024 * 1024;

/// `ROOT/keys.json`: what rotation records changed, keys as bare base64.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Persisted {
    /// Must be [`KEYS_SCHEMA`].
    schema: u32,
    /// The highest rotation sequence applied.
    sequence: u64,
    /// Keys endorsed by rotation records.
    endorsed: Vec<String>,
    /// Keys revoked by rotation records.
    revoked: Vec<String>,
}

/// The path of the persisted ring in `root`.
pub fn keys_file(root: &Path) -> PathBuf {
    root.join(KEYS_FILE)
}

/// The ring of `root`: the configured keys plus what `ROOT/keys.json` says
/// rotation records endorsed and revoked (none when the file is absent). A
/// damaged file is an error, never "no revocations".
pub fn load(root: &Path, configured: &[PublicKey]) -> anyhow::Result<KeyRing> {
    let path = keys_file(root);
    let bytes = match read_capped(&path, MAX_KEYS_FILE_BYTES) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(KeyRing::new(configured.to_vec()));
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    parse(&bytes, configured).with_context(|| format!("reading {}", path.display()))
}

/// Parses the persisted ring.
fn parse(bytes: &[u8], configured: &[PublicKey]) -> anyhow::Result<KeyRing> {
    if bytes.len() as u64 > MAX_KEYS_FILE_BYTES {
        return Err(anyhow!("larger than {MAX_KEYS_FILE_BYTES} bytes"));
    }
    let persisted: Persisted = serde_json::from_slice(bytes)?;
    if persisted.schema != KEYS_SCHEMA {
        return Err(anyhow!(
            "schema {} is not supported (expected {KEYS_SCHEMA})",
            persisted.schema
        ));
    }
    let keys = |texts: &[String]| {
        texts
            .iter()
            .map(|text| PublicKey::parse(text).with_context(|| format!("key {text:?}")))
            .collect::<anyhow::Result<Vec<_>>>()
    };
    Ok(KeyRing::restore(
        configured.to_vec(),
        keys(&persisted.endorsed)?,
        keys(&persisted.revoked)?,
        persisted.sequence,
    ))
}

/// Writes what `ring` adds to its configured keys into `ROOT/keys.json`,
/// crash-safely (one atomic write).
pub fn save(root: &Path, ring: &KeyRing) -> anyhow::Result<()> {
    let persisted = Persisted {
        schema: KEYS_SCHEMA,
        sequence: ring.sequence(),
        endorsed: ring.endorsed().iter().map(PublicKey::to_base64).collect(),
        revoked: ring.revoked().iter().map(PublicKey::to_base64).collect(),
    };
    let mut json = serde_json::to_vec_pretty(&persisted)?;
    json.push(b'\n');
    let path = keys_file(root);
    bank_layout::write_atomic(&path, &json).with_context(|| format!("writing {}", path.display()))
}

/// The ring of `root` for a release from `channel`, once the channel
/// folder's rotation record (if it has one) is applied:
/// - no record: the persisted ring;
/// - a record already applied (or older): the persisted ring, unchanged,
///   whatever its signature (it was checked when it was applied);
/// - a new record that verifies: the ring it leads to, persisted first;
/// - any other record (untrusted, revoked or bad signature, malformed):
///   an error, and nothing changes.
pub fn accept_rotation(
    root: &Path,
    channel: &ChannelDir,
    name: &str,
    configured: &[PublicKey],
) -> anyhow::Result<KeyRing> {
    let record_path = channel.keys();
    let record = match read_capped(&record_path, signing::MAX_ROTATION_BYTES as u64) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return load(root, configured),
        Err(e) => return Err(e).with_context(|| format!("reading {}", record_path.display())),
    };
    let signature_path = channel.keys_signature();
    let signature = || {
        read_capped(&signature_path, MAX_SIGNATURE_BYTES).with_context(|| {
            format!(
                "rotation record {}: reading its signature",
                record_path.display()
            )
        })
    };
    apply_rotation(root, name, configured, &record, signature)
        .with_context(|| format!("rotation record {}", record_path.display()))
}

/// Applies a channel's rotation record (bytes as downloaded or read) to the
/// ring of `root`, with the rules of [`accept_rotation`]; `signature` is
/// asked for only when the record is new. The online checker can call this
/// with the `keys.json` it fetched.
pub fn apply_rotation(
    root: &Path,
    channel: &str,
    configured: &[PublicKey],
    record: &[u8],
    signature: impl FnOnce() -> anyhow::Result<Vec<u8>>,
) -> anyhow::Result<KeyRing> {
    let ring = load(root, configured)?;
    // A record at or below the applied sequence is one this root has seen
    // (typically the very record that revoked its own signer on handing
    // over): skip it before its signature is checked, or that revoked
    // signer would fail every later apply from the same bundle. Skipping on
    // unverified bytes is safe: it changes nothing, which is all a forger
    // could get by deleting the file.
    if let Ok(unverified) = signing::RotationRecord::from_json(record)
        && unverified.sequence <= ring.sequence()
    {
        return Ok(ring);
    }
    let verified = signing::verify_rotation(record, &signature()?, &ring, channel)?;
    save(root, &verified.ring)?;
    info!(
        sequence = verified.record.sequence,
        signer = %verified.key_id,
        endorsed = verified.record.endorse.len(),
        revoked = verified.record.revoke.len(),
        "key rotation applied"
    );
    Ok(verified.ring)
}

/// The ring to verify online releases with: the persisted ring, or, if
/// `ROOT/keys.json` cannot be read, a ring that trusts nothing (fail
/// closed: a damaged file must not bring a revoked key back), logged.
pub fn load_or_trust_nothing(root: &Path, configured: &[PublicKey]) -> KeyRing {
    load(root, configured).unwrap_or_else(|e| {
        warn!(
            error = format!("{e:#}"),
            "the key ring cannot be read; no release is trusted until it is fixed"
        );
        KeyRing::new(Vec::new())
    })
}

#[cfg(test)]
mod tests {
    use signing::{RotationRecord, SecretKey};

    use super::*;

    fn publish_rotation(base: &Path, signer: &SecretKey, sequence: u64, endorse: &[PublicKey]) {
        let record = RotationRecord {
            channel: "stable".into(),
            sequence,
            endorse: endorse.to_vec(),
            revoke: vec![signer.public_key()],
            published_at: std::time::SystemTime::UNIX_EPOCH,
        };
        let bytes = record.to_json();
        let signature = signer.sign(&bytes, "file:keys.json").to_file_string();
        ChannelDir::new(base, "stable")
            .write_rotation(&bytes, signature.as_bytes())
            .unwrap();
    }

    #[test]
    fn a_missing_file_is_the_configured_keys() {
        let root = tempfile::tempdir().unwrap();
        let a = SecretKey::generate().unwrap().public_key();
        let ring = load(root.path(), std::slice::from_ref(&a)).unwrap();
        assert_eq!(ring, KeyRing::new(vec![a]));
    }

    #[test]
    fn save_then_load_round_trips() {
        let root = tempfile::tempdir().unwrap();
        let key = || SecretKey::generate().unwrap().public_key();
        let (a, b, c) = (key(), key(), key());
        let ring = KeyRing::restore(vec![a.clone()], vec![b], vec![c], 4);
        save(root.path(), &ring).unwrap();
        assert_eq!(load(root.path(), &[a]).unwrap(), ring);
    }

    #[test]
    fn a_damaged_file_is_an_error_and_online_trusts_nothing() {
        let root = tempfile::tempdir().unwrap();
        let a = SecretKey::generate().unwrap().public_key();
        std::fs::write(keys_file(root.path()), "{ not json").unwrap();
        assert!(load(root.path(), std::slice::from_ref(&a)).is_err());
        assert!(
            load_or_trust_nothing(root.path(), &[a])
                .trusted()
                .is_empty()
        );
    }

    #[test]
    fn a_channel_record_is_applied_once_and_persisted() {
        let (root, base) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a = SecretKey::generate().unwrap();
        let b = SecretKey::generate().unwrap().public_key();
        let channel = ChannelDir::new(base.path(), "stable");
        let configured = [a.public_key()];
        // No record: nothing changes.
        let ring = accept_rotation(root.path(), &channel, "stable", &configured).unwrap();
        assert_eq!(ring, KeyRing::new(configured.to_vec()));
        assert!(!keys_file(root.path()).exists());

        publish_rotation(base.path(), &a, 1, std::slice::from_ref(&b));
        let ring = accept_rotation(root.path(), &channel, "stable", &configured).unwrap();
        assert_eq!(ring.trusted(), vec![b.clone()]);
        assert_eq!(load(root.path(), &configured).unwrap(), ring);
        // Seen again: the same ring, no error.
        let again = accept_rotation(root.path(), &channel, "stable", &configured).unwrap();
        assert_eq!(again, ring);
    }

    #[test]
    fn an_untrusted_record_is_refused_and_changes_nothing() {
        let (root, base) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a = SecretKey::generate().unwrap();
        let mallory = SecretKey::generate().unwrap();
        let channel = ChannelDir::new(base.path(), "stable");
        publish_rotation(base.path(), &mallory, 1, &[mallory.public_key()]);
        let err = accept_rotation(root.path(), &channel, "stable", &[a.public_key()]).unwrap_err();
        assert!(format!("{err:#}").contains("untrusted key"), "{err:#}");
        assert!(!keys_file(root.path()).exists());
    }
}
