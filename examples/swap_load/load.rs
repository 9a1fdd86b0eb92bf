//! `swap_load load`: RATE requests per second, open loop, each on a new
//! connection, until STOP_FILE or MAX_SECS; then one record line per request.

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::{Record, request, unix_now};

/// Requests in flight beyond this are not started (counted as `skipped`): the
/// client, not the server, would be the bottleneck.
const MAX_IN_FLIGHT: usize = 2000;

/// `swap_load load`: the open-loop requests, then the records and the summary.
pub async fn load(
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
