//! A generation handed from one agent image to the next: what the old image
//! records, and the new image adopting it by pid with the inherited notify
//! socket and output pipes (both sides in this one test process).

use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;

use super::*;
use crate::supervisor::{GenerationFds, Listeners};

/// A close-on-exec copy of `fd`, as the next image would inherit it.
fn inherited(fd: i32) -> OwnedFd {
    // SAFETY: `fd` is open and owned by the payload, which is kept (forgotten) meanwhile.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    borrowed.try_clone_to_owned().unwrap()
}

#[tokio::test]
async fn a_handed_over_generation_is_adopted_with_its_notify_socket_and_pipes() {
    // The payload itself sends (exec): a short-lived helper that exits before the
    // datagram is read cannot be placed in the group, and is dropped by design.
    let (dir, spec) =
        bank("read _ < ./go\nexec $NOTIFY READY=1 'STATUS=after the hand-over' sleep=30");
    let fifo = dir.path().join("go");
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .unwrap();
    let old = Payload::start(&spec, &Listeners::none()).unwrap();
    // Forked by this (the test's) thread.
    // SAFETY: gettid has no preconditions.
    assert_eq!(old.forked_by(), unsafe { libc::gettid() });
    let state = old.handover_state(BankId::Bank1).unwrap();
    assert_eq!(state.pid, old.pid());
    assert!(state.start_ticks > 0);
    assert!(state.stdout_fd.is_some() && state.stderr_fd.is_some());
    let fds = GenerationFds {
        notify: inherited(state.notify_fd),
        stdout: state.stdout_fd.map(inherited),
        stderr: state.stderr_fd.map(inherited),
    };
    // The old image goes without stopping it (as at an exec: no Drop runs).
    std::mem::forget(old);

    let mut adopted = Payload::adopt(&state, fds).unwrap();
    assert_eq!(adopted.pid(), state.pid);
    // Let the payload go on: its READY=1 comes in on the adopted notify socket.
    std::fs::write(&fifo, "go\n").unwrap();
    assert_eq!(event(&mut adopted).await, PayloadEvent::Ready);
    assert_eq!(
        event(&mut adopted).await,
        PayloadEvent::Status("after the hand-over".into())
    );
    // Stopped through its pidfd: SIGTERM ends `sleep`.
    let status = adopted.stop().await;
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{status}");
    let pid = state.pid;
    wait_for("the group gone", || group_gone(pid)).await;
}

#[tokio::test]
async fn a_generation_with_another_start_time_is_not_adopted() {
    let (_dir, spec) = bank("exec sleep 30");
    let old = Payload::start(&spec, &Listeners::none()).unwrap();
    let mut state = old.handover_state(BankId::Bank1).unwrap();
    state.start_ticks += 1;
    let fds = GenerationFds {
        notify: inherited(state.notify_fd),
        stdout: None,
        stderr: None,
    };
    let err = Payload::adopt(&state, fds).unwrap_err();
    assert!(
        err.to_string().contains("not the payload handed over"),
        "{err}"
    );
    old.stop().await;
}

#[test]
fn a_payload_started_off_the_main_thread_records_its_thread() {
    let (_dir, spec) = bank("exec sleep 30");
    let forked_by = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let payload = Payload::start(&spec, &Listeners::none()).unwrap();
            let by = payload.forked_by();
            payload.stop().await;
            by
        })
    })
    .join()
    .unwrap();
    assert_ne!(forked_by, rustix::process::getpid().as_raw_pid());
}
