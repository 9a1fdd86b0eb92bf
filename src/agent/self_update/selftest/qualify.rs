//! The parent's side of `--self-test`: a staged build run with a clean
//! environment in its own process group, under a timeout (on the core's task,
//! or blocking for an offline `apply`), its output capped, and the verdict on
//! its answer.

use std::io::Read;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;

use super::{HANDOVER_SCHEMAS, MAX_SELF_TEST_OUTPUT, SelfTestReport, Target};
use crate::platform::PLATFORM;

/// Bytes of the end of the child's stderr kept for the failure reason.
const STDERR_TAIL: usize = 1024;

/// Immediate spawn retries on `ETXTBSY` (a fork elsewhere briefly holding the
/// just-written file open for writing).
const SELF_TEST_SPAWN_RETRIES: u32 = 3;

/// Environment variables of the agent that the child must not see: systemd's
/// and the hand-over's (they name fds of the agent process).
const HIDDEN_VARS: &[&str] = &[
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "BANKSWAP_HANDOVER_PID",
    "BANKSWAP_HANDOVER_STATE",
    "BANKSWAP_HANDOVER_FDS",
    "BANKSWAP_HANDOVER_NONCE",
    "BANKSWAP_HANDOVER_BOUNCE",
];

/// The command line of a self-test of `binary`.
fn command(binary: &Path, target: &Target, version: &str) -> std::process::Command {
    let mut command = std::process::Command::new(binary);
    command.arg("--self-test");
    match target {
        Target::Config(path) => command.arg("--config").arg(path),
        Target::Root(dir) => command.arg("--root").arg(dir),
    };
    command
        .arg("--expect-version")
        .arg(version)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for var in HIDDEN_VARS {
        command.env_remove(var);
    }
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    command
}

/// Runs `binary --self-test` from the calling task (the core's, on the main
/// thread) under `timeout` and judges it: `Ok` with the answer iff it exited 0
/// with one parseable answer that is `ok`, for this platform, reading a hand-over
/// schema this build writes; else the reason (`self-test: ...`).
pub async fn qualify(
    binary: &Path,
    target: &Target,
    version: &str,
    timeout: Duration,
) -> Result<SelfTestReport, String> {
    let mut child = spawn_retrying(|| {
        let mut command = tokio::process::Command::from(command(binary, target, version));
        command.kill_on_drop(true);
        command.spawn()
    })?;
    let pid = child.id();
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let run = async {
        let mut out = Vec::new();
        let mut err = Vec::new();
        let read_out = async {
            if let Some(s) = stdout.as_mut() {
                let _ = s.take(MAX_SELF_TEST_OUTPUT + 1).read_to_end(&mut out).await;
            }
        };
        let read_err = async {
            if let Some(s) = stderr.as_mut() {
                let _ = s.take(MAX_SELF_TEST_OUTPUT).read_to_end(&mut err).await;
            }
        };
        let ((), (), status) = tokio::join!(read_out, read_err, child.wait());
        (status, out, err)
    };
    let (status, out, err) = match tokio::time::timeout(timeout, run).await {
        Ok(done) => done,
        Err(_) => {
            kill_group(pid);
            let _ = child.wait().await;
            return Err(format!(
                "self-test: no answer within {}",
                humantime::format_duration(timeout)
            ));
        }
    };
    let status = status.map_err(|e| format!("self-test: waiting for it: {e}"))?;
    judge(status, &out, &err)
}

/// [`qualify`] without a runtime (offline `apply`): the child is waited for on
/// this thread, its output read by two helper threads, the timeout measured here.
pub fn qualify_blocking(
    binary: &Path,
    target: &Target,
    version: &str,
    timeout: Duration,
) -> Result<SelfTestReport, String> {
    let mut child = spawn_retrying(|| command(binary, target, version).spawn())?;
    let pid = Some(child.id());
    let out = child
        .stdout
        .take()
        .map(|s| reader(s, MAX_SELF_TEST_OUTPUT + 1));
    let err = child.stderr.take().map(|s| reader(s, MAX_SELF_TEST_OUTPUT));
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let started = Instant::now();
    let waiter = std::thread::spawn(move || {
        let status = child.wait();
        let _ = done_tx.send(());
        status
    });
    if done_rx.recv_timeout(timeout).is_err() {
        kill_group(pid);
        let _ = waiter.join();
        return Err(format!(
            "self-test: no answer within {}",
            humantime::format_duration(timeout)
        ));
    }
    let status = match waiter.join() {
        Ok(Ok(status)) => status,
        Ok(Err(e)) => return Err(format!("self-test: waiting for it: {e}")),
        Err(_) => return Err("self-test: the waiting thread failed".to_owned()),
    };
    let collect = |r: Option<std::thread::JoinHandle<Vec<u8>>>| {
        r.and_then(|h| h.join().ok()).unwrap_or_default()
    };
    let (out, err) = (collect(out), collect(err));
    tracing::debug!(ms = started.elapsed().as_millis(), "self-test finished");
    judge(status, &out, &err)
}

