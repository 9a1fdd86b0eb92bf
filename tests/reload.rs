//! Reload without restart (issue 13.4, SPEC §12): SIGHUP applies the syslog
//! target, the poll interval and the trusted keys at once, with the payload
//! left running (same pid); `[payload]` and `[[listen]]` apply when the payload
//! next starts (`bankswap restart-payload` here), the old sockets serving
//! until then and an unchanged one keeping its port with no request failed;
//! a `[[listen]]` port in use and a broken config are refused with one line
//! naming the key, and the running settings stay.

use std::fs;
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::support::live::{AgentProcess, AgentSettings, ConsoleProcess, Live, signal, wait_for};
use crate::support::selfupdate::payload_pid as running_pid;
use crate::support::tls::{TestCa, make_test_ca};
use crate::support::{World, run, run_ok};
use crate::swap::{Load, bound_port, get, get_on, listen_config, publish_hello};

/// A console that ends held requests after a second, so that the agent's own
/// poll interval decides when it asks next.
const CONSOLE_MAX_WAIT: &str = "1s";

/// A short trial, so that a swap commits in a second.
const SHORT_TRIAL: &str = "[health]\ngrace = \"1s\"\n";

/// A console with a published 1.0.0 whose payload writes its pid, its
/// `GREETING` and its `LISTEN_FDS`, and an agent following it with `extra`.
struct Setup {
    /// Keys and folders.
    w: World,
    /// The console data folder.
    data: PathBuf,
    /// The test CA.
    ca: TestCa,
    /// The console.
    console: ConsoleProcess,
    /// The agent.
    agent: AgentProcess,
}

fn setup(extra: &str) -> Setup {
    let w = World::new();
    let data = w.path("console-data");
    fs::create_dir_all(&data).expect("data");
    let ca = make_test_ca(&w.path("tls"));
    let console = ConsoleProcess::start_with(
        &data,
        &ca,
        "127.0.0.1:0",
        &w.path("console.log"),
        &["--allow-anonymous-reports", "--max-wait", CONSOLE_MAX_WAIT],
    );
    publish_pid_writer(&w, &data, "1.0.0", "release");
    let agent = AgentProcess::start(
        &w,
        &ca,
        &w.path("root"),
        &AgentSettings {
            console: &console.url,
            extra: &format!("{extra}\n{SHORT_TRIAL}"),
        },
    );
    agent.wait_committed("1.0.0");
    Setup {
        w,
        data,
        ca,
        console,
        agent,
    }
}

/// Publishes `version`, signed with key pair `key`, whose payload writes
/// `PID GREETING LISTEN_FDS` to `payload-VERSION.pid` in the world.
fn publish_pid_writer(w: &World, data: &Path, version: &str, key: &str) {
    let pid_file = w.path(&format!("payload-{version}.pid"));
    let payload = w.script_payload(
        version,
        &format!(
            "echo \"$$ ${{GREETING:-none}} ${{LISTEN_FDS:-0}}\" > {}.tmp && mv {0}.tmp {0}\nexec sleep 1000",
            pid_file.display()
        ),
    );
    run_ok([
        "publish".to_string(),
        "--key".into(),
        w.secret(key),
        "--payload".into(),
        payload.display().to_string(),
        "--version".into(),
        version.into(),
        "--entrypoint".into(),
        "bin/app".into(),
        "--to".into(),
        data.display().to_string(),
    ]);
}

impl Setup {
    /// Rewrites the agent's config with `extra` in place of the first one's, keeping the rest.
    fn rewrite_config(&self, extra: &str) {
        fs::write(
            &self.agent.config,
            format!(
                "console = \"{}\"\nroot = \"{}\"\ntrusted_keys = [\"{}\"]\nmax_delay = \"0s\"\n{extra}\n[tls]\nca_certs = [\"{}\"]\n",
                self.console.url,
                self.agent.root.display(),
                self.w.public("release"),
                self.ca.ca_pem.display(),
            ),
        )
        .expect("rewrite the config");
    }

