//! `swap_load report`: the totals of a records file, and around each mark
//! the requests, failures, worst latency and longest gap between successes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, bail};

use super::Record;

/// The records `load` wrote, by start.
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

/// `swap_load report`: the totals, then one line per mark.
pub fn report(path: &Path, before: f64, after: f64, marks: &[(String, f64)]) -> anyhow::Result<()> {
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
