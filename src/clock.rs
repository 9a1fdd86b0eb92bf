//! Wall-clock helpers. The library crates never read the clock: the binary
//! reads it here and passes it in.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch (0 for a clock set before 1970).
pub fn unix(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The time of a Unix timestamp.
pub fn from_unix(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// RFC 3339 in UTC with whole seconds, e.g. `2026-11-22T10:00:00Z`.
pub fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

/// The current time truncated to whole seconds (manifests carry whole seconds).
pub fn now_seconds() -> SystemTime {
    from_unix(unix(SystemTime::now()))
}
