//! Self-update end to end (SPEC §9): an agent release published on the agent
//! channel is staged, qualified, and taken over **in place** — same pid, the
//! payload still serving, zero failed requests — then committed; a build that
//! never proves itself within its grace is replaced by the previous one, marked
//! bad with the reason, and not tried again. A build whose process dies in its
//! trial (it exits at once after the exec, or crashes after adopting the
//! payload) takes the payload with it (its death signal): the next start — the
//! test restarts the agent as systemd's `Restart=always` would, with the same
//! environment — finds the attempt marker, runs the previous build, starts the
//! payload again, marks the version bad with the reason and never retries it.

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use crate::selfupdate_stage::{agent_state, count, has_bad, publish_agent};
use crate::support::live::{AgentProcess, DEADLINE, Live, wait_for};
use crate::support::selfupdate::{
    agent_pid, binary_copy, bound_port_after, exe_inode, parent_of, payload_pid, start_with_env,
};
use crate::support::{run_ok, wait};
use crate::swap::{Load, get, listen_config, publish_hello};

/// Self-update on, with a grace a loaded machine still meets, and a short
/// self-test bound.
const SELF_UPDATE: &str =
    "[self_update]\nenabled = true\ngrace = \"20s\"\nself_test_timeout = \"30s\"\n";

/// A hello-payload agent with self-update on, started with `env`, committed on
/// 1.0.0 and answering on its `[[listen]]` port.
fn serving_agent(live: &Live, self_update: &str, env: &[(&str, &str)]) -> (AgentProcess, u16) {
    publish_hello(live, "1.0.0");
    let mut agent = live.agent("root", &listen_config(self_update));
    agent.wait_committed("1.0.0");
    agent.terminate();
    let from = agent.log().len();
    start_with_env(&mut agent, env);
    let port = bound_port_after(&agent, from);
    agent.wait_committed("1.0.0");
    wait_for("hello-payload answering", || get(port).is_ok());
    (agent, port)
}

#[test]
fn an_agent_release_takes_over_in_place_while_the_payload_keeps_serving() {
    let live = Live::new();
    let (agent, port) = serving_agent(&live, SELF_UPDATE, &[]);
    let pid = agent_pid(&agent);
    let payload = payload_pid(&agent, "1.0.0");
    let original = exe_inode(pid);
    let installed = agent.status()["agent_version"].as_str().map(String::from);

    let load = Load::start(port, 2);
    let build = binary_copy(&live.w, "bankswap-99");
    publish_agent(&live.w, &live.data, &build, "99.0.0", &[]);
    agent.wait_until("the new agent build committed", || {
        let s = agent.status();
        s["agent_version"] == "99.0.0" && s["agent_phase"] == "committed"
    });
    let (sent, failures, _) = load.finish();
    assert!(sent > 0, "the load ran");
    assert!(failures.is_empty(), "{} of {sent} failed", failures.len());

    // The same process, now the slot's image; the payload is its child still.
    assert_eq!(agent_pid(&agent), pid);
    let slot_binary = agent.root.join("agent/Slot1/bankswap");
    assert_eq!(
        exe_inode(pid),
        fs::metadata(&slot_binary)
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .expect("slot binary"),
        "the process image is the staged build"
    );
    assert_ne!(exe_inode(pid), original);
    assert_eq!(parent_of(payload), Some(pid), "the payload was adopted");
    assert_eq!(
        payload_pid(&agent, "1.0.0"),
        payload,
        "no new payload start"
    );
    let log = agent.log();
    assert!(
        log.contains(&format!("agent version=99.0.0 pid={pid} adopted=1")),
        "{log}"
    );
    assert_eq!(
        count(&log, "agent update: executing the new build in place"),
        1
    );
    assert!(log.contains("agent self-update: committing the new build"));

    // Committed in the slots; the previous build is kept for rollback.
    let state = agent_state(&agent.root);
    assert_eq!(state["active"], "Slot1");
    assert_eq!(state["phase"], "committed");
    assert!(state["attempt"].is_null(), "{state}");
    let s = agent.status();
    assert_eq!(s["agent_previous_version"].as_str(), installed.as_deref());
    assert_eq!(s["active_version"], "1.0.0");
    assert!(build.exists());

    // The console sees the new agent version in the agent's reports.
    let data = live.data.display().to_string();
    wait_for("the fleet to show agent 99.0.0", || {
        let out = run_ok(["console", "fleet", "--data", &data, "--json"]);
        serde_json::from_str::<serde_json::Value>(&out.stdout)
            .is_ok_and(|fleet| fleet[0]["agent_version"] == "99.0.0")
    });
}

