//! Load generator for `scripts/bench/swap.sh`: a steady HTTP request rate on
//! loopback while the agent swaps the payload, and the analysis around each swap.
//!
//! ```text
//! swap_load load ADDR RATE MAX_SECS STOP_FILE RECORDS
//!     Sends RATE requests per second to ADDR (host:port), open loop: one request is
//!     started every 1/RATE s whatever the others do, each on a NEW TCP connection
//!     (`GET / HTTP/1.1`, `Connection: close`), so every request goes through the
//!     listening socket's accept queue, which is what a swap hands over. A request
//!     fails on a connect/read/write error, a non-200 status or no full answer within
//!     5 s. Stops when STOP_FILE exists or after MAX_SECS, waits for the requests in
//!     flight, writes one line per request to RECORDS
//!     (`start_unix_s latency_ms ok answer_or_error`) and prints a one-line summary.
//! swap_load report RECORDS BEFORE_S AFTER_S [LABEL=UNIX_S ...]
//!     Prints the totals, then for each mark the requests started within
//!     [mark - BEFORE_S, mark + AFTER_S]: how many, how many failed, the worst
//!     latency, and the longest gap between the starts of two consecutive
//!     successful requests that overlaps the window (the unavailability window,
//!     at a resolution of 1/RATE), with the versions that answered first and last.
//! swap_load startup PAYLOAD_BIN RUNS
//!     Runs the payload by hand RUNS times (`PAYLOAD_BIN --listen 127.0.0.1:PORT`)
//!     and prints its start time (spawn to first 200 answer, polled every 1 ms)
//!     and its stop time (SIGTERM to exit, idle), each run and the median.
//! ```
//!
//! Here: the arguments, the record and the one request; in `swap_load/`:
//! `load.rs`, `report.rs` and `startup.rs`, one per subcommand.

#[path = "swap_load/load.rs"]
mod load;
#[path = "swap_load/report.rs"]
mod report;
#[path = "swap_load/startup.rs"]
mod startup;

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use self::load::load;
use self::report::report;
use self::startup::startup;

/// A request that has no full answer after this long has failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// One request as seen by the client.
pub struct Record {
    /// When the connect started, seconds since the epoch.
    pub start: f64,
    /// From the connect to the end of the answer (or the error), milliseconds.
    pub latency_ms: f64,
    /// A 200 with a body.
    pub ok: bool,
    /// The version that answered (`hello from V`), or the error.
    pub what: String,
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("load") if args.len() == 6 => {
            let rate: f64 = args[2].parse().context("RATE")?;
            let max_secs: u64 = args[3].parse().context("MAX_SECS")?;
            if !(rate > 0.0 && rate <= 20_000.0) {
                bail!("RATE must be in (0, 20000]");
            }
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(load(
                &args[1],
                rate,
                Duration::from_secs(max_secs),
                Path::new(&args[4]),
                Path::new(&args[5]),
            ))
        }
        Some("report") if args.len() >= 4 => {
            let before: f64 = args[2].parse().context("BEFORE_S")?;
            let after: f64 = args[3].parse().context("AFTER_S")?;
            let marks = args[4..]
                .iter()
                .map(|m| {
                    let (label, at) = m
                        .split_once('=')
                        .ok_or_else(|| anyhow!("a mark is LABEL=UNIX_SECONDS, not {m:?}"))?;
                    Ok((label.to_string(), at.parse::<f64>().context("mark time")?))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            report(Path::new(&args[1]), before, after, &marks)
        }
        Some("startup") if args.len() == 3 => {
            let runs: usize = args[2].parse().context("RUNS")?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(startup(Path::new(&args[1]), runs.max(1)))
        }
        _ => bail!(
            "usage: swap_load load ADDR RATE MAX_SECS STOP_FILE RECORDS\n       swap_load report RECORDS BEFORE_S AFTER_S [LABEL=UNIX_S ...]\n       swap_load startup PAYLOAD_BIN RUNS"
        ),
    }
}

/// Now, in seconds since the epoch.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// One request on a new connection: `Ok(version)` for a 200, else the error.
pub async fn request(addr: &str) -> Result<String, String> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {}", e.kind()))?;
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .map_err(|e| format!("write: {}", e.kind()))?;
        let mut answer = Vec::with_capacity(256);
        stream
            .read_to_end(&mut answer)
            .await
            .map_err(|e| format!("read: {}", e.kind()))?;
        Ok::<_, String>(answer)
    };
    let answer = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| "timeout".to_string())??;
    let text = String::from_utf8_lossy(&answer);
    if !text.starts_with("HTTP/1.1 200") {
        let status = text.lines().next().unwrap_or("(no answer)");
        return Err(format!("status: {}", status.replace(' ', "_")));
    }
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b).trim();
    match body.strip_prefix("hello from ") {
        Some(version) if !version.is_empty() => Ok(version.to_string()),
        _ => Err("unexpected body".to_string()),
    }
}
