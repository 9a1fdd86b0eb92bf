//! The agent becoming another binary in place (issue 10, SPEC §9): `bankswap
//! agent reexec` execs a binary in the agent's own process with the hand-over,
//! so the payload keeps its pid and serves throughout; a hand-over that
//! cannot be trusted is refused with one line and a cold start; an exec that
//! fails leaves the agent running as it was.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::{Command, Stdio};

use crate::support::live::{AgentProcess, Live, wait_for};
use crate::support::selfupdate::{
    agent_pid, binary_copy, bound_port_after, exe_inode, parent_of, payload_pid, start_with_env,
};
use crate::support::{bank_files, run, run_ok};
use crate::swap::{Load, bound_port, get, listen_config, publish_hello};

/// How many agent start lines (`agent version=… pid=<pid> adopted=<n>`) the log has.
pub(crate) fn starts(agent: &AgentProcess, pid: u32, adopted: usize) -> usize {
    let needle = format!("pid={pid} adopted={adopted}");
    agent
        .log()
        .lines()
        .filter(|l| l.contains("agent version=") && l.contains(&needle))
        .count()
}

/// `bankswap status` in a loop on a thread, until told to stop.
struct StatusLoop {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<(usize, Vec<String>)>,
}

/// Starts asking `status --json` of the agent on `root` over and over.
fn status_loop(root: &std::path::Path) -> StatusLoop {
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let root = root.display().to_string();
    let flag = stop.clone();
    let thread = std::thread::spawn(move || {
        let (mut asked, mut refused) = (0, Vec::new());
        // Bounded like the load: it always ends by itself.
        while !flag.load(Ordering::Relaxed) && asked < 2000 {
            asked += 1;
            let out = run(["status", "--root", &root, "--json"]);
            let answered: Option<serde_json::Value> = serde_json::from_str(&out.stdout).ok();
            if out.code != 0 || answered.is_none() {
                refused.push(out.stderr);
            }
        }
        (asked, refused)
    });
    StatusLoop { stop, thread }
}

impl StatusLoop {
    fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().expect("status loop")
    }
}

fn reexec(agent: &AgentProcess, extra: &[&str]) -> crate::support::Run {
    let root = agent.root.display().to_string();
    let mut args = vec!["agent", "reexec", "--root", &root];
    args.extend_from_slice(extra);
    run(args)
}

/// `agent reexec` that must succeed; on failure, the agent's log says why.
fn reexec_ok(agent: &AgentProcess, extra: &[&str]) {
    let out = reexec(agent, extra);
    assert!(
        out.code == 0 && out.stdout.contains("re-executed in place"),
        "reexec failed: {}{}\nagent log:\n{}",
        out.stdout,
        out.stderr,
        agent.log()
    );
}

/// A hello-payload agent on a `[[listen]]` socket, committed and answering.
fn serving(live: &Live, extra: &str) -> (AgentProcess, u16) {
    publish_hello(live, "1.0.0");
    let agent = live.agent("root", &listen_config(extra));
    let port = bound_port(&agent);
    agent.wait_committed("1.0.0");
    wait_for("hello-payload answering", || get(port).is_ok());
    (agent, port)
}