#[test]
fn a_build_that_never_commits_is_replaced_by_the_previous_one_and_marked_bad() {
    let live = Live::new();
    // The copy published as 99.0.0 skips its self-probe once it runs as 99.0.0,
    // so it cannot commit within its (short) grace; the same bytes as 0.x do.
    let (agent, port) = serving_agent(
        &live,
        "[self_update]\nenabled = true\ngrace = \"3s\"\nself_test_timeout = \"30s\"\n",
        &[("BANKSWAP_TEST_AGENT_FAULT", "no-commit@99.0.0")],
    );
    let pid = agent_pid(&agent);
    let payload = payload_pid(&agent, "1.0.0");
    let original = exe_inode(pid);

    let load = Load::start(port, 2);
    let build = binary_copy(&live.w, "bankswap-99");
    publish_agent(&live.w, &live.data, &build, "99.0.0", &[]);
    agent.wait_until("99.0.0 marked bad", || has_bad(&agent.status(), "99.0.0"));
    let (sent, failures, _) = load.finish();
    assert!(failures.is_empty(), "{} of {sent} failed", failures.len());

    assert_eq!(agent_pid(&agent), pid);
    assert_eq!(exe_inode(pid), original, "the previous build runs again");
    assert_eq!(parent_of(payload), Some(pid), "the payload never stopped");
    let s = agent.status();
    assert_ne!(s["agent_version"], "99.0.0");
    assert_eq!(s["agent_phase"], "committed");
    let reason = s["agent_bad_versions"]
        .as_array()
        .and_then(|b| b.iter().find(|v| v["version"] == "99.0.0"))
        .and_then(|v| v["reason"].as_str())
        .unwrap_or_default()
        .to_string();
    assert!(reason.contains("missed its grace"), "{s}");
    let state = agent_state(&agent.root);
    assert!(state["attempt"].is_null(), "{state}");
    assert!(
        state["active"].is_null(),
        "still the installed build: {state}"
    );

    not_tried_again(&agent);
}

/// Not tried again: a check finds the release 99.0.0 marked bad and leaves it
/// (the new build was executed once). The agent's log.
fn not_tried_again(agent: &AgentProcess) -> String {
    run_ok(["check", "--root", &agent.root.display().to_string()]);
    agent.wait_log("version 99.0.0 was marked bad by this agent");
    let log = agent.log();
    assert_eq!(
        count(&log, "agent update: executing the new build in place"),
        1,
        "{log}"
    );
    log
}

/// Exit status of a new image that the `exit-at-once` fault ends
/// (`EXIT_AT_ONCE_STATUS` in src/agent/self_update/fault.rs).
const EXIT_AT_ONCE_STATUS: i32 = 71;

/// Whether `pid` still runs (a zombie does not).
fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().next().map(|s| s != "Z"))
        })
        .unwrap_or(false)
}

