//! Self-update, first half (SPEC §9): agent releases are published, checked on
//! their own channel, verified with the agent's own sequence and bad list,
//! staged into an agent slot and qualified with `--self-test`, up to "ready to
//! exec" (the exec hand-over is tested with its own half); offline `apply` of
//! an agent release; releases for another platform are ignored; a payload
//! update and an agent update never run at once.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::support::live::{Live, wait_for};
use crate::support::selfupdate::binary_copy;
use crate::support::{World, run, run_ok};

/// Trial settings that keep tests short, and self-update on.
const SELF_UPDATE: &str =
    "[health]\ngrace = \"1s\"\n[self_update]\nenabled = true\nself_test_timeout = \"30s\"\n";

/// A shell script standing in for a build.
fn script(w: &World, name: &str, body: &str) -> PathBuf {
    let path = w.path(name);
    fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("script");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

/// `publish --agent-binary FILE --version V --channel bankswap --to DATA [extra]`.
pub(crate) fn publish_agent(w: &World, data: &Path, file: &Path, version: &str, extra: &[&str]) {
    let mut args = vec![
        "publish".to_string(),
        "--key".into(),
        w.secret("release"),
        "--agent-binary".into(),
        file.display().to_string(),
        "--version".into(),
        version.into(),
        "--channel".into(),
        "bankswap".into(),
        "--to".into(),
        data.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let out = run_ok(args);
    assert!(out.stdout.contains("published bankswap"), "{}", out.stdout);
}

/// How often `needle` occurs in `log`.
pub(crate) fn count(log: &str, needle: &str) -> usize {
    log.matches(needle).count()
}

/// The agent's slot state file.
pub(crate) fn agent_state(root: &Path) -> serde_json::Value {
    let text = fs::read_to_string(root.join("agent/state.json")).expect("agent/state.json");
    serde_json::from_str(&text).expect("agent state JSON")
}

pub(crate) fn has_bad(status: &serde_json::Value, version: &str) -> bool {
    status["agent_bad_versions"]
        .as_array()
        .is_some_and(|b| b.iter().any(|v| v["version"] == version))
}

#[test]
fn an_agent_release_is_staged_qualified_and_taken_over() {
    let live = Live::new();
    live.publish_sleeper("1.0.0");
    let agent = live.agent("root", SELF_UPDATE);
    agent.wait_committed("1.0.0");
    let pid = agent.child.as_ref().map(|c| c.id()).expect("agent pid");
    agent.wait_log(&format!("agent version=0.1.0 pid={pid} adopted=0"));
    let s = agent.status();
    assert_eq!(s["agent_version"], "0.1.0");
    assert_eq!(s["agent_phase"], "committed");
    assert_eq!(s["agent_platform"], "linux-x86_64");

    let build = binary_copy(&live.w, "bankswap-99");
    publish_agent(&live.w, &live.data, &build, "99.0.0", &[]);
    agent.wait_log("agent update ready version=99.0.0 slot=Slot1");
    let log = agent.log();
    assert_eq!(
        count(&log, "agent build staged version=99.0.0 slot=Slot1"),
        1
    );
    assert_eq!(count(&log, "agent self-test passed version=99.0.0"), 1);

    // The slot holds the very bytes published, executable, with a record that
    // says what the self-test found.
    let slot = agent.root.join("agent/Slot1");
    let staged = fs::read(slot.join("bankswap")).expect("staged build");
    assert_eq!(staged, fs::read(&build).expect("build"));
    let mode = fs::metadata(slot.join("bankswap"))
        .expect("meta")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    let record: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(slot.join(".bankswap-record.json")).expect("record"),
    )
    .expect("record JSON");
    assert_eq!(record["version"], "99.0.0");
    assert_eq!(record["platform"], "linux-x86_64");
    assert_eq!(record["handover_schemas"], serde_json::json!([1]));

    // Then taken over in place (tests/selfupdate.rs follows that part): the
    // payload is the same release, the agent state names the slot.
    agent.wait_until("the new build committed", || {
        agent.status()["agent_version"] == "99.0.0"
    });
    let s = agent.status();
    assert_eq!(s["active_version"], "1.0.0");
    assert!(s["agent_last_error"].is_null(), "{s}");
    let state = agent_state(&agent.root);
    assert_eq!(state["phase"], "committed");
    assert_eq!(state["active"], "Slot1");
    assert_eq!(state["slot1_version"], "99.0.0");

    // The report carries the agent version; the console's fleet shows it.
    let data = live.data.display().to_string();
    wait_for("the fleet to show the agent version", || {
        let out = run(["console", "fleet", "--data", &data, "--json"]);
        serde_json::from_str::<serde_json::Value>(&out.stdout)
            .is_ok_and(|fleet| fleet[0]["agent_version"] == "99.0.0")
    });
    let table = run_ok(["console", "fleet", "--data", &data]);
    let mut lines = table.stdout.lines();
    assert!(
        lines.next().is_some_and(|h| h.contains("AGENT VERSION")),
        "{}",
        table.stdout
    );
    assert!(lines.next().is_some_and(|row| row.contains("99.0.0")));
}

#[test]
fn a_build_that_fails_its_self_test_is_marked_bad_and_not_retried() {
    let live = Live::new();
    live.publish_sleeper("1.0.0");
    let mut agent = live.agent("root", SELF_UPDATE);
    agent.wait_committed("1.0.0");
    let broken = script(&live.w, "broken", "echo 'cannot start here' >&2\nexit 3");
    publish_agent(
        &live.w,
        &live.data,
        &broken,
        "2.0.0",
        &["--platform", "linux-x86_64"],
    );
    wait_for("2.0.0 marked bad", || has_bad(&agent.status(), "2.0.0"));
    let s = agent.status();
    let bad = &s["agent_bad_versions"][0];
    let reason = bad["reason"].as_str().expect("reason");
    assert!(
        reason.contains("self-test: exited with status 3") && reason.contains("cannot start here"),
        "{reason}"
    );
    assert_eq!(s["agent_last_error"].as_str(), Some(reason));
    assert_eq!(s["agent_phase"], "committed");
    assert!(s["agent_pending"].is_null(), "{s}");
    agent.wait_log("agent self-test failed version=2.0.0");

    // Not retried: asked to check again (`bankswap check` wakes the agent channel's
    // checker too), and after a restart, the agent sees the release and refuses it.
    let refused = "version 2.0.0 was marked bad by this agent";
    run_ok(["check", "--root", &agent.root.display().to_string()]);
    agent.wait_log(refused);
    agent.terminate();
    agent.restart();
    agent.wait_until("a second refusal", || count(&agent.log(), refused) == 2);
    let log = agent.log();
    assert_eq!(count(&log, "agent build staged version=2.0.0"), 1, "{log}");
    assert_eq!(count(&log, "agent self-test failed version=2.0.0"), 1);
    assert!(has_bad(&agent.status(), "2.0.0"));
}

#[test]
fn a_release_for_another_platform_is_ignored_with_a_reason() {
    let live = Live::new();
    live.publish_sleeper("1.0.0");
    let agent = live.agent("root", SELF_UPDATE);
    agent.wait_committed("1.0.0");
    let build = script(&live.w, "bankswap-riscv", "exit 0");
    publish_agent(
        &live.w,
        &live.data,
        &build,
        "3.0.0",
        &["--platform", "linux-riscv64"],
    );
    agent.wait_log("ignoring an agent release for another platform");
    let s = agent.status();
    let error = s["agent_last_error"].as_str().expect("agent_last_error");
    assert!(
        error.contains("linux-riscv64") && error.contains("linux-x86_64"),
        "{error}"
    );

    // A payload for another platform is refused too, with its reason.
    let payload = live.w.script_payload("1.1.0", "exec sleep 1000");
    live.w.publish(
        &live.data,
        &payload,
        "1.1.0",
        &["--platform", "linux-riscv64"],
    );
    agent.wait_until("the payload refusal", || {
        agent.status()["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("platform linux-riscv64"))
    });
    // More events, one line each: the payload channel moves on to a good release.
    live.publish_sleeper("1.2.0");
    agent.wait_committed("1.2.0");
    let log = agent.log();
    assert_eq!(
        count(&log, "ignoring an agent release for another platform"),
        1,
        "{log}"
    );
    assert_eq!(
        count(&log, "release is for platform linux-riscv64"),
        1,
        "{log}"
    );
    // Nothing was staged.
    assert!(!agent.root.join("agent/Slot1/bankswap").exists());
    assert!(!agent.root.join("agent/Slot2/bankswap").exists());
    assert_eq!(agent.status()["agent_phase"], "committed");
}

#[test]
fn payload_and_agent_updates_never_run_at_once() {
    let live = Live::new();
    live.publish_sleeper("1.0.0");
    // A payload trial long enough that the agent release lands in the middle of it.
    let agent = live.agent(
        "root",
        "[health]\ngrace = \"3s\"\n[self_update]\nenabled = true\nself_test_timeout = \"30s\"\n",
    );
    agent.wait_committed("1.0.0");
    live.publish_sleeper("1.1.0");
    agent.wait_log("the new version is on trial version=\"1.1.0\"");
    let build = binary_copy(&live.w, "bankswap-99");
    publish_agent(&live.w, &live.data, &build, "99.0.0", &[]);
    agent.wait_committed("1.1.0");
    agent.wait_log("agent update ready version=99.0.0");

    // One after the other: the payload's staging-to-commit and the agent's
    // staging-to-ready never overlap.
    let log = agent.log();
    let at = |needle: &str| {
        log.find(needle)
            .unwrap_or_else(|| panic!("`{needle}` not in the log:\n{log}"))
    };
    let payload = (
        at("staging version=1.1.0"),
        at("committed version=\"1.1.0\""),
    );
    let agent_work = (
        at("agent build staging version=99.0.0"),
        at("agent update ready version=99.0.0"),
    );
    assert!(
        agent_work.0 > payload.1 || payload.0 > agent_work.1,
        "overlap: payload {payload:?}, agent {agent_work:?}\n{log}"
    );
    // And here the agent release came while the payload was on trial: it waited.
    assert!(agent_work.0 > payload.1, "{log}");
}

#[test]
fn offline_apply_of_an_agent_release_commits_it_for_the_next_start() {
    let w = World::new();
    let data = w.path("data");
    let payload = w.payload("1.0.0", 1, 16);
    w.publish(&data, &payload, "1.0.0", &[]);
    let root = w.path("root");
    w.init(&root, &data);
    let agents = w.path("agent-data");
    let build = binary_copy(&w, "bankswap-99");
    publish_agent(&w, &agents, &build, "99.0.0", &[]);

    // No --channel: the bundle holds no payload channel, its agent channel is found.
    let out = run_ok([
        "apply",
        "--root",
        &root.display().to_string(),
        "--trust",
        &w.public("release"),
        "--bundle",
        &agents.display().to_string(),
    ]);
    assert!(
        out.stdout.contains("agent 99.0.0 installed in") && out.stdout.contains("agent/Slot1"),
        "{}",
        out.stdout
    );
    let state = agent_state(&root);
    assert_eq!(state["active"], "Slot1");
    assert_eq!(state["phase"], "committed");
    assert_eq!(state["highest_sequence"], 1);
    assert_eq!(
        fs::read(root.join("agent/Slot1/bankswap")).expect("build"),
        fs::read(&build).expect("copy")
    );
    // The payload is untouched; status names the build the next start runs.
    let s = crate::support::status(&root);
    assert_eq!(s["active_version"], "1.0.0");
    assert_eq!(s["agent_version"], "99.0.0");
    assert_eq!(s["agent_previous_version"], "0.1.0");

    // A broken build is marked bad with its reason, and the committed one stays.
    let broken = script(&w, "broken", "exit 3");
    publish_agent(
        &w,
        &agents,
        &broken,
        "100.0.0",
        &["--platform", "linux-x86_64"],
    );
    let out = run([
        "apply",
        "--root",
        &root.display().to_string(),
        "--trust",
        &w.public("release"),
        "--channel",
        "bankswap",
        "--bundle",
        &agents.display().to_string(),
    ]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let line = out.stderr.lines().next().unwrap_or_default();
    assert!(
        line.starts_with("error: agent 100.0.0: self-test: exited with status 3"),
        "{}",
        out.stderr
    );
    let state = agent_state(&root);
    assert_eq!(state["active"], "Slot1");
    assert_eq!(state["bad_versions"][0]["version"], "100.0.0");
    let s = crate::support::status(&root);
    assert!(has_bad(&s, "100.0.0"), "{s}");
}

#[test]
fn the_self_test_answers_in_one_line_and_its_fault_switch_fails_it() {
    let w = World::new();
    let data = w.path("data");
    let payload = w.payload("1.0.0", 1, 16);
    w.publish(&data, &payload, "1.0.0", &[]);
    let root = w.path("root");
    w.init(&root, &data);
    let before = crate::support::Snapshot::of(&root);
    let out = run_ok([
        "--self-test",
        "--root",
        &root.display().to_string(),
        "--expect-version",
        "5.0.0",
    ]);
    let answer: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("one JSON line");
    assert_eq!(answer["ok"], true);
    assert_eq!(answer["release_version"], "5.0.0");
    assert_eq!(answer["build_version"], "0.1.0");
    assert_eq!(answer["handover_schemas"], serde_json::json!([1]));
    assert_eq!(
        crate::support::Snapshot::of(&root),
        before,
        "the self-test wrote nothing"
    );

    // The test-only switch (read in src/agent/self_update/fault.rs) fails exactly
    // the version it names.
    let failing = crate::support::bankswap()
        .args(["--self-test", "--root"])
        .arg(&root)
        .args(["--expect-version", "5.0.0"])
        .env("BANKSWAP_TEST_AGENT_FAULT", "self-test-fail@5.0.0")
        .output()
        .expect("runs");
    assert_eq!(failing.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&failing.stderr);
    assert!(stderr.starts_with("error: self-test: fault:"), "{stderr}");
    let other = crate::support::bankswap()
        .args(["--self-test", "--root"])
        .arg(&root)
        .args(["--expect-version", "6.0.0"])
        .env("BANKSWAP_TEST_AGENT_FAULT", "self-test-fail@5.0.0")
        .output()
        .expect("runs");
    assert_eq!(other.status.code(), Some(0));

    // A config that does not parse fails with its reason.
    let config = w.path("bad.toml");
    fs::write(&config, "trusted_keys = []\n").expect("config");
    let out = run(["--self-test", "--config", &config.display().to_string()]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.starts_with("error: self-test: config:"),
        "{}",
        out.stderr
    );
}

#[test]
fn publish_refuses_agent_binaries_that_are_not_executable_files() {
    let w = World::new();
    let data = w.path("data");
    let try_publish = |file: &Path, extra: &[&str]| {
        let mut args = vec![
            "publish".to_string(),
            "--key".into(),
            w.secret("release"),
            "--agent-binary".into(),
            file.display().to_string(),
            "--version".into(),
            "2.0.0".into(),
            "--channel".into(),
            "bankswap".into(),
            "--to".into(),
            data.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        run(args)
    };
    let plain = w.path("plain");
    fs::write(&plain, "#!/bin/sh\nexit 0\n").expect("file");
    let not_elf = script(&w, "not-elf", "exit 0");
    let dir = w.path("a-dir");
    fs::create_dir_all(&dir).expect("dir");
    let missing = w.path("missing");
    for (file, extra, why) in [
        (&dir, &[][..], "not a regular file"),
        (&missing, &[][..], "No such file"),
        (
            &plain,
            &["--platform", "linux-x86_64"][..],
            "not executable",
        ),
        (&not_elf, &[][..], "give --platform"),
        (&not_elf, &["--platform", "linux x86"][..], "platform"),
    ] {
        let out = try_publish(file, extra);
        assert_ne!(out.code, 0, "{file:?}: {}", out.stdout);
        let lines: Vec<&str> = out
            .stderr
            .lines()
            .filter(|l| l.starts_with("error: "))
            .collect();
        assert_eq!(lines.len(), 1, "{}", out.stderr);
        assert!(lines[0].contains(why), "{file:?}: {}", lines[0]);
    }
    assert!(!data.join("v1/channels/bankswap/release.json").exists());

    // A payload channel refuses agent builds, and the reverse.
    let payload = w.payload("1.0.0", 1, 16);
    w.publish_with(
        &data,
        &payload,
        "1.0.0",
        "bin/app",
        &["--channel", "bankswap"],
    );
    let out = try_publish(&not_elf, &["--platform", "linux-x86_64"]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("carries payload releases"),
        "{}",
        out.stderr
    );
}

#[test]
fn the_installed_binary_runs_a_newer_committed_build_and_leaves_a_crash_loop() {
    use std::os::unix::fs::MetadataExt;
    let live = Live::new();
    live.publish_sleeper("1.0.0");
    let root = live.w.path("root");
    let agents = live.w.path("agent-data");
    let build = binary_copy(&live.w, "bankswap-99");
    publish_agent(&live.w, &agents, &build, "99.0.0", &[]);
    let out = run_ok([
        "apply",
        "--root",
        &root.display().to_string(),
        "--trust",
        &live.w.public("release"),
        "--bundle",
        &agents.display().to_string(),
    ]);
    assert!(
        out.stdout.contains("the next start runs it"),
        "{}",
        out.stdout
    );

    // The installed binary (the test binary, 0.1.0) execs the committed 99.0.0 in place.
    let mut agent = live.agent("root", SELF_UPDATE);
    agent.wait_committed("1.0.0");
    let pid = agent.child.as_ref().map(|c| c.id()).expect("pid");
    agent.wait_log(&format!("agent version=99.0.0 pid={pid} adopted=0"));
    let s = agent.status();
    assert_eq!(s["agent_version"], "99.0.0");
    assert_eq!(s["agent_previous_version"], "0.1.0");
    let exe = fs::metadata(format!("/proc/{pid}/exe")).expect("exe");
    let slot = fs::metadata(root.join("agent/Slot1/bankswap")).expect("slot build");
    assert_eq!((exe.dev(), exe.ino()), (slot.dev(), slot.ino()));
    assert!(agent.log().contains("running the committed agent build"));
    agent.wait_until("the launch count cleared", || {
        agent_state(&root)["launch"].is_null()
    });
    agent.terminate();

    // A committed build that dies at start (its self-test passed, its start does
    // not): after three launches in a row the installed binary runs again and the
    // build is marked bad.
    let dying = "#!/bin/sh\nexit 7\n";
    fs::write(root.join("agent/Slot1/bankswap"), dying).expect("replace the build");
    let record_path = root.join("agent/Slot1/.bankswap-record.json");
    let mut record: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&record_path).expect("record")).expect("json");
    record["size"] = dying.len().into();
    fs::write(&record_path, record.to_string()).expect("record");
    for launch in 1..=3 {
        agent.restart();
        let status = agent.child.as_mut().expect("child").wait().expect("wait");
        assert_eq!(status.code(), Some(7), "launch {launch}");
        agent.child = None;
        assert_eq!(agent_state(&root)["launch"]["count"], launch);
    }
    agent.restart();
    agent.wait_until("the installed agent back", || {
        agent.status()["agent_version"] == "0.1.0"
    });
    let s = agent.status();
    assert!(has_bad(&s, "99.0.0"), "{s}");
    let reason = s["agent_bad_versions"][0]["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(
        reason.contains("did not start 3 times in a row"),
        "{reason}"
    );
    assert!(agent_state(&root)["active"].is_null());
    agent.wait_committed("1.0.0");
}

#[test]
fn a_payload_release_waits_while_an_agent_build_is_self_tested() {
    let live = Live::new();
    live.publish_sleeper("1.0.0");
    let agent = live.agent("root", SELF_UPDATE);
    agent.wait_committed("1.0.0");
    // A "build" whose self-test goes on until the test lets it end (then fails).
    let gate = live.w.path("gate");
    let slow = script(
        &live.w,
        "slow",
        &format!(
            "while [ ! -e '{}' ]; do sleep 0.05; done\nexit 3",
            gate.display()
        ),
    );
    publish_agent(
        &live.w,
        &live.data,
        &slow,
        "2.0.0",
        &["--platform", "linux-x86_64"],
    );
    agent.wait_log("agent build staged version=2.0.0");
    agent.wait_until("the self-test running", || {
        agent.status()["agent_phase"] == "self-test"
    });
    live.publish_sleeper("1.1.0");
    agent.wait_log("release scheduled version=1.1.0");
    assert_eq!(agent.status()["agent_phase"], "self-test");
    fs::write(&gate, "").expect("open the gate");
    agent.wait_committed("1.1.0");
    let log = agent.log();
    let at = |needle: &str| {
        log.find(needle)
            .unwrap_or_else(|| panic!("`{needle}` not in the log:\n{log}"))
    };
    // Scheduled during the self-test, staged only after it ended.
    assert!(at("release scheduled version=1.1.0") < at("agent self-test failed version=2.0.0"));
    assert!(at("agent self-test failed version=2.0.0") < at("staging version=1.1.0"));
    assert!(has_bad(&agent.status(), "2.0.0"));
}
