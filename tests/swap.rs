//! Zero-downtime swaps (SPEC §5 Sockets, Readiness): the agent holds the
//! `[[listen]]` sockets and hands them to each payload generation; a new
//! generation serves before the old one drains. Runs the example payload,
//! `hello-payload` (scripts/test.sh builds it next to `bankswap`).

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::support::live::{AgentProcess, Live, wait_for};
use crate::support::run_ok;

/// Upper bound of the request loop, so it always stops by itself.
const MAX_REQUESTS: usize = 50_000;
/// Upper bound of the request loop's duration.
const MAX_LOAD_TIME: Duration = Duration::from_secs(120);

pub(crate) fn hello_payload() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_bankswap")).with_file_name("hello-payload");
    assert!(
        path.exists(),
        "{} is missing: run `cargo build -p hello-payload` (scripts/test.sh does)",
        path.display()
    );
    path
}

/// The port the agent bound for its `http` socket, from its `listening ... bound=` log
/// line. The config asks for port 0: a port picked by the test and bound later by the
/// agent could be taken meanwhile by another test running in parallel.
pub(crate) fn bound_port(agent: &AgentProcess) -> u16 {
    crate::support::selfupdate::bound_port_after(agent, 0)
}

/// Publishes hello-payload as `version`, stripped: the debug build is ~30 MB, of
/// which ~27 MB are debug info that every publish would compress and every agent
/// stage (1.4 s against 0.06 s per publish). Without `strip`, the build as it is.
pub(crate) fn publish_hello(live: &Live, version: &str) {
    let dir = live.w.path(&format!("payloads/hello-{version}"));
    fs::create_dir_all(dir.join("bin")).expect("dir");
    let target = dir.join("bin/hello-payload");
    let stripped = std::process::Command::new("strip")
        .arg("-o")
        .arg(&target)
        .arg(hello_payload())
        .status()
        .is_ok_and(|s| s.success());
    if !stripped {
        fs::copy(hello_payload(), &target).expect("copy");
    }
    live.w
        .publish_with(&live.data, &dir, version, "bin/hello-payload", &[]);
}

pub(crate) fn listen_config(extra: &str) -> String {
    format!(
        "[[listen]]\nname = \"http\"\naddress = \"127.0.0.1:0\"\n[health]\nnotify = true\ngrace = \"10s\"\n{extra}"
    )
}

/// One HTTP/1.1 request on a new connection; the body, or why it failed.
pub(crate) fn get(port: u16) -> Result<String, String> {
    let stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    get_on(stream)
}

/// One HTTP/1.1 request on `stream` (a TCP or Unix connection, its read
/// timeout set); the body of a 200, or why it failed.
pub(crate) fn get_on(mut stream: impl Read + Write) -> Result<String, String> {
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| format!("read: {e}"))?;
    if !response.starts_with("HTTP/1.1 200") {
        return Err(format!(
            "status: {}",
            response.lines().next().unwrap_or("(empty)")
        ));
    }
    Ok(response
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or("")
        .trim()
        .to_string())
}

/// What a load worker saw: requests sent, failures, and the bodies in the order they changed.
pub(crate) type Seen = (usize, Vec<String>, Vec<String>);

/// A bounded request loop on `workers` threads.
pub(crate) struct Load {
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<Seen>>,
}

impl Load {
    pub(crate) fn start(port: u16, workers: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let workers = (0..workers)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let started = Instant::now();
                    let (mut sent, mut failures, mut seen) =
                        (0usize, Vec::new(), Vec::<String>::new());
                    while !stop.load(Ordering::Relaxed)
                        && sent < MAX_REQUESTS
                        && started.elapsed() < MAX_LOAD_TIME
                    {
                        sent += 1;
                        match get(port) {
                            Ok(body) => {
                                if seen.last() != Some(&body) {
                                    seen.push(body);
                                }
                            }
                            Err(e) => failures.push(e),
                        }
                    }
                    (sent, failures, seen)
                })
            })
            .collect();
        Load { stop, workers }
    }

    pub(crate) fn finish(self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = (0, Vec::new(), Vec::new());
        for w in self.workers {
            let (sent, failures, seen) = w.join().expect("worker");
            total.0 += sent;
            total.1.extend(failures);
            total.2.extend(seen);
        }
        total
    }
}

#[test]
fn three_updates_and_a_rollback_under_load_fail_no_request() {
    let live = Live::new();
    publish_hello(&live, "1.0.0");
    let agent = live.agent("root", &listen_config(""));
    let port = bound_port(&agent);
    agent.wait_committed("1.0.0");
    wait_for("hello-payload answering", || get(port).is_ok());

    let load = Load::start(port, 4);
    for version in ["2.0.0", "3.0.0", "4.0.0"] {
        publish_hello(&live, version);
        agent.wait_committed(version);
        wait_for(&format!("{version} answering"), || {
            get(port).is_ok_and(|b| b.contains(version))
        });
    }
    run_ok(["rollback", "--root", &agent.root.display().to_string()]);
    agent.wait_committed("3.0.0");
    wait_for("3.0.0 answering again", || {
        get(port).is_ok_and(|b| b.contains("3.0.0"))
    });
    let (sent, failures, seen) = load.finish();
    eprintln!(
        "{sent} requests across 3 updates and a rollback, {} failed",
        failures.len()
    );

    assert!(sent > 100, "the load ran ({sent} requests)");
    assert!(
        failures.is_empty(),
        "{} of {sent} requests failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    for version in ["1.0.0", "2.0.0", "3.0.0", "4.0.0"] {
        assert!(
            seen.iter().any(|b| b.contains(version)),
            "no answer from {version}: {seen:?}"
        );
    }
}

