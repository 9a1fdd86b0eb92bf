//! The one way an end-to-end test waits: for a condition, with a deadline. A
//! passing test waits only as long as the condition takes; the deadline is a
//! failure bound for a loaded machine, never a guess at a duration.

use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

/// Pause between two looks at a condition: short next to anything a test
/// waits for (a process start, a log line, a staging), and not a busy loop on
/// a machine shared by many test processes.
pub const STEP: Duration = Duration::from_millis(10);

/// Looks at `condition` every [`STEP`] until it gives a value, or `deadline`
/// has passed (then `None`, for the caller to fail with what it knows).
pub fn until<T>(deadline: Duration, condition: impl FnMut() -> Option<T>) -> Option<T> {
    until_every(STEP, deadline, condition)
}

/// [`until`], looking every `step`: a test that must catch a short moment
/// (a staging in progress, to kill it there) looks more often.
pub fn until_every<T>(
    step: Duration,
    deadline: Duration,
    mut condition: impl FnMut() -> Option<T>,
) -> Option<T> {
    let end = Instant::now() + deadline;
    loop {
        if let Some(value) = condition() {
            return Some(value);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(step);
    }
}

/// Waits until `condition` holds; fails naming `what` after `deadline`.
pub fn wait_for(what: &str, deadline: Duration, mut condition: impl FnMut() -> bool) {
    let held = until(deadline, || condition().then_some(()));
    assert!(
        held.is_some(),
        "timed out after {deadline:?} waiting for {what}"
    );
}

/// The exit status of `child` once it has exited, or `None` if it still runs
/// after `deadline` (it is left running: the caller decides how to stop it).
pub fn exit_of(child: &mut Child, deadline: Duration) -> Option<ExitStatus> {
    until(deadline, || child.try_wait().expect("wait for a child"))
}

/// Holds still for `time` on purpose: for a test whose claim is about what
/// happens over that time (an agent idle for longer than every timeout it
/// has), not a wait for something to happen. Name `time` as a constant that
/// says why it is that long.
pub fn hold(time: Duration) {
    std::thread::sleep(time);
}
