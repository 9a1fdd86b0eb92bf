//! The latest trustworthy time: expiry is checked against the later of the
//! clock and the latest time the root has seen, a release's `published_at`
//! becomes that time once staged unless it is far ahead of the clock, and
//! `status` warns of a clock set back beyond [`CLOCK_SKEW_WARNING`].

use std::time::{Duration, SystemTime};

use bank_layout::State;
use signing::VerifiedRelease;
use tracing::warn;

use crate::clock;

/// How far ahead of the clock a release's `published_at`, or behind the latest
/// known time the clock, may be before it is reported: a day covers any honest
/// clock skew; beyond it one of the two clocks is wrong.
pub const CLOCK_SKEW_WARNING: Duration = Duration::from_secs(24 * 60 * 60);

/// The time expiry is checked against: the later of the clock and the latest
/// trustworthy time the root has seen, so a clock set back (or a stale NTP)
/// cannot revive an expired manifest.
pub fn effective_now(state: &State, clock: SystemTime) -> SystemTime {
    match state.latest_time {
        Some(latest) => clock.max(clock::from_unix(latest)),
        None => clock,
    }
}

/// What `status` says when the clock is more than [`CLOCK_SKEW_WARNING`] behind
/// the latest known time; `None` while they agree.
pub fn clock_warning(state: &State, clock: SystemTime) -> Option<String> {
    let latest = state.latest_time?;
    let behind = latest.saturating_sub(clock::unix(clock));
    // Stable text (no running clock in it), so the report does not change every second.
    (behind > CLOCK_SKEW_WARNING.as_secs()).then(|| {
        format!(
            "the clock is more than {} behind the latest known time ({}); expiry is checked against the latter",
            humantime::format_duration(CLOCK_SKEW_WARNING),
            clock::rfc3339(clock::from_unix(latest))
        )
    })
}

/// The `published_at` of `release` worth recording as a trustworthy time: a
/// release published more than [`CLOCK_SKEW_WARNING`] after the clock is
/// reported and not recorded, so one future-dated manifest cannot expire
/// everything after it.
pub(super) fn trusted_publication(release: &VerifiedRelease, clock: SystemTime) -> Option<u64> {
    let published = release.manifest.published_at;
    if published > clock + CLOCK_SKEW_WARNING {
        warn!(
            version = %release.manifest.version,
            published_at = %clock::rfc3339(published),
            clock = %clock::rfc3339(clock),
            "the release was published far ahead of this clock; not taking it as the latest known time"
        );
        return None;
    }
    Some(clock::unix(published))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_uses_the_later_of_the_clock_and_the_latest_known_time() {
        let mut state = State::default();
        let clock = clock::from_unix(1_000_000);
        assert_eq!(effective_now(&state, clock), clock);
        state.note_time(2_000_000);
        assert_eq!(effective_now(&state, clock), clock::from_unix(2_000_000));
        let later = clock::from_unix(3_000_000);
        assert_eq!(effective_now(&state, later), later);
    }

    #[test]
    fn a_clock_warning_only_beyond_the_named_skew() {
        let mut state = State::default();
        let clock = clock::from_unix(10_000_000);
        assert_eq!(clock_warning(&state, clock), None);
        state.note_time(10_000_000 + CLOCK_SKEW_WARNING.as_secs());
        assert_eq!(clock_warning(&state, clock), None);
        state.note_time(10_000_001 + CLOCK_SKEW_WARNING.as_secs());
        assert!(clock_warning(&state, clock).is_some_and(|w| w.contains("behind")));
    }
}
