//! Starting and stopping: errors, users, SIGTERM then SIGKILL, leftovers,
//! and the kill on drop.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use tokio::time::Instant;

use super::{bank, event, group_gone, process_gone, read_when_written, wait_for};
use crate::supervisor::{Listeners, Payload, PayloadEvent, SupervisorError};

#[tokio::test]
async fn stop_kills_a_payload_that_ignores_sigterm_and_its_whole_group() {
    let (dir, mut spec) = bank("trap '' TERM\ntouch trapped\nwhile :; do sleep 0.05; done");
    spec.stop_timeout = Duration::from_millis(300);
    let payload = Payload::start(&spec, &Listeners::none()).unwrap();
    let pgid = payload.pid();
    read_when_written(dir.path().join("trapped")).await;
    let started = Instant::now();
    let status = payload.stop().await;
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert!(started.elapsed() >= spec.stop_timeout);
    wait_for("the process group to be gone", || group_gone(pgid)).await;
}

#[tokio::test]
async fn stop_is_graceful_when_the_payload_exits_on_sigterm() {
    let (dir, spec) = bank("trap 'exit 0' TERM\ntouch trapped\nwhile :; do sleep 0.05; done");
    let payload = Payload::start(&spec, &Listeners::none()).unwrap();
    read_when_written(dir.path().join("trapped")).await;
    let started = Instant::now();
    assert!(payload.stop().await.success());
    assert!(started.elapsed() < spec.stop_timeout);
}

#[tokio::test]
async fn stop_leaves_no_orphan_of_a_grandchild_that_ignores_sigterm() {
    let (dir, mut spec) = bank(
        r#"sh -c 'trap "" TERM; echo $$ > orphan.tmp; mv orphan.tmp orphan; while :; do sleep 0.05; done' &
wait"#,
    );
    spec.stop_timeout = Duration::from_millis(300);
    let payload = Payload::start(&spec, &Listeners::none()).unwrap();
    let pgid = payload.pid();
    let orphan = read_when_written(dir.path().join("orphan")).await;
    assert!(!process_gone(&orphan));
    assert_eq!(payload.stop().await.signal(), Some(libc::SIGTERM));
    wait_for("the grandchild to be gone", || process_gone(&orphan)).await;
    wait_for("the process group to be gone", || group_gone(pgid)).await;
}

#[tokio::test]
async fn exit_is_reported_again_and_kills_what_the_payload_left_behind() {
    let (dir, spec) = bank("sleep 30 &\necho $! > left.tmp && mv left.tmp left\nexit 3");
    let mut payload = Payload::start(&spec, &Listeners::none()).unwrap();
    let pgid = payload.pid();
    let exited = event(&mut payload).await;
    assert!(matches!(exited, PayloadEvent::Exited(status) if status.code() == Some(3)));
    assert_eq!(event(&mut payload).await, exited);
    let left = std::fs::read_to_string(dir.path().join("left")).unwrap();
    wait_for("the leftover process to be gone", || process_gone(&left)).await;
    wait_for("the process group to be gone", || group_gone(pgid)).await;
    assert_eq!(payload.stop().await.code(), Some(3));
}

#[tokio::test]
async fn dropping_a_running_payload_kills_its_group() {
    let (dir, spec) = bank("touch started\nexec sleep 30");
    let payload = Payload::start(&spec, &Listeners::none()).unwrap();
    let pgid = payload.pid();
    read_when_written(dir.path().join("started")).await;
    drop(payload);
    wait_for("the process group to be gone", || group_gone(pgid)).await;
}

#[tokio::test]
async fn start_errors_name_the_command_or_the_user() {
    let (dir, mut spec) = bank("exit 0");
    let listeners = Listeners::none();

    spec.command = dir.path().join("missing");
    let err = Payload::start(&spec, &listeners).unwrap_err();
    assert!(matches!(&err, SupervisorError::Command { command, .. } if *command == spec.command));

    spec.command = dir.path().join("notify.py");
    let err = Payload::start(&spec, &listeners).unwrap_err();
    assert!(matches!(&err, SupervisorError::NotExecutable { command } if *command == spec.command));

    spec.command = dir.path().join("payload.sh");
    spec.user = Some("bankswap-no-such-user".into());
    let err = Payload::start(&spec, &listeners).unwrap_err();
    assert!(matches!(err, SupervisorError::UnknownUser { .. }), "{err}");
}

#[tokio::test]
async fn payload_runs_as_the_configured_user() {
    let (dir, mut spec) =
        bank("echo \"$(id -u) $USER $HOME\" > who.tmp && mv who.tmp who\nexec sleep 30");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    spec.user = Some("nobody".into());
    match Payload::start(&spec, &Listeners::none()) {
        Ok(payload) => {
            let who = read_when_written(dir.path().join("who")).await;
            assert_eq!(who, "65534 nobody /nonexistent\n");
            payload.stop().await;
        }
        // Not root here: the error says so.
        Err(err) => assert!(matches!(err, SupervisorError::NeedsRoot { .. }), "{err}"),
    }
}
