//! How times and durations look in the manifest JSON: RFC 3339 UTC
//! timestamps (`"2026-11-22T10:00:00Z"`) and humantime durations (`"6h"`).
//!
//! humantime can only write times from 1970 to 9999 (it panics or fails
//! outside); [`format_rfc3339`] clamps into that range instead, so writing a
//! manifest or an error message never fails.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serializer};

/// The last second humantime can write: 9999-12-31T23:59:59Z.
const LAST_WRITABLE_SECOND: u64 = 253_402_300_799;

/// Formats `time` as RFC 3339 UTC with whole seconds, clamped to the years
/// 1970..=9999.
pub fn format_rfc3339(time: SystemTime) -> String {
    let secs = match time.duration_since(UNIX_EPOCH) {
        Ok(since) => since.as_secs().min(LAST_WRITABLE_SECOND),
        Err(_) => 0,
    };
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

/// Parses an RFC 3339 UTC timestamp (`Z` suffix, fractional seconds allowed).
pub fn parse_rfc3339(text: &str) -> Result<SystemTime, String> {
    humantime::parse_rfc3339(text).map_err(|e| format!("bad timestamp {text:?}: {e}"))
}

/// `#[serde(with = "rfc3339")]` for `SystemTime` fields.
pub mod rfc3339 {
    use super::{Deserialize, Deserializer, Serializer, SystemTime};

    /// Writes the time as RFC 3339 (see [`format_rfc3339`](super::format_rfc3339)).
    pub fn serialize<S: Serializer>(time: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::format_rfc3339(*time))
    }

    /// Reads an RFC 3339 UTC timestamp.
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

    /// Reads a humantime duration.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text)
            .map_err(|e| serde::de::Error::custom(format!("bad duration {text:?}: {e}")))
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
    }

    #[test]
    fn refuses_non_utc_or_sloppy_timestamps() {
        for text in [
            "2026-12-22 10:00:00",
            "2026-12-22T10:00:00+02:00",
            "yesterday",
            "",
        ] {
            assert!(parse_rfc3339(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn clamps_times_humantime_cannot_write() {
        let before_epoch = UNIX_EPOCH - Duration::from_secs(10);
        assert_eq!(format_rfc3339(before_epoch), "1970-01-01T00:00:00Z");
        let far_future = UNIX_EPOCH + Duration::from_secs(LAST_WRITABLE_SECOND + 1_000_000);
        assert_eq!(format_rfc3339(far_future), "9999-12-31T23:59:59Z");
    }
}
