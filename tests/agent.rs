//! The live agent (`bankswap run`) against a real console on loopback TLS:
//! updates, automatic and admin rollback, hostile manifests, a dead console,
//! broken downloads, crashes, and a second agent on the same root.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::support::live::{ConsoleProcess, Live, wait_for};
use crate::support::{assert_fails_with, mode_of, run, run_ok, serve_history};

/// Trial settings that keep tests short.
const FAST_TRIAL: &str = "[health]\ngrace = \"1s\"\nmax_failures = 3\n";

fn payload_pid(log: &str, version: &str) -> Option<u32> {
    let needle = format!("running version={version} ");
    let line = log.lines().rev().find(|l| l.contains(&needle))?;
    line.split("pid=")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid as i32, 0) == 0 }
}

#[test]
fn update_auto_rollback_and_admin_rollback() {
    let live = Live::new();
    live.publish_sleeper("1.0.0");
    let agent = live.agent("root", FAST_TRIAL);
    agent.wait_log("running version=1.0.0");
    agent.wait_committed("1.0.0");

    live.publish_sleeper("2.0.0");
    agent.wait_log("running version=2.0.0");
    agent.wait_committed("2.0.0");
    let s = agent.status();
    assert_eq!(s["previous_version"], "1.0.0");
    let log = agent.log();
    let v1 = payload_pid(&log, "1.0.0").expect("v1 pid logged");
    assert!(!alive(v1), "the old payload was stopped");

    // A version that dies at once: the agent goes back to 2.0.0 by itself.
    live.publish_script("3.0.0", "echo dying; exit 3");
    wait_for("3.0.0 marked bad", || {
        agent.status()["bad_versions"]
            .as_array()
            .is_some_and(|b| b.iter().any(|v| v["version"] == "3.0.0"))
    });
    agent.wait_committed("2.0.0");
    let s = agent.status();
    let reason = s["bad_versions"][0]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(reason.contains("exited"), "the reason says why: {reason}");
    assert!(
        agent.log().contains("running version=3.0.0"),
        "3.0.0 was tried"
    );

    // The other bank now holds the bad 3.0.0: an admin rollback into it is refused.
    let out = run(["rollback", "--root", &agent.root.display().to_string()]);
    assert_fails_with(&out, "marked bad");
    assert_eq!(agent.status()["active_version"], "2.0.0");

    // A good 4.0.0, then an admin rolls back through the running agent.
    live.publish_sleeper("4.0.0");
    agent.wait_committed("4.0.0");
    let out = run_ok(["rollback", "--root", &agent.root.display().to_string()]);
    assert!(out.stdout.contains("2.0.0"), "{}", out.stdout);
    agent.wait_committed("2.0.0");
    let log = agent.log();
    let v2_again = payload_pid(&log, "2.0.0").expect("2.0.0 restarted");
    assert!(alive(v2_again), "2.0.0 runs again");
    // A check does not re-install the rolled-back 4.0.0 (marked bad until re-published).
    let before = agent.status()["last_check"].clone();
    run_ok(["check", "--root", &agent.root.display().to_string()]);
    wait_for("a new check", || agent.status()["last_check"] != before);
    let s = agent.status();
    assert_eq!(s["active_version"], "2.0.0");
    assert!(s["pending"].is_null(), "4.0.0 is not scheduled again: {s}");
}

