//! Key rotation without touching machines (SPEC §13, issue 9 item 5): a
//! fleet that trusts key A moves to key B through a signed rotation record in
//! the channel, with no config change; what a revoked key signs is refused;
//! a record signed by an untrusted key is refused and changes nothing. Both
//! offline (`apply` of a bundle) and online (a running agent and a console).

use std::fs;
use std::path::Path;

use crate::support::https::Http;
use crate::support::live::{Live, wait_for};
use crate::support::{Snapshot, World, assert_fails_with, run, run_ok, status};

/// Short trials, so that a live agent commits within the test's deadlines.
const FAST_TRIAL: &str = "[health]\ngrace = \"1s\"\nmax_failures = 3\n";

/// `publish` of `payload` as `version`, signed by key pair `key`.
fn publish_signed_by(w: &World, key: &str, data: &Path, payload: &Path, version: &str) {
    run_ok([
        "publish",
        "--key",
        &w.secret(key),
        "--payload",
        &payload.display().to_string(),
        "--version",
        version,
        "--entrypoint",
        "bin/app --serve",
        "--to",
        &data.display().to_string(),
    ]);
}

/// `publish --key KEY --rotate-key/--revoke …` into `data` (any outcome).
fn rotate(w: &World, key: &str, data: &Path, flags: &[(&str, &str)]) -> crate::support::Run {
    let mut args = vec![
        "publish".to_string(),
        "--key".into(),
        w.secret(key),
        "--to".into(),
        data.display().to_string(),
    ];
    for (flag, pair) in flags {
        args.extend([flag.to_string(), w.public(pair)]);
    }
    run(args)
}

/// The channel's rotation record files.
fn record_files(data: &Path) -> [std::path::PathBuf; 2] {
    let dir = data.join("v1/channels/stable");
    [dir.join("keys.json"), dir.join("keys.json.minisig")]
}

#[test]
fn a_fleet_moves_from_key_a_to_key_b_with_no_config_change() {
    let w = World::new(); // key pair "release" is A: the only key the root trusts
    w.keygen("b");
    let data = w.path("data");
    let root = w.path("root");
    w.publish(&data, &w.payload("1.0.0", 2, 100), "1.0.0", &[]);
    w.init(&root, &data);

    // A endorses B and hands over: it revokes itself in the same record.
    let out = rotate(
        &w,
        "release",
        &data,
        &[("--rotate-key", "b"), ("--revoke", "release")],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("published key rotation 1"),
        "{}",
        out.stdout
    );
    let record: serde_json::Value =
        serde_json::from_slice(&fs::read(&record_files(&data)[0]).expect("test step"))
            .expect("test step");
    assert_eq!(record["sequence"], 1);
    assert_eq!(record["channel"], "stable");

    // A release signed by B installs on a root configured (--trust) with A only.
    publish_signed_by(&w, "b", &data, &w.payload("1.1.0", 2, 100), "1.1.0");
    let out = w.apply(&root, &data);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(status(&root)["active_version"], "1.1.0");
    assert!(
        root.join("keys.json").is_file(),
        "the ring is persisted in the root"
    );

    // The same bundle again, record and all (signed by A, now revoked): the
    // record is known, and B's next release installs.
    publish_signed_by(&w, "b", &data, &w.payload("1.2.0", 2, 100), "1.2.0");
    let out = w.apply(&root, &data);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(status(&root)["active_version"], "1.2.0");

    // The root remembers B even from a bundle without the record.
    for file in record_files(&data) {
        fs::remove_file(file).expect("test step");
    }
    publish_signed_by(&w, "b", &data, &w.payload("1.3.0", 2, 100), "1.3.0");
    let out = w.apply(&root, &data);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(status(&root)["active_version"], "1.3.0");

    // What the revoked key A signs now is refused, and nothing changes.
    let before = Snapshot::of(&root);
    w.publish(&data, &w.payload("1.4.0", 2, 100), "1.4.0", &[]);
    let out = w.apply(&root, &data);
    assert_fails_with(&out, "revoked");
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert_eq!(Snapshot::of(&root), before);
}

