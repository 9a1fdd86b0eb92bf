//! What the payload is given (sockets, names, pid, environment) and what it
//! says back (`sd_notify`, watchdog, output lines).

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::os::unix::process::ExitStatusExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::{DEADLINE, bank, event, read_when_written, wait_for};
use crate::config::ListenConfig;
use crate::supervisor::{Listeners, Payload, PayloadEvent};

#[tokio::test]
async fn payload_gets_the_sockets_their_names_its_own_pid_and_the_environment() {
    let (dir, mut spec) = bank(
        r#"{
  echo "fds=$LISTEN_FDS names=$LISTEN_FDNAMES pid=$LISTEN_PID self=$$"
  echo "fd3=$(readlink /proc/$$/fd/3) fd4=$(readlink /proc/$$/fd/4)"
  if [ -e /proc/$$/fd/5 ]; then echo "fd5=open"; else echo "fd5=closed"; fi
  echo "version=$BANKSWAP_VERSION bank=$BANKSWAP_BANK dir=$BANKSWAP_BANK_DIR pwd=$(pwd)"
  echo "notify=$NOTIFY_SOCKET watchdog=$WATCHDOG_USEC extra=$EXTRA args=$#:$1|$2"
} > report.tmp && mv report.tmp report
exec sleep 30"#,
    );
    spec.args = vec!["a".into(), "b c".into()];
    spec.env.insert("EXTRA".into(), "yes".into());
    spec.env.insert("BANKSWAP_VERSION".into(), "spoofed".into());
    spec.watchdog = Some(Duration::from_secs(2));
    let socket_path = dir.path().join("api.sock");
    let listeners = Listeners::bind(&[
        ListenConfig {
            name: "http".into(),
            address: "127.0.0.1:0".into(),
            mode: None,
        },
        ListenConfig {
            name: "api".into(),
            address: socket_path.display().to_string(),
            mode: None,
        },
    ])
    .unwrap();
    let expected: Vec<String> = listeners
        .fds()
        .map(|fd| std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap())
        .map(|link| link.display().to_string())
        .collect();

    let payload = Payload::start(&spec, &listeners).unwrap();
    let report = read_when_written(dir.path().join("report")).await;
    let lines: Vec<&str> = report.lines().collect();
    let pid = payload.pid();
    assert_eq!(
        lines[0],
        format!("fds=2 names=http:api pid={pid} self={pid}")
    );
    assert_eq!(lines[1], format!("fd3={} fd4={}", expected[0], expected[1]));
    assert_eq!(lines[2], "fd5=closed");
    let bank_dir = dir.path().display();
    assert_eq!(
        lines[3],
        format!("version=1.2.3 bank=Bank1 dir={bank_dir} pwd={bank_dir}")
    );
    assert!(
        lines[4].starts_with("notify=@bankswap-notify-"),
        "{}",
        lines[4]
    );
    assert!(
        lines[4].ends_with(" watchdog=2000000 extra=yes args=2:a|b c"),
        "{}",
        lines[4]
    );
    assert_eq!(payload.version(), "1.2.3");
    payload.stop().await;
}

#[tokio::test]
async fn without_sockets_no_listen_variables_are_set() {
    let (dir, spec) = bank(
        r#"echo "fds=${LISTEN_FDS-unset} pid=${LISTEN_PID-unset}" > report.tmp && mv report.tmp report
exec sleep 30"#,
    );
    let payload = Payload::start(&spec, &Listeners::none()).unwrap();
    assert_eq!(
        read_when_written(dir.path().join("report")).await,
        "fds=unset pid=unset\n"
    );
    payload.stop().await;
}

#[tokio::test]
async fn ready_and_status_from_the_main_process_arrive_in_order() {
    let (_dir, spec) = bank("exec $NOTIFY 'READY=1|STATUS=serving' STOPPING=1 sleep=30");
    let mut payload = Payload::start(&spec, &Listeners::none()).unwrap();
    assert_eq!(event(&mut payload).await, PayloadEvent::Ready);
    assert_eq!(
        event(&mut payload).await,
        PayloadEvent::Status("serving".into())
    );
    assert_eq!(event(&mut payload).await, PayloadEvent::Stopping);
    assert_eq!(payload.stop().await.signal(), Some(libc::SIGTERM));
}

