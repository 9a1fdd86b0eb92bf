//! `verify_release`: one test per rule of SPEC §4, each matching the error
//! variant the rule reports.

use std::time::Duration;

use semver::Version;
use signing::{
    KeyRing, MAX_MANIFEST_BYTES, MAX_SIGNATURE_BYTES, ReleaseError, RotationRecord, verify_rotation,
};

use crate::release_fixture::{Agent, Publisher, setup, time, version};

#[test]
fn accepts_a_good_release() {
    let (publisher, agent) = setup();
    let release = agent.check(&publisher.publish(|_| {})).unwrap();
    assert_eq!(release.manifest, publisher.manifest);
    assert_eq!(release.key_id, publisher.key.key_id());
}

#[test]
fn too_large() {
    let (publisher, agent) = setup();
    // Trailing whitespace is valid JSON: pad a signed manifest to the exact cap...
    let mut json = publisher.manifest.to_json();
    json.resize(MAX_MANIFEST_BYTES, b' ');
    agent.check(&publisher.sign_bytes(&json)).unwrap();
    // ... one byte more is refused, however well signed.
    json.push(b' ');
    let err = agent.check(&publisher.sign_bytes(&json)).unwrap_err();
    assert!(matches!(err, ReleaseError::TooLarge { size, limit }
        if size == MAX_MANIFEST_BYTES + 1 && limit == MAX_MANIFEST_BYTES));
}

#[test]
fn malformed_signature() {
    let (publisher, agent) = setup();
    let (manifest, _) = publisher.publish(|_| {});
    for signature in [
        b"".to_vec(),
        b"not a signature".to_vec(),
        vec![0xff; 10],
        vec![b'a'; 20_000],
    ] {
        let err = agent.check(&(manifest.clone(), signature)).unwrap_err();
        assert!(
            matches!(err, ReleaseError::MalformedSignature { .. }),
            "{err}"
        );
    }
}

#[test]
fn unknown_key() {
    let (publisher, mut agent) = setup();
    agent.keys.remove(1);
    let err = agent.check(&publisher.publish(|_| {})).unwrap_err();
    assert!(matches!(&err, ReleaseError::UnknownKey { key_id, trusted }
        if *key_id == publisher.key.key_id() && trusted == &[agent.keys[0].key_id()]));
    assert!(err.to_string().starts_with(&format!(
        "signed by unknown key {}; trusted: ",
        publisher.key.key_id()
    )));
}

#[test]
fn revoked_key_is_refused_even_when_still_listed_as_trusted() {
    let (publisher, mut agent) = setup();
    agent.revoked.push(publisher.key.key_id());
    let err = agent.check(&publisher.publish(|_| {})).unwrap_err();
    assert_eq!(
        err,
        ReleaseError::RevokedKey {
            key_id: publisher.key.key_id()
        }
    );
    assert!(err.to_string().contains("revoked"), "{err}");
}

#[test]
fn a_key_endorsed_by_a_rotation_record_signs_releases() {
    let (old, _) = setup();
    let new = Publisher::new();
    let ring = KeyRing::new(vec![old.key.public_key()]);
    let record = RotationRecord {
        channel: "stable".into(),
        sequence: 1,
        endorse: vec![new.key.public_key()],
        revoke: vec![old.key.public_key()],
        published_at: time("2026-11-22T10:00:00Z"),
    };
    let bytes = record.to_json();
    let signature = old.key.sign(&bytes, "file:keys.json").to_file_string();
    let ring = verify_rotation(&bytes, signature.as_bytes(), &ring, "stable")
        .unwrap()
        .ring;
    let mut agent = Agent::trusting(&new);
    agent.keys = ring.trusted();
    agent.revoked = ring.revoked_ids();
    agent.check(&new.publish(|_| {})).unwrap();
    let err = agent.check(&old.publish(|_| {})).unwrap_err();
    assert_eq!(
        err,
        ReleaseError::RevokedKey {
            key_id: old.key.key_id()
        }
    );
}

