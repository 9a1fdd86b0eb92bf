//! Hostile and broken inputs (SPEC §7): each fails with one clear line naming
//! the input and the reason, and leaves the active bank, its files and
//! `state.json` byte-for-byte untouched.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::support::{
    self, Snapshot, World, assert_fails_with, run, run_ok, serve_history, status,
};

/// A root running 1.0.0 from `data`, with 1.1.0 published next in `data`.
struct Setup {
    w: World,
    data: PathBuf,
    root: PathBuf,
}

fn setup() -> Setup {
    let w = World::new();
    let data = w.path("data");
    let root = w.path("root");
    w.publish(&data, &w.payload("1.0.0", 3, 100), "1.0.0", &[]);
    w.init(&root, &data);
    w.publish(&data, &w.payload("1.1.0", 3, 100), "1.1.0", &[]);
    Setup { w, data, root }
}

impl Setup {
    fn manifest_path(&self) -> PathBuf {
        support::manifest_path(&self.data)
    }

    fn artifact_path(&self) -> PathBuf {
        support::artifact_path(&self.data)
    }

    /// Rewrites the manifest and signs it with the trusted key.
    fn resign(&self, edit: impl FnOnce(&mut Value)) {
        self.w.resign(&self.data, edit);
    }

    /// Publishes a raw (uncompressed) tar as the next release's artifact, signed.
    fn publish_tar(&self, tar: Vec<u8>) {
        let compressed = zstd::encode_all(&tar[..], 3).expect("zstd");
        let sha = hex::encode(Sha256::digest(&compressed));
        fs::write(
            self.data.join(format!("v1/artifacts/{sha}.tar.zst")),
            &compressed,
        )
        .expect("artifact");
        self.resign(|m| {
            m["artifact"]["path"] = format!("artifacts/{sha}.tar.zst").into();
            m["artifact"]["sha256"] = sha.clone().into();
            m["artifact"]["size"] = compressed.len().into();
        });
    }

    /// Applies and asserts the failure names `needle` and nothing changed.
    fn apply_fails(&self, needle: &str) {
        let before = Snapshot::of(&self.root);
        let out = self.w.apply(&self.root, &self.data);
        assert_fails_with(&out, needle);
        assert_eq!(
            Snapshot::of(&self.root),
            before,
            "a failed apply changed the root"
        );
        assert_eq!(status(&self.root)["active_version"], "1.0.0");
        let idle = self.root.join("Bank2");
        let leftovers: Vec<_> = fs::read_dir(&idle).expect("idle bank").collect();
        assert!(leftovers.is_empty(), "idle bank not wiped: {leftovers:?}");
        // And the good release still installs afterwards.
    }
}

#[test]
fn wrong_key() {
    let s = setup();
    s.w.keygen("intruder");
    let other = s.w.path("other-data");
    run_ok([
        "publish".to_string(),
        "--key".into(),
        s.w.secret("intruder"),
        "--payload".into(),
        s.w.path("payloads/1.1.0").display().to_string(),
        "--version".into(),
        "1.1.0".into(),
        "--entrypoint".into(),
        "bin/app".into(),
        "--to".into(),
        other.display().to_string(),
    ]);
    let before = Snapshot::of(&s.root);
    let out = s.w.apply(&s.root, &other);
    assert_fails_with(&out, "unknown key");
    assert_eq!(Snapshot::of(&s.root), before);
}

#[test]
fn tampered_manifest() {
    let s = setup();
    let text = fs::read_to_string(s.manifest_path()).expect("manifest");
    fs::write(s.manifest_path(), text.replace("\"1.1.0\"", "\"1.1.9\"")).expect("write");
    s.apply_fails("signature");
}

#[test]
fn tampered_artifact_one_flipped_byte() {
    let s = setup();
    let path = s.artifact_path();
    let mut bytes = fs::read(&path).expect("artifact");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    fs::write(&path, bytes).expect("write");
    s.apply_fails("sha256");
}

#[test]
fn truncated_artifact() {
    let s = setup();
    let path = s.artifact_path();
    let bytes = fs::read(&path).expect("artifact");
    fs::write(&path, &bytes[..bytes.len() - 7]).expect("write");
    s.apply_fails("truncated");
}

#[test]
fn artifact_larger_than_announced() {
    let s = setup();
    let mut file = fs::OpenOptions::new()
        .append(true)
        .open(s.artifact_path())
        .expect("open");
    file.write_all(&[0u8; 4096]).expect("append");
    s.apply_fails("larger");
}

#[test]
fn expired_manifest() {
    let s = setup();
    s.resign(|m| m["expires_at"] = "2020-01-01T00:00:00Z".into());
    s.apply_fails("expired");
}

