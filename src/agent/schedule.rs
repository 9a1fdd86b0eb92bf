//! When a verified release may be swapped in (SPEC §4 `rollout`, §5
//! `max_delay`): a slot in the rollout window derived from the agent id and
//! the sequence, so it works on static hosts, plus a random delay on top, so
//! the machines of a fleet (or an HA pair) never go down together.

use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use signing::Rollout;

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
    rollout.duration.mul_f64(fraction)
}

/// The earliest time the swap may start: `max(now, rollout start + slot) + random(0..=max_delay)`.
/// `random` is a number in `[0, 1)` from the injected random source.
pub fn not_before(
    now: SystemTime,
    rollout: Option<&Rollout>,
    agent_id: &str,
    sequence: u64,
    max_delay: Duration,
    random: f64,
) -> SystemTime {
    let slot = rollout.map_or(now, |r| r.start + rollout_offset(r, agent_id, sequence));
    slot.max(now) + max_delay.mul_f64(random.clamp(0.0, 1.0))
}

/// `base` changed by up to ±10 %, so that a fleet's polls do not line up.
pub fn jittered(base: Duration, random: f64) -> Duration {
    base.mul_f64(0.9 + 0.2 * random.clamp(0.0, 1.0))
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
    fn jitter_stays_within_ten_percent() {
        let base = Duration::from_secs(100);
        assert_eq!(jittered(base, 0.0), Duration::from_secs(90));
        assert_eq!(jittered(base, 1.0), Duration::from_secs(110));
    }
}
