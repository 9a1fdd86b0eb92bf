//! When a verified release may be swapped in (SPEC §4 `rollout`, §5
//! `max_delay`): a slot in the rollout window derived from the agent id and
//! the sequence, so it works on static hosts, plus a random delay on top, so
//! the machines of a fleet (or an HA pair) never go down together.
//!
//! All arithmetic is checked: a signed manifest may carry a rollout at year
//! 9999 or lasting 500 billion years, and none of it may panic the agent.

use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use signing::Rollout;

use crate::clock;

/// The agent's slot inside a rollout window: the same for a given agent and
/// sequence on every restart, spread uniformly over the fleet.
pub fn rollout_offset(rollout: &Rollout, agent_id: &str, sequence: u64) -> Duration {
    let digest = Sha256::new()
        .chain_update(agent_id.as_bytes())
        .chain_update(sequence.to_be_bytes())
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    let fraction = u64::from_be_bytes(first) as f64 / u64::MAX as f64;
    scaled(rollout.duration, fraction)
}

/// The earliest time the swap may start: `max(now, rollout start + slot) + random(0..=max_delay)`.
/// `random` is a number in `[0, 1)` from the injected random source. A time past
/// what the clock can hold saturates at the last second `clock` can write.
pub fn not_before(
    now: SystemTime,
    rollout: Option<&Rollout>,
    agent_id: &str,
    sequence: u64,
    max_delay: Duration,
    random: f64,
) -> SystemTime {
    let slot = rollout.map_or(now, |r| add(r.start, rollout_offset(r, agent_id, sequence)));
    add(slot.max(now), scaled(max_delay, random.clamp(0.0, 1.0)))
}

/// Whether a pending `not_before` is later than any schedule made `now` could
/// be (the end of the rollout window plus `max_delay`, plus `slack` for a
/// staging retry pushed back after a failure): then it was made under a clock
/// that ran ahead, and must be derived again, or a clock fixed after running
/// 20 days ahead would keep the release waiting 20 days.
pub fn made_under_a_clock_ahead(
    not_before: SystemTime,
    now: SystemTime,
    rollout: Option<&Rollout>,
    max_delay: Duration,
    slack: Duration,
) -> bool {
    let window_end = rollout.map_or(now, |r| add(r.start.max(now), r.duration));
    not_before > add(add(window_end, max_delay), slack)
}

/// `base` changed by up to ±10 %, so that a fleet's polls do not line up.
pub fn jittered(base: Duration, random: f64) -> Duration {
    scaled(base, 0.9 + 0.2 * random.clamp(0.0, 1.0))
}

/// `time + by`, saturating at [`clock::MAX_UNIX`] instead of overflowing.
fn add(time: SystemTime, by: Duration) -> SystemTime {
    let latest = clock::from_unix(clock::MAX_UNIX);
    time.checked_add(by).map_or(latest, |t| t.min(latest))
}

/// `duration × factor` (factor ≥ 0), saturating instead of panicking like `mul_f64`.
fn scaled(duration: Duration, factor: f64) -> Duration {
    Duration::try_from_secs_f64(duration.as_secs_f64() * factor).unwrap_or(Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window() -> Rollout {
        Rollout {
            start: SystemTime::UNIX_EPOCH + Duration::from_secs(1000),
            duration: Duration::from_secs(3600),
        }
    }

    #[test]
    fn slot_is_stable_and_inside_the_window() {
        let a = rollout_offset(&window(), "agent-a", 7);
        assert_eq!(a, rollout_offset(&window(), "agent-a", 7));
        assert!(a < Duration::from_secs(3600));
    }

    #[test]
    fn slots_spread_over_the_fleet() {
        let slots: Vec<_> = (0..200)
            .map(|i| rollout_offset(&window(), &format!("agent-{i}"), 1).as_secs())
            .collect();
        let early = slots.iter().filter(|&&s| s < 1800).count();
        assert!(
            (60..140).contains(&early),
            "{early} of 200 in the first half"
        );
    }

    #[test]
    fn delay_is_added_after_the_slot_and_never_before_now() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(50_000);
        let t = not_before(now, Some(&window()), "a", 1, Duration::from_secs(60), 0.5);
        assert_eq!(
            t,
            now + Duration::from_secs(30),
            "a window in the past starts now"
        );
        let t = not_before(now, None, "a", 1, Duration::ZERO, 0.9);
        assert_eq!(t, now);
    }

    #[test]
    fn extreme_rollouts_saturate_instead_of_panicking() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(50_000);
        let latest = clock::from_unix(clock::MAX_UNIX);
        let endless = Rollout {
            start: now,
            duration: Duration::MAX,
        };
        let t = not_before(now, Some(&endless), "a", 1, Duration::MAX, 0.99);
        assert!(t <= latest);
        let at_the_end = Rollout {
            start: latest,
            duration: Duration::from_secs(86_400),
        };
        assert_eq!(
            not_before(now, Some(&at_the_end), "a", 1, Duration::ZERO, 0.0),
            latest
        );
        assert_eq!(jittered(Duration::MAX, 1.0), Duration::MAX);
    }

    #[test]
    fn a_schedule_from_a_clock_far_ahead_is_recognised() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(50_000);
        let day = Duration::from_secs(86_400);
        let slack = Duration::from_secs(300);
        let max_delay = Duration::from_secs(900);
        let ahead = now + 20 * day;
        assert!(made_under_a_clock_ahead(ahead, now, None, max_delay, slack));
        assert!(!made_under_a_clock_ahead(
            now + max_delay,
            now,
            None,
            max_delay,
            slack
        ));
        let window = Rollout {
            start: now + day,
            duration: 2 * day,
        };
        assert!(!made_under_a_clock_ahead(
            now + 3 * day,
            now,
            Some(&window),
            max_delay,
            slack
        ));
        assert!(made_under_a_clock_ahead(
            ahead,
            now,
            Some(&window),
            max_delay,
            slack
        ));
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        let base = Duration::from_secs(100);
        assert_eq!(jittered(base, 0.0), Duration::from_secs(90));
        assert_eq!(jittered(base, 1.0), Duration::from_secs(110));
    }
}
