//! The README's main command: `bankswap demo` tells the whole story and a
//! client loses no request through the update and the rollback. It runs from
//! the binary alone, as installed: a copy of it in an empty folder on `PATH`,
//! with no example payload next to it (issue 13.6).

use std::fs;
use std::process::Command;

use crate::support::Run;

#[test]
fn demo_runs_the_whole_story_from_the_binary_alone() {
    let bin = tempfile::tempdir().expect("tempdir");
    let installed = bin.path().join("bankswap");
    if fs::hard_link(env!("CARGO_BIN_EXE_bankswap"), &installed).is_err() {
        fs::copy(env!("CARGO_BIN_EXE_bankswap"), &installed).expect("copy the binary");
    }
    assert_eq!(
        fs::read_dir(bin.path()).expect("list").count(),
        1,
        "only the binary"
    );
    let out: Run = Command::new("bankswap")
        .arg("demo")
        .env("PATH", format!("{}:/usr/bin:/bin", bin.path().display()))
        .env_remove("BANKSWAP_LOG")
        .current_dir(bin.path())
        .output()
        .expect("demo runs")
        .into();
    assert_eq!(out.code, 0, "demo failed:\n{}\n{}", out.stdout, out.stderr);
    for needle in [
        "running version=1.0.0",
        "running version=2.0.0",
        "rolled back to 1.0.0",
        " 0 failed",
        "hello from 1.0.0 -> hello from 2.0.0 -> hello from 1.0.0",
    ] {
        assert!(
            out.stdout.contains(needle),
            "`{needle}` missing:\n{}",
            out.stdout
        );
    }
}