#[test]
fn replayed_older_sequence() {
    let s = setup();
    assert_eq!(s.w.apply(&s.root, &s.data).code, 0, "apply 1.1.0");
    serve_history(&s.data, "stable", 1);
    let before = Snapshot::of(&s.root);
    let out = s.w.apply(&s.root, &s.data);
    assert_fails_with(&out, "replay");
    assert_eq!(Snapshot::of(&s.root), before);
}

#[test]
fn downgrade_without_permission() {
    let s = setup();
    s.resign(|m| {
        m["version"] = "0.9.0".into();
        m["sequence"] = 3.into();
    });
    s.apply_fails("not newer");
}

#[test]
fn wrong_channel() {
    let s = setup();
    s.resign(|m| m["channel"] = "beta".into());
    s.apply_fails("channel");
}

#[test]
fn oversized_manifest() {
    let s = setup();
    s.resign(|m| m["entrypoint"]["args"] = vec!["x".repeat(70 * 1024)].into());
    s.apply_fails("65536-byte limit");
}

/// A tar with one hostile entry written byte by byte (the tar crate refuses to make these).
fn hostile_tar(
    name: &str,
    kind: tar::EntryType,
    link: Option<&str>,
    mode: u32,
    data: &[u8],
) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut ok = tar::Header::new_gnu();
    ok.set_path("bin/app").expect("path");
    ok.set_size(3);
    ok.set_mode(0o755);
    ok.set_cksum();
    builder.append(&ok, &b"#!\n"[..]).expect("append");
    let mut h = tar::Header::new_old();
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    if let Some(link) = link {
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    h.set_entry_type(kind);
    h.set_size(data.len() as u64);
    h.set_mode(mode);
    h.set_cksum();
    builder.append(&h, data).expect("append");
    builder.into_inner().expect("tar")
}

fn escape_case(name: &str, kind: tar::EntryType, link: Option<&str>, needle: &str) -> Setup {
    let s = setup();
    s.publish_tar(hostile_tar(
        name,
        kind,
        link,
        0o644,
        if kind == tar::EntryType::Regular {
            b"pwned"
        } else {
            b""
        },
    ));
    s.apply_fails(needle);
    s
}

#[test]
fn archive_absolute_path() {
    escape_case(
        "/tmp/bankswap-escape-abs",
        tar::EntryType::Regular,
        None,
        "escapes",
    );
    assert!(!Path::new("/tmp/bankswap-escape-abs").exists());
}

#[test]
fn archive_parent_dir() {
    let s = escape_case("../../escaped", tar::EntryType::Regular, None, "escapes");
    assert!(!s.w.path("escaped").exists());
}

#[test]
fn archive_symlink_outside() {
    escape_case("etc", tar::EntryType::Symlink, Some("/etc"), "escapes");
}

#[test]
fn archive_relative_symlink_outside() {
    escape_case("up", tar::EntryType::Symlink, Some("../../.."), "escapes");
}

#[test]
fn archive_hard_link_outside() {
    escape_case(
        "shadow",
        tar::EntryType::Link,
        Some("../../etc/shadow"),
        "escapes",
    );
}

#[test]
fn archive_fifo() {
    escape_case("pipe", tar::EntryType::Fifo, None, "pipe");
}

#[test]
fn archive_char_device() {
    escape_case("null", tar::EntryType::Char, None, "null");
}

#[test]
fn archive_setuid_bit_is_dropped() {
    let s = setup();
    s.publish_tar(hostile_tar(
        "bin/suid",
        tar::EntryType::Regular,
        None,
        0o4755,
        b"x",
    ));
    let out = s.w.apply(&s.root, &s.data);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &fs::metadata(s.root.join("Bank2/bin/suid"))
            .expect("file")
            .permissions(),
    );
    assert_eq!(mode & 0o7777, 0o755, "setuid must be dropped, got {mode:o}");
}

#[test]
fn corrupt_state_json() {
    let s = setup();
    let state = s.root.join("state.json");
    fs::write(&state, b"{\"schema\": 1, \"active\": \"Ban").expect("corrupt");
    let bank1 = support::tree(&s.root.join("Bank1"));
    let out = s.w.apply(&s.root, &s.data);
    assert_fails_with(&out, "state.json");
    assert!(out.stderr.contains("hint:"), "{}", out.stderr);
    assert_eq!(
        fs::read(&state).expect("state"),
        b"{\"schema\": 1, \"active\": \"Ban"
    );
    assert_eq!(support::tree(&s.root.join("Bank1")), bank1);
    let out = run(["status", "--root", &s.root.display().to_string()]);
    assert_fails_with(&out, "state.json");
    // The hint works: without state.json, the root is rebuilt from the bank records.
    fs::remove_file(&state).expect("remove");
    assert_eq!(status(&s.root)["active_version"], "1.0.0");
}