#[test]
fn reexec_under_load_keeps_the_payload_and_fails_no_request() {
    let live = Live::new();
    let (agent, port) = serving(&live, "");
    let pid = agent_pid(&agent);
    let payload = payload_pid(&agent, "1.0.0");
    let original = exe_inode(pid);
    assert_eq!(starts(&agent, pid, 0), 1, "a cold start logs adopted=0");
    let copy = binary_copy(&live.w, "bankswap-copy");

    let load = Load::start(port, 4);
    // Status requests all along are answered, by the old image or the new one.
    let statuses = status_loop(&agent.root);
    reexec_ok(&agent, &["--binary", &copy.display().to_string()]);
    agent.wait_until("the new image's start line", || starts(&agent, pid, 1) == 1);
    assert_eq!(exe_inode(pid), fs::metadata(&copy).unwrap().ino());
    assert_ne!(exe_inode(pid), original, "the process image changed");
    // And back to the original file, through the default (its own executable).
    reexec_ok(&agent, &[]);
    agent.wait_until("the second start line", || starts(&agent, pid, 1) == 2);
    let (asked, refused) = statuses.finish();
    assert!(asked > 0);
    assert!(
        refused.is_empty(),
        "status failed during the execs: {refused:?}"
    );
    let (sent, failures, _) = load.finish();
    eprintln!(
        "{sent} requests across two in-place execs, {} failed",
        failures.len()
    );
    assert!(sent > 50, "the load ran ({sent} requests)");
    assert!(
        failures.is_empty(),
        "{} of {sent} requests failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );

    // The same payload process, still our child, never restarted.
    assert_eq!(
        parent_of(payload),
        Some(pid),
        "the payload is the agent's child"
    );
    assert_eq!(
        agent.log().matches("running version=1.0.0").count(),
        1,
        "the payload was not started again"
    );
    assert_eq!(agent.status()["active_version"], "1.0.0");
    assert!(
        agent
            .log()
            .contains(&format!("adopted version=1.0.0 bank=Bank1 pid={payload}")),
        "the adoption is logged"
    );

    // The adopted generation's output pipes came along: replaced by 2.0.0, it
    // drains, says so on stderr (forwarded from the inherited pipe), and
    // exits 0, not by SIGPIPE.
    publish_hello(&live, "2.0.0");
    agent.wait_committed("2.0.0");
    let stopped = format!("stopped version=1.0.0 pid={payload}");
    agent.wait_log(&stopped);
    let log = agent.log();
    let after_exec = &log[log.rfind("adopted=1").expect("start line")..];
    assert!(
        after_exec.contains("hello-payload: stopping"),
        "the adopted payload's stderr is forwarded after the exec"
    );
    let line = after_exec
        .lines()
        .find(|l| l.contains(&stopped))
        .expect("stopped line");
    assert!(line.contains("exit status: 0"), "{line}");
}

#[test]
fn a_trial_in_progress_survives_a_reexec_and_commits_after_it() {
    let live = Live::new();
    // Every generation takes 3 s to become ready: the trial of 2.0.0 is
    // certainly still waiting for READY=1 at the exec, and its READY=1 then
    // arrives on the notify socket the new image inherited.
    let (agent, port) = serving(
        &live,
        "[payload]\nenv = { HELLO_START_DELAY_MS = \"3000\" }\n",
    );
    let pid = agent_pid(&agent);
    publish_hello(&live, "2.0.0");
    agent.wait_log("swapped; the new version is on trial version=\"2.0.0\"");
    let status = agent.status();
    assert_eq!(status["phase"], "trial", "{status}");
    let new_payload = payload_pid(&agent, "2.0.0");
    reexec_ok(&agent, &[]);
    agent.wait_until("the new image's start line", || starts(&agent, pid, 2) == 1);
    // The trial carries on in the new image, and commits there.
    agent.wait_committed("2.0.0");
    assert_eq!(parent_of(new_payload), Some(pid));
    assert_eq!(
        agent.log().matches("running version=2.0.0").count(),
        1,
        "the version on trial was not started again"
    );
    assert!(get(port).is_ok_and(|b| b.contains("2.0.0")));
    // Control requests work after the exec.
    run_ok(["check", "--root", &agent.root.display().to_string()]);
}

#[test]
fn a_reexec_to_a_binary_that_cannot_run_leaves_everything_as_it_was() {
    let live = Live::new();
    let (agent, port) = serving(&live, "");
    let pid = agent_pid(&agent);
    let payload = payload_pid(&agent, "1.0.0");
    let original = exe_inode(pid);

    let missing = live.w.path("no-such-binary");
    let out = reexec(&agent, &["--binary", &missing.display().to_string()]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.starts_with("error: "), "{}", out.stderr);
    assert!(out.stderr.contains("no-such-binary"), "{}", out.stderr);
    assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.stderr);

    let not_executable = live.w.path("not-executable");
    fs::write(&not_executable, "#!/bin/sh\nexit 0\n").unwrap();
    let out = reexec(&agent, &["--binary", &not_executable.display().to_string()]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("not an executable file"),
        "{}",
        out.stderr
    );

    // Executable bits, but not a program the kernel can run: the exec itself fails.
    let garbage = live.w.path("garbage");
    fs::write(&garbage, b"\x7fELF not really").unwrap();
    fs::set_permissions(&garbage, fs::Permissions::from_mode(0o755)).unwrap();
    let out = reexec(&agent, &["--binary", &garbage.display().to_string()]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("exec "), "{}", out.stderr);
    assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.stderr);

    // Nothing changed: same image, same payload, serving, answering.
    assert_eq!(exe_inode(pid), original);
    assert_eq!(parent_of(payload), Some(pid));
    assert!(get(port).is_ok());
    assert_eq!(agent.status()["active_version"], "1.0.0");
    assert_eq!(starts(&agent, pid, 1), 0);
    // And a good reexec still works afterwards (the fds got close-on-exec back
    // and forth without harm).
    reexec_ok(&agent, &[]);
    agent.wait_until("the start line", || starts(&agent, pid, 1) == 1);
    assert_eq!(parent_of(payload), Some(pid));
}

