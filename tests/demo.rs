//! The README's main command: `bankswap demo` tells the whole story and a
//! client loses no request through the update and the rollback.

use crate::support::run;

#[test]
fn demo_runs_the_whole_story() {
    let out = run(["demo"]);
    assert_eq!(out.code, 0, "demo failed:\n{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("running version=1.0.0"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("running version=2.0.0"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("rolled back to 1.0.0"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains(" 0 failed"), "{}", out.stdout);
    assert!(
        out.stdout
            .contains("hello from 1.0.0 -> hello from 2.0.0 -> hello from 1.0.0"),
        "{}",
        out.stdout
    );
}