#[test]
fn hostile_manifests_are_rejected_and_the_payload_keeps_running() {
    let live = Live::new();
    live.publish_sleeper("1.0.0");
    let agent = live.agent("root", FAST_TRIAL);
    agent.wait_committed("1.0.0");
    let pid = payload_pid(&agent.log(), "1.0.0").expect("pid");
    let channel = live.data.join("v1/channels/stable");

    // Signed by an unknown key.
    live.w.keygen("intruder");
    let manifest = fs::read_to_string(channel.join("release.json")).expect("manifest");
    let bumped = manifest
        .replace("\"sequence\": 1", "\"sequence\": 7")
        .replace("1.0.0", "9.0.0");
    fs::write(channel.join("release.json"), &bumped).expect("write");
    live.w.sign("intruder", &channel.join("release.json"));
    run_ok(["check", "--root", &agent.root.display().to_string()]);
    wait_for("unknown key in status", || {
        agent.status()["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("unknown key"))
    });

    // Expired, signed by the trusted key.
    let expired = bumped.replace(
        &bumped
            .split("\"expires_at\": \"")
            .nth(1)
            .expect("expires")
            .split('"')
            .next()
            .expect("date")
            .to_string(),
        "2020-01-01T00:00:00Z",
    );
    fs::write(channel.join("release.json"), &expired).expect("write");
    live.w.sign("release", &channel.join("release.json"));
    run_ok(["check", "--root", &agent.root.display().to_string()]);
    wait_for("expired in status", || {
        agent.status()["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("expired"))
    });

    // A replayed older sequence: publish 2.0.0 (sequence 2), then serve sequence 1 again.
    serve_history(&live.data, "stable", 1);
    live.publish_sleeper("2.0.0");
    agent.wait_committed("2.0.0");
    serve_history(&live.data, "stable", 1);
    run_ok(["check", "--root", &agent.root.display().to_string()]);
    wait_for("replay in status", || {
        agent.status()["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("replayed"))
    });
    assert_eq!(agent.status()["active_version"], "2.0.0");
    assert!(!alive(pid), "1.0.0 was replaced by 2.0.0");
    let pid2 = payload_pid(&agent.log(), "2.0.0").expect("pid of 2.0.0");
    assert!(
        alive(pid2),
        "the payload kept running through the rejections"
    );
}

#[test]
fn dead_console_then_recovery() {
    let mut live = Live::new();
    live.publish_sleeper("1.0.0");
    let agent = live.agent("root", FAST_TRIAL);
    agent.wait_committed("1.0.0");
    let pid = payload_pid(&agent.log(), "1.0.0").expect("pid");
    let addr = live.console.addr.clone();
    let _ = live.console.child.kill();
    let _ = live.console.child.wait();
    wait_for("the agent notices the dead console", || {
        agent.status()["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("checking"))
    });
    assert!(
        alive(pid),
        "the payload keeps running while the console is away"
    );
    live.publish_sleeper("2.0.0");
    // The console comes back on the same address.
    live.console = ConsoleProcess::start_with(
        &live.data,
        &live.ca,
        &addr,
        &live.w.path("console.log"),
        &["--allow-anonymous-reports"],
    );
    agent.wait_committed("2.0.0");
    assert!(agent.status()["last_error"].is_null(), "{}", agent.status());
    assert!(
        agent.log().matches("console unreachable").count() == 1,
        "logged once per state change"
    );
}

/// A TCP proxy that cuts the first connection that carries more than `cut_after`
/// bytes towards the client, and counts every byte it forwards that way.
struct CuttingProxy {
    port: u16,
    forwarded: Arc<AtomicU64>,
}

impl CuttingProxy {
    fn start(target: String, cut_after: u64) -> CuttingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy bind");
        let port = listener.local_addr().expect("addr").port();
        let forwarded = Arc::new(AtomicU64::new(0));
        let cut_done = Arc::new(AtomicBool::new(false));
        let counter = forwarded.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().take(64) {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                let (c2, s2) = (
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                );
                std::thread::spawn(move || pipe(c2, s2, None, None));
                let (counter, cut_done) = (counter.clone(), cut_done.clone());
                std::thread::spawn(move || {
                    pipe(server, client, Some((cut_after, cut_done)), Some(counter))
                });
            }
        });
        CuttingProxy { port, forwarded }
    }
}

fn pipe(
    mut from: TcpStream,
    mut to: TcpStream,
    cut: Option<(u64, Arc<AtomicBool>)>,
    count: Option<Arc<AtomicU64>>,
) {
    let mut buf = [0u8; 16 * 1024];
    let mut total = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        total += n as u64;
        if let Some(count) = &count {
            count.fetch_add(n as u64, Ordering::Relaxed);
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        if let Some((limit, done)) = &cut
            && total > *limit
            && !done.swap(true, Ordering::SeqCst)
        {
            break; // cut this connection mid-transfer, once
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
    let _ = from.shutdown(std::net::Shutdown::Both);
}

#[test]
fn broken_download_resumes_with_range() {
    let live = Live::new();
    live.publish_sleeper("1.0.0");
    // 2.0.0 carries 4 MiB of incompressible data.
    let dir = live.w.script_payload("2.0.0", "exec sleep 1000");
    let mut noise = vec![0u8; 4 << 20];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for b in &mut noise {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    fs::write(dir.join("noise.bin"), &noise).expect("noise");

    let proxy = CuttingProxy::start(live.console.addr.clone(), 1 << 20);
    let url = format!("https://localhost:{}", proxy.port);
    let root = live.w.path("root");
    let agent = crate::support::live::AgentProcess::start(
        &live.w,
        &live.ca,
        &root,
        &crate::support::live::AgentSettings {
            console: &url,
            extra: FAST_TRIAL,
        },
    );
    agent.wait_committed("1.0.0");
    let before = proxy.forwarded.load(Ordering::Relaxed);
    live.w.publish(&live.data, &dir, "2.0.0", &[]);
    agent.wait_committed("2.0.0");
    let size = fs::read_dir(live.data.join("v1/artifacts"))
        .expect("artifacts")
        .filter_map(Result::ok)
        .map(|e| e.metadata().expect("meta").len())
        .max()
        .expect("artifact");
    let fetched = proxy.forwarded.load(Ordering::Relaxed) - before;
    assert!(
        agent.log().contains("resuming"),
        "the download was cut and resumed"
    );
    assert!(
        fetched < 2 * size,
        "fetched {fetched} bytes for a {size}-byte artifact: not resumed"
    );
    assert_eq!(crate::support::bank_files(&root, agent.status()["active_bank"].as_str().expect("bank"))["noise.bin"].len(), 64);
}

#[test]
fn killed_during_trial_resumes_the_trial() {
    let live = Live::new();
    live.publish_sleeper("1.0.0");
    let mut agent = live.agent("root", "[health]\ngrace = \"4s\"\n");
    agent.wait_committed("1.0.0");
    live.publish_sleeper("2.0.0");
    wait_for("2.0.0 on trial", || agent.status()["phase"] == "trial");
    agent.kill9();
    let s = crate::support::status(&agent.root);
    assert_eq!(s["active_version"], "2.0.0");
    assert_eq!(s["phase"], "trial");
    agent.restart();
    agent.wait_committed("2.0.0");
    assert!(
        agent.log().contains("resuming the trial"),
        "{}",
        agent.log()
    );
}

#[test]
fn killed_during_staging_ends_in_one_whole_version() {
    let live = Live::new();
    live.publish_sleeper("1.0.0");
    let mut agent = live.agent("root", FAST_TRIAL);
    agent.wait_committed("1.0.0");
    let dir = live.w.payload("2.0.0", 400, 64 * 1024);
    live.w.publish(&live.data, &dir, "2.0.0", &[]);
    agent.wait_log("staging");
    agent.kill9();
    let s = crate::support::status(&agent.root);
    assert_eq!(
        s["active_version"], "1.0.0",
        "staging never touches the active bank"
    );
    agent.restart();
    agent.wait_committed("2.0.0");
    let bank = agent.status()["active_bank"]
        .as_str()
        .expect("bank")
        .to_string();
    assert_eq!(
        crate::support::bank_files(&agent.root, &bank),
        crate::support::tree(&dir)
    );
}

#[test]
fn second_agent_on_the_same_root_refuses() {
    let live = Live::new();
    live.publish_sleeper("1.0.0");
    let agent = live.agent("root", FAST_TRIAL);
    agent.wait_committed("1.0.0");
    let out = run(["run", "--config", &agent.config.display().to_string()]);
    assert_fails_with(&out, "locked");
}

#[test]
fn sigterm_stops_the_payload_and_exits_zero() {
    let live = Live::new();
    live.publish_sleeper("1.0.0");
    let mut agent = live.agent("root", FAST_TRIAL);
    agent.wait_committed("1.0.0");
    let pid = payload_pid(&agent.log(), "1.0.0").expect("pid");
    assert!(alive(pid));
    assert_eq!(agent.terminate(), Some(0));
    assert!(!alive(pid), "no orphan: the payload is gone");
}

/// Regression (found by scripts/bench/stage.sh): after a new release the checker
/// slept a whole poll interval before holding a request again, so a second publish
/// waited up to `poll_interval`. With a 10-minute interval, only push can deliver
/// these within the test's deadline.
#[test]
fn every_publish_is_pushed_at_once_even_with_a_long_poll_interval() {
    let live = Live::new();
    live.publish_sleeper("1.0.0");
    let agent = live.agent(
        "root",
        "poll_interval = \"10m\"\n[health]\ngrace = \"1s\"\n",
    );
    agent.wait_committed("1.0.0");
    for version in ["2.0.0", "3.0.0"] {
        live.publish_sleeper(version);
        agent.wait_committed(version);
    }
}

/// The fleet as `bankswap console fleet --json` shows it: the entry of the one agent.
fn fleet_entry(live: &Live) -> serde_json::Value {
    let out = run_ok([
        "console",
        "fleet",
        "--data",
        &live.data.display().to_string(),
        "--json",
    ]);
    let fleet: serde_json::Value = serde_json::from_str(&out.stdout).expect("fleet --json is JSON");
    fleet[0].clone()
}

/// Regression (issue 8 item 5): a committed payload that exits again and again
/// showed `phase: committed` and no error anywhere.
#[test]
fn a_crash_looping_committed_payload_shows_its_restarts_in_status_and_the_fleet() {
    let live = Live::new();
    let broken = live.w.path("broken");
    live.publish_script(
        "1.0.0",
        &format!(
            "if [ -e '{}' ]; then echo crashing; exit 5; fi\nexec sleep 1000",
            broken.display()
        ),
    );
    let agent = live.agent("root", FAST_TRIAL);
    agent.wait_committed("1.0.0");
    let pid = payload_pid(&agent.log(), "1.0.0").expect("pid logged");
    fs::write(&broken, "").expect("marker");
    // SAFETY: a plain kill of the payload this test started through the agent.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    agent.wait_until("three restarts in status", || {
        agent.status()["restarts"]["count"]
            .as_u64()
            .is_some_and(|c| c >= 3)
    });
    let s = agent.status();
    assert_eq!(s["phase"], "committed");
    assert_eq!(s["last_error_kind"], "payload", "{s}");
    let error = s["last_error"].as_str().expect("an error").to_string();
    assert!(error.contains("1.0.0 exited"), "{error}");
    assert!(error.contains("restarted"), "{error}");
    assert!(
        s["restarts"]["last_exit"]
            .as_str()
            .is_some_and(|e| e.contains("exit status: 5")),
        "{s}"
    );
    assert!(s["restarts"]["since"].as_str().is_some(), "{s}");
    wait_for("the crash loop in the fleet", || {
        let entry = fleet_entry(&live);
        entry["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("1.0.0 exited"))
            && entry["restarts"]["count"].as_u64().is_some_and(|c| c >= 1)
    });
    let entry = fleet_entry(&live);
    assert_eq!(entry["last_error_kind"], "payload", "{entry}");
    assert_eq!(
        entry["sequence"], 1,
        "the fleet keeps the sequence: {entry}"
    );
}

/// Regression (issue 8 item 6): a first install failing its trial logged "rollback
/// failed: no previous version", stopped the payload and showed no error.
#[test]
fn a_first_install_failing_its_trial_keeps_running_marked_bad_and_reports_it() {
    let live = Live::new();
    let starts = live.w.path("starts");
    live.publish_script(
        "1.0.0",
        &format!("echo start >> '{}'\nexec sleep 1000", starts.display()),
    );
    let agent = live.agent("root", "[health]\ngrace = \"1s\"\nnotify = true\n");
    agent.wait_until("1.0.0 marked bad", || {
        agent.status()["bad_versions"]
            .as_array()
            .is_some_and(|b| b.iter().any(|v| v["version"] == "1.0.0"))
    });
    let s = agent.status();
    assert_eq!(s["active_version"], "1.0.0");
    assert_eq!(s["phase"], "committed", "{s}");
    assert_eq!(s["last_error_kind"], "trial", "{s}");
    let error = s["last_error"].as_str().expect("an error").to_string();
    assert!(error.contains("no READY=1"), "{error}");
    assert!(error.contains("keeps running"), "{error}");
    // It never goes dark: it is started again, and stays up.
    wait_for("the restart", || {
        fs::read_to_string(&starts).is_ok_and(|s| s.lines().count() >= 2)
    });
    // The restart's `running` line may follow its first output: wait for it.
    wait_for("the restarted payload running", || {
        payload_pid(&agent.log(), "1.0.0").is_some_and(alive)
    });
    wait_for("the error in the fleet", || {
        fleet_entry(&live)["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("keeps running"))
    });
}

/// Runs `args` as the unprivileged user `nobody`.
fn as_nobody(args: &[&str]) -> std::process::Output {
    std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .args(args)
        .output()
        .expect("setpriv runs")
}

#[test]
fn under_umask_000_the_control_socket_is_owner_only_and_another_user_cannot_use_it() {
    use std::os::unix::fs::PermissionsExt;
    let live = Live::new();
    live.publish_sleeper("1.0.0");
    let mut agent = live.agent("root", FAST_TRIAL);
    agent.wait_committed("1.0.0");
    agent.kill9();
    agent.restart_under_umask(Some("000"));
    agent.wait_until("the agent under umask 000 answers", || {
        agent.log().matches("agent starting").count() >= 2 && !agent.status().is_null()
    });
    let socket = agent.root.join("control.sock");
    assert_eq!(mode_of(&socket), 0o600, "control.sock");
    assert_eq!(mode_of(&agent.root.join("lock")), 0o600, "lock");
    assert!(
        !agent.root.join("control.sock.bind").exists(),
        "the bind folder is removed"
    );

    // Another user can reach the root (so what stops it is the socket's mode)...
    let parent = agent.root.parent().expect("parent");
    fs::set_permissions(parent, fs::Permissions::from_mode(0o711)).expect("chmod");
    let socket_text = socket.display().to_string();
    let seen = as_nobody(&["test", "-S", &socket_text]);
    assert!(seen.status.success(), "nobody can see the socket");
    // ...but can neither talk to the agent nor take its lock.
    let root = agent.root.display().to_string();
    let out = as_nobody(&[env!("CARGO_BIN_EXE_bankswap"), "check", "--root", &root]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "nobody talked to the agent: {stderr}"
    );
    assert!(
        stderr.contains("ermission denied"),
        "refused by the socket's mode: {stderr}"
    );
    let lock = agent.root.join("lock").display().to_string();
    let out = as_nobody(&["flock", "-n", &lock, "true"]);
    assert!(!out.status.success(), "nobody took the lock");
    assert_eq!(agent.status()["active_version"], "1.0.0");
}