#[test]
fn a_running_agent_follows_a_rotation_served_by_the_console() {
    let live = Live::new(); // the agent's config trusts key pair "release" (A) only
    let w = &live.w;
    w.keygen("b");
    live.publish_sleeper("1.0.0");
    let agent = live.agent("root", FAST_TRIAL);
    agent.wait_committed("1.0.0");

    // The console serves the record once `publish --to DATA` writes it (404 before).
    let http = Http::new(&live.ca);
    let record_url = live.console.url_of("/v1/channels/stable/keys.json");
    assert_eq!(http.get(&record_url, &[]).status, 404);
    assert_eq!(
        rotate(w, "release", &live.data, &[("--rotate-key", "b")]).code,
        0
    );
    for (url, file) in [record_url.clone(), format!("{record_url}.minisig")]
        .iter()
        .zip(record_files(&live.data))
    {
        let reply = http.get(url, &[]);
        assert_eq!(reply.status, 200, "{url}");
        assert_eq!(reply.body, fs::read(file).expect("test step"), "{url}");
    }
    let sleeper = w.script_payload("2.0.0", "echo \"hello from 2.0.0\"\nexec sleep 1000");
    publish_signed_by(w, "b", &live.data, &sleeper, "2.0.0");
    agent.wait_log("key rotation applied");
    agent.wait_committed("2.0.0");
    assert!(
        agent.root.join("keys.json").is_file(),
        "the ring is persisted in the root"
    );

    // A record signed by an untrusted key is refused; the payload keeps running.
    w.keygen("mallory");
    assert_eq!(
        rotate(w, "mallory", &live.data, &[("--rotate-key", "mallory")]).code,
        0
    );
    let ring = fs::read(agent.root.join("keys.json")).expect("test step");
    let evil = w.script_payload("6.6.6", "exec sleep 1000");
    publish_signed_by(w, "mallory", &live.data, &evil, "6.6.6");
    wait_for("the refused record in status", || {
        agent.status()["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("rotation record"))
    });
    assert_eq!(agent.status()["active_version"], "2.0.0");
    assert_eq!(
        fs::read(agent.root.join("keys.json")).expect("test step"),
        ring
    );
}

#[test]
fn a_rotation_record_signed_by_an_untrusted_key_is_refused_and_changes_nothing() {
    let w = World::new();
    w.keygen("mallory");
    let data = w.path("data");
    let root = w.path("root");
    w.publish(&data, &w.payload("1.0.0", 2, 100), "1.0.0", &[]);
    w.init(&root, &data);
    let before = Snapshot::of(&root);

    // Mallory endorses her own key and signs a release with it.
    let out = rotate(&w, "mallory", &data, &[("--rotate-key", "mallory")]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    publish_signed_by(&w, "mallory", &data, &w.payload("6.6.6", 2, 100), "6.6.6");
    let out = w.apply(&root, &data);
    assert_fails_with(&out, "rotation record");
    assert!(out.stderr.contains("untrusted key"), "{}", out.stderr);
    assert_eq!(Snapshot::of(&root), before);
    assert!(!root.join("keys.json").exists(), "no key ring was written");

    // Without her record the release is simply signed by an unknown key.
    for file in record_files(&data) {
        fs::remove_file(file).expect("test step");
    }
    assert_fails_with(&w.apply(&root, &data), "unknown key");
    assert_eq!(Snapshot::of(&root), before);
}

#[test]
fn a_replaced_record_with_the_same_sequence_changes_nothing() {
    let w = World::new();
    w.keygen("b");
    w.keygen("c");
    let data = w.path("data");
    let root = w.path("root");
    w.publish(&data, &w.payload("1.0.0", 1, 10), "1.0.0", &[]);
    w.init(&root, &data);
    assert_eq!(
        rotate(&w, "release", &data, &[("--rotate-key", "b")]).code,
        0
    );
    assert_eq!(
        w.apply(&root, &data).code,
        0,
        "nothing new, but the record is applied"
    );
    let ring = fs::read(root.join("keys.json")).expect("test step");

    // A second record of sequence 1 (another publisher folder's) is a replay here.
    let other = w.path("other");
    assert_eq!(
        rotate(&w, "release", &other, &[("--rotate-key", "c")]).code,
        0
    );
    for (theirs, ours) in record_files(&other).iter().zip(record_files(&data)) {
        fs::copy(theirs, ours).expect("test step");
    }
    publish_signed_by(&w, "c", &data, &w.payload("1.1.0", 1, 10), "1.1.0");
    assert_fails_with(&w.apply(&root, &data), "unknown key");
    assert_eq!(fs::read(root.join("keys.json")).expect("test step"), ring);
}

#[test]
fn publish_refuses_a_record_that_would_lock_the_fleet_out() {
    let w = World::new();
    let data = w.path("data");
    let out = rotate(&w, "release", &data, &[("--revoke", "release")]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.starts_with("error: "), "{}", out.stderr);
    assert!(out.stderr.contains("lock the fleet out"), "{}", out.stderr);
    assert!(!record_files(&data)[0].exists());
}

#[test]
fn rotation_records_are_not_uploaded_to_a_console_yet() {
    let w = World::new();
    w.keygen("b");
    let out = run([
        "publish",
        "--key",
        &w.secret("release"),
        "--rotate-key",
        &w.public("b"),
        "--console",
        "https://127.0.0.1:9",
        "--token",
        "t",
    ]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("--to DIR"), "{}", out.stderr);
}
