//! Compatibility with the real minisign tool, both ways: we read keys and
//! verify signatures minisign made (fixtures in `tests/data/minisign/`, see
//! its `generate.sh`), and minisign verifies what we sign with keys we make.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use signing::{
    Expectations, PublicKey, ReleaseError, SecretKey, Signature, SigningError, parse_rfc3339,
    prehash, verify_release,
};

/// Path of a fixture file.
fn fixture_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/minisign")
        .join(name)
}

/// Text of a fixture file.
fn fixture(name: &str) -> String {
    std::fs::read_to_string(fixture_path(name)).unwrap()
}

/// The signed payload of the fixtures (a valid manifest).
fn release_json() -> Vec<u8> {
    std::fs::read(fixture_path("release.json")).unwrap()
}

/// The public key in a fixture file.
fn public(name: &str) -> PublicKey {
    PublicKey::parse(&fixture(name)).unwrap()
}

#[test]
fn reads_minisign_public_keys_and_writes_them_identically() {
    for name in ["unencrypted.pub", "encrypted.pub"] {
        let text = fixture(name);
        let key = PublicKey::parse(&text).unwrap();
        let comment_id = text.lines().next().unwrap().rsplit(' ').next().unwrap();
        assert_eq!(key.key_id().to_string(), comment_id, "{name}");
        assert_eq!(key.to_file_string(), text, "{name}");
        assert_eq!(key.to_base64(), text.lines().nth(1).unwrap(), "{name}");
    }
}

#[test]
fn reads_a_minisign_dash_w_secret_key_with_its_zero_checksum() {
    let secret = SecretKey::parse(&fixture("unencrypted.key")).unwrap();
    assert_eq!(secret.public_key(), public("unencrypted.pub"));
}

#[test]
fn reads_a_minisign_key_whose_password_was_removed_checking_its_checksum() {
    let text = fixture("decrypted.key");
    // This key keeps the real BLAKE2b checksum minisign computed (bytes 126..158).
    let line = text.lines().nth(1).unwrap();
    assert!(!line.ends_with("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="));
    let secret = SecretKey::parse(&text).unwrap();
    assert_eq!(secret.public_key(), public("encrypted.pub"));
}

#[test]
fn refuses_a_password_protected_minisign_key() {
    let err = SecretKey::parse(&fixture("encrypted.key")).unwrap_err();
    assert!(matches!(err, SigningError::EncryptedKey));
    assert!(err.to_string().contains("minisign -G -W"));
}

#[test]
fn verifies_a_minisign_prehashed_signature() {
    let signature = Signature::parse(&fixture("release.json.minisig")).unwrap();
    assert!(signature.is_prehashed());
    assert_eq!(
        signature.trusted_comment(),
        "bankswap test vector: prehashed"
    );
    let trusted = [public("encrypted.pub"), public("unencrypted.pub")];
    let key = signature.verify(&trusted, &release_json()).unwrap();
    assert_eq!(key, &trusted[1]);
    let streamed = prehash(std::fs::File::open(fixture_path("release.json")).unwrap()).unwrap();
    assert_eq!(
        signature.verify_prehashed(&trusted, &streamed).unwrap(),
        &trusted[1]
    );
}

#[test]
fn verifies_a_minisign_legacy_signature() {
    let signature = Signature::parse(&fixture("release.json.legacy.minisig")).unwrap();
    assert!(!signature.is_prehashed());
    assert_eq!(signature.trusted_comment(), "bankswap test vector: legacy");
    let trusted = [public("unencrypted.pub")];
    signature.verify(&trusted, &release_json()).unwrap();
    let err = signature.verify_prehashed(&trusted, &[0; 64]).unwrap_err();
    assert!(matches!(err, SigningError::NotPrehashed { .. }));
}

#[test]
fn verifies_a_signature_by_a_minisign_key_whose_password_was_removed() {
    let signature = Signature::parse(&fixture("release.json.decrypted.minisig")).unwrap();
    signature
        .verify(&[public("encrypted.pub")], &release_json())
        .unwrap();
}

#[test]
fn minisign_signatures_refuse_other_data_and_other_keys() {
    let signature = Signature::parse(&fixture("release.json.minisig")).unwrap();
    let mut changed = release_json();
    changed[10] ^= 1;
    let err = signature
        .verify(&[public("unencrypted.pub")], &changed)
        .unwrap_err();
    assert!(matches!(err, SigningError::BadSignature { .. }));
    let err = signature
        .verify(&[public("encrypted.pub")], &release_json())
        .unwrap_err();
    assert!(matches!(err, SigningError::UnknownKey { .. }));
}

