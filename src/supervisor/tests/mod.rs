//! The process layer with real processes: `/bin/sh` payloads written to a
//! temporary bank folder, and a small Python `sd_notify` sender. This file
//! holds the fixtures; the tests are grouped by story below.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bank_layout::BankId;
use rustix::io::Errno;
use rustix::process::Pid;
use tempfile::TempDir;
use tokio::time::Instant;

use super::{Payload, PayloadEvent, PayloadSpec};

/// Every wait on a condition gives up after this long (nothing here should take it).
const DEADLINE: Duration = Duration::from_secs(15);

/// Sends each argument as one datagram (`|` becomes a newline); `sleep=S` pauses.
const NOTIFY_PY: &str = r#"import os, socket, sys, time
addr = os.environ["NOTIFY_SOCKET"]
if addr.startswith("@"):
    addr = "\0" + addr[1:]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
for arg in sys.argv[1:]:
    if arg.startswith("sleep="):
        time.sleep(float(arg[6:]))
    else:
        s.sendto(arg.replace("|", "\n").encode(), addr)
"#;

/// A bank folder holding `payload.sh` (the given script) and `notify.py`.
fn bank(script: &str) -> (TempDir, PayloadSpec) {
    let dir = tempfile::tempdir().unwrap();
    let python = if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    std::fs::write(dir.path().join("notify.py"), NOTIFY_PY).unwrap();
    let script = format!("#!/bin/sh\nNOTIFY=\"{python} ./notify.py\"\n{script}\n");
    let command = dir.path().join("payload.sh");
    std::fs::write(&command, script).unwrap();
    std::fs::set_permissions(&command, std::fs::Permissions::from_mode(0o755)).unwrap();
    let spec = PayloadSpec {
        version: "1.2.3".into(),
        bank: BankId::Bank1,
        bank_dir: dir.path().to_owned(),
        command,
        args: Vec::new(),
        env: Default::default(),
        user: None,
        stop_timeout: Duration::from_secs(10),
        watchdog: None,
    };
    (dir, spec)
}

/// The next event, or a failed test after [`DEADLINE`].
async fn event(payload: &mut Payload) -> PayloadEvent {
    tokio::time::timeout(DEADLINE, payload.next_event())
        .await
        .expect("no payload event in time")
}

/// Polls `condition` until it holds, or fails the test after [`DEADLINE`].
async fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Reads a file the payload writes (by rename, so it is whole once it exists).
async fn read_when_written(path: PathBuf) -> String {
    wait_for(&path.display().to_string(), || path.exists()).await;
    std::fs::read_to_string(path).unwrap()
}

fn group_gone(pgid: u32) -> bool {
    let pgid = Pid::from_raw(i32::try_from(pgid).unwrap()).unwrap();
    rustix::process::test_kill_process_group(pgid) == Err(Errno::SRCH)
}

/// Gone, or a zombie waiting for init: in neither case can it serve or hold a socket.
fn process_gone(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

mod adoption;
mod lifecycle;
mod protocol;
