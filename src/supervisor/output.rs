//! The payload's stdout and stderr, read line by line and logged with the
//! version as a field, so the agent's log shows which generation said what.
//! Rate limited per stream: a payload flooding its output (`yes`) costs the
//! agent a cheap skip of what it drops, and the log says how much it dropped.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, BufReader};
use tokio::time::Instant;

/// The longest line logged, in bytes; the rest of a longer line is dropped
/// (one runaway line must not grow the agent's memory or flood the log).
const MAX_LINE: usize = 8 * 1024;

/// Marks a line cut at [`MAX_LINE`].
const TRUNCATED_MARK: &str = " [truncated]";

/// Lines logged per stream and [`RATE_WINDOW`]; more are dropped and counted.
/// Generous for a service's own logging, far below what a runaway loop writes.
const MAX_LINES_PER_WINDOW: u32 = 200;

/// The window of [`MAX_LINES_PER_WINDOW`]; drops are reported once per window.
const RATE_WINDOW: Duration = Duration::from_secs(1);

/// Bytes read from the pipe at once (one pipe's default capacity): a flood is
/// skipped a whole buffer at a time.
const READ_BUFFER: usize = 64 * 1024;

/// Counts lines per window and what was dropped.
struct RateLimit {
    /// When the current window started.
    window_start: Instant,
    /// Lines logged in it.
    logged: u32,
    /// Lines dropped since the last report.
    dropped: u64,
    /// When the first of those was dropped.
    dropping_since: Instant,
}

impl RateLimit {
    fn new(now: Instant) -> RateLimit {
        RateLimit {
            window_start: now,
            logged: 0,
            dropped: 0,
            dropping_since: now,
        }
    }

    /// Starts a new window when the current one is over, reporting its drops.
    fn roll(&mut self, now: Instant, version: &str, stream: &'static str) {
        if now.duration_since(self.window_start) >= RATE_WINDOW {
            self.report(now, version, stream);
            self.window_start = now;
            self.logged = 0;
        }
    }

    /// Whether the window has room for another line (and takes it).
    fn admit(&mut self) -> bool {
        if self.logged < MAX_LINES_PER_WINDOW {
            self.logged += 1;
            true
        } else {
            false
        }
    }

    /// Whether this window is full: what arrives now is skipped unparsed.
    fn saturated(&self) -> bool {
        self.logged >= MAX_LINES_PER_WINDOW
    }

    fn drop_lines(&mut self, now: Instant, lines: u64) {
        if self.dropped == 0 {
            self.dropping_since = now;
        }
        self.dropped += lines;
    }

    /// Logs how much was dropped, if anything.
    fn report(&mut self, now: Instant, version: &str, stream: &'static str) {
        if self.dropped > 0 {
            let seconds = now
                .duration_since(self.dropping_since)
                .as_secs_f64()
                .max(0.1);
            tracing::warn!(
                version = %version,
                stream,
                dropped = self.dropped,
                "payload output: dropped {} lines in the last {seconds:.1}s",
                self.dropped
            );
            self.dropped = 0;
        }
    }
}

