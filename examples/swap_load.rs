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

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A request that has no full answer after this long has failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Requests in flight beyond this are not started (counted as `skipped`): the
/// client, not the server, would be the bottleneck.
const MAX_IN_FLIGHT: usize = 2000;

/// One request as seen by the client.
struct Record {
    /// When the connect started, seconds since the epoch.
    start: f64,
    /// From the connect to the end of the answer (or the error), milliseconds.
    latency_ms: f64,
    /// A 200 with a body.
    ok: bool,
    /// The version that answered (`hello from V`), or the error.
    what: String,
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

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// One request on a new connection: `Ok(version)` for a 200, else the error.
async fn request(addr: &str) -> Result<String, String> {
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

async fn load(
    addr: &str,
    rate: f64,
    max: Duration,
    stop_file: &Path,
    out: &Path,
) -> anyhow::Result<()> {
    let addr: Arc<str> = addr.into();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Record>();
    let in_flight = Arc::new(AtomicUsize::new(0));
    let (t0, unix0) = (Instant::now(), unix_now());
    let period = Duration::from_secs_f64(1.0 / rate);
    let (mut sent, mut skipped, mut worst_lag) = (0usize, 0usize, Duration::ZERO);
    let mut next_stop_check = t0;
    let collector = tokio::spawn(async move {
        let mut records = Vec::new();
        while let Some(r) = rx.recv().await {
            records.push(r);
        }
        records
    });
    for slot in 0u64.. {
        let due = t0 + period.mul_f64(slot as f64);
        tokio::time::sleep_until(due.into()).await;
        let now = Instant::now();
        if now >= next_stop_check {
            if stop_file.exists() || now - t0 >= max {
                break;
            }
            next_stop_check = now + Duration::from_millis(50);
        }
        worst_lag = worst_lag.max(now - due);
        if in_flight.load(Ordering::Relaxed) >= MAX_IN_FLIGHT {
            skipped += 1;
            continue;
        }
        sent += 1;
        in_flight.fetch_add(1, Ordering::Relaxed);
        let (addr, tx, in_flight) = (addr.clone(), tx.clone(), in_flight.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let result = request(&addr).await;
            let latency = started.elapsed();
            in_flight.fetch_sub(1, Ordering::Relaxed);
            let start = unix0 + (started - t0).as_secs_f64();
            let (ok, what) = match result {
                Ok(v) => (true, v),
                Err(e) => (false, e),
            };
            let _ = tx.send(Record {
                start,
                latency_ms: latency.as_secs_f64() * 1e3,
                ok,
                what,
            });
        });
    }
    drop(tx);
    let mut records = collector.await?;
    records.sort_by(|a, b| a.start.total_cmp(&b.start));
    let mut file = std::io::BufWriter::new(
        std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?,
    );
    for r in &records {
        writeln!(
            file,
            "{:.6} {:.3} {} {}",
            r.start,
            r.latency_ms,
            u8::from(r.ok),
            r.what.replace(' ', "_")
        )?;
    }
    file.flush()?;
    let failed = records.iter().filter(|r| !r.ok).count();
    println!(
        "load: {sent} requests in {:.1} s at {rate} req/s, each on a new connection: {failed} failed, {skipped} not sent (client over {MAX_IN_FLIGHT} in flight), worst scheduling lag {:.1} ms",
        t0.elapsed().as_secs_f64(),
        worst_lag.as_secs_f64() * 1e3
    );
    Ok(())
}

fn read_records(path: &Path) -> anyhow::Result<Vec<Record>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut records = Vec::new();
    for line in text.lines() {
        let mut f = line.split(' ');
        let (Some(start), Some(lat), Some(ok), Some(what)) =
            (f.next(), f.next(), f.next(), f.next())
        else {
            bail!("bad record line {line:?}");
        };
        records.push(Record {
            start: start.parse()?,
            latency_ms: lat.parse()?,
            ok: ok == "1",
            what: what.to_string(),
        });
    }
    records.sort_by(|a, b| a.start.total_cmp(&b.start));
    Ok(records)
}

/// The `q` quantile of sorted values.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)]
}

