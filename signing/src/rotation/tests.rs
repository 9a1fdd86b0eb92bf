//! Unit tests of `rotation`.

use super::*;
use crate::secret_key::SecretKey;
use crate::wire_time::parse_rfc3339;

/// A record of `sequence` on "stable" endorsing and revoking these keys.
fn record(sequence: u64, endorse: &[&SecretKey], revoke: &[&SecretKey]) -> RotationRecord {
    RotationRecord {
        channel: "stable".into(),
        sequence,
        endorse: endorse.iter().map(|k| k.public_key()).collect(),
        revoke: revoke.iter().map(|k| k.public_key()).collect(),
        published_at: parse_rfc3339("2026-11-22T10:00:00Z").unwrap(),
    }
}

/// The record's bytes and `signer`'s signature of them.
fn signed(signer: &SecretKey, record: &RotationRecord) -> (Vec<u8>, Vec<u8>) {
    let bytes = record.to_json();
    let signature = signer.sign(&bytes, "file:keys.json").to_file_string();
    (bytes, signature.into_bytes())
}

fn verify(
    signer: &SecretKey,
    record: &RotationRecord,
    ring: &KeyRing,
) -> Result<VerifiedRotation, RotationError> {
    let (bytes, signature) = signed(signer, record);
    verify_rotation(&bytes, &signature, ring, "stable")
}

fn keys() -> (SecretKey, SecretKey, SecretKey) {
    let key = || SecretKey::generate().unwrap();
    (key(), key(), key())
}

#[test]
fn a_trusted_key_endorses_a_new_one() {
    let (a, b, _) = keys();
    let ring = KeyRing::new(vec![a.public_key()]);
    let verified = verify(&a, &record(1, &[&b], &[]), &ring).unwrap();
    assert_eq!(verified.key_id, a.key_id());
    assert_eq!(
        verified.ring.trusted(),
        vec![a.public_key(), b.public_key()]
    );
    assert_eq!(verified.ring.sequence(), 1);
    assert_eq!(verified.record, record(1, &[&b], &[]));
}

#[test]
fn the_old_key_hands_over_and_revokes_itself() {
    let (a, b, _) = keys();
    let ring = KeyRing::new(vec![a.public_key()]);
    let verified = verify(&a, &record(1, &[&b], &[&a]), &ring).unwrap();
    assert_eq!(verified.ring.trusted(), vec![b.public_key()]);
    assert_eq!(verified.ring.revoked_ids(), vec![a.key_id()]);
}

#[test]
fn an_endorsed_key_revokes_the_configured_one_later() {
    let (a, b, _) = keys();
    let ring = KeyRing::new(vec![a.public_key()]);
    let ring = verify(&a, &record(1, &[&b], &[]), &ring).unwrap().ring;
    let ring = verify(&b, &record(2, &[], &[&a]), &ring).unwrap().ring;
    assert_eq!(ring.trusted(), vec![b.public_key()]);
    // The revoked configured key signs nothing any more.
    let err = verify(&a, &record(3, &[&a], &[]), &ring).unwrap_err();
    assert_eq!(err, RotationError::RevokedKey { key_id: a.key_id() });
}

#[test]
fn a_record_signed_by_an_untrusted_key_is_refused() {
    let (a, b, mallory) = keys();
    let ring = KeyRing::new(vec![a.public_key()]);
    let err = verify(&mallory, &record(1, &[&b], &[&a]), &ring).unwrap_err();
    assert!(
        matches!(&err, RotationError::UnknownKey { key_id, trusted }
            if *key_id == mallory.key_id() && trusted == &[a.key_id()]),
        "{err}"
    );
    assert_eq!(ring.trusted(), vec![a.public_key()]);
}

#[test]
fn a_changed_record_is_a_bad_signature() {
    let (a, b, mallory) = keys();
    let ring = KeyRing::new(vec![a.public_key()]);
    let (bytes, signature) = signed(&a, &record(1, &[&b], &[]));
    let forged = String::from_utf8(bytes).unwrap().replace(
        &b.public_key().to_base64(),
        &mallory.public_key().to_base64(),
    );
    let err = verify_rotation(forged.as_bytes(), &signature, &ring, "stable").unwrap_err();
    assert_eq!(err, RotationError::BadSignature { key_id: a.key_id() });
}

