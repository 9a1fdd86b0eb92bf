//! Durability campaigns (SPEC §3, §13; issue 9), short versions for the suite: power
//! cuts on LazyFS (`scripts/powercut-test.sh --cuts 20`, when FUSE is usable here:
//! apply, online update, rollback, self-update and identity in turn, 4 cuts each)
//! and SIGKILLs of a running agent mid-update (`scripts/crash-test.sh --kills 20
//! --online-only`). Each script prints its counts and seed and exits 1 on any
//! broken root; the full campaigns run 200 of each.

use std::time::Duration;

use crate::support::campaign::{self, tail};

/// Cuts in the suite's power-cut campaign (`BANKSWAP_POWERCUT_CUTS` overrides).
const CUTS: u32 = 20;
/// Kills in the suite's online crash campaign (`BANKSWAP_CRASH_KILLS` overrides).
const KILLS: u32 = 20;
/// Longest a campaign may run, LazyFS's first build (apt, cmake) included; a passing
/// run on a loaded 2-core machine takes a few minutes. Past it the script's process
/// group gets SIGTERM (its trap unmounts and stops what it started) and the test fails.
const CAMPAIGN_DEADLINE: Duration = Duration::from_secs(20 * 60);
/// Exit code of powercut-test.sh when FUSE or LazyFS is not available here.
const EXIT_UNAVAILABLE: i32 = 3;

/// From this cut on, the first one that is a cut (not a crash at a rename) has
/// its LazyFS killed with SIGSEGV by the harness (`--segv-trial`).
const SEGV_TRIAL: &str = "2";

/// The phases of the power-cut campaign, as its summary names them.
const PHASES: [&str; 5] = ["apply", "online", "rollback", "selfupdate", "identity"];

#[test]
fn power_cuts_during_apply_update_rollback_self_update_and_enrollment_leave_one_whole_version() {
    let cuts = env_count("BANKSWAP_POWERCUT_CUTS").unwrap_or(CUTS);
    let (code, stdout, stderr) = campaign::run(
        "powercut-test.sh",
        &["--cuts", &cuts.to_string(), "--segv-trial", SEGV_TRIAL],
        CAMPAIGN_DEADLINE,
    );
    if code == Some(EXIT_UNAVAILABLE) {
        let why = stderr
            .lines()
            .find(|l| l.contains("SKIPPED"))
            .unwrap_or("FUSE or LazyFS is not available");
        eprintln!("power-cut campaign SKIPPED (nothing was tested): {why}");
        return;
    }
    assert_eq!(
        code,
        Some(0),
        "the power-cut campaign found broken roots (or failed):\n{stdout}\n--- stderr (tail) ---\n{}",
        tail(&stderr, 30)
    );
    assert!(
        stdout.contains("the harness bites"),
        "no control case in the output:\n{stdout}"
    );
    assert!(
        stdout.contains(&format!(": {cuts} cuts, 0 broken")),
        "{stdout}"
    );
    // LazyFS killed by SIGSEGV (as its own page-cache bug does now and then)
    // voids that trial, which runs again: neither BROKEN nor OK off a dead mount.
    assert!(
        stdout.contains("voided and run again") && stdout.contains("voided by the tool"),
        "the SIGSEGV of LazyFS from cut {SEGV_TRIAL} on was not voided:\n{stdout}"
    );
    // Every phase was cut (the self-update's too), none broke.
    for phase in PHASES.iter().take(cuts as usize) {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(phase) && l.contains(" cuts, 0 broken")),
            "no cuts of the {phase} phase:\n{stdout}"
        );
    }
}

#[test]
fn sigkill_during_online_update_leaves_one_whole_version() {
    let kills = env_count("BANKSWAP_CRASH_KILLS").unwrap_or(KILLS);
    let (code, stdout, stderr) = campaign::run(
        "crash-test.sh",
        &["--kills", &kills.to_string(), "--online-only"],
        CAMPAIGN_DEADLINE,
    );
    assert_eq!(
        code,
        Some(0),
        "the online crash campaign found broken roots (or failed):\n{stdout}\n--- stderr (tail) ---\n{}",
        tail(&stderr, 30)
    );
    assert!(
        stdout.contains(&format!(": {kills} kills, 0 broken")),
        "{stdout}"
    );
}

fn env_count(name: &str) -> Option<u32> {
    std::env::var(name).ok()?.trim().parse().ok()
}
