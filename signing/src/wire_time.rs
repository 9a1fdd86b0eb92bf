//! How times and durations look in the manifest JSON: RFC 3339 UTC
//! timestamps (`"2026-11-22T10:00:00Z"`) and humantime durations (`"6h"`),
//! and the bounds every signed time and duration must stay within.
//!
//! A signed manifest is still input: a time past year 9999 cannot be
//! written back (humantime panics or fails there), and `SystemTime +
//! Duration` panics on overflow. So every time read from the wire must lie
//! in [`EARLIEST_TIME_SECS`]..=[`LATEST_TIME_SECS`] and every duration be at
//! most [`MAX_DURATION`]; then any time plus any duration is representable.
//! [`format_rfc3339`] clamps into that range too, so writing a manifest or an
//! error message never fails.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serializer};

/// The earliest time a manifest may carry, in seconds since the Unix epoch:
/// 1970-01-01T00:00:00Z (nothing was signed before the epoch).
pub const EARLIEST_TIME_SECS: u64 = 0;

/// The latest time a manifest may carry, in seconds since the Unix epoch:
/// 9999-12-31T23:59:59Z, the last second RFC 3339 (four-digit years) can
/// write.
pub const LATEST_TIME_SECS: u64 = 253_402_300_799;

/// The longest duration a manifest or `publish` may carry: 10 years (of
/// 365.25 days). No rollout window or manifest lifetime is sensibly longer,
/// and [`LATEST_TIME_SECS`] plus this stays far inside what `SystemTime`
/// holds, so adding it to any accepted time cannot overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(MAX_DURATION_YEARS * 31_557_600);

/// [`MAX_DURATION`] in years, for messages.
const MAX_DURATION_YEARS: u64 = 10;

/// Formats `time` as RFC 3339 UTC with whole seconds, clamped to the years
/// 1970..=9999. Never panics.
pub fn format_rfc3339(time: SystemTime) -> String {
    let secs = match time.duration_since(UNIX_EPOCH) {
        Ok(since) => since.as_secs().clamp(EARLIEST_TIME_SECS, LATEST_TIME_SECS),
        Err(_) => EARLIEST_TIME_SECS,
    };
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

/// Parses an RFC 3339 UTC timestamp (`Z` suffix, fractional seconds
/// allowed) within [`EARLIEST_TIME_SECS`]..=[`LATEST_TIME_SECS`].
pub fn parse_rfc3339(text: &str) -> Result<SystemTime, String> {
    let time =
        humantime::parse_rfc3339(text).map_err(|e| format!("bad timestamp {text:?}: {e}"))?;
    check_time(time).map_err(|why| format!("timestamp {text:?} {why}"))?;
    Ok(time)
}

/// Checks that a time lies within the years 1970..=9999.
pub fn check_time(time: SystemTime) -> Result<(), String> {
    match time.duration_since(UNIX_EPOCH) {
        Ok(since) if since.as_secs() <= LATEST_TIME_SECS => Ok(()),
        Ok(_) => Err("is after 9999-12-31T23:59:59Z, the latest time allowed".to_owned()),
        Err(_) => Err("is before 1970-01-01T00:00:00Z, the earliest time allowed".to_owned()),
    }
}

/// Parses a humantime duration (`"6h"`, `"30d"`) of at most [`MAX_DURATION`].
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration =
        humantime::parse_duration(text).map_err(|e| format!("bad duration {text:?}: {e}"))?;
    check_duration(duration).map_err(|why| format!("{text} {why}"))?;
    Ok(duration)
}

/// Checks that a duration is at most [`MAX_DURATION`].
pub fn check_duration(duration: Duration) -> Result<(), String> {
    if duration > MAX_DURATION {
        return Err(format!("exceeds the {MAX_DURATION_YEARS}-year maximum"));
    }
    Ok(())
}

/// `#[serde(with = "rfc3339")]` for `SystemTime` fields.
pub mod rfc3339 {
    use super::{Deserialize, Deserializer, Serializer, SystemTime};

    /// Writes the time as RFC 3339 (see [`format_rfc3339`](super::format_rfc3339)).
    pub fn serialize<S: Serializer>(time: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::format_rfc3339(*time))
    }

    /// Reads an RFC 3339 UTC timestamp within the allowed years.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SystemTime, D::Error> {
        let text = String::deserialize(deserializer)?;
        super::parse_rfc3339(&text).map_err(serde::de::Error::custom)
    }
}

