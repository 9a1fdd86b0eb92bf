//! Durability campaigns (SPEC §3, §13; issue 9), short versions for the suite: power
//! cuts on LazyFS (`scripts/powercut-test.sh --cuts 20`, when FUSE is usable here:
//! apply, online update, rollback, self-update and identity in turn, 4 cuts each)
//! and SIGKILLs of a running agent mid-update (`scripts/crash-test.sh --kills 20
//! --online-only`). Each script prints its counts and seed and exits 1 on any
//! broken root; the full campaigns run 200 of each.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::wait;

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

/// The phases of the power-cut campaign, as its summary names them.
const PHASES: [&str; 5] = ["apply", "online", "rollback", "selfupdate", "identity"];

#[test]
fn power_cuts_during_apply_update_rollback_self_update_and_enrollment_leave_one_whole_version() {
    let cuts = env_count("BANKSWAP_POWERCUT_CUTS").unwrap_or(CUTS);
    let (code, stdout, stderr) = campaign("powercut-test.sh", &["--cuts", &cuts.to_string()]);
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
    let (code, stdout, stderr) = campaign(
        "crash-test.sh",
        &["--kills", &kills.to_string(), "--online-only"],
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

/// Runs `scripts/SCRIPT ARGS` with this build's binary, within [`CAMPAIGN_DEADLINE`];
/// returns its exit code, stdout and stderr, and echoes stdout (the counts) to the test log.
fn campaign(script: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut child = Command::new(repo.join("scripts").join(script))
        .args(args)
        .current_dir(repo)
        .env("BANKSWAP_BIN", env!("CARGO_BIN_EXE_bankswap"))
        .env_remove("BANKSWAP_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run scripts/{script}: {e}"));
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let stdout = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let started = Instant::now();
    let Some(status) = wait::exit_of(&mut child, CAMPAIGN_DEADLINE) else {
        // SAFETY: kill(2) of the process group we created for the child.
        unsafe {
            libc::kill(-(child.id() as i32), libc::SIGTERM);
        }
        let _ = child.wait();
        panic!(
            "scripts/{script} ran longer than {CAMPAIGN_DEADLINE:?}:\n{}",
            tail(&stderr.join().unwrap_or_default(), 30)
        );
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    eprintln!(
        "scripts/{script} {} ({:?}):\n{stdout}",
        args.join(" "),
        started.elapsed()
    );
    (status.code(), stdout, stderr)
}

fn env_count(name: &str) -> Option<u32> {
    std::env::var(name).ok()?.trim().parse().ok()
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
