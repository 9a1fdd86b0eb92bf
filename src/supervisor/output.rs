//! The payload's stdout and stderr, read line by line and logged with the
//! version as a field, so the agent's log shows which generation said what.

use std::io;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, BufReader};

/// The longest line logged, in bytes; the rest of a longer line is dropped
/// (one runaway line must not grow the agent's memory or flood the log).
const MAX_LINE: usize = 8 * 1024;

/// Marks a line cut at [`MAX_LINE`].
const TRUNCATED_MARK: &str = " [truncated]";

/// Logs every line of `stream` (`"stdout"` or `"stderr"`) in a task of its
/// own, until the last process holding the pipe closes it.
pub(super) fn forward<R>(reader: Option<R>, version: &str, stream: &'static str)
where
    R: AsyncRead + Unpin + Send + 'static,
{
    let Some(reader) = reader else { return };
    let version = version.to_owned();
    tokio::spawn(async move {
        let mut reader = BufReader::new(reader);
        let mut line = Vec::new();
        loop {
            line.clear();
            match read_capped_line(&mut reader, &mut line, MAX_LINE).await {
                Ok(None) => break,
                Ok(Some(truncated)) => {
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
    });
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

    #[tokio::test]
    async fn cuts_long_lines_and_drops_their_rest() {
        let got = lines(b"0123456789abcdef\nok\n", 6).await;
        assert_eq!(
            got,
            vec![("012345".to_owned(), true), ("ok\n".to_owned(), false)]
        );
    }
}
