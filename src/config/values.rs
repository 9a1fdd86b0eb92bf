//! Checks of values that appear in several places (the config and the command
//! line): trusted keys, channel names and durations.

use std::path::Path;
use std::time::Duration;

use signing::PublicKey;

/// Reads a trusted key given as the base64 line itself or as a path to a `.pub` file.
pub fn load_public_key(spec: &str, base: &Path) -> Result<PublicKey, String> {
    if let Ok(key) = PublicKey::parse(spec) {
        return Ok(key);
    }
    let path = base.join(spec);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!("trusted key `{spec}` is neither a minisign public key nor a readable file: {e}")
    })?;
    PublicKey::parse(&text).map_err(|e| format!("trusted key file {}: {e}", path.display()))
}

/// A channel name becomes a URL path segment and a folder name: keep it plain.
pub fn check_channel(channel: &str) -> Result<(), String> {
    let plain = !channel.is_empty()
        && channel.len() <= 64
        && channel
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && !channel.starts_with('.');
    if plain {
        Ok(())
    } else {
        Err(format!(
            "channel `{channel}` must be 1-64 of [A-Za-z0-9._-], not starting with a dot"
        ))
    }
}

pub(super) fn duration(
    key: &str,
    value: Option<String>,
    default: Duration,
) -> Result<Duration, String> {
    value.map_or(Ok(default), |v| parse_duration(key, &v))
}

/// The longest duration any setting (or `publish --rollout`/`--expires`) takes:
/// far beyond any sensible interval, and small enough that adding it to any
/// time the clock can hold stays inside year 9999 arithmetic.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 86_400);

/// Parses a human duration such as `30s`, `5m` or `6h` (at most [`MAX_DURATION`]).
pub fn parse_duration(key: &str, value: &str) -> Result<Duration, String> {
    let parsed =
        humantime::parse_duration(value).map_err(|e| format!("{key} = \"{value}\": {e}"))?;
    if parsed > MAX_DURATION {
        return Err(format!("{key} = \"{value}\": longer than 100 years"));
    }
    Ok(parsed)
}