#[test]
fn a_self_update_that_misses_its_grace_execs_the_previous_build_back() {
    let live = Live::new();
    publish_hello(&live, "1.0.0");
    let root = live.w.path("root");
    let mut agent = live.agent("root", &listen_config(""));
    agent.wait_committed("1.0.0");
    // Restart with the test switch that makes a new image skip its self-probe.
    agent.terminate();
    let before = agent.log().len();
    let no_commit = format!("no-commit@{}", env!("CARGO_PKG_VERSION"));
    start_with_env(&mut agent, &[("BANKSWAP_TEST_AGENT_FAULT", &no_commit)]);
    let port = bound_port_after(&agent, before);
    agent.wait_committed("1.0.0");
    wait_for("hello-payload answering", || get(port).is_ok());
    let pid = agent_pid(&agent);
    let payload = payload_pid(&agent, "1.0.0");
    let original = exe_inode(pid);
    let copy = binary_copy(&live.w, "bankswap-new");

    let load = Load::start(port, 2);
    reexec_ok(
        &agent,
        &[
            "--binary",
            &copy.display().to_string(),
            "--self-update-grace",
            "2s",
        ],
    );
    agent.wait_log("agent trial failed; restoring the previous build");
    agent.wait_log("the new agent build failed; this build is back");
    agent.wait_until("the previous build's start line", || {
        starts(&agent, pid, 1) == 2
    });
    let (sent, failures, _) = load.finish();
    assert!(failures.is_empty(), "{} of {sent} failed", failures.len());
    assert_eq!(exe_inode(pid), original, "the previous build runs again");
    assert_eq!(parent_of(payload), Some(pid));
    let log = agent.log();
    assert!(log.contains("missed its grace"), "the reason is logged");
    assert!(
        log.contains("marking the new build bad"),
        "the mark-bad hook ran"
    );
    assert!(root.join("control.sock").exists());
    assert_eq!(agent.status()["active_version"], "1.0.0");
}

#[test]
fn a_self_update_that_answers_commits() {
    let live = Live::new();
    let (agent, port) = serving(&live, "");
    let pid = agent_pid(&agent);
    let copy = binary_copy(&live.w, "bankswap-new");
    reexec_ok(
        &agent,
        &[
            "--binary",
            &copy.display().to_string(),
            "--self-update-grace",
            "30s",
        ],
    );
    agent.wait_log("agent committed");
    assert_eq!(exe_inode(pid), fs::metadata(&copy).unwrap().ino());
    assert!(!agent.log().contains("agent trial failed"));
    assert!(get(port).is_ok());
}

/// Runs the agent under `sh -c '<vars> exec bankswap run …'`, so the
/// hand-over variables name the agent's own pid (`$$`), as a forged or
/// garbled hand-over would.
fn forged(agent: &mut AgentProcess, script: &str) {
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&agent.log)
        .expect("log");
    let child = Command::new("sh")
        .arg("-c")
        .arg(format!("{script} exec \"$0\" run --config \"$1\""))
        .arg(env!("CARGO_BIN_EXE_bankswap"))
        .arg(&agent.config)
        .env("BANKSWAP_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("agent starts");
    agent.child = Some(child);
}

