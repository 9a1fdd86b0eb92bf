//! The agent's own `sd_notify` client: tells systemd (a `Type=notify` unit)
//! when it is ready, what it is doing, that it is alive, and when it stops.
//! Without `NOTIFY_SOCKET` every call is a no-op, so the agent runs the same
//! outside systemd.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::report::StatusReport;

/// The environment variable systemd sets to its notification socket.
pub const NOTIFY_SOCKET_ENV: &str = "NOTIFY_SOCKET";
/// The watchdog period systemd expects pings within, in microseconds.
const WATCHDOG_USEC_ENV: &str = "WATCHDOG_USEC";
/// The pid the watchdog is meant for (absent: the main process, us).
const WATCHDOG_PID_ENV: &str = "WATCHDOG_PID";

/// A connection to systemd's notification socket, or nothing.
#[derive(Debug)]
pub struct Notifier {
    /// The unbound datagram socket and the address to send to; `None` outside systemd.
    target: Option<(UnixDatagram, SocketAddr)>,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace).
    /// An unusable value is reported once on stderr and ignored.
    pub fn from_env() -> Notifier {
        let Some(value) = std::env::var_os(NOTIFY_SOCKET_ENV) else {
            return Notifier { target: None };
        };
        let value = value.to_string_lossy().into_owned();
        match Notifier::connect(&value) {
            Ok(target) => Notifier {
                target: Some(target),
            },
            Err(err) => {
                tracing::warn!(socket = %value, error = %err, "cannot use NOTIFY_SOCKET; not notifying systemd");
                Notifier { target: None }
            }
        }
    }

    fn connect(value: &str) -> io::Result<(UnixDatagram, SocketAddr)> {
        let addr = match value.strip_prefix('@') {
            Some(name) => SocketAddr::from_abstract_name(name.as_bytes())?,
            None if value.starts_with('/') => SocketAddr::from_pathname(value)?,
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "expected an absolute path or @abstract-name",
                ));
            }
        };
        let socket = UnixDatagram::unbound()?;
        // A full socket buffer drops a notification rather than stall the agent.
        socket.set_nonblocking(true)?;
        Ok((socket, addr))
    }

    /// Whether systemd is listening.
    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Sends one message (`READY=1`, `STATUS=...`, newline-separated pairs).
    /// Failures are logged at debug level: notifying must never stop the agent.
    pub fn send(&self, message: &str) {
        let Some((socket, addr)) = &self.target else {
            return;
        };
        if let Err(err) = socket.send_to_addr(message.as_bytes(), addr) {
            tracing::debug!(error = %err, message, "sd_notify failed");
        }
    }

    /// `READY=1` with a status line.
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    /// `STATUS=...`.
    pub fn status(&self, status: &str) {
        self.send(&format!("STATUS={}", one_line(status)));
    }

    /// `RELOADING=1` with the monotonic time systemd asks for (`MONOTONIC_USEC`).
    pub fn reloading(&self) {
        self.send(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
    }

    /// `STOPPING=1`.
    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=stopping");
    }

    /// `WATCHDOG=1`.
    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }
}

/// How often to ping the watchdog: half of `WATCHDOG_USEC`, as sd_watchdog_enabled(3)
/// recommends; `None` when no watchdog is set for this process.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var(WATCHDOG_USEC_ENV).ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var(WATCHDOG_PID_ENV)
        && pid.parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec) / 2)
}

/// Pings the watchdog every `interval`, forever. The agent's core loop runs on
/// the same single-threaded runtime, so a stuck loop stops the pings too.
async fn run_watchdog(notifier: Arc<Notifier>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    loop {
        ticker.tick().await;
        notifier.watchdog();
    }
}

/// Tells systemd the agent is up (the payload has been started), then keeps
/// its STATUS line current and pings the watchdog, in tasks of their own.
pub fn serve_agent(notifier: &Arc<Notifier>, mut updates: watch::Receiver<Option<StatusReport>>) {
    if !notifier.is_enabled() {
        return;
    }
    let mut line = updates
        .borrow()
        .as_ref()
        .map(status_line)
        .unwrap_or_default();
    notifier.ready(&line);
    if let Some(interval) = watchdog_interval() {
        tokio::spawn(run_watchdog(notifier.clone(), interval));
    }
    let notifier = notifier.clone();
    tokio::spawn(async move {
        while updates.changed().await.is_ok() {
            let next = updates
                .borrow()
                .as_ref()
                .map(status_line)
                .unwrap_or_default();
            if next != line {
                notifier.status(&next);
                line = next;
            }
        }
    });
}

/// The STATUS line for `report`: "running 1.4.2 in Bank2", "staging 1.5.0 …".
fn status_line(report: &StatusReport) -> String {
    let running = match &report.active_version {
        Some(version) => format!(
            "{} {version} in {}",
            if report.phase == "trial" {
                "trying"
            } else {
                "running"
            },
            report.active_bank
        ),
        None => "no version installed".to_string(),
    };
    match &report.pending {
        Some(pending) => match &pending.progress {
            Some(p) => format!("{running}; staging {} {} %", pending.version, p.percent),
            None => format!("{running}; pending {}", pending.version),
        },
        None => running,
    }
}

/// A status value must stay on one line: a newline would start another field.
fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

/// CLOCK_MONOTONIC in microseconds.
fn monotonic_usec() -> u128 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the valid, owned `now`.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now);
    }
    u128::try_from(now.tv_sec).unwrap_or(0) * 1_000_000
        + u128::try_from(now.tv_nsec).unwrap_or(0) / 1_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_an_abstract_socket() {
        let name = format!("bankswap-test-notify-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&addr).unwrap();
        let (socket, target) = Notifier::connect(&format!("@{name}")).unwrap();
        let notifier = Notifier {
            target: Some((socket, target)),
        };
        notifier.ready("running 1.0.0\nin Bank1");
        let mut buf = [0u8; 256];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=running 1.0.0 in Bank1");
    }

    #[test]
    fn refuses_a_relative_path() {
        assert!(Notifier::connect("relative/socket").is_err());
    }
}
