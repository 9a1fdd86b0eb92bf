//! Wall-clock helpers. The library crates never read the clock: the binary
//! reads it here and passes it in. Every conversion saturates: no time in a
//! file, a manifest or the system clock can make them panic.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The last second RFC 3339 can write (9999-12-31T23:59:59Z): later times
/// saturate to it, so a state file or a clock past year 9999 cannot panic
/// the formatting.
pub const MAX_UNIX: u64 = 253_402_300_799;

/// Seconds since the Unix epoch (0 for a clock set before 1970).
pub fn unix(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The time of a Unix timestamp, saturating at [`MAX_UNIX`].
pub fn from_unix(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs.min(MAX_UNIX))
}

/// RFC 3339 in UTC with whole seconds, e.g. `2026-11-22T10:00:00Z`. A time
/// before 1970 prints as the epoch and one after year 9999 as [`MAX_UNIX`].
pub fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(from_unix(unix(time))).to_string()
}

/// The current time truncated to whole seconds (manifests carry whole seconds).
pub fn now_seconds() -> SystemTime {
    from_unix(unix(SystemTime::now()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_times_saturate_instead_of_panicking() {
        assert_eq!(rfc3339(from_unix(u64::MAX)), "9999-12-31T23:59:59Z");
        let year_10000 = UNIX_EPOCH + Duration::from_secs(MAX_UNIX + 86_400 * 400);
        assert_eq!(rfc3339(year_10000), "9999-12-31T23:59:59Z");
        let before_1970 = UNIX_EPOCH - Duration::from_secs(3600);
        assert_eq!(rfc3339(before_1970), "1970-01-01T00:00:00Z");
        assert_eq!(unix(before_1970), 0);
        assert_eq!(rfc3339(from_unix(1_795_000_000)), "2026-11-18T11:06:40Z");
    }
}
