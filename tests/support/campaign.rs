//! Runs a campaign script (`scripts/*-test.sh`) of the durability suites
//! (powercut, selfupdate_crash) with this build's binary, within a deadline.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::wait;

/// Runs `scripts/SCRIPT ARGS` with this build's binary (no `BANKSWAP_LOG`, no
/// `BANKSWAP_TEST_AGENT_FAULT` from the test's environment) within `deadline`:
/// past it the script's process group gets SIGTERM (its trap stops what it
/// started) and the test fails. Returns its exit code, stdout and stderr, and
/// echoes stdout (the counts) to the test log.
pub fn run(script: &str, args: &[&str], deadline: Duration) -> (Option<i32>, String, String) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut child = Command::new(repo.join("scripts").join(script))
        .args(args)
        .current_dir(repo)
        .env("BANKSWAP_BIN", env!("CARGO_BIN_EXE_bankswap"))
        .env_remove("BANKSWAP_LOG")
        .env_remove("BANKSWAP_TEST_AGENT_FAULT")
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
    let Some(status) = wait::exit_of(&mut child, deadline) else {
        // SAFETY: kill(2) of the process group we created for the child.
        unsafe {
            libc::kill(-(child.id() as i32), libc::SIGTERM);
        }
        let _ = child.wait();
        panic!(
            "scripts/{script} ran longer than {deadline:?}:\n{}",
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

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
