//! `publish` and signed manifests stay within bounds (issue 8 items 2, 3 and
//! 12): absurd durations are refused at the command line, a signed manifest
//! with extreme times is refused by `apply` with a clear error, `publish`
//! announces the unpacked size, and a long trusted comment within the one
//! signature limit verifies.

use std::fs;
use std::path::Path;

use signing::SecretKey;

use crate::support::{Snapshot, World, assert_fails_with, run, status, tree};

/// `publish` of a small payload with `extra` flags (any outcome).
fn publish(w: &World, data: &Path, extra: &[&str]) -> crate::support::Run {
    let payload = w.payload("1.0.0", 1, 10);
    let mut args = vec![
        "publish".to_string(),
        "--key".into(),
        w.secret("release"),
        "--payload".into(),
        payload.display().to_string(),
        "--version".into(),
        "1.0.0".into(),
        "--entrypoint".into(),
        "bin/app".into(),
        "--to".into(),
        data.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    run(args)
}

#[test]
fn publish_refuses_absurd_durations_with_exit_2() {
    let w = World::new();
    let data = w.path("data");
    let cases: [(&[&str], &str); 5] = [
        (
            &["--rollout", "10000y"],
            "--rollout: 10000y exceeds the 10-year maximum",
        ),
        (
            &["--expires", "500000000000y"],
            "--expires: 500000000000y exceeds the 10-year maximum",
        ),
        (&["--expires", "18446744073709551615s"], "--expires"),
        (&["--expires=-1d"], "--expires: bad duration"),
        (&["--expires", "0s"], "--expires 0"),
    ];
    for (flags, needle) in cases {
        let out = publish(&w, &data, flags);
        assert_eq!(out.code, 2, "{flags:?}: {}", out.stderr);
        let line = out.stderr.lines().next().unwrap_or_default();
        assert!(
            line.starts_with("error: ") && line.contains(needle),
            "{flags:?}: {line}"
        );
        assert!(!data.join("v1/channels/stable/release.json").exists());
    }
    let out = publish(&w, &data, &["--rollout", "10y", "--expires", "10y"]);
    assert_eq!(out.code, 0, "the maximum itself is fine: {}", out.stderr);
}

#[test]
fn publish_announces_the_unpacked_size_and_entry_count() {
    let w = World::new();
    let data = w.path("data");
    let payload = w.payload("1.0.0", 3, 1000);
    w.publish(&data, &payload, "1.0.0", &[]);
    let manifest: serde_json::Value = serde_json::from_slice(
        &fs::read(data.join("v1/channels/stable/release.json")).expect("test step"),
    )
    .expect("test step");
    let files = tree(&payload);
    let bytes: u64 = files
        .keys()
        .filter(|name| !name.ends_with('/'))
        .map(|name| fs::metadata(payload.join(name)).expect("test step").len())
        .sum();
    assert_eq!(manifest["artifact"]["unpacked_size"], bytes);
    assert_eq!(manifest["artifact"]["entries"], files.len() as u64);
}

/// Re-signs the channel's release.json (after `edit`) with key pair
/// "release" and `comment`, as a publisher holding the key could.
fn resign(w: &World, data: &Path, comment: &str, edit: impl FnOnce(&mut serde_json::Value)) {
    let dir = data.join("v1/channels/stable");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("release.json")).expect("test step"))
            .expect("test step");
    edit(&mut manifest);
    let bytes = serde_json::to_vec_pretty(&manifest).expect("test step");
    let key = SecretKey::parse(&fs::read_to_string(w.secret("release")).expect("test step"))
        .expect("test step");
    let signature = key.sign(&bytes, comment).to_file_string();
    fs::write(dir.join("release.json"), &bytes).expect("test step");
    fs::write(dir.join("release.json.minisig"), signature).expect("test step");
}

#[test]
fn a_signed_manifest_with_extreme_times_is_refused_by_apply() {
    let w = World::new();
    let data = w.path("data");
    let root = w.path("root");
    w.publish(&data, &w.payload("1.0.0", 1, 10), "1.0.0", &[]);
    w.init(&root, &data);
    let before = Snapshot::of(&root);
    w.publish(&data, &w.payload("1.1.0", 1, 10), "1.1.0", &[]);
    let cases: [(&str, serde_json::Value, &str); 3] = [
        (
            "rollout",
            serde_json::json!({"start": "9999-12-31T23:59:00Z", "duration": "500000000000y"}),
            "rollout.duration: 500000000000y exceeds the 10-year maximum",
        ),
        (
            "rollout",
            serde_json::json!({"start": "10000-01-01T00:00:00Z", "duration": "1d"}),
            "rollout.start",
        ),
        ("expires_at", "+10000-01-01T00:00:00Z".into(), "expires_at"),
    ];
    for (field, value, needle) in cases {
        resign(&w, &data, "timestamp:0", |m| m[field] = value);
        let out = w.apply(&root, &data);
        assert_fails_with(&out, needle);
        assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
        assert_eq!(Snapshot::of(&root), before);
    }
}

#[test]
fn a_long_trusted_comment_within_the_signature_limit_verifies_through_apply() {
    let w = World::new();
    let data = w.path("data");
    let root = w.path("root");
    w.publish(&data, &w.payload("1.0.0", 1, 10), "1.0.0", &[]);
    // 12 KiB of trusted comment: over the binary's old 8 KiB read cap, under
    // the signing crate's 16 KiB limit, which is now the only one.
    let comment = format!("timestamp:0\tnote:{}", "x".repeat(12 * 1024));
    resign(&w, &data, &comment, |_| {});
    let size = fs::metadata(data.join("v1/channels/stable/release.json.minisig"))
        .expect("test step")
        .len();
    assert!(
        size > 8 * 1024 && size <= signing::MAX_SIGNATURE_BYTES as u64,
        "{size}"
    );
    w.init(&root, &data);
    assert_eq!(status(&root)["active_version"], "1.0.0");
    w.publish(&data, &w.payload("1.1.0", 1, 10), "1.1.0", &[]);
    resign(&w, &data, &comment, |_| {});
    let out = w.apply(&root, &data);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(status(&root)["active_version"], "1.1.0");
}