#[test]
fn a_long_trusted_comment_within_the_signature_cap_verifies() {
    let (publisher, agent) = setup();
    let manifest = publisher.manifest.to_json();
    // minisign allows 8 KiB of trusted comment; the cap leaves room above it.
    let comment = "c".repeat(12 * 1024);
    let signature = publisher.key.sign(&manifest, &comment).to_file_string();
    assert!(signature.len() > 8 * 1024 && signature.len() <= MAX_SIGNATURE_BYTES);
    agent
        .check(&(manifest.clone(), signature.into_bytes()))
        .unwrap();
    let too_long = publisher
        .key
        .sign(&manifest, &"c".repeat(MAX_SIGNATURE_BYTES))
        .to_file_string();
    let err = agent.check(&(manifest, too_long.into_bytes())).unwrap_err();
    assert!(
        matches!(err, ReleaseError::MalformedSignature { .. }),
        "{err}"
    );
}

#[test]
fn bad_signature_for_a_changed_manifest_byte() {
    let (publisher, agent) = setup();
    let (mut manifest, signature) = publisher.publish(|_| {});
    let at = manifest.iter().position(|&b| b == b'2').unwrap(); // in "1.2.0"
    manifest[at] = b'9';
    let err = agent.check(&(manifest, signature)).unwrap_err();
    assert!(
        matches!(err, ReleaseError::BadSignature { key_id } if key_id == publisher.key.key_id())
    );
}

#[test]
fn bad_signature_for_a_changed_trusted_comment() {
    let (publisher, agent) = setup();
    let (manifest, signature) = publisher.publish(|_| {});
    let forged = String::from_utf8(signature)
        .unwrap()
        .replace("file:release.json", "file:other.json");
    let err = agent.check(&(manifest, forged.into_bytes())).unwrap_err();
    assert!(matches!(err, ReleaseError::BadSignature { .. }));
}