/// A thread reading at most `cap` bytes of `stream`.
fn reader(stream: impl Read + Send + 'static, cap: u64) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stream.take(cap).read_to_end(&mut bytes);
        bytes
    })
}

/// Spawns, retrying at once on `ETXTBSY`.
fn spawn_retrying<T>(mut spawn: impl FnMut() -> std::io::Result<T>) -> Result<T, String> {
    let mut tries = 0;
    loop {
        match spawn() {
            Ok(child) => return Ok(child),
            Err(e)
                if e.raw_os_error() == Some(libc::ETXTBSY) && tries < SELF_TEST_SPAWN_RETRIES =>
            {
                tries += 1;
            }
            Err(e) => return Err(format!("self-test: could not run the build: {e}")),
        }
    }
}

/// SIGKILLs the process group of the child (its pid: it leads its own group).
fn kill_group(pid: Option<u32>) {
    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
        // SAFETY: kill only sends a signal; a group already gone gives ESRCH, ignored.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
}

/// The verdict on a finished self-test.
fn judge(
    status: std::process::ExitStatus,
    out: &[u8],
    err: &[u8],
) -> Result<SelfTestReport, String> {
    let tail = stderr_tail(err);
    if out.len() as u64 > MAX_SELF_TEST_OUTPUT {
        return Err(format!(
            "self-test: printed more than {MAX_SELF_TEST_OUTPUT} bytes"
        ));
    }
    let text = String::from_utf8_lossy(out);
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let answer = match (lines.next(), lines.next()) {
        (Some(line), None) => serde_json::from_str::<SelfTestReport>(line).ok(),
        _ => None,
    };
    let Some(report) = answer else {
        return Err(match status.code() {
            Some(code) => format!(
                "self-test: exited with status {code} before printing a result{}",
                suffix(&tail)
            ),
            None => format!(
                "self-test: ended by {status} without a result{}",
                suffix(&tail)
            ),
        });
    };
    if !status.success() || !report.ok {
        let why = report
            .checks
            .iter()
            .find(|c| !c.ok)
            .map(|c| format!("{}: {}", c.name, c.detail.as_deref().unwrap_or("failed")))
            .unwrap_or_else(|| format!("{status}{}", suffix(&tail)));
        return Err(format!("self-test: {why}"));
    }
    if report.platform != PLATFORM {
        return Err(format!(
            "self-test: the build runs on {}, this agent on {PLATFORM}",
            report.platform
        ));
    }
    if !report
        .handover_schemas
        .iter()
        .any(|s| HANDOVER_SCHEMAS.contains(s))
    {
        return Err(format!(
            "self-test: reads hand-over schemas {:?}, this agent writes {HANDOVER_SCHEMAS:?}",
            report.handover_schemas
        ));
    }
    Ok(report)
}

/// The last [`STDERR_TAIL`] bytes of `err`, one line.
fn stderr_tail(err: &[u8]) -> String {
    let start = err.len().saturating_sub(STDERR_TAIL);
    String::from_utf8_lossy(&err[start..])
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn suffix(tail: &str) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!(": {tail}")
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::ExitStatusExt;

    use super::*;
    use crate::agent::self_update::selftest::SELF_TEST_SCHEMA;
    use crate::agent::self_update::selftest::checks::failed;

    fn exited(code: i32) -> std::process::ExitStatus {
        std::process::ExitStatus::from_raw(code << 8)
    }

    fn answer(ok: bool, schemas: &[u32]) -> Vec<u8> {
        let report = SelfTestReport {
            self_test: SELF_TEST_SCHEMA,
            ok,
            build_version: "0.1.0".into(),
            release_version: Some("2.0.0".into()),
            platform: PLATFORM.into(),
            handover_schemas: schemas.to_vec(),
            checks: vec![failed("config", "unknown field `x`".into())],
        };
        let mut line = serde_json::to_vec(&report).expect("json");
        line.push(b'\n');
        line
    }

    #[test]
    fn the_verdict_names_the_reason() {
        let e = judge(exited(3), b"", b"boom\n").expect_err("exit 3");
        assert_eq!(
            e,
            "self-test: exited with status 3 before printing a result: boom"
        );
        let e = judge(exited(1), &answer(false, &[1]), b"").expect_err("not ok");
        assert_eq!(e, "self-test: config: unknown field `x`");
        let e = judge(exited(0), &answer(true, &[2]), b"").expect_err("schemas");
        assert!(e.contains("hand-over schemas [2]"), "{e}");
        assert!(judge(exited(0), &answer(true, &[1]), b"").is_ok());
        let big = vec![b'x'; MAX_SELF_TEST_OUTPUT as usize + 1];
        assert!(judge(exited(0), &big, b"").is_err());
    }

    #[test]
    fn output_is_capped_and_a_hang_times_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let script = dir.path().join("hang");
        std::fs::write(&script, "#!/bin/sh\nexec sleep 30\n").expect("write");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let started = Instant::now();
        let e = qualify_blocking(
            &script,
            &Target::Root(dir.path().to_path_buf()),
            "2.0.0",
            Duration::from_millis(300),
        )
        .expect_err("hangs");
        assert!(e.contains("no answer within"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