/// Logs every line of `stream` (`"stdout"` or `"stderr"`) in a task of its
/// own, until the last process holding the pipe closes it.
pub(super) fn forward<R>(reader: Option<R>, version: &str, stream: &'static str)
where
    R: AsyncRead + Unpin + Send + 'static,
{
    let Some(reader) = reader else { return };
    let version = version.to_owned();
    tokio::spawn(async move {
        let mut reader = BufReader::with_capacity(READ_BUFFER, reader);
        let mut line = Vec::new();
        let mut limit = RateLimit::new(Instant::now());
        loop {
            limit.roll(Instant::now(), &version, stream);
            if limit.saturated() {
                match skip_buffer(&mut reader).await {
                    Ok(0) => break,
                    Ok(lines) => limit.drop_lines(Instant::now(), lines),
                    Err(err) => {
                        tracing::debug!(version = %version, stream, %err, "cannot read payload output");
                        break;
                    }
                }
                continue;
            }
            line.clear();
            match read_capped_line(&mut reader, &mut line, MAX_LINE).await {
                Ok(None) => break,
                Ok(Some(truncated)) => {
                    if !limit.admit() {
                        limit.drop_lines(Instant::now(), 1);
                        continue;
                    }
                    let text = String::from_utf8_lossy(&line);
                    let text = text.trim_end_matches(['\n', '\r']);
                    let mark = if truncated { TRUNCATED_MARK } else { "" };
                    tracing::info!(version = %version, stream, "{text}{mark}");
                }
                Err(err) => {
                    tracing::debug!(version = %version, stream, %err, "cannot read payload output");
                    break;
                }
            }
        }
        limit.report(Instant::now(), &version, stream);
    });
}

/// Drops one buffer's worth of output unparsed; returns the lines in it
/// (at least 1 for a non-empty buffer), 0 at end of stream.
async fn skip_buffer<R>(reader: &mut R) -> io::Result<u64>
where
    R: AsyncBufRead + Unpin,
{
    let buffer = reader.fill_buf().await?;
    let length = buffer.len();
    if length == 0 {
        return Ok(0);
    }
    let lines = buffer.iter().filter(|&&b| b == b'\n').count().max(1);
    reader.consume(length);
    Ok(lines as u64)
}

/// Reads one line (with its `\n`) into `line`, keeping at most `cap` bytes and
/// consuming the rest. `None` at end of stream; otherwise whether it was cut.
async fn read_capped_line<R>(
    reader: &mut R,
    line: &mut Vec<u8>,
    cap: usize,
) -> io::Result<Option<bool>>
where
    R: AsyncBufRead + Unpin,
{
    let mut consumed = 0;
    let mut truncated = false;
    loop {
        let buffer = reader.fill_buf().await?;
        if buffer.is_empty() {
            return Ok((consumed > 0).then_some(truncated));
        }
        let (length, complete) = match buffer.iter().position(|&b| b == b'\n') {
            Some(newline) => (newline + 1, true),
            None => (buffer.len(), false),
        };
        let room = cap.saturating_sub(line.len());
        line.extend_from_slice(&buffer[..length.min(room)]);
        truncated |= length > room;
        reader.consume(length);
        consumed += length;
        if complete {
            return Ok(Some(truncated));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines(input: &[u8], cap: usize) -> Vec<(String, bool)> {
        // A tiny buffer, so lines straddle several fills.
        let mut reader = BufReader::with_capacity(4, input);
        let mut out = Vec::new();
        let mut line = Vec::new();
        while let Some(truncated) = read_capped_line(&mut reader, &mut line, cap).await.unwrap() {
            out.push((String::from_utf8(line.clone()).unwrap(), truncated));
            line.clear();
        }
        out
    }

    #[tokio::test]
    async fn splits_lines_and_keeps_an_unterminated_last_one() {
        let got = lines(b"one\ntwo words\n\nlast", 100).await;
        let want = [
            ("one\n", false),
            ("two words\n", false),
            ("\n", false),
            ("last", false),
        ];
        assert_eq!(got, want.map(|(s, t)| (s.to_owned(), t)));
        assert!(lines(b"", 100).await.is_empty());
    }

    #[test]
    fn a_window_admits_its_lines_then_drops_and_reports() {
        let start = Instant::now();
        let mut limit = RateLimit::new(start);
        for _ in 0..MAX_LINES_PER_WINDOW {
            assert!(limit.admit());
        }
        assert!(limit.saturated() && !limit.admit());
        limit.drop_lines(start, 5);
        assert_eq!(limit.dropped, 5);
        limit.roll(start + RATE_WINDOW, "1.0.0", "stdout");
        assert_eq!(
            limit.dropped, 0,
            "a new window reports and resets the count"
        );
        assert!(!limit.saturated() && limit.admit());
    }

    #[tokio::test]
    async fn skipping_counts_the_lines_of_a_buffer() {
        let mut reader = BufReader::with_capacity(64, &b"y\ny\ny\npartial"[..]);
        assert_eq!(skip_buffer(&mut reader).await.unwrap(), 3);
        assert_eq!(skip_buffer(&mut reader).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn cuts_long_lines_and_drops_their_rest() {
        let got = lines(b"0123456789abcdef\nok\n", 6).await;
        assert_eq!(
            got,
            vec![("012345".to_owned(), true), ("ok\n".to_owned(), false)]
        );
    }
}