#[test]
fn a_forged_or_garbled_hand_over_is_refused_and_the_agent_starts_cold() {
    let live = Live::new();
    publish_hello(&live, "1.0.0");
    let mut agent = live.agent("root", &listen_config(""));
    agent.wait_committed("1.0.0");
    agent.terminate();
    let nonce = "0123456789abcdef0123456789abcdef";
    let garbled = live.w.path("garbled.json");
    fs::write(&garbled, "{\"schema\": 1, \"pid\": ").unwrap();
    let unknown = live.w.path("unknown.json");
    fs::write(&unknown, "{\"schema\": 99}").unwrap();
    let banks = (
        bank_files(&agent.root, "Bank1"),
        bank_files(&agent.root, "Bank2"),
    );
    let state = fs::read_to_string(agent.root.join("state.json")).unwrap();
    let cases: [(String, &str); 4] = [
        // The state fd is stdin, not a memfd.
        (
            format!(
                "BANKSWAP_HANDOVER_PID=$$ BANKSWAP_HANDOVER_STATE=fd:0 BANKSWAP_HANDOVER_NONCE={nonce}"
            ),
            "hand-over: environment",
        ),
        // Garbled JSON on an inherited fd.
        (
            format!(
                "exec 7<{}; BANKSWAP_HANDOVER_PID=$$ BANKSWAP_HANDOVER_STATE=fd:7 BANKSWAP_HANDOVER_NONCE={nonce}",
                garbled.display()
            ),
            "hand-over: JSON",
        ),
        // A schema this build does not read.
        (
            format!(
                "exec 7<{}; BANKSWAP_HANDOVER_PID=$$ BANKSWAP_HANDOVER_STATE=fd:7 BANKSWAP_HANDOVER_NONCE={nonce}",
                unknown.display()
            ),
            "hand-over: schema: 99",
        ),
        // Another process's pid: ignored, a plain cold start.
        (
            format!(
                "BANKSWAP_HANDOVER_PID=1 BANKSWAP_HANDOVER_STATE=fd:7 BANKSWAP_HANDOVER_NONCE={nonce}"
            ),
            "",
        ),
    ];
    for (script, needle) in cases {
        let before = agent.log().len();
        forged(
            &mut agent,
            &format!(
                "{script} export BANKSWAP_HANDOVER_PID BANKSWAP_HANDOVER_STATE BANKSWAP_HANDOVER_NONCE;"
            ),
        );
        let pid = agent_pid(&agent);
        agent.wait_until("the cold start line", || starts(&agent, pid, 0) == 1);
        agent.wait_committed("1.0.0");
        let log = agent.log()[before..].to_string();
        if needle.is_empty() {
            assert!(!log.contains("hand-over:"), "{log}");
        } else {
            let lines: Vec<&str> = log.lines().filter(|l| l.contains("hand-over:")).collect();
            assert_eq!(lines.len(), 1, "one line: {log}");
            assert!(lines[0].contains(needle), "{needle}: {}", lines[0]);
            assert!(lines[0].contains("error: hand-over:"), "{}", lines[0]);
        }
        let port = bound_port_after(&agent, before);
        wait_for("answering after the cold start", || get(port).is_ok());
        agent.terminate();
        // The banks and the bank state are as they were.
        assert_eq!(
            (
                bank_files(&agent.root, "Bank1"),
                bank_files(&agent.root, "Bank2")
            ),
            banks
        );
        let now: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(agent.root.join("state.json")).unwrap())
                .unwrap();
        let then: serde_json::Value = serde_json::from_str(&state).unwrap();
        for key in [
            "active",
            "phase",
            "banks",
            "bad_versions",
            "highest_sequence",
        ] {
            assert_eq!(now.get(key), then.get(key), "state.json {key}");
        }
    }
}