fn report(path: &Path, before: f64, after: f64, marks: &[(String, f64)]) -> anyhow::Result<()> {
    let records = read_records(path)?;
    if records.is_empty() {
        bail!("no requests recorded in {}", path.display());
    }
    let failed: Vec<&Record> = records.iter().filter(|r| !r.ok).collect();
    let mut latencies: Vec<f64> = records
        .iter()
        .filter(|r| r.ok)
        .map(|r| r.latency_ms)
        .collect();
    latencies.sort_by(f64::total_cmp);
    let mut errors: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &failed {
        *errors.entry(r.what.as_str()).or_default() += 1;
    }
    let mut versions: Vec<&str> = Vec::new();
    for r in records.iter().filter(|r| r.ok) {
        if versions.last() != Some(&r.what.as_str()) {
            versions.push(&r.what);
        }
    }
    let span = records[records.len() - 1].start - records[0].start;
    println!(
        "requests sent {}, failed {}, over {span:.1} s ({:.0} req/s); latency of the successful ones: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        records.len(),
        failed.len(),
        records.len() as f64 / span.max(1e-9),
        quantile(&latencies, 0.5),
        quantile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(f64::NAN),
    );
    if !errors.is_empty() {
        let list = errors.iter().fold(String::new(), |mut s, (e, n)| {
            let _ = write!(s, " {e} x{n};");
            s
        });
        println!("failures by kind:{list}");
    }
    // Answers were seen from these versions, in this order (a run of one version counts once).
    println!("versions answering, in order: {}", versions.join(" -> "));
    let ok_starts: Vec<f64> = records.iter().filter(|r| r.ok).map(|r| r.start).collect();
    if marks.is_empty() {
        return Ok(());
    }
    println!(
        "{:<18} {:>9} {:>7} {:>14} {:>14}  answered",
        format!("swap -{before}s..+{after}s"),
        "requests",
        "failed",
        "worst_lat_ms",
        "longest_gap_ms"
    );
    for (label, at) in marks {
        let (lo, hi) = (at - before, at + after);
        let window: Vec<&Record> = records
            .iter()
            .filter(|r| r.start >= lo && r.start <= hi)
            .collect();
        let worst = window.iter().map(|r| r.latency_ms).fold(0.0, f64::max);
        let window_failed = window.iter().filter(|r| !r.ok).count();
        // Consecutive successful starts (a, b) whose interval overlaps the window.
        let gap = ok_starts
            .windows(2)
            .filter(|p| p[1] >= lo && p[0] <= hi)
            .map(|p| p[1] - p[0])
            .fold(0.0, f64::max);
        let first = window
            .iter()
            .find(|r| r.ok)
            .map_or("-", |r| r.what.as_str());
        let last = window
            .iter()
            .rev()
            .find(|r| r.ok)
            .map_or("-", |r| r.what.as_str());
        println!(
            "{label:<18} {:>9} {window_failed:>7} {worst:>14.2} {:>14.1}  {first} -> {last}",
            window.len(),
            gap * 1e3
        );
    }
    Ok(())
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

async fn startup(bin: &Path, runs: usize) -> anyhow::Result<()> {
    let (mut starts, mut stops) = (Vec::new(), Vec::new());
    for run in 1..=runs {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let addr = format!("127.0.0.1:{port}");
        let spawned = Instant::now();
        let mut child = Command::new(bin)
            .args(["--listen", &addr])
            .env_remove("NOTIFY_SOCKET")
            .env_remove("LISTEN_FDS")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let deadline = spawned + Duration::from_secs(10);
        let started = loop {
            if request(&addr).await.is_ok() {
                break spawned.elapsed();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("{} did not answer within 10 s", bin.display());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        let pid = libc::pid_t::try_from(child.id())?;
        let signalled = Instant::now();
        // SAFETY: kill(2) on our own child, not yet reaped.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        child.wait()?;
        let stopped = signalled.elapsed();
        println!(
            "payload run {run}: start (spawn to first answer) {:.1} ms, stop (SIGTERM to exit) {:.1} ms",
            started.as_secs_f64() * 1e3,
            stopped.as_secs_f64() * 1e3
        );
        starts.push(started.as_secs_f64() * 1e3);
        stops.push(stopped.as_secs_f64() * 1e3);
    }
    println!(
        "payload median: start {:.1} ms, stop {:.1} ms",
        median(&mut starts),
        median(&mut stops)
    );
    Ok(())
}
