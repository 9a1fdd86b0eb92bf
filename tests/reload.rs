//! Reload without restart (issue 13.4, SPEC §12): SIGHUP applies the syslog
//! target, the poll interval and the trusted keys at once, with the payload
//! left running (same pid); `[payload]` is reported as applying at the next
//! swap and `[[listen]]` at the next restart; a broken config is refused with
//! one line naming the key, and the running settings stay.

use std::fs;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::support::live::{AgentProcess, AgentSettings, ConsoleProcess, signal, wait_for};
use crate::support::tls::{TestCa, make_test_ca};
use crate::support::{World, run_ok};

/// A console that ends held requests after a second, so that the agent's own
/// poll interval decides when it asks next.
const CONSOLE_MAX_WAIT: &str = "1s";

/// A short trial, so that a swap commits in a second.
const SHORT_TRIAL: &str = "[health]\ngrace = \"1s\"\n";

/// A console with a published 1.0.0 whose payload writes its pid, and an
/// agent (poll interval 1 h) following it with syslog to `syslog`.
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

/// Publishes `version`, signed with key pair `key`, whose payload writes its
/// pid to `payload-VERSION.pid` in the world.
fn publish_pid_writer(w: &World, data: &Path, version: &str, key: &str) {
    let pid_file = w.path(&format!("payload-{version}.pid"));
    let payload = w.script_payload(
        version,
        &format!("echo $$ > {}\nexec sleep 1000", pid_file.display()),
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

    fn sighup(&self) {
        signal(self.agent.child.as_ref().expect("agent runs"), libc::SIGHUP);
    }

    fn payload_pid(&self, version: &str) -> String {
        fs::read_to_string(self.w.path(&format!("payload-{version}.pid")))
            .expect("pid file")
            .trim()
            .to_string()
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
        "poll_interval = \"1s\"\n{}\n[payload]\nenv = {{ GREETING = \"hi\" }}\n\
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
        serde_json::json!(["[payload]"]),
        "{reload}"
    );
    assert_eq!(
        reload["restart"],
        serde_json::json!(["[[listen]]"]),
        "{reload}"
    );
    let log = s.agent.log();
    assert!(log.contains("applies at the next swap"), "{log}");
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
    let line = s
        .agent
        .log()
        .lines()
        .find(|l| l.contains("reload refused"))
        .map(str::to_string)
        .expect("refusal logged");
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