    /// The agent log's first `reload refused` line, which must be there.
    fn refusal_line(&self) -> String {
        self.agent
            .log()
            .lines()
            .find(|l| l.contains("reload refused"))
            .map(str::to_string)
            .expect("refusal logged")
    }

    fn sighup(&self) {
        signal(self.agent.child.as_ref().expect("agent runs"), libc::SIGHUP);
    }

    fn payload_pid(&self, version: &str) -> String {
        self.payload_line(version)[0].clone()
    }

    /// What the payload wrote at its start: pid, `GREETING`, `LISTEN_FDS`.
    fn payload_line(&self, version: &str) -> Vec<String> {
        let path = self.w.path(&format!("payload-{version}.pid"));
        let mut words = Vec::new();
        wait_for("the payload's pid file", || {
            words = fs::read_to_string(&path)
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_string)
                .collect();
            words.len() == 3
        });
        words
    }

    /// `bankswap restart-payload`, which must exit 0 (else the agent's log says why).
    fn restart_payload_succeeds(&self) -> crate::support::Run {
        let out = run([
            "restart-payload",
            "--root",
            &self.agent.root.display().to_string(),
        ]);
        assert_eq!(
            out.code,
            0,
            "{}{}\n{}",
            out.stdout,
            out.stderr,
            self.agent.log()
        );
        out
    }

    /// Waits until `status.reload` is from a reload after `before` (its `at` differs, or it appears).
    fn wait_reload(&self, before: &Value) -> Value {
        let mut reload = Value::Null;
        self.agent.wait_until("a new status.reload", || {
            reload = self.agent.status()["reload"].clone();
            !reload.is_null() && reload != *before
        });
        reload
    }

    fn assert_alive(&mut self) {
        let child = self.agent.child.as_mut().expect("agent runs");
        assert!(
            child.try_wait().expect("wait").is_none(),
            "the reload stopped the agent:\n{}",
            self.agent.log()
        );
    }
}