/// `#[serde(with = "human_duration")]` for `Duration` fields.
pub mod human_duration {
    use super::{Deserialize, Deserializer, Duration, Serializer};

    /// Writes the duration as humantime does (`"6h"`, `"1h 30m"`).
    pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&humantime::format_duration(*duration))
    }

    /// Reads a humantime duration of at most [`MAX_DURATION`](super::MAX_DURATION).
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        super::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_whole_seconds_in_utc() {
        let time = UNIX_EPOCH + Duration::new(1_795_350_000, 999_999_999);
        assert_eq!(format_rfc3339(time), "2026-11-22T12:20:00Z");
    }

    #[test]
    fn parse_then_format_round_trips() {
        let time = parse_rfc3339("2026-12-22T10:00:00Z").unwrap();
        assert_eq!(format_rfc3339(time), "2026-12-22T10:00:00Z");
        assert!(parse_rfc3339("2026-12-22T10:00:00.5Z").is_ok());
        let last = parse_rfc3339("9999-12-31T23:59:59Z").unwrap();
        assert_eq!(format_rfc3339(last), "9999-12-31T23:59:59Z");
    }

    #[test]
    fn refuses_non_utc_or_sloppy_timestamps() {
        for text in [
            "2026-12-22 10:00:00",
            "2026-12-22T10:00:00+02:00",
            "yesterday",
            "",
            "-2026-12-22T10:00:00Z",
            "+10000-01-01T00:00:00Z",
            "10000-01-01T00:00:00Z",
            "1969-12-31T23:59:59Z",
            "0000-01-01T00:00:00Z",
            "18446744073709551615",
        ] {
            assert!(parse_rfc3339(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn clamps_times_humantime_cannot_write() {
        let before_epoch = UNIX_EPOCH - Duration::from_secs(10);
        assert_eq!(format_rfc3339(before_epoch), "1970-01-01T00:00:00Z");
        let far_future = UNIX_EPOCH + Duration::from_secs(LATEST_TIME_SECS + 1_000_000);
        assert_eq!(format_rfc3339(far_future), "9999-12-31T23:59:59Z");
        // The furthest SystemTime there is formats without panicking, too.
        let mut furthest = UNIX_EPOCH;
        while let Some(later) = furthest.checked_add(Duration::from_secs(1 << 40)) {
            furthest = later;
        }
        assert_eq!(format_rfc3339(furthest), "9999-12-31T23:59:59Z");
    }

    #[test]
    fn times_outside_the_years_1970_to_9999_are_refused() {
        let last = UNIX_EPOCH + Duration::from_secs(LATEST_TIME_SECS);
        assert_eq!(check_time(last), Ok(()));
        assert_eq!(check_time(UNIX_EPOCH), Ok(()));
        let err = check_time(last + Duration::from_secs(86_400)).unwrap_err();
        assert!(err.contains("after 9999-12-31T23:59:59Z"), "{err}");
        let err = check_time(UNIX_EPOCH - Duration::from_secs(1)).unwrap_err();
        assert!(err.contains("before 1970"), "{err}");
    }

    #[test]
    fn durations_longer_than_ten_years_are_refused() {
        assert_eq!(parse_duration("6h"), Ok(Duration::from_secs(6 * 3600)));
        assert_eq!(parse_duration("10y"), Ok(MAX_DURATION));
        for text in [
            "10y 1s",
            "10000y",
            "500000000000y",
            "18446744073709551615s",
            "99999999999999999999999999s",
            "-1s",
            "1e9s",
            "",
        ] {
            let err = parse_duration(text).unwrap_err();
            assert!(
                err.contains("10-year maximum") || err.contains("bad duration"),
                "{text}: {err}"
            );
        }
        assert_eq!(
            parse_duration("500000000000y").unwrap_err(),
            "500000000000y exceeds the 10-year maximum"
        );
        assert!(check_duration(Duration::MAX).is_err());
        assert!(check_duration(Duration::from_secs(u64::MAX)).is_err());
    }

    #[test]
    fn the_latest_time_plus_the_longest_duration_is_representable() {
        let last = UNIX_EPOCH + Duration::from_secs(LATEST_TIME_SECS);
        assert!(last.checked_add(MAX_DURATION).is_some());
    }
}