#[tokio::test]
async fn ready_from_a_helper_process_in_the_group_counts() {
    let (_dir, spec) = bank("$NOTIFY READY=1 sleep=30 &\nwait");
    let mut payload = Payload::start(&spec, &Listeners::none()).unwrap();
    assert_eq!(event(&mut payload).await, PayloadEvent::Ready);
    payload.stop().await;
}

#[tokio::test]
async fn a_datagram_from_outside_the_process_group_is_ignored() {
    let (dir, spec) = bank(
        r#"echo "$NOTIFY_SOCKET" > address.tmp && mv address.tmp address
while [ ! -e go ]; do sleep 0.01; done
exec $NOTIFY STATUS=after sleep=30"#,
    );
    let mut payload = Payload::start(&spec, &Listeners::none()).unwrap();
    let address = read_when_written(dir.path().join("address")).await;
    let name = address.trim().strip_prefix('@').unwrap();
    let to = SocketAddr::from_abstract_name(name).unwrap();
    // This test process is not in the payload's group.
    UnixDatagram::unbound()
        .unwrap()
        .send_to_addr(b"READY=1", &to)
        .unwrap();
    std::fs::write(dir.path().join("go"), "").unwrap();
    assert_eq!(
        event(&mut payload).await,
        PayloadEvent::Status("after".into())
    );
    payload.stop().await;
}

#[tokio::test]
async fn next_event_is_cancel_safe() {
    let (_dir, spec) = bank("exec $NOTIFY sleep=0.2 'READY=1|STATUS=a' STATUS=b sleep=30");
    let mut payload = Payload::start(&spec, &Listeners::none()).unwrap();
    let mut events = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    while events.len() < 3 && Instant::now() < deadline {
        tokio::select! {
            event = payload.next_event() => events.push(event),
            () = tokio::time::sleep(Duration::from_millis(1)) => {}
        }
    }
    let want = [
        PayloadEvent::Ready,
        PayloadEvent::Status("a".into()),
        PayloadEvent::Status("b".into()),
    ];
    assert_eq!(events, want);
    payload.stop().await;
}

#[tokio::test]
async fn watchdog_expires_after_the_pings_stop() {
    let (_dir, mut spec) = bank(
        "exec $NOTIFY WATCHDOG=1 sleep=0.05 WATCHDOG=1 sleep=0.05 WATCHDOG=1 sleep=0.05 \
         WATCHDOG=1 STATUS=hung sleep=30",
    );
    let interval = Duration::from_millis(400);
    spec.watchdog = Some(interval);
    let mut payload = Payload::start(&spec, &Listeners::none()).unwrap();
    // The pings come faster than the interval: no expiry before the last one.
    assert_eq!(
        event(&mut payload).await,
        PayloadEvent::Status("hung".into())
    );
    let hung_at = Instant::now();
    assert_eq!(event(&mut payload).await, PayloadEvent::WatchdogExpired);
    assert!(hung_at.elapsed() >= interval - Duration::from_millis(50));
    payload.stop().await;
}

/// Collects what the fmt subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test]
async fn start_and_output_lines_are_logged_with_the_version() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .without_time()
        .with_target(false)
        .finish();
    // The test runtime has one thread, so the output tasks log here too.
    let _guard = tracing::subscriber::set_default(subscriber);

    let (_dir, spec) = bank("echo 'hello out'\necho 'hello err' >&2\nexec sleep 30");
    let payload = Payload::start(&spec, &Listeners::none()).unwrap();
    let running = format!("running version=1.2.3 bank=Bank1 pid={}", payload.pid());
    wait_for("both output lines", || {
        let text = captured.text();
        text.contains(r#"hello out version=1.2.3 stream="stdout""#)
            && text.contains(r#"hello err version=1.2.3 stream="stderr""#)
    })
    .await;
    assert!(captured.text().contains(&running), "{}", captured.text());
    payload.stop().await;
}
