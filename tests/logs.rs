//! The agent's logs (SPEC §12, issue 8 item 9): `<N>` priorities under
//! journald; a flooding payload is rate limited with a line saying what was
//! dropped; and with the agent's stdout and stderr pipe never read, `status`
//! still answers and SIGTERM still stops it.

use std::fs;
use std::path::Path;
use std::process::{Child, Stdio};

use crate::notify::agent_config;
use crate::support::live::{DEADLINE, Live, signal, wait_for};
use crate::support::{bankswap, wait};

/// Starts `bankswap run` with stdout and stderr as given.
fn spawn_agent(config: &Path, stderr: Stdio, stdout: Stdio, env: &[(&str, &str)]) -> Child {
    bankswap()
        .args(["run", "--config"])
        .arg(config)
        .env("BANKSWAP_LOG", "info")
        .envs(env.iter().copied())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .expect("agent starts")
}

/// `status --json` of `root`, parsed; Null when it does not answer.
fn status(root: &Path) -> serde_json::Value {
    let out = crate::support::run(["status", "--root", &root.display().to_string(), "--json"]);
    serde_json::from_str(&out.stdout).unwrap_or(serde_json::Value::Null)
}

/// SIGTERM, then waits (with the live deadline) for a clean exit.
fn terminate(child: &mut Child) -> Option<i32> {
    signal(child, libc::SIGTERM);
    if let Some(status) = wait::exit_of(child, DEADLINE) {
        return status.code();
    }
    let _ = child.kill();
    panic!("the agent ignored SIGTERM for {DEADLINE:?}");
}

#[test]
fn under_journald_every_line_carries_its_priority() {
    let live = Live::new();
    live.publish_sleeper("1.0.0");
    // A console nobody listens on: the agent warns.
    let (config, _root) = agent_config(&live, "journald", "");
    let text = fs::read_to_string(&config).expect("config");
    fs::write(
        &config,
        text.replace(&live.console.url, "https://127.0.0.1:1"),
    )
    .expect("config");
    let log = live.w.path("journald.log");
    let mut child = spawn_agent(
        &config,
        fs::File::create(&log).expect("log").into(),
        Stdio::null(),
        &[("JOURNAL_STREAM", "8:12345")],
    );
    wait_for("a warning in the log", || {
        fs::read_to_string(&log).is_ok_and(|l| l.contains("console unreachable"))
    });
    assert_eq!(terminate(&mut child), Some(0));
    let text = fs::read_to_string(&log).expect("log");
    for line in text.lines() {
        let priority = line
            .strip_prefix('<')
            .and_then(|rest| rest.split_once('>'))
            .and_then(|(n, _)| n.parse::<u8>().ok());
        assert!(
            priority.is_some_and(|p| p <= 7),
            "no <N> priority: `{line}`"
        );
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("<4>") && l.contains("console unreachable")),
        "the warning is not <4>:\n{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("<6>") && l.contains("agent starting")),
        "info is not <6>:\n{text}"
    );
    // Fields with spaces are quoted (logfmt).
    assert!(
        text.contains("error=\""),
        "the error field is not quoted:\n{text}"
    );
}

#[test]
fn a_payload_writing_yes_is_rate_limited_and_the_agent_stays_responsive() {
    let live = Live::new();
    live.publish_script("1.0.0", "exec yes");
    let (config, root) = agent_config(&live, "flooded", "");
    let log = live.w.path("flooded.log");
    let mut child = spawn_agent(
        &config,
        fs::File::create(&log).expect("log").into(),
        Stdio::null(),
        &[],
    );
    wait_for("the drop report", || {
        fs::read_to_string(&log).is_ok_and(|l| l.contains("payload output: dropped "))
    });
    wait_for("status while the payload floods", || {
        status(&root)["active_version"] == "1.0.0"
    });
    assert_eq!(terminate(&mut child), Some(0));
    let text = fs::read_to_string(&log).expect("log");
    let logged = text.lines().filter(|l| l.ends_with(" y")).count();
    let reports = text.matches("payload output: dropped ").count();
    // At most one window's lines per second of flood, plus the reports.
    assert!(
        logged <= 200 * (reports + 2),
        "{logged} `y` lines logged over {reports} windows"
    );
}

/// Whether a thread of the agent is blocked in write(2): its log pipe is full.
fn log_writer_blocked(pid: u32) -> bool {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.filter_map(Result::ok).any(|task| {
        let dir = task.path();
        let syscall = fs::read_to_string(dir.join("syscall")).unwrap_or_default();
        syscall.starts_with(&format!("{} ", libc::SYS_write))
    })
}

#[test]
fn a_log_pipe_never_read_does_not_freeze_the_agent() {
    let live = Live::new();
    // Long lines: the agent's log pipe fills within a window of output.
    live.publish_script(
        "1.0.0",
        "line=$(printf '%2000s' x)\nwhile :; do echo \"$line\"; done",
    );
    let (config, root) = agent_config(&live, "stalled", "");
    let mut child = spawn_agent(&config, Stdio::piped(), Stdio::piped(), &[]);
    let _stderr = child.stderr.take().expect("stderr pipe");
    let _stdout = child.stdout.take().expect("stdout pipe");
    // Some thread of the agent blocks in write(2) once the pipe is full (before
    // the fix, the one thread that also runs the core loop and the control socket).
    let pid = child.id();
    wait_for("the agent's log writer to block on the full pipe", || {
        log_writer_blocked(pid)
    });
    wait_for("status with the log pipe full", || {
        status(&root)["active_version"] == "1.0.0"
    });
    // `check` goes through the same control socket and the core loop.
    let out = crate::support::run(["check", "--root", &root.display().to_string()]);
    assert_eq!(out.code, 0, "check: {}", out.stderr);
    assert_eq!(terminate(&mut child), Some(0));
}
