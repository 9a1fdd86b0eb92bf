//! minisign interop, both directions: our signatures verify with the
//! `minisign` tool, and minisign's keys and signatures work with ours.
//! scripts/setup-test-deps.sh installs Debian's minisign.

use std::fs;
use std::process::Command;

use crate::support::{World, assert_fails_with, run, run_ok};

fn minisign() -> Command {
    let found = Command::new("minisign").arg("-v").output().is_ok();
    assert!(
        found,
        "minisign is not installed: run scripts/setup-test-deps.sh"
    );
    Command::new("minisign")
}

#[test]
fn our_signature_verifies_with_minisign() {
    let w = World::new();
    let file = w.path("release.bin");
    fs::write(&file, b"bankswap release bytes\n".repeat(1000)).expect("file");
    run_ok([
        "sign".to_string(),
        "--key".into(),
        w.secret("release"),
        file.display().to_string(),
    ]);
    let out = minisign()
        .args([
            "-V",
            "-p",
            &w.public("release"),
            "-m",
            &file.display().to_string(),
        ])
        .output()
        .expect("minisign -V");
    assert!(
        out.status.success(),
        "minisign rejected our signature: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn minisign_keys_and_signatures_work_with_ours() {
    let w = World::new();
    let (pk, sk) = (w.path("mk.pub"), w.path("mk.key"));
    let out = minisign()
        .args([
            "-G",
            "-W",
            "-p",
            &pk.display().to_string(),
            "-s",
            &sk.display().to_string(),
        ])
        .output()
        .expect("minisign -G");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // minisign signs, we verify.
    let file = w.path("a.txt");
    fs::write(&file, b"signed by minisign\n").expect("file");
    let out = minisign()
        .args([
            "-S",
            "-s",
            &sk.display().to_string(),
            "-m",
            &file.display().to_string(),
        ])
        .output()
        .expect("minisign -S");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ours = run_ok([
        "verify",
        "--pub",
        &pk.display().to_string(),
        &file.display().to_string(),
    ]);
    assert!(ours.stdout.contains("verified"), "{}", ours.stdout);

    // We sign with minisign's secret key, minisign verifies.
    let file2 = w.path("b.txt");
    fs::write(&file2, b"signed by bankswap with a minisign key\n").expect("file");
    run_ok([
        "sign",
        "--key",
        &sk.display().to_string(),
        &file2.display().to_string(),
    ]);
    let out = minisign()
        .args([
            "-V",
            "-p",
            &pk.display().to_string(),
            "-m",
            &file2.display().to_string(),
        ])
        .output()
        .expect("minisign -V");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A changed byte fails our verify with a clear reason.
    fs::write(&file, b"signed by minisign!\n").expect("tamper");
    let bad = run([
        "verify",
        "--pub",
        &pk.display().to_string(),
        &file.display().to_string(),
    ]);
    assert_fails_with(&bad, "signature");
}