/// Syslog datagrams received so far on `socket` (non-blocking).
fn drain(socket: &UdpSocket) -> Vec<String> {
    socket.set_nonblocking(true).expect("nonblocking");
    let mut buf = [0u8; 8192];
    let mut lines = Vec::new();
    while let Ok(n) = socket.recv(&mut buf) {
        lines.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    lines
}

/// Waits until a datagram containing `needle` arrives on `socket`; returns all seen.
fn wait_datagram(socket: &UdpSocket, needle: &str) -> Vec<String> {
    let mut seen = Vec::new();
    wait_for(&format!("`{needle}` on the syslog target"), || {
        seen.extend(drain(socket));
        seen.iter().any(|l| l.contains(needle))
    });
    seen
}

#[test]
fn sighup_switches_syslog_and_poll_interval_at_once_and_keeps_the_payload() {
    let old_target = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let new_target = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let syslog = |s: &UdpSocket| {
        format!(
            "[log]\nsyslog = \"udp://{}\"\n",
            s.local_addr().expect("addr")
        )
    };
    let first = format!("poll_interval = \"1h\"\n{}", syslog(&old_target));
    let mut s = setup(&first);
    wait_datagram(&old_target, "agent starting");
    let pid = s.payload_pid("1.0.0");
    let checked = s.agent.status()["last_check"].clone();

    let second = format!(
        "poll_interval = \"1s\"\nchannel = \"beta\"\n{}\n[payload]\nenv = {{ GREETING = \"hi\" }}\n\
         [[listen]]\nname = \"http\"\naddress = \"127.0.0.1:0\"\n",
        syslog(&new_target)
    );
    s.rewrite_config(&second);
    s.sighup();
    // The summary is logged after the switch: it reaches the new target only.
    let new_lines = wait_datagram(&new_target, "reload applied");
    let summary = new_lines
        .iter()
        .find(|l| l.contains("reload applied"))
        .expect("summary");
    assert!(
        summary.contains("poll_interval") && summary.contains("[log]"),
        "{summary}"
    );
    assert!(
        !drain(&old_target)
            .iter()
            .any(|l| l.contains("reload applied")),
        "the old syslog target still gets lines after the reload"
    );
    let reload = s.wait_reload(&Value::Null);
    assert_eq!(reload["outcome"], "applied", "{reload}");
    assert_eq!(
        reload["next_swap"],
        serde_json::json!(["[payload]", "[[listen]]"]),
        "{reload}"
    );
    assert_eq!(
        reload["restart"],
        serde_json::json!(["channel"]),
        "{reload}"
    );
    let log = s.agent.log();
    assert!(
        log.contains("applies at the next swap or `bankswap restart-payload`"),
        "{log}"
    );
    assert!(
        log.contains("applies at the next restart of the agent"),
        "{log}"
    );

    // Poll interval 1 h: after the first answer and the first held 304 the
    // agent would not ask again for an hour, so at most one more check could
    // come without the reload. Three distinct check times prove the 1 s interval.
    let mut times = std::collections::BTreeSet::new();
    s.agent
        .wait_until("three checks at the reloaded poll interval", || {
            let now = s.agent.status()["last_check"].clone();
            if now != checked {
                times.insert(now.to_string());
            }
            times.len() >= 3
        });
    assert_eq!(s.payload_pid("1.0.0"), pid, "the payload was restarted");
    s.assert_alive();
}

#[test]
fn sighup_with_new_trusted_keys_accepts_a_release_the_old_keys_refused() {
    let mut s = setup("");
    run_ok([
        "keygen",
        "--out",
        &s.w.path("keys/next").display().to_string(),
    ]);
    publish_pid_writer(&s.w, &s.data, "2.0.0", "next");
    s.agent.wait_until("2.0.0 refused for its key", || {
        s.agent.status()["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("unknown key"))
    });
    assert_eq!(s.agent.status()["active_version"], "1.0.0");
    let config = fs::read_to_string(&s.agent.config).expect("config");
    let one = format!("trusted_keys = [\"{}\"]", s.w.public("release"));
    let both = format!(
        "trusted_keys = [\"{}\", \"{}\"]",
        s.w.public("release"),
        s.w.public("next")
    );
    assert!(config.contains(&one), "{config}");
    fs::write(&s.agent.config, config.replace(&one, &both)).expect("write");
    s.sighup();
    let reload = s.wait_reload(&Value::Null);
    assert_eq!(
        reload["applied"],
        serde_json::json!(["trusted_keys"]),
        "{reload}"
    );
    s.agent.wait_committed("2.0.0");
    s.assert_alive();
}

#[test]
fn a_broken_config_is_refused_naming_the_key_and_the_running_one_stays() {
    let target = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let first = format!(
        "[log]\nsyslog = \"udp://{}\"\n",
        target.local_addr().expect("addr")
    );
    let mut s = setup(&first);
    wait_datagram(&target, "agent starting");
    let pid = s.payload_pid("1.0.0");
    let config = fs::read_to_string(&s.agent.config).expect("config");

    fs::write(
        &s.agent.config,
        config.replace("poll_interval = \"2s\"", "poll_interval = \"soon\""),
    )
    .expect("break the config");
    s.sighup();
    let reload = s.wait_reload(&Value::Null);
    assert_eq!(reload["outcome"], "refused", "{reload}");
    let error = reload["error"].as_str().unwrap_or_default();
    assert!(error.contains("poll_interval"), "{reload}");
    assert!(!error.contains('\n'), "{reload}");
    // The refusal itself still goes to the running syslog target.
    wait_datagram(&target, "reload refused");
    let line = s.refusal_line();
    assert!(line.contains("poll_interval"), "{line}");

    // A config whose syslog target cannot be opened is refused too, whole.
    fs::write(
        &s.agent.config,
        config.replace(
            &format!("udp://{}", target.local_addr().expect("addr")),
            "udp://no-such-host.invalid:514",
        ),
    )
    .expect("bad syslog");
    s.sighup();
    let again = s.wait_reload(&reload);
    assert_eq!(again["outcome"], "refused", "{again}");
    assert!(
        again["error"]
            .as_str()
            .is_some_and(|e| e.contains("[log] syslog")),
        "{again}"
    );
    wait_datagram(&target, "[log] syslog");

    assert_eq!(s.payload_pid("1.0.0"), pid, "the payload was restarted");
    assert_eq!(s.agent.status()["active_version"], "1.0.0");
    s.assert_alive();
}

/// The `[[listen]]` the swap tests start with (port 0: the agent picks it).
const HTTP_LISTEN: &str = "[[listen]]\nname = \"http\"\naddress = \"127.0.0.1:0\"\n";

/// A hello-payload agent on `[[listen]] http`, committed and answering: the
/// agent, its port and the payload's pid.
fn serving_hello(live: &Live) -> (AgentProcess, u16, u32) {
    publish_hello(live, "1.0.0");
    let agent = live.agent("root", &listen_config(""));
    let port = bound_port(&agent);
    agent.wait_committed("1.0.0");
    wait_for("hello-payload answering", || get(port).is_ok());
    let pid = running_pid(&agent, "1.0.0");
    (agent, port, pid)
}

/// Replaces the agent's `[[listen]] http` with `listen` and sends SIGHUP;
/// waits for the reload to be applied.
fn reload_listen(agent: &AgentProcess, listen: &str) -> Value {
    let config = fs::read_to_string(&agent.config).expect("config");
    assert!(config.contains(HTTP_LISTEN), "{config}");
    fs::write(&agent.config, config.replace(HTTP_LISTEN, listen)).expect("write");
    signal(agent.child.as_ref().expect("agent runs"), libc::SIGHUP);
    let mut reload = Value::Null;
    agent.wait_until("status.reload", || {
        reload = agent.status()["reload"].clone();
        !reload.is_null()
    });
    assert_eq!(reload["outcome"], "applied", "{reload}");
    assert_eq!(
        reload["next_swap"],
        serde_json::json!(["[[listen]]"]),
        "{reload}"
    );
    reload
}

/// `bankswap restart-payload` on `agent`'s root, which must succeed; the new pid.
fn restart_payload_ok(agent: &AgentProcess, old_pid: u32) -> u32 {
    let out = run([
        "restart-payload",
        "--root",
        &agent.root.display().to_string(),
    ]);
    assert!(
        out.code == 0 && out.stdout.contains("restarted the payload: 1.0.0"),
        "restart-payload failed: {}{}\nagent log:\n{}",
        out.stdout,
        out.stderr,
        agent.log()
    );
    let mut pid = old_pid;
    agent.wait_until("the restarted payload's running line", || {
        pid = running_pid(agent, "1.0.0");
        pid != old_pid
    });
    assert!(out.stdout.contains(&format!("pid {pid}")), "{}", out.stdout);
    pid
}

/// The variable `name` the payload `pid` was started with. The agent reports a
/// new generation's pid once forked: until the child has exec'd the payload, its
/// environ is still the agent's (no LISTEN_FDS), so this waits for the exec.
fn start_env(pid: u32, name: &str) -> Option<String> {
    wait_for(&format!("pid {pid} to exec the payload"), || {
        fs::read_link(format!("/proc/{pid}/exe"))
            .map(|exe| exe.file_name() != Some("bankswap".as_ref()))
            .unwrap_or(true)
    });
    let environ = fs::read(format!("/proc/{pid}/environ")).ok()?;
    let prefix = format!("{name}=");
    environ
        .split(|b| *b == 0)
        .map(String::from_utf8_lossy)
        .find_map(|var| var.strip_prefix(&prefix).map(str::to_string))
}

fn alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid as i32, 0) == 0 }
}

