//! Commands that read a root name a missing one (a `--root` typo, a machine
//! never set up) with the fix, instead of "entity not found", and create
//! nothing there.

use crate::support::{World, assert_fails_with, run, run_ok};

#[test]
fn status_rollback_and_check_on_a_root_typo_print_the_hint_and_create_nothing() {
    let w = World::new();
    let typo = w.path("var/lib/bankswapp");
    let typo_text = typo.display().to_string();
    for command in ["status", "rollback", "check"] {
        let out = run([command, "--root", &typo_text]);
        assert_fails_with(&out, &format!("no bankswap root at {typo_text}"));
        assert!(
            out.stderr.contains("run 'bankswap init") && out.stderr.contains("check --root"),
            "{command}: the hint names both fixes: {}",
            out.stderr
        );
        assert!(!typo.exists(), "{command} created the mistyped root");
    }
    // Once initialised, each of them reads it.
    run_ok(["init", "--root", &typo_text]);
    run_ok(["status", "--root", &typo_text]);
}
