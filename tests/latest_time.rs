//! The latest known time (issue 9.4, SPEC §13): a root remembers the latest
//! trustworthy time it has seen, so a clock set back cannot revive an expired
//! manifest, and `status` reports a clock far behind that time. The binary
//! runs under `faketime` (Debian's libfaketime) to move its clock.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::support::live::Live;
use crate::support::{Run, Snapshot, World, serve_history};

/// Runs `bankswap args` with its clock moved by `offset` (faketime syntax, e.g. `+10d`).
fn bankswap_at(offset: &str, args: &[&str]) -> Run {
    Command::new("faketime")
        .args(["-f", offset, env!("CARGO_BIN_EXE_bankswap")])
        .args(args)
        .env_remove("BANKSWAP_LOG")
        .output()
        .expect("faketime runs (Debian package faketime)")
        .into()
}

/// `init` or `apply` of the bundle `data` onto `root`, trusting the release key.
fn install_at(w: &World, offset: &str, command: &str, root: &Path, data: &Path) -> Run {
    let root = root.display().to_string();
    let data = data.display().to_string();
    let key = w.public("release");
    bankswap_at(
        offset,
        &[command, "--root", &root, "--bundle", &data, "--trust", &key],
    )
}

/// `status --json` with the clock moved by `offset`.
fn status_at(offset: &str, root: &Path) -> serde_json::Value {
    let out = bankswap_at(
        offset,
        &["status", "--root", &root.display().to_string(), "--json"],
    );
    assert_eq!(out.code, 0, "{out:?}");
    serde_json::from_str(&out.stdout).expect("status --json prints JSON")
}

/// The `latest_time` in a root's state.json.
fn latest_time(root: &Path) -> u64 {
    let text = fs::read_to_string(root.join("state.json")).expect("state.json");
    let state: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    state["latest_time"].as_u64().expect("latest_time recorded")
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

#[test]
fn a_clock_set_back_cannot_revive_a_manifest_expired_at_the_latest_known_time() {
    let w = World::new();
    let data = w.path("console-data");
    let root = w.path("root");
    w.publish(
        &data,
        &w.payload("1.0.0", 1, 10),
        "1.0.0",
        &["--expires", "1d"],
    );
    w.init(&root, &data);
    // Sequence 2 lives 1 day; sequence 3 lives 30 days; sequence 4 lives 1 day.
    w.publish(
        &data,
        &w.payload("1.1.0", 1, 10),
        "1.1.0",
        &["--expires", "1d"],
    );
    w.publish(
        &data,
        &w.payload("1.2.0", 1, 10),
        "1.2.0",
        &["--expires", "30d"],
    );
    w.publish(
        &data,
        &w.payload("1.3.0", 1, 10),
        "1.3.0",
        &["--expires", "1d"],
    );

    // Baseline: ten days ahead, the 1-day release is expired and nothing changes.
    serve_history(&data, "stable", 2);
    let before = Snapshot::of(&root);
    let out = install_at(&w, "+10d", "apply", &root, &data);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("manifest expired at"), "{}", out.stderr);
    assert_eq!(Snapshot::of(&root), before);

    // Ten days ahead the 30-day release applies: the root has now seen that time.
    serve_history(&data, "stable", 3);
    let out = install_at(&w, "+10d", "apply", &root, &data);
    assert_eq!(out.code, 0, "{out:?}");
    let seen = latest_time(&root);
    assert!(seen >= unix_now() + 9 * 86_400, "latest_time {seen}");

    // Sequence 4 expires tomorrow: a fresh root with its clock 30 days back takes it ...
    serve_history(&data, "stable", 4);
    let fresh = w.path("fresh");
    let out = install_at(&w, "-30d", "init", &fresh, &data);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(status_at("+0", &fresh)["clock_warning"].is_null());
    // ... but the root that saw ten days ahead refuses it, whatever its clock says.
    for offset in ["-30d", "+0"] {
        let before = Snapshot::of(&root);
        let out = install_at(&w, offset, "apply", &root, &data);
        assert_ne!(out.code, 0, "{offset}: {out:?}");
        assert!(
            out.stderr.contains("manifest expired at"),
            "{offset}: {}",
            out.stderr
        );
        assert_eq!(Snapshot::of(&root), before, "{offset}");
    }
    assert_eq!(latest_time(&root), seen, "never lowered");
}

#[test]
fn status_reports_a_clock_far_behind_the_latest_known_time() {
    let w = World::new();
    let data = w.path("console-data");
    let root = w.path("root");
    w.publish(&data, &w.payload("1.0.0", 1, 10), "1.0.0", &[]);
    w.init(&root, &data);
    assert!(status_at("+0", &root)["clock_warning"].is_null());

    let s = status_at("-30d", &root);
    let warning = s["clock_warning"].as_str().unwrap_or_default();
    assert!(warning.contains("behind the latest known time"), "{s}");
}

#[test]
fn a_release_published_far_ahead_of_the_clock_is_reported_not_taken_as_the_time() {
    let w = World::new();
    let data = w.path("console-data");
    let root = w.path("root");
    // Published by a machine whose clock ran ten days ahead.
    let payload = w.payload("1.0.0", 1, 10);
    let key = w.secret("release");
    let (payload, to) = (payload.display().to_string(), data.display().to_string());
    let out = bankswap_at(
        "+10d",
        &[
            "publish",
            "--key",
            &key,
            "--payload",
            &payload,
            "--version",
            "1.0.0",
            "--entrypoint",
            "bin/app --serve",
            "--to",
            &to,
        ],
    );
    assert_eq!(out.code, 0, "{out:?}");
    let out = install_at(&w, "+0", "init", &root, &data);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("published far ahead"), "{}", out.stderr);
    assert!(
        latest_time(&root) < unix_now() + 86_400,
        "not taken as the time"
    );
    assert!(status_at("+0", &root)["clock_warning"].is_null());
}

#[test]
fn the_agent_records_the_consoles_date_even_from_a_release_it_refuses() {
    let live = Live::new();
    // Published 40 days ago, expired 39 days ago: the agent stages nothing, so
    // only the console's `Date` header can give the root a time.
    let payload = live.w.script_payload("1.0.0", "exec sleep 1000");
    let (key, payload) = (live.w.secret("release"), payload.display().to_string());
    let to = live.data.display().to_string();
    let out = bankswap_at(
        "-40d",
        &[
            "publish",
            "--key",
            &key,
            "--payload",
            &payload,
            "--version",
            "1.0.0",
            "--entrypoint",
            "bin/app",
            "--to",
            &to,
            "--expires",
            "1d",
        ],
    );
    assert_eq!(out.code, 0, "{out:?}");
    let started = unix_now();
    let mut agent = live.agent("root", "");
    agent.wait_log("manifest expired at");
    agent.wait_until("the console's date in state.json", || {
        fs::read_to_string(agent.root.join("state.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|s| s["latest_time"].as_u64())
            .is_some_and(|t| t + 5 >= started)
    });
    agent.terminate();
}