/// One HTTP request on the Unix socket at `path`; the body, or why it failed.
fn get_unix(path: &Path) -> Result<String, String> {
    let stream = UnixStream::connect(path).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    get_on(stream)
}

#[test]
fn a_listen_socket_added_on_sighup_is_handed_over_at_restart_payload_and_the_kept_port_fails_no_request()
 {
    let live = Live::new();
    let (agent, port, old_pid) = serving_hello(&live);
    let api = live.w.path("api.sock");
    let load = Load::start(port, 4);

    let reload = reload_listen(
        &agent,
        &format!(
            "{HTTP_LISTEN}[[listen]]\nname = \"api\"\naddress = \"{}\"\n",
            api.display()
        ),
    );
    // Bound at the reload (the agent holds it), handed over at the next start only.
    assert!(UnixStream::connect(&api).is_ok(), "{reload}");
    assert_eq!(running_pid(&agent, "1.0.0"), old_pid);
    assert_eq!(start_env(old_pid, "LISTEN_FDS").as_deref(), Some("1"));
    agent.wait_log(
        "reload: [[listen]] sockets ready for the next payload start kept=http added=api",
    );

    let new_pid = restart_payload_ok(&agent, old_pid);
    assert_eq!(start_env(new_pid, "LISTEN_FDS").as_deref(), Some("2"));
    assert_eq!(
        start_env(new_pid, "LISTEN_FDNAMES").as_deref(),
        Some("http:api")
    );
    wait_for("the old generation drained", || !alive(old_pid));
    // The same socket serves on: same port, now from the new generation.
    assert_eq!(get(port).as_deref(), Ok("hello from 1.0.0"));
    let (sent, failures, _) = load.finish();
    assert!(sent > 20, "the load ran ({sent} requests)");
    assert!(
        failures.is_empty(),
        "{} of {sent} requests failed across the reload and restart-payload: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
}

#[test]
fn a_listen_socket_replaced_on_sighup_serves_after_restart_payload_and_the_old_one_until_then() {
    let live = Live::new();
    let (agent, port, old_pid) = serving_hello(&live);
    let api = live.w.path("api.sock");

    reload_listen(
        &agent,
        &format!(
            "[[listen]]\nname = \"http\"\naddress = \"{}\"\n",
            api.display()
        ),
    );
    // Until the payload next starts, the old socket and generation serve.
    for _ in 0..10 {
        assert_eq!(get(port).as_deref(), Ok("hello from 1.0.0"));
    }
    assert_eq!(running_pid(&agent, "1.0.0"), old_pid);
    assert!(alive(old_pid));

    let new_pid = restart_payload_ok(&agent, old_pid);
    assert_eq!(start_env(new_pid, "LISTEN_FDS").as_deref(), Some("1"));
    wait_for("the new socket served", || get_unix(&api).is_ok());
    assert_eq!(get_unix(&api).as_deref(), Ok("hello from 1.0.0"));
    wait_for("the old generation drained", || !alive(old_pid));
    // The retired socket closes once the generation that used it is gone.
    agent.wait_log("closed the retired socket name=http");
    wait_for("the old port closed", || {
        TcpStream::connect(("127.0.0.1", port)).is_err()
    });
}

#[test]
fn payload_env_from_a_reload_applies_at_restart_payload_and_not_before() {
    let s = setup("");
    let before = s.payload_line("1.0.0");
    assert_eq!(before[1], "none");
    s.rewrite_config("[payload]\nenv = { GREETING = \"hi\" }\n");
    s.sighup();
    let reload = s.wait_reload(&Value::Null);
    assert_eq!(reload["outcome"], "applied", "{reload}");
    assert_eq!(
        reload["next_swap"],
        serde_json::json!(["[payload]"]),
        "{reload}"
    );
    s.agent
        .wait_log("applies at the next swap or `bankswap restart-payload`");
    // The running payload keeps its environment: same pid, no GREETING.
    assert_eq!(s.payload_line("1.0.0"), before);
    let old_pid: u32 = before[0].parse().expect("pid");
    assert!(alive(old_pid));

    let out = s.restart_payload_succeeds();
    assert!(
        out.stdout.contains("restarted the payload: 1.0.0 in "),
        "{}",
        out.stdout
    );
    let mut after = before.clone();
    s.agent.wait_until("the restarted payload's pid file", || {
        after = s.payload_line("1.0.0");
        after[0] != before[0]
    });
    assert_eq!(after[1], "hi", "{after:?}");
    assert!(
        out.stdout.contains(&format!("pid {}", after[0])),
        "{}",
        out.stdout
    );
    // Without sockets the old generation stopped before the new one started.
    assert!(!alive(old_pid));
    assert_eq!(s.agent.status()["active_version"], "1.0.0");
}

#[test]
fn a_listen_port_in_use_refuses_the_reload_and_nothing_changes() {
    let mut s = setup("");
    let before = s.payload_line("1.0.0");
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = taken.local_addr().expect("addr").to_string();
    s.rewrite_config(&format!(
        "[payload]\nenv = {{ GREETING = \"hi\" }}\n[[listen]]\nname = \"http\"\naddress = \"{address}\"\n"
    ));
    s.sighup();
    let reload = s.wait_reload(&Value::Null);
    assert_eq!(reload["outcome"], "refused", "{reload}");
    let error = reload["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("[[listen]]") && error.contains(&address) && error.contains("in use"),
        "{reload}"
    );
    // Status is set by the core; the line is logged once the reloader hears back.
    s.agent.wait_log("reload refused");
    let line = s.refusal_line();
    assert!(line.contains(&address), "{line}");
    assert_eq!(s.payload_line("1.0.0"), before);

    // Nothing was applied: the next start has the old env and no socket.
    s.restart_payload_succeeds();
    let mut after = before.clone();
    s.agent.wait_until("the restarted payload's pid file", || {
        after = s.payload_line("1.0.0");
        after[0] != before[0]
    });
    assert_eq!(&after[1..], ["none", "0"], "{after:?}");
    s.assert_alive();
    drop(taken);
}

#[test]
fn restart_payload_without_an_agent_says_so() {
    let w = World::new();
    let root = w.path("root");
    run_ok([
        "init",
        "--root",
        &root.display().to_string(),
        "--trust",
        &w.public("release"),
    ]);
    let out = run(["restart-payload", "--root", &root.display().to_string()]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.starts_with("error: ") && out.stderr.contains("no agent is running"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_listen_set_reloaded_then_handed_over_by_an_in_place_exec_is_the_new_one_and_reloads_on() {
    let live = Live::new();
    let (agent, port, old_pid) = serving_hello(&live);
    let api = live.w.path("api.sock");
    let listen = format!(
        "{HTTP_LISTEN}[[listen]]\nname = \"api\"\naddress = \"{}\"\n",
        api.display()
    );
    reload_listen(&agent, &listen);

    let root = agent.root.display().to_string();
    let out = run(["agent", "reexec", "--root", &root]);
    assert!(
        out.code == 0 && out.stdout.contains("re-executed in place"),
        "reexec: {}{}\n{}",
        out.stdout,
        out.stderr,
        agent.log()
    );
    agent.wait_log("listening (inherited) name=api");
    // The new image knows which config address each inherited socket came
    // from: a reload that drops `api` keeps `http` (`127.0.0.1:0`) on its port.
    let config = fs::read_to_string(&agent.config).expect("config");
    fs::write(&agent.config, config.replace(&listen, HTTP_LISTEN)).expect("write");
    let from = agent.log().len();
    signal(agent.child.as_ref().expect("agent runs"), libc::SIGHUP);
    // Both reloads may fall in one second and read the same in status: the
    // log line of this one is what says it happened.
    agent.wait_until("the second reload", || {
        agent.log()[from..].contains("reload applied")
    });
    let second = agent.status()["reload"].clone();
    assert_eq!(second["outcome"], "applied", "{second}");
    assert_eq!(
        second["next_swap"],
        serde_json::json!(["[[listen]]"]),
        "{second}"
    );
    agent.wait_until("the kept and retired sockets logged", || {
        agent.log()[from..].contains("kept=http added=\"\" retired=api")
    });
    assert_eq!(
        running_pid(&agent, "1.0.0"),
        old_pid,
        "the payload was adopted"
    );

    let new_pid = restart_payload_ok(&agent, old_pid);
    assert_eq!(
        start_env(new_pid, "LISTEN_FDNAMES").as_deref(),
        Some("http")
    );
    wait_for("the old generation drained", || !alive(old_pid));
    assert_eq!(get(port).as_deref(), Ok("hello from 1.0.0"));
    wait_for("the retired api socket closed", || {
        UnixStream::connect(&api).is_err()
    });
}