#[test]
fn a_payload_that_never_gets_ready_is_rolled_back_while_the_old_one_serves() {
    let live = Live::new();
    publish_hello(&live, "1.0.0");
    let agent = live.agent(
        "root",
        &listen_config("").replace("grace = \"10s\"", "grace = \"2s\""),
    );
    let port = bound_port(&agent);
    agent.wait_committed("1.0.0");
    wait_for("hello-payload answering", || get(port).is_ok());

    let load = Load::start(port, 2);
    live.publish_script("2.0.0", "exec sleep 1000"); // takes the sockets, never accepts, never READY=1
    wait_for("2.0.0 marked bad", || {
        agent.status()["bad_versions"]
            .as_array()
            .is_some_and(|b| b.iter().any(|v| v["version"] == "2.0.0"))
    });
    agent.wait_committed("1.0.0");
    let (sent, failures, seen) = load.finish();
    assert!(
        failures.is_empty(),
        "{} of {sent} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(
        seen.iter().all(|b| b.contains("1.0.0")),
        "only 1.0.0 ever answered: {seen:?}"
    );
    let reason = agent.status()["bad_versions"][0]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(reason.contains("READY=1"), "{reason}");
}

#[test]
fn a_payload_gets_its_sockets_names_and_pid() {
    let live = Live::new();
    let out = live.w.path("fds.txt");
    live.publish_script(
        "1.0.0",
        &format!(
            "echo \"$LISTEN_FDS $LISTEN_FDNAMES $LISTEN_PID $$ $BANKSWAP_VERSION $BANKSWAP_BANK\" > {}\n[ -S /proc/self/fd/3 ] && [ -S /proc/self/fd/4 ] && echo sockets >> {}\nexec sleep 1000",
            out.display(),
            out.display()
        ),
    );
    let extra = "[[listen]]\nname = \"http\"\naddress = \"127.0.0.1:0\"\n[[listen]]\nname = \"admin\"\naddress = \"127.0.0.1:0\"\n[health]\ngrace = \"1s\"\n";
    let agent = live.agent("root", extra);
    agent.wait_committed("1.0.0");
    wait_for("the payload wrote its environment", || {
        fs::read_to_string(&out).is_ok_and(|t| t.contains("sockets"))
    });
    let text = fs::read_to_string(&out).expect("fds");
    let fields: Vec<&str> = text.lines().next().expect("line").split(' ').collect();
    assert_eq!(fields[0], "2", "LISTEN_FDS: {text}");
    assert_eq!(fields[1], "http:admin", "LISTEN_FDNAMES: {text}");
    assert_eq!(
        fields[2], fields[3],
        "LISTEN_PID is the payload's own pid: {text}"
    );
    assert_eq!(fields[4], "1.0.0");
    assert_eq!(fields[5], "Bank1");
}

#[test]
fn the_watchdog_restarts_a_hung_payload() {
    let live = Live::new();
    let script = "python3 - <<'EOF'\nimport os, socket, time\na = os.environ['NOTIFY_SOCKET']\ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\ns.sendto(b'READY=1\\nWATCHDOG=1', '\\0' + a[1:] if a.startswith('@') else a)\ntime.sleep(1000)\nEOF";
    live.publish_script("1.0.0", script);
    let agent = live.agent("root", "[health]\ngrace = \"1s\"\nwatchdog = \"1s\"\n");
    agent.wait_log("running version=1.0.0");
    agent.wait_log("watchdog");
    wait_for("a second generation", || {
        agent.log().matches("running version=1.0.0").count() >= 2
    });
}

#[test]
fn an_admin_rollback_during_an_overlapped_trial_keeps_the_serving_generation() {
    let live = Live::new();
    publish_hello(&live, "1.0.0");
    let agent = live.agent(
        "root",
        &listen_config("").replace("grace = \"10s\"", "grace = \"60s\""),
    );
    let port = bound_port(&agent);
    agent.wait_committed("1.0.0");
    wait_for("hello-payload answering", || get(port).is_ok());
    let starts_of_v1 = || agent.log().matches("running version=1.0.0").count();
    assert_eq!(starts_of_v1(), 1);

    let load = Load::start(port, 2);
    live.publish_script("2.0.0", "exec sleep 1000"); // on trial for 60 s, never ready
    wait_for("2.0.0 on trial", || agent.status()["phase"] == "trial");
    run_ok(["rollback", "--root", &agent.root.display().to_string()]);
    agent.wait_committed("1.0.0");
    let (sent, failures, seen) = load.finish();

    assert_eq!(
        starts_of_v1(),
        1,
        "the serving 1.0.0 generation stayed; none was started anew"
    );
    assert!(
        failures.is_empty(),
        "{} of {sent} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(seen.iter().all(|b| b.contains("1.0.0")), "{seen:?}");
    let bad = agent.status()["bad_versions"].clone();
    assert!(
        bad.as_array()
            .is_some_and(|b| b.iter().any(|v| v["version"] == "2.0.0")),
        "{bad}"
    );
}
