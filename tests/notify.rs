//! The agent under systemd (`Type=notify`, SPEC §12): started with
//! `NOTIFY_SOCKET` pointing at a socket the test reads, it sends READY once
//! the payload runs, STATUS lines, WATCHDOG pings within `WATCHDOG_USEC`,
//! RELOADING / READY around a SIGHUP (which no longer kills it), and STOPPING.

use std::fs;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::support::bankswap;
use crate::support::live::{DEADLINE, Live, signal, wait_for};

/// The watchdog period the test gives the agent: it must ping at half of it.
const WATCHDOG_USEC: u64 = 400_000;

/// Writes an agent config for a fresh root `name` against the live console.
pub fn agent_config(live: &Live, name: &str, extra: &str) -> (PathBuf, PathBuf) {
    let root = live.w.path(name);
    let config = root.with_extension("toml");
    fs::write(
        &config,
        format!(
            "console = \"{}\"\nroot = \"{}\"\ntrusted_keys = [\"{}\"]\npoll_interval = \"2s\"\nmax_delay = \"0s\"\n{extra}\n[tls]\nca_certs = [\"{}\"]\n",
            live.console.url,
            root.display(),
            live.w.public("release"),
            live.ca.ca_pem.display(),
        ),
    )
    .expect("agent config");
    (config, root)
}

/// Starts `bankswap run` with `NOTIFY_SOCKET` (and a watchdog) on a socket in the world.
fn start_notified(config: &Path, socket_path: &Path, log: &Path) -> (Child, UnixDatagram) {
    let socket = UnixDatagram::bind(socket_path).expect("bind the notify socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("read timeout");
    let child = bankswap()
        .args(["run", "--config"])
        .arg(config)
        .env("BANKSWAP_LOG", "info")
        .env("NOTIFY_SOCKET", socket_path)
        .env("WATCHDOG_USEC", WATCHDOG_USEC.to_string())
        .stdout(Stdio::null())
        .stderr(fs::File::create(log).expect("log"))
        .spawn()
        .expect("agent starts");
    (child, socket)
}

/// Collects datagrams until one satisfies `want`; returns everything read so far.
fn read_until(
    socket: &UnixDatagram,
    seen: &mut Vec<String>,
    what: &str,
    mut want: impl FnMut(&str) -> bool,
) {
    let deadline = Instant::now() + DEADLINE;
    let mut buf = [0u8; 4096];
    loop {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; got {seen:#?}"
        );
        if let Ok(n) = socket.recv(&mut buf) {
            let message = String::from_utf8_lossy(&buf[..n]).into_owned();
            let done = want(&message);
            seen.push(message);
            if done {
                return;
            }
        }
    }
}

#[test]
fn agent_notifies_ready_status_watchdog_reload_and_stopping() {
    let live = Live::new();
    live.publish_sleeper("1.0.0");
    // A short trial: the STATUS line turns from "trying" to "running" within a second.
    let (config, _root) = agent_config(&live, "notified", "[health]\ngrace = \"1s\"\n");
    let log = live.w.path("notified.log");
    let (mut child, socket) = start_notified(&config, &live.w.path("notify.sock"), &log);
    let mut seen = Vec::new();

    read_until(&socket, &mut seen, "READY=1", |m| {
        m.starts_with("READY=1\n")
    });
    read_until(&socket, &mut seen, "STATUS=running 1.0.0", |m| {
        m.starts_with("STATUS=running 1.0.0 in Bank")
    });

    // Pings come at half the watchdog period: three of them within a few periods.
    let since = Instant::now();
    let mut pings = 0;
    read_until(&socket, &mut seen, "three WATCHDOG=1", |m| {
        pings += usize::from(m == "WATCHDOG=1");
        pings >= 3
    });
    assert!(
        since.elapsed() < Duration::from_micros(WATCHDOG_USEC) * 20,
        "watchdog pings too slow: {:?}",
        since.elapsed()
    );

    // SIGHUP: reload, bracketed by RELOADING=1 and READY=1; the agent stays up.
    signal(&child, libc::SIGHUP);
    read_until(&socket, &mut seen, "RELOADING=1", |m| {
        m.starts_with("RELOADING=1\nMONOTONIC_USEC=")
    });
    read_until(&socket, &mut seen, "READY=1 after the reload", |m| {
        m.starts_with("READY=1\n")
    });
    assert!(
        child.try_wait().expect("wait").is_none(),
        "SIGHUP killed the agent"
    );

    // A broken config is refused, in the log and the STATUS line; the agent stays up.
    fs::write(&config, "console = [broken\n").expect("break the config");
    signal(&child, libc::SIGHUP);
    read_until(&socket, &mut seen, "reload refused", |m| {
        m.starts_with("READY=1\nSTATUS=reload refused: ")
    });
    assert!(
        child.try_wait().expect("wait").is_none(),
        "a broken reload killed the agent"
    );
    // The log is written by the agent's log thread: it may trail the datagram.
    wait_for("`reload refused` in the log", || {
        fs::read_to_string(&log).is_ok_and(|l| l.contains("reload refused"))
    });

    signal(&child, libc::SIGTERM);
    read_until(&socket, &mut seen, "STOPPING=1", |m| {
        m.starts_with("STOPPING=1")
    });
    let status = child.wait().expect("agent exits");
    assert_eq!(
        status.code(),
        Some(0),
        "{}",
        fs::read_to_string(&log).unwrap_or_default()
    );
}
