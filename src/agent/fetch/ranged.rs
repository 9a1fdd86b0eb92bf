//! The resumable ranged download: one request per try, resumed with
//! `Range: bytes=N-` after a broken connection, with backoff, a give-up count
//! and the `[timeouts]` deadlines and rate floor.

use std::io;
use std::time::Duration;

use anyhow::bail;
use bytes::Bytes;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_RANGE, RANGE};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::agent::fetch::response::{RateFloor, describe, is_final};
use crate::config::Timeouts;

/// Resumes tried in a row without good progress before staging gives up (a
/// cut for dripping below the floor rate counts even if it moved some bytes).
const MAX_RESUMES: u32 = 8;
/// First pause before a resume; doubles per failed try, up to the rate window.
const RESUME_BACKOFF: Duration = Duration::from_millis(250);

/// Fetches `url` into `tx`, resuming with `Range` after errors. Statuses that
/// asking again will not change (403, 404, 410, …) end it at once.
pub(super) async fn pump(
    clients: &watch::Receiver<reqwest::Client>,
    url: &str,
    size: u64,
    timeouts: &Timeouts,
    tx: &mpsc::Sender<io::Result<Bytes>>,
) -> anyhow::Result<()> {
    let limit = size.saturating_add(1);
    let mut offset = 0u64;
    let mut failures = 0u32;
    let mut resumes = 0u32;
    loop {
        let http = clients.borrow().clone();
        match fetch_from(&http, url, offset, limit, timeouts, tx).await {
            Ok(Fetch::Done(n)) => {
                offset += n;
                if resumes > 0 {
                    info!(
                        url,
                        bytes = offset,
                        resumes,
                        "artifact fetched after resuming"
                    );
                }
                return Ok(());
            }
            Ok(Fetch::ReceiverGone) => return Ok(()),
            Err(cut) => {
                if let Cut::Refused(status) = cut.why {
                    bail!("artifact {url} answered {status}");
                }
                offset += cut.delivered;
                // A drip moves a few bytes per cut: that is no progress.
                if cut.delivered > 0 && !matches!(cut.why, Cut::Slow) {
                    failures = 0;
                }
                failures += 1;
                let err = cut.error;
                if failures > MAX_RESUMES {
                    bail!("artifact {url}: {err} ({MAX_RESUMES} tries in a row; giving up)");
                }
                resumes += 1;
                let pause = RESUME_BACKOFF
                    .saturating_mul(2u32.saturating_pow(failures - 1))
                    .min(timeouts.rate_window);
                warn!(url, offset, error = %err, "artifact download broken; resuming");
                tokio::time::sleep(pause).await;
            }
        }
    }
}

/// How one request ended.
enum Fetch {
    /// The body ended (or the limit was reached) after this many bytes.
    Done(u64),
    /// The stager stopped reading.
    ReceiverGone,
}

/// Why a request was cut short.
enum Cut {
    /// An answer that asking again will not change.
    Refused(StatusCode),
    /// Slower than `[timeouts] min_rate` over a window.
    Slow,
    /// Anything else (a broken connection, a deadline, a wrong answer): resumed.
    Broken,
}

/// A request cut short: what it delivered, and why.
struct Cutoff {
    /// Bytes delivered before the cut.
    delivered: u64,
    /// What kind of cut.
    why: Cut,
    /// One line for the log and the error.
    error: String,
}

impl Cutoff {
    fn new(delivered: u64, why: Cut, error: impl Into<String>) -> Cutoff {
        Cutoff {
            delivered,
            why,
            error: error.into(),
        }
    }
}

/// One request from `offset`; on error, returns the bytes it did deliver.
async fn fetch_from(
    http: &reqwest::Client,
    url: &str,
    offset: u64,
    limit: u64,
    timeouts: &Timeouts,
    tx: &mpsc::Sender<io::Result<Bytes>>,
) -> Result<Fetch, Cutoff> {
    let deadline = Instant::now() + timeouts.download;
    let mut request = http.get(url);
    if offset > 0 {
        request = request.header(RANGE, format!("bytes={offset}-"));
    }
    let answer = timeouts.request.min(timeouts.download);
    let mut response = match tokio::time::timeout(answer, request.send()).await {
        Err(_) => {
            return Err(Cutoff::new(
                0,
                Cut::Broken,
                format!("no answer within {answer:?} ([timeouts] request)"),
            ));
        }
        Ok(Err(e)) => return Err(Cutoff::new(0, Cut::Broken, describe(&e))),
        Ok(Ok(response)) => response,
    };
    let status = response.status();
    if offset > 0 && status == StatusCode::RANGE_NOT_SATISFIABLE {
        return Ok(Fetch::Done(0)); // nothing after `offset`: the stager decides if that is short
    }
    if is_final(status) {
        return Err(Cutoff::new(0, Cut::Refused(status), status.to_string()));
    }
    let expected = if offset > 0 {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    if status != expected {
        return Err(Cutoff::new(
            0,
            Cut::Broken,
            format!("the server answered {status} (wanted {expected})"),
        ));
    }
    if offset > 0 {
        let range = response
            .headers()
            .get(CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !range.starts_with(&format!("bytes {offset}-")) {
            return Err(Cutoff::new(
                0,
                Cut::Broken,
                format!("the server answered Content-Range `{range}` for bytes={offset}-"),
            ));
        }
    }
    let mut delivered = 0u64;
    let mut floor = RateFloor::new(timeouts);
    loop {
        let next = tokio::time::timeout_at(floor.end().min(deadline), response.chunk()).await;
        let now = Instant::now();
        match next {
            Err(_) if now >= deadline => {
                return Err(Cutoff::new(
                    delivered,
                    Cut::Broken,
                    format!(
                        "not finished within {:?} ([timeouts] download)",
                        timeouts.download
                    ),
                ));
            }
            Err(_) => {
                if let Err(slow) = floor.add(0, now) {
                    return Err(Cutoff::new(delivered, Cut::Slow, slow));
                }
            }
            Ok(Ok(Some(mut chunk))) => {
                let room = limit - offset - delivered;
                if chunk.len() as u64 > room {
                    chunk.truncate(room as usize);
                }
                let n = chunk.len() as u64;
                delivered += n;
                if let Err(slow) = floor.add(n, now) {
                    return Err(Cutoff::new(delivered, Cut::Slow, slow));
                }
                let sent = Instant::now();
                if tx.send(Ok(chunk)).await.is_err() {
                    return Ok(Fetch::ReceiverGone);
                }
                floor.exclude(sent.elapsed());
                if offset + delivered >= limit {
                    debug!(url, "artifact limit reached");
                    return Ok(Fetch::Done(delivered));
                }
            }
            Ok(Ok(None)) => return Ok(Fetch::Done(delivered)),
            Ok(Err(e)) => return Err(Cutoff::new(delivered, Cut::Broken, describe(&e))),
        }
    }
}
