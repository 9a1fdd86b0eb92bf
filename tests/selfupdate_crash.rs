//! kill -9 during a self-update (issue 10, SPEC §9), the suite's short run of
//! `scripts/selfupdate-crash-test.sh --kills 6 --named-only`: the agent is
//! SIGKILLed twice at each named point (before the trial marker, after it
//! before the exec, in the new image before its commit), restarted, and must
//! run a working build that its root agrees with, and exactly one whole
//! payload version. The full campaign (seeded random points too) runs 60+.

use std::time::Duration;

use crate::support::campaign;

/// Kills in the suite's run: two per named point.
const KILLS: u32 = 6;
/// Longest the run may take on a loaded 2-core machine (a passing one takes about
/// a minute); past it the script's process group gets SIGTERM and the test fails.
const CAMPAIGN_DEADLINE: Duration = Duration::from_secs(10 * 60);

#[test]
fn sigkill_at_each_point_of_a_self_update_restarts_into_a_working_build() {
    let (code, stdout, stderr) = campaign::run(
        "selfupdate-crash-test.sh",
        &["--kills", &KILLS.to_string(), "--named-only"],
        CAMPAIGN_DEADLINE,
    );
    assert_eq!(
        code,
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