#[test]
fn minisign_signature_files_round_trip_byte_for_byte() {
    for name in ["release.json.minisig", "release.json.legacy.minisig"] {
        let text = fixture(name);
        assert_eq!(
            Signature::parse(&text).unwrap().to_file_string(),
            text,
            "{name}"
        );
    }
}

#[test]
fn our_signature_with_minisigns_key_equals_minisigns_own() {
    // ed25519 is deterministic: same key, data and comment give the same bytes.
    let secret = SecretKey::parse(&fixture("unencrypted.key")).unwrap();
    let ours = secret.sign(&release_json(), "bankswap test vector: prehashed");
    ours.verify(&[public("unencrypted.pub")], &release_json())
        .unwrap();
    let theirs = fixture("release.json.minisig");
    let ours_text = ours.to_file_string();
    let tail = |text: &str| text.lines().skip(1).map(str::to_owned).collect::<Vec<_>>();
    assert_eq!(tail(&ours_text), tail(&theirs));
}

#[test]
fn verify_release_accepts_a_manifest_signed_by_the_minisign_tool() {
    let trusted = [public("unencrypted.pub")];
    let expect = Expectations {
        trusted_keys: &trusted,
        revoked_keys: &[],
        product: Some("acme-connector"),
        channel: "stable",
        highest_sequence: 0,
        running_version: None,
        marked_bad: &signing::nothing_marked_bad,
        now: parse_rfc3339("2026-12-01T00:00:00Z").unwrap(),
    };
    let signature = fixture("release.json.minisig");
    let release = verify_release(&release_json(), signature.as_bytes(), &expect).unwrap();
    assert_eq!(release.manifest.sequence, 42);
    assert_eq!(release.key_id, trusted[0].key_id());
    let legacy = fixture("release.json.legacy.minisig");
    verify_release(&release_json(), legacy.as_bytes(), &expect).unwrap();
    let mut changed = release_json();
    changed[10] ^= 1;
    let err = verify_release(&changed, signature.as_bytes(), &expect).unwrap_err();
    assert!(matches!(err, ReleaseError::BadSignature { .. }));
}

/// Runs the minisign tool; fails the test (never skips it) when it is missing.
fn minisign(args: &[OsString]) -> Output {
    match Command::new("minisign").args(args).output() {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "the `minisign` tool is not on PATH; these compatibility tests need it. \
             Run scripts/setup-test-deps.sh (or `apt-get install minisign`) and try again"
        ),
        Err(e) => panic!("could not run minisign: {e}"),
    }
}

/// Fails with minisign's output unless it succeeded.
fn assert_success(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed: {}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
}

#[test]
fn minisign_tool_verifies_what_we_sign_and_signs_with_keys_we_make() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| OsString::from(dir.path().join(name));
    let secret = SecretKey::generate().unwrap();
    let data = b"payload made by bankswap\n".repeat(1000);
    std::fs::write(path("our.pub"), secret.public_key().to_file_string()).unwrap();
    std::fs::write(path("our.key"), secret.to_file_string()).unwrap();
    std::fs::write(path("data"), &data).unwrap();

    // minisign -V checks our signature made with our key.
    let ours = secret.sign(&data, "bankswap release 7");
    std::fs::write(path("ours.minisig"), ours.to_file_string()).unwrap();
    let verify = [
        "-V".into(),
        "-p".into(),
        path("our.pub"),
        "-m".into(),
        path("data"),
        "-x".into(),
        path("ours.minisig"),
    ];
    let output = minisign(&verify);
    assert_success(&output, "minisign -V of our signature");
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("Trusted comment: bankswap release 7")
    );

    // ... and refuses it once the data changed, so the check above means something.
    std::fs::write(path("data"), b"other data").unwrap();
    assert!(
        !minisign(&verify).status.success(),
        "minisign accepted changed data"
    );
    std::fs::write(path("data"), &data).unwrap();

    // minisign -S reads our secret key file; we verify what it signed.
    let sign = [
        "-S".into(),
        "-s".into(),
        path("our.key"),
        "-m".into(),
        path("data"),
        "-x".into(),
        path("theirs.minisig"),
    ];
    assert_success(&minisign(&sign), "minisign -S with our secret key");
    let theirs =
        Signature::parse(&std::fs::read_to_string(path("theirs.minisig")).unwrap()).unwrap();
    let public = secret.public_key();
    assert_eq!(
        theirs.verify(std::slice::from_ref(&public), &data).unwrap(),
        &public
    );
}
