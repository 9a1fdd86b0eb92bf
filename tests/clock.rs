//! Clocks and times that cannot be written (issue 8.2, binary side): a
//! state.json with times past year 9999, a system clock before 1970, and a
//! schedule made under a clock that ran 20 days ahead. None may panic the
//! agent, and a schedule from a clock far ahead is derived again.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::support::live::Live;
use crate::support::status;

/// Test agents commit after this (no health probe).
const GRACE: &str = "[health]\ngrace = \"1s\"\n";

/// A second of year 10000.
const YEAR_10000: u64 = 253_402_300_800 + 86_400 * 200;

fn edit_state(root: &Path, edit: impl FnOnce(&mut Value)) {
    let path = root.join("state.json");
    let mut state: Value =
        serde_json::from_str(&fs::read_to_string(&path).expect("state.json")).expect("JSON");
    edit(&mut state);
    fs::write(&path, serde_json::to_string_pretty(&state).expect("JSON")).expect("write");
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

#[test]
fn times_past_year_9999_in_state_json_panic_neither_status_nor_run() {
    let live = Live::new();
    live.publish_sleeper("1.0.0");
    let mut agent = live.agent("root", GRACE);
    agent.wait_committed("1.0.0");
    assert_eq!(agent.terminate(), Some(0));
    edit_state(&agent.root, |state| {
        state["pending"] = json!({
            "version": "9.9.9",
            "sequence": 99,
            "not_before": u64::MAX,
            "manifest": "{}",
            "signature": "",
        });
        state["last_check"] = json!(YEAR_10000);
    });

    let offline = status(&agent.root);
    assert_eq!(offline["pending"]["not_before"], "9999-12-31T23:59:59Z");
    assert_eq!(offline["last_check"], "9999-12-31T23:59:59Z");

    agent.restart();
    // Status asked before the control socket exists would lock the root (issue 8.10).
    agent.wait_log("agent starting");
    // The agent has looped (started, checked the console) once its own last check shows.
    agent.wait_until("a check by the restarted agent", || {
        let s = agent.status();
        s["last_check"].is_string() && s["last_check"] != "9999-12-31T23:59:59Z"
    });
    let running = agent.status();
    assert_eq!(running["active_version"], "1.0.0", "{running}");
    assert!(!agent.log().contains("panicked"), "{}", agent.log());
    assert_eq!(agent.terminate(), Some(0), "{}", agent.log());
}

#[test]
fn a_clock_before_1970_does_not_panic_status() {
    if Command::new("faketime").arg("-h").output().is_err() {
        panic!("faketime is missing: run scripts/setup-test-deps.sh");
    }
    let live = Live::new();
    live.publish_sleeper("1.0.0");
    let mut agent = live.agent("root", GRACE);
    agent.wait_committed("1.0.0");
    assert_eq!(agent.terminate(), Some(0));
    let out = Command::new("faketime")
        .arg("1969-07-20 20:17:00")
        .arg(env!("CARGO_BIN_EXE_bankswap"))
        .args(["status", "--json", "--root"])
        .arg(&agent.root)
        .output()
        .expect("faketime runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "status under a 1969 clock: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_schedule_made_under_a_clock_20_days_ahead_is_derived_again() {
    let live = Live::new();
    live.publish_sleeper("1.0.0");
    let mut agent = live.agent("root", GRACE);
    agent.wait_committed("1.0.0");
    assert_eq!(agent.terminate(), Some(0));
    live.publish_sleeper("2.0.0");
    let channel = live.data.join("v1/channels/stable");
    let manifest = fs::read_to_string(channel.join("release.json")).expect("manifest");
    let signature = fs::read_to_string(channel.join("release.json.minisig")).expect("signature");
    let twenty_days = Duration::from_secs(20 * 86_400).as_secs();
    // What the agent wrote while its clock ran 20 days ahead (max_delay is 0).
    edit_state(&agent.root, |state| {
        state["pending"] = json!({
            "version": "2.0.0",
            "sequence": 2,
            "not_before": unix_now() + twenty_days,
            "manifest": manifest,
            "signature": signature,
        });
    });
    agent.restart();
    agent.wait_log("deriving it again");
    agent.wait_committed("2.0.0");
}
