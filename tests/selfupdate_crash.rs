//! kill -9 during a self-update (issue 10, SPEC §9), the suite's short run of
//! `scripts/selfupdate-crash-test.sh --kills 6 --named-only`: the agent is
//! SIGKILLed twice at each named point (before the trial marker, after it
//! before the exec, in the new image before its commit), restarted, and must
//! run a working build that its root agrees with, and exactly one whole
//! payload version. The full campaign (seeded random points too) runs 60+.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::wait;

/// Kills in the suite's run: two per named point.
const KILLS: u32 = 6;
/// Longest the run may take on a loaded 2-core machine (a passing one takes about
/// a minute); past it the script's process group gets SIGTERM and the test fails.
const CAMPAIGN_DEADLINE: Duration = Duration::from_secs(10 * 60);

#[test]
fn sigkill_at_each_point_of_a_self_update_restarts_into_a_working_build() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut child = Command::new(repo.join("scripts/selfupdate-crash-test.sh"))
        .args(["--kills", &KILLS.to_string(), "--named-only"])
        .current_dir(repo)
        .env("BANKSWAP_BIN", env!("CARGO_BIN_EXE_bankswap"))
        .env_remove("BANKSWAP_LOG")
        .env_remove("BANKSWAP_TEST_AGENT_FAULT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("scripts/selfupdate-crash-test.sh runs");
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
    let Some(status) = wait::exit_of(&mut child, CAMPAIGN_DEADLINE) else {
        // SAFETY: kill(2) of the process group made for the child.
        unsafe {
            libc::kill(-(child.id() as i32), libc::SIGTERM);
        }
        let _ = child.wait();
        panic!(
            "the campaign ran longer than {CAMPAIGN_DEADLINE:?}:\n{}",
            stderr.join().unwrap_or_default()
        );
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    eprintln!("{stdout}");
    assert_eq!(
        status.code(),
        Some(0),
        "broken self-update kills:\n{stdout}\n--- stderr ---\n{stderr}"
    );
    assert!(
        stdout.contains(&format!(": {KILLS} kills, 0 broken")),
        "{stdout}"
    );
    for point in ["before-replace", "before-exec", "before-commit"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(point) && l.contains("2 kills")),
            "{point}: {stdout}"
        );
    }
    // A kill in the new image's trial marks the release bad; the others are not
    // its fault and it is committed after the restart.
    assert!(
        stdout.contains("before-commit: the release marked bad, the previous build runs"),
        "{stdout}"
    );
    assert!(
        stdout.contains("before-replace: the release committed"),
        "{stdout}"
    );
}
