//! Checks and limits on the console's answers: the status, the size cap on a
//! body, the rate floor of a download, which statuses are final, and one line
//! for a reqwest error.

use std::time::Duration;

use anyhow::bail;
use reqwest::StatusCode;
use tokio::time::Instant;

use crate::config::Timeouts;

pub(super) fn ok_status(
    response: reqwest::Response,
    url: &str,
) -> anyhow::Result<reqwest::Response> {
    let status = response.status();
    if status.is_success() {
        Ok(response)
    } else {
        bail!("{url}: the console answered {status}")
    }
}

/// Reads a body, stopping one byte past `limit` so the caller can report "too large".
pub(in crate::agent) async fn read_capped(
    mut response: reqwest::Response,
    limit: u64,
) -> reqwest::Result<Vec<u8>> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        body.extend_from_slice(&chunk);
        if body.len() as u64 > limit {
            body.truncate(limit as usize + 1);
            break;
        }
    }
    Ok(body)
}

/// Like [`describe`], but a timeout says which limit cut the request: a
/// console that drips its answer gets a clear error, not "operation timed out".
pub fn describe_cut(err: &reqwest::Error, limit: Duration, key: &str) -> String {
    if err.is_timeout() {
        format!("no complete answer within {limit:?} ([timeouts] {key})")
    } else {
        describe(err)
    }
}

/// One line for a reqwest error, with its causes (reqwest's own Display hides them).
pub fn describe(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Measures the transfer rate over consecutive windows of `[timeouts] rate_window`.
pub(super) struct RateFloor {
    /// When the current window began.
    start: Instant,
    /// Bytes received in the current window.
    bytes: u64,
    /// Window length.
    window: Duration,
    /// Bytes a window must bring (`min_rate × window`).
    needed: u64,
    /// The floor, bytes per second (for the message).
    min_rate: u64,
}

impl RateFloor {
    pub(super) fn new(timeouts: &Timeouts) -> RateFloor {
        RateFloor {
            start: Instant::now(),
            bytes: 0,
            window: timeouts.rate_window,
            needed: (timeouts.min_rate as f64 * timeouts.rate_window.as_secs_f64()) as u64,
            min_rate: timeouts.min_rate,
        }
    }

    /// When the current window ends.
    pub(super) fn end(&self) -> Instant {
        self.start + self.window
    }

    /// Time the stager kept us waiting is not the network's fault.
    pub(super) fn exclude(&mut self, blocked: Duration) {
        self.start += blocked;
    }

    /// Counts `n` bytes; at the end of a window, checks it brought enough.
    pub(super) fn add(&mut self, n: u64, now: Instant) -> Result<(), String> {
        self.bytes = self.bytes.saturating_add(n);
        if now < self.end() {
            return Ok(());
        }
        if self.bytes < self.needed {
            return Err(format!(
                "{} bytes in {:?}, below the floor of {} B/s ([timeouts] min_rate)",
                self.bytes, self.window, self.min_rate
            ));
        }
        self.start = now;
        self.bytes = 0;
        Ok(())
    }
}

/// Statuses that asking again will not change: the host refuses, or has no
/// such file. Reported at once instead of retried (408 and 429 are worth a retry).
pub(super) fn is_final(status: StatusCode) -> bool {
    status.is_client_error()
        && !matches!(
            status,
            StatusCode::REQUEST_TIMEOUT
                | StatusCode::TOO_MANY_REQUESTS
                | StatusCode::RANGE_NOT_SATISFIABLE
        )
}