/// The reason `status` gives for the bad agent `version`.
fn bad_reason(status: &serde_json::Value, version: &str) -> String {
    status["agent_bad_versions"]
        .as_array()
        .and_then(|b| b.iter().find(|v| v["version"] == version))
        .and_then(|v| v["reason"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// A release whose new image ends the process during its trial (`fault`,
/// armed for 99.0.0): the process ends as `ended` expects, the payload with
/// it; the restarted agent (same environment) runs the previous build, the
/// payload runs again, and 99.0.0 is marked bad and never retried. Returns
/// the agent log.
fn a_release_whose_process_dies_in_its_trial(
    fault: &str,
    ended: impl Fn(ExitStatus) -> bool,
) -> String {
    let live = Live::new();
    let switch = format!("{fault}@99.0.0");
    let env = [("BANKSWAP_TEST_AGENT_FAULT", switch.as_str())];
    let (mut agent, port) = serving_agent(&live, SELF_UPDATE, &env);
    let pid = agent_pid(&agent);
    let payload = payload_pid(&agent, "1.0.0");
    let original = exe_inode(pid);
    let installed = agent.status()["agent_version"].clone();

    let load = Load::start(port, 2);
    let build = binary_copy(&live.w, "bankswap-99");
    publish_agent(&live.w, &live.data, &build, "99.0.0", &[]);
    let child = agent.child.as_mut().expect("agent running");
    let status = wait::exit_of(child, DEADLINE).unwrap_or_else(|| {
        panic!(
            "the agent process did not end within {DEADLINE:?}:\n{}",
            agent.log()
        )
    });
    agent.child = None;
    assert!(ended(status), "the process ended by {status:?}");
    // The payload's death signal: no orphan keeps serving an old version.
    wait_for("the payload to end with the agent's process", || {
        !alive(payload)
    });
    let (sent, _, _) = load.finish();
    assert!(sent > 0, "the load ran");
    let log = agent.log();
    assert_eq!(
        count(&log, "agent update: executing the new build in place"),
        1,
        "{log}"
    );
    assert!(
        !log.contains("agent self-update: committing the new build"),
        "{log}"
    );

    // The supervisor restarts the agent, with the same environment.
    let from = log.len();
    start_with_env(&mut agent, &env);
    let port = bound_port_after(&agent, from);
    agent.wait_until("99.0.0 marked bad", || has_bad(&agent.status(), "99.0.0"));
    agent.wait_committed("1.0.0");
    let new_pid = agent_pid(&agent);
    assert_eq!(exe_inode(new_pid), original, "the previous build runs");
    let s = agent.status();
    assert_eq!(s["agent_version"], installed, "{s}");
    assert_eq!(s["agent_phase"], "committed", "{s}");
    let reason = bad_reason(&s, "99.0.0");
    assert!(reason.contains("ended during its trial"), "{s}");
    assert!(
        s["agent_last_error"]
            .as_str()
            .is_some_and(|e| e.contains("99.0.0")),
        "{s}"
    );
    let state = agent_state(&agent.root);
    assert!(state["attempt"].is_null(), "{state}");
    assert!(state["active"].is_null(), "the installed build: {state}");
    // One whole payload version runs again, the restarted agent's child (its
    // running line may come after the status answers).
    agent.wait_until("the restarted agent's payload start", || {
        agent.log()[from..].contains("running version=1.0.0 ")
    });
    let restarted = payload_pid(&agent, "1.0.0");
    assert_ne!(restarted, payload);
    assert_eq!(parent_of(restarted), Some(new_pid));
    assert_eq!(
        count(&agent.log()[from..], "running version=1.0.0"),
        1,
        "one payload start after the restart"
    );
    wait_for("hello-payload answering again", || {
        get(port).is_ok_and(|b| b.contains("1.0.0"))
    });

    not_tried_again(&agent)
}

#[test]
fn a_release_that_exits_at_once_after_the_exec_is_undone_at_the_next_start() {
    let log = a_release_whose_process_dies_in_its_trial("exit-at-once", |status| {
        status.code() == Some(EXIT_AT_ONCE_STATUS)
    });
    assert_eq!(count(&log, "test switch: exiting at once"), 1, "{log}");
    // It ended before adopting anything: no start line of 99.0.0.
    assert!(!log.contains("agent version=99.0.0"), "{log}");
}

#[test]
fn a_release_that_crashes_after_adopting_is_undone_at_the_next_start() {
    let log = a_release_whose_process_dies_in_its_trial("crash-after-adopt", |status| {
        status.signal() == Some(libc::SIGABRT)
    });
    // It adopted the payload (its start line says so), then crashed.
    let adopted = log
        .find("agent version=99.0.0 pid=")
        .expect("the new image's start line");
    assert!(log[adopted..].starts_with("agent version=99.0.0"));
    assert!(
        log[adopted..]
            .lines()
            .next()
            .is_some_and(|l| l.contains("adopted=1")),
        "{log}"
    );
    assert_eq!(
        count(&log, "test switch: crashing after adopting"),
        1,
        "{log}"
    );
}
