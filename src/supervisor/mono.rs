//! Deadlines that cross an in-place exec: a tokio `Instant` means nothing to
//! the next agent image, so a deadline is handed over as absolute
//! `CLOCK_MONOTONIC` milliseconds (per boot, like the process itself), and the
//! time the exec took counts against it.

use std::time::Duration;

use tokio::time::Instant;

/// `CLOCK_MONOTONIC` now, in milliseconds.
pub fn now_ms() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec to write; CLOCK_MONOTONIC always exists on Linux.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t);
    }
    let secs = u64::try_from(t.tv_sec).unwrap_or(0);
    let millis = u64::try_from(t.tv_nsec).unwrap_or(0) / 1_000_000;
    secs.saturating_mul(1000).saturating_add(millis)
}

/// `deadline` as absolute monotonic milliseconds (a past one as now or earlier).
pub fn from_instant(deadline: Instant) -> u64 {
    let now = Instant::now();
    let base = now_ms();
    if deadline >= now {
        base.saturating_add(millis(deadline - now))
    } else {
        base.saturating_sub(millis(now - deadline))
    }
}

/// Absolute monotonic milliseconds as a tokio `Instant` (saturating).
pub fn to_instant(mono_ms: u64) -> Instant {
    let now = Instant::now();
    let base = now_ms();
    if mono_ms >= base {
        now.checked_add(Duration::from_millis(mono_ms - base))
            .unwrap_or(now + Duration::from_secs(86_400 * 365))
    } else {
        now.checked_sub(Duration::from_millis(base - mono_ms))
            .unwrap_or(now)
    }
}

/// A duration in whole milliseconds, saturating.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_round_trip_within_a_millisecond_or_two() {
        let deadline = Instant::now() + Duration::from_secs(5);
        let back = to_instant(from_instant(deadline));
        let diff = if back > deadline {
            back - deadline
        } else {
            deadline - back
        };
        assert!(diff <= Duration::from_millis(2), "{diff:?}");
        let past = Instant::now() - Duration::from_millis(10);
        assert!(to_instant(from_instant(past)) <= Instant::now());
    }
}