#[test]
fn malformed_manifest() {
    let (publisher, agent) = setup();
    let cases = [
        publisher.sign_bytes(b"{ not json"),
        publisher.sign_bytes(br#"{"schema": 1}"#),
        publisher.publish(|m| m.schema = 2),
        publisher.publish(|m| m.artifact.path = "../../etc/passwd".into()),
        publisher.publish(|m| m.artifact.sha256 = "AB".repeat(32)),
        publisher.publish(|m| m.artifact.size = 0),
        publisher.publish(|m| m.entrypoint.command.clear()),
    ];
    for case in cases {
        let err = agent.check(&case).unwrap_err();
        assert!(matches!(err, ReleaseError::Malformed { .. }), "{err}");
    }
}

#[test]
fn wrong_product() {
    let (publisher, mut agent) = setup();
    let release = publisher.publish(|m| m.product = "other".into());
    let err = agent.check(&release).unwrap_err();
    assert!(
        matches!(&err, ReleaseError::WrongProduct { expected, found }
        if expected == "acme-connector" && found == "other")
    );
    agent.product = None; // a fresh root accepts any product
    agent.check(&release).unwrap();
}

#[test]
fn wrong_channel() {
    let (publisher, agent) = setup();
    let err = agent
        .check(&publisher.publish(|m| m.channel = "beta".into()))
        .unwrap_err();
    assert!(
        matches!(&err, ReleaseError::WrongChannel { expected, found }
        if expected == "stable" && found == "beta")
    );
}

#[test]
fn expired() {
    let (publisher, mut agent) = setup();
    let release = publisher.publish(|_| {});
    agent.now = publisher.manifest.expires_at - Duration::from_secs(1);
    agent.check(&release).unwrap();
    agent.now = publisher.manifest.expires_at; // expires_at itself is already expired
    let err = agent.check(&release).unwrap_err();
    assert!(
        matches!(&err, ReleaseError::Expired { expires_at } if expires_at == "2026-12-22T10:00:00Z")
    );
    assert_eq!(err.to_string(), "manifest expired at 2026-12-22T10:00:00Z");
}

#[test]
fn replayed() {
    let (publisher, mut agent) = setup();
    let release = publisher.publish(|m| m.sequence = 3);
    let err = agent.check(&release).unwrap_err();
    assert!(matches!(
        err,
        ReleaseError::Replayed {
            sequence: 3,
            highest: 5
        }
    ));
    assert_eq!(
        err.to_string(),
        "sequence 3 is lower than 5 already seen (replayed manifest)"
    );
    agent.highest_sequence = 3; // the same sequence again is allowed
    agent.check(&release).unwrap();
}

#[test]
fn not_newer() {
    let (publisher, mut agent) = setup();
    let older = publisher.publish(|m| m.version = version("1.0.0"));
    let err = agent.check(&older).unwrap_err();
    assert!(matches!(&err, ReleaseError::NotNewer { version, running }
        if *version == Version::new(1, 0, 0) && *running == Version::new(1, 1, 0)));
    assert_eq!(
        err.to_string(),
        "version 1.0.0 is not newer than running 1.1.0 and the release does not allow a downgrade"
    );
    agent.running = None; // nothing running yet: any version is new
    agent.check(&older).unwrap();
}

#[test]
fn same_version_is_not_newer_even_with_downgrade() {
    let (publisher, agent) = setup();
    for downgrade in [false, true] {
        let release = publisher.publish(|m| {
            m.version = version("1.1.0+build.7");
            m.downgrade = downgrade;
        });
        let err = agent.check(&release).unwrap_err();
        assert!(
            matches!(err, ReleaseError::NotNewer { .. }),
            "downgrade: {downgrade}"
        );
    }
}

#[test]
fn downgrade_allowed() {
    let (publisher, agent) = setup();
    let release = publisher.publish(|m| {
        m.version = version("1.0.0");
        m.downgrade = true;
    });
    let verified = agent.check(&release).unwrap();
    assert_eq!(verified.manifest.version, Version::new(1, 0, 0));
}

#[test]
fn marked_bad_and_cleared_by_a_higher_sequence() {
    let (publisher, mut agent) = setup();
    agent.bad = vec![bank_layout::BadVersion {
        version: "1.2.0".into(),
        sequence: 10,
        reason: "failed its trial".into(),
    }];
    let err = agent.check(&publisher.publish(|_| {})).unwrap_err();
    assert!(
        matches!(&err, ReleaseError::MarkedBad { version, sequence: 10 } if *version == Version::new(1, 2, 0))
    );
    // Re-published with a higher sequence: the mark no longer applies.
    agent
        .check(&publisher.publish(|m| m.sequence = 11))
        .unwrap();
    // Another version is not affected.
    agent
        .check(&publisher.publish(|m| m.version = version("1.2.1")))
        .unwrap();
}

#[test]
fn extreme_times_and_durations_are_typed_errors_never_panics() {
    let (publisher, agent) = setup();
    let times = [
        "9999-12-31T23:59:59Z",
        "10000-01-01T00:00:00Z",
        "+10000-01-01T00:00:00Z",
        "-0001-01-01T00:00:00Z",
        "1969-12-31T23:59:59Z",
        "0000-01-01T00:00:00Z",
        "18446744073709551615",
        "9999-99-99T99:99:99Z",
        "",
    ];
    let durations = [
        "1d",
        "10y",
        "10y 1s",
        "500000000000y",
        "18446744073709551615s",
        "18446744073709551616s",
        "-1s",
        "0",
        "1e400s",
    ];
    let json = |m: &signing::Manifest| -> serde_json::Value {
        serde_json::from_slice(&m.to_json()).unwrap()
    };
    let mut cases = Vec::new();
    for time in times {
        for field in ["published_at", "expires_at"] {
            let mut value = json(&publisher.manifest);
            value[field] = time.into();
            cases.push(value);
        }
    }
    // Every duration against the edge of the range and just past it.
    for time in [
        "2026-11-22T10:00:00Z",
        "9999-12-31T23:59:59Z",
        "10000-01-01T00:00:00Z",
    ] {
        for duration in durations {
            let mut value = json(&publisher.manifest);
            value["rollout"] = serde_json::json!({ "start": time, "duration": duration });
            cases.push(value);
        }
    }
    for value in [serde_json::Value::from(u64::MAX), (-1).into(), 1e300.into()] {
        for field in ["published_at", "expires_at", "sequence"] {
            let mut case = json(&publisher.manifest);
            case[field] = value.clone();
            cases.push(case);
        }
    }
    for case in cases {
        let signed = publisher.sign_bytes(case.to_string().as_bytes());
        match agent.check(&signed) {
            // Whatever passes can be computed with: start + duration is representable.
            Ok(release) => {
                if let Some(rollout) = release.manifest.rollout {
                    assert!(rollout.start.checked_add(rollout.duration).is_some());
                }
            }
            Err(ReleaseError::Malformed { reason }) => assert!(!reason.is_empty()),
            Err(ReleaseError::Expired { expires_at }) => assert!(!expires_at.is_empty()),
            Err(other) => panic!("{case}: unexpected {other}"),
        }
    }
}
