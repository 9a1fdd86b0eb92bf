//! The limit on failed admin logins (and bearer tokens) per remote address:
//! a few mistakes are fine, guessing is not.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

/// Failed logins (or bearer tokens) allowed per remote address within
/// [`FAILURE_WINDOW`]: an admin mistyping a few times is fine; guessing is not.
pub const MAX_FAILURES: u32 = 10;

/// How long failures from one address are remembered.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);

/// Addresses with failures tracked at once: bounds the limiter's memory.
/// When full (after dropping expired entries), new failing addresses are
/// refused too: under such an attack, admins wait with everyone else.
const MAX_TRACKED_ADDRESSES: usize = 10_000;

/// Failures per remote address.
#[derive(Default)]
pub struct Limiter {
    /// Address → (failures, when the first of them happened).
    failures: Mutex<HashMap<IpAddr, (u32, SystemTime)>>,
}

impl Limiter {
    /// Whether `address` has failed too often lately.
    pub fn is_limited(&self, address: IpAddr, now: SystemTime) -> bool {
        let failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        failures
            .get(&address)
            .is_some_and(|(count, since)| *count >= MAX_FAILURES && !window_passed(*since, now))
    }

    /// Counts one failure of `address`.
    pub fn fail(&self, address: IpAddr, now: SystemTime) {
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        if failures.len() >= MAX_TRACKED_ADDRESSES {
            failures.retain(|_, (_, since)| !window_passed(*since, now));
        }
        if failures.len() >= MAX_TRACKED_ADDRESSES && !failures.contains_key(&address) {
            return;
        }
        let entry = failures.entry(address).or_insert((0, now));
        if window_passed(entry.1, now) {
            *entry = (0, now);
        }
        entry.0 = entry.0.saturating_add(1);
    }

    /// Whether the limiter is too full to track `address` (it is refused then).
    pub(super) fn is_full_without(&self, address: IpAddr) -> bool {
        let failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        failures.len() >= MAX_TRACKED_ADDRESSES && !failures.contains_key(&address)
    }
}

fn window_passed(since: SystemTime, now: SystemTime) -> bool {
    now.duration_since(since).unwrap_or_default() >= FAILURE_WINDOW
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock;

    #[test]
    fn failures_past_the_limit_are_refused_until_the_window_passes() {
        let limiter = Limiter::default();
        let address: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let now = clock::from_unix(1_000_000);
        for _ in 0..MAX_FAILURES {
            assert!(!limiter.is_limited(address, now));
            limiter.fail(address, now);
        }
        assert!(limiter.is_limited(address, now));
        assert!(!limiter.is_limited(other, now));
        assert!(!limiter.is_limited(address, now + FAILURE_WINDOW));
    }
}
