//! `verify_release` checks its rules in SPEC §4 order: when several rules
//! fail, the first one decides the error.

use signing::{MAX_MANIFEST_BYTES, Manifest, ReleaseError};

use crate::release_fixture::{setup, time, version};

#[test]
fn order_bad_signature_before_expired() {
    let (publisher, mut agent) = setup();
    let (manifest, _) = publisher.publish(|_| {});
    let (_, other_signature) = publisher.sign_bytes(b"something else");
    agent.now = time("2030-01-01T00:00:00Z");
    let err = agent.check(&(manifest, other_signature)).unwrap_err();
    assert!(matches!(err, ReleaseError::BadSignature { .. }), "{err}");
}

#[test]
fn order_too_large_before_unknown_key() {
    let (publisher, mut agent) = setup();
    agent.keys.clear();
    let err = agent
        .check(&publisher.sign_bytes(&vec![b' '; MAX_MANIFEST_BYTES + 1]))
        .unwrap_err();
    assert!(matches!(err, ReleaseError::TooLarge { .. }), "{err}");
}

#[test]
fn order_bad_signature_before_malformed() {
    let (publisher, agent) = setup();
    let (_, signature) = publisher.publish(|_| {});
    let err = agent
        .check(&(b"{ not json".to_vec(), signature))
        .unwrap_err();
    assert!(matches!(err, ReleaseError::BadSignature { .. }), "{err}");
}

#[test]
fn order_of_the_manifest_rules() {
    let (publisher, mut agent) = setup();
    agent.now = time("2030-01-01T00:00:00Z"); // everything below is also expired
    agent.bad = vec![bank_layout::BadVersion {
        version: "1.0.0".into(),
        sequence: 99,
        reason: "failed its trial".into(),
    }];
    let all_wrong = |m: &mut Manifest| {
        m.product = "other".into();
        m.channel = "beta".into();
        m.sequence = 1;
        m.version = version("1.0.0");
    };
    let err = agent.check(&publisher.publish(all_wrong)).unwrap_err();
    assert!(matches!(err, ReleaseError::WrongProduct { .. }), "{err}");
    let err = agent
        .check(&publisher.publish(|m| {
            all_wrong(m);
            m.product = "acme-connector".into()
        }))
        .unwrap_err();
    assert!(matches!(err, ReleaseError::WrongChannel { .. }), "{err}");
    let fix_names = |m: &mut Manifest| {
        all_wrong(m);
        m.product = "acme-connector".into();
        m.channel = "stable".into();
    };
    let err = agent.check(&publisher.publish(fix_names)).unwrap_err();
    assert!(matches!(err, ReleaseError::Expired { .. }), "{err}");
    agent.now = time("2026-11-23T00:00:00Z");
    let err = agent.check(&publisher.publish(fix_names)).unwrap_err();
    assert!(matches!(err, ReleaseError::Replayed { .. }), "{err}");
    let err = agent
        .check(&publisher.publish(|m| {
            fix_names(m);
            m.sequence = 7
        }))
        .unwrap_err();
    assert!(matches!(err, ReleaseError::NotNewer { .. }), "{err}");
    let err = agent
        .check(&publisher.publish(|m| {
            fix_names(m);
            m.sequence = 7;
            m.downgrade = true;
        }))
        .unwrap_err();
    assert!(matches!(err, ReleaseError::MarkedBad { .. }), "{err}");
}