#[test]
fn replayed_records_are_refused_lower_or_equal() {
    let (a, b, c) = keys();
    let ring = KeyRing::new(vec![a.public_key()]);
    let ring = verify(&a, &record(5, &[&b], &[]), &ring).unwrap().ring;
    for sequence in [5, 4, 0] {
        let err = verify(&a, &record(sequence, &[&c], &[]), &ring).unwrap_err();
        assert_eq!(
            err,
            RotationError::Replayed {
                sequence,
                highest: 5
            }
        );
    }
}

#[test]
fn a_key_cannot_revoke_itself_without_a_successor() {
    let (a, b, _) = keys();
    let ring = KeyRing::new(vec![a.public_key(), b.public_key()]);
    let err = verify(&a, &record(1, &[], &[&a]), &ring).unwrap_err();
    assert_eq!(err, RotationError::SelfRevocation { key_id: a.key_id() });
    // Another trusted key may revoke it.
    let ring = verify(&b, &record(1, &[], &[&a]), &ring).unwrap().ring;
    assert_eq!(ring.trusted(), vec![b.public_key()]);
}

#[test]
fn no_record_can_leave_the_fleet_without_a_key() {
    let (a, b, _) = keys();
    let ring = KeyRing::new(vec![a.public_key(), b.public_key()]);
    let err = verify(&b, &record(1, &[], &[&a, &b]), &ring).unwrap_err();
    // b revokes itself without a successor: refused first for that.
    assert_eq!(err, RotationError::SelfRevocation { key_id: b.key_id() });
    let ring = KeyRing::new(vec![a.public_key()]);
    let (c, _, _) = keys();
    let err = verify(&a, &record(1, &[&c], &[&a, &c]), &ring).unwrap_err();
    assert_eq!(err, RotationError::EndorsesRevoked { key_id: c.key_id() });
}

#[test]
fn a_revoked_key_is_never_endorsed_again() {
    let (a, b, c) = keys();
    let ring = KeyRing::new(vec![a.public_key()]);
    let ring = verify(&a, &record(1, &[&b], &[&a]), &ring).unwrap().ring;
    let err = verify(&b, &record(2, &[&a, &c], &[]), &ring).unwrap_err();
    assert_eq!(err, RotationError::EndorsesRevoked { key_id: a.key_id() });
}

#[test]
fn a_record_of_another_channel_is_refused() {
    let (a, b, _) = keys();
    let ring = KeyRing::new(vec![a.public_key()]);
    let mut other = record(1, &[&b], &[]);
    other.channel = "beta".into();
    let err = verify(&a, &other, &ring).unwrap_err();
    assert!(matches!(err, RotationError::WrongChannel { .. }), "{err}");
}

#[test]
fn oversized_malformed_and_unknown_field_records_are_refused() {
    let (a, b, _) = keys();
    let ring = KeyRing::new(vec![a.public_key()]);
    let big = vec![b' '; MAX_ROTATION_BYTES + 1];
    let signature = a.sign(&big, "c").to_file_string();
    let err = verify_rotation(&big, signature.as_bytes(), &ring, "stable").unwrap_err();
    assert!(matches!(err, RotationError::TooLarge { .. }), "{err}");

    let err = verify_rotation(b"{}", b"garbage", &ring, "stable").unwrap_err();
    assert!(
        matches!(err, RotationError::MalformedSignature { .. }),
        "{err}"
    );

    let good = String::from_utf8(record(1, &[&b], &[]).to_json()).unwrap();
    for (bad, needle) in [
        (
            good.replace("\"schema\": 1", "\"schema\": 2"),
            "update the agent first",
        ),
        (
            good.replace("\"schema\": 1", "\"schema\": 1, \"if\": 1"),
            "unknown field",
        ),
        (good.replace("RW", "XX"), "endorse"),
        (good.replace("2026-11-22", "10000-11-22"), "published_at"),
        ("3".to_owned(), "invalid type"),
    ] {
        let signature = a.sign(bad.as_bytes(), "c").to_file_string();
        let err =
            verify_rotation(bad.as_bytes(), signature.as_bytes(), &ring, "stable").unwrap_err();
        assert!(
            matches!(&err, RotationError::Malformed { reason } if reason.contains(needle)),
            "{needle}: {err}"
        );
    }
}

#[test]
fn a_record_round_trips_through_json() {
    let (_, b, c) = keys();
    let rec = record(7, &[&b], &[&c]);
    assert_eq!(RotationRecord::from_json(&rec.to_json()).unwrap(), rec);
}
