//! `[timeouts]`: the agent's network limits and their defaults.

use std::time::Duration;

use serde::Deserialize;

use super::values::duration;

/// Connecting (TCP and TLS) to the console must not hang an agent.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The whole of an ordinary request (a manifest that is not held, a signature,
/// a report): they are a few KiB, so this bounds a console that drips them.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A held push request may take its `wait` plus this before it is cut: room
/// for the console's answer to travel after the hold ends.
pub const DEFAULT_HELD_MARGIN: Duration = Duration::from_secs(30);
/// The longest hold the agent asks for: intermediaries commonly cut idle
/// requests at 5 min, and the console caps `wait` there too.
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(300);
/// The whole of one artifact request; a longer download is resumed with
/// `Range` by a new request, so this only bounds one connection's life.
pub const DEFAULT_DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(60 * 60);
/// The slowest transfer an artifact download tolerates, in bytes per second
/// over `rate_window`: 1 KiB/s still moves 100 MiB in a day, a drip does not.
pub const DEFAULT_MIN_RATE: u64 = 1024;
/// The window over which the transfer rate is measured (and the longest a
/// download may go without a byte).
pub const DEFAULT_RATE_WINDOW: Duration = Duration::from_secs(30);

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTimeouts {
    pub(super) connect: Option<String>,
    pub(super) request: Option<String>,
    pub(super) held_margin: Option<String>,
    pub(super) max_wait: Option<String>,
    pub(super) download: Option<String>,
    pub(super) min_rate: Option<u64>,
    pub(super) rate_window: Option<String>,
}

/// `[timeouts]`: every network limit of the agent. Each request has its own
/// deadline (a held push request `wait + held_margin`, an artifact request
/// `download` and a floor rate); the client has no blanket read timeout, which
/// would cut a held request that rightly sends nothing for minutes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP connect and TLS handshake.
    pub connect: Duration,
    /// The whole of a manifest (not held), signature or report request.
    pub request: Duration,
    /// What a held request may take beyond its `wait`.
    pub held_margin: Duration,
    /// The longest `wait` asked of the console.
    pub max_wait: Duration,
    /// The whole of one artifact request (the next one resumes).
    pub download: Duration,
    /// Artifact bytes per second, averaged over `rate_window`, below which the
    /// request is cut (and resumed).
    pub min_rate: u64,
    /// The window of `min_rate`.
    pub rate_window: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            connect: DEFAULT_CONNECT_TIMEOUT,
            request: DEFAULT_REQUEST_TIMEOUT,
            held_margin: DEFAULT_HELD_MARGIN,
            max_wait: DEFAULT_MAX_WAIT,
            download: DEFAULT_DOWNLOAD_TIMEOUT,
            min_rate: DEFAULT_MIN_RATE,
            rate_window: DEFAULT_RATE_WINDOW,
        }
    }
}

impl Timeouts {
    pub(super) fn parse(raw: RawTimeouts) -> Result<Timeouts, String> {
        let timeouts = Timeouts {
            connect: duration("timeouts.connect", raw.connect, DEFAULT_CONNECT_TIMEOUT)?,
            request: duration("timeouts.request", raw.request, DEFAULT_REQUEST_TIMEOUT)?,
            held_margin: duration("timeouts.held_margin", raw.held_margin, DEFAULT_HELD_MARGIN)?,
            max_wait: duration("timeouts.max_wait", raw.max_wait, DEFAULT_MAX_WAIT)?,
            download: duration("timeouts.download", raw.download, DEFAULT_DOWNLOAD_TIMEOUT)?,
            min_rate: raw.min_rate.unwrap_or(DEFAULT_MIN_RATE),
            rate_window: duration("timeouts.rate_window", raw.rate_window, DEFAULT_RATE_WINDOW)?,
        };
        for (key, value) in [
            ("timeouts.connect", timeouts.connect),
            ("timeouts.request", timeouts.request),
            ("timeouts.download", timeouts.download),
            ("timeouts.rate_window", timeouts.rate_window),
        ] {
            if value.is_zero() {
                return Err(format!("{key} must be longer than 0s"));
            }
        }
        Ok(timeouts)
    }
}
