//! Progress of long work: a bar on an interactive terminal, periodic log lines
//! otherwise (done, total, percent, rate and ETA, SPEC §12), and the [`Meter`]
//! behind both, which the agent also shares with `status` (`pending.progress`).

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use tracing::info;

/// How often a non-interactive run logs progress: often enough to see a
/// download move in `journalctl -f`, rare enough not to flood it.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// Overrides [`LOG_EVERY`] (a duration such as `200ms`); read only here, so
/// that tests can watch a slowed download without waiting for real intervals.
pub const LOG_EVERY_ENV: &str = "BANKSWAP_PROGRESS_EVERY";

/// The rate is measured over this much recent time: long enough to smooth a
/// bursty network, short enough that the ETA follows a change of speed.
const RATE_WINDOW: Duration = Duration::from_secs(10);

/// Samples kept for the rate: one per [`SAMPLE_STEP`] at most, whatever the
/// number of reads (a fast download reads thousands of times a second).
const MAX_SAMPLES: usize = 64;

/// The least time between two samples.
const SAMPLE_STEP: Duration =
    Duration::from_millis(RATE_WINDOW.as_millis() as u64 / MAX_SAMPLES as u64);

/// Where a download stands (`status --json`: `pending.progress`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressReport {
    /// Bytes done.
    pub done: u64,
    /// Bytes in all.
    pub total: u64,
    /// Percent done.
    pub percent: u64,
    /// Bytes per second, recently (null before there is a measure).
    pub bytes_per_second: Option<u64>,
    /// Seconds left at that rate (null without a rate).
    pub eta_seconds: Option<u64>,
}

/// Bytes done out of a total, with the recent rate.
#[derive(Debug)]
pub struct Meter {
    /// The total in bytes.
    total: u64,
    /// Bytes done.
    done: u64,
    /// When `done` was last recorded.
    at: Instant,
    /// `(when, done)` over the last [`RATE_WINDOW`], oldest first.
    samples: VecDeque<(Instant, u64)>,
}

/// A meter shared between the thread doing the work and whoever reports it.
pub type SharedMeter = Arc<Mutex<Meter>>;

impl Meter {
    /// A meter over `total` bytes, started now.
    pub fn new(total: u64) -> Meter {
        let now = Instant::now();
        Meter {
            total,
            done: 0,
            at: now,
            samples: VecDeque::from([(now, 0)]),
        }
    }

    /// A meter to share.
    pub fn shared(total: u64) -> SharedMeter {
        Arc::new(Mutex::new(Meter::new(total)))
    }

    /// Records that `done` bytes are done at `now`.
    pub fn record(&mut self, done: u64, now: Instant) {
        self.done = done;
        self.at = now;
        if self
            .samples
            .back()
            .is_some_and(|(t, _)| now.duration_since(*t) < SAMPLE_STEP)
        {
            return;
        }
        while self.samples.len() >= MAX_SAMPLES
            || self
                .samples
                .front()
                .is_some_and(|(t, _)| now.duration_since(*t) > RATE_WINDOW)
        {
            self.samples.pop_front();
        }
        self.samples.push_back((now, done));
    }

    /// Adds `n` bytes done at `now`.
    pub fn add(&mut self, n: u64, now: Instant) {
        self.record(self.done.saturating_add(n), now);
    }

    /// Where it stands: done, total, percent, rate and ETA.
    pub fn report(&self) -> ProgressReport {
        let rate = match self.samples.front() {
            Some((t0, d0)) if self.at > *t0 => {
                let seconds = self.at.duration_since(*t0).as_secs_f64();
                Some((self.done.saturating_sub(*d0) as f64 / seconds) as u64)
            }
            _ => None,
        };
        let left = self.total.saturating_sub(self.done);
        ProgressReport {
            done: self.done,
            total: self.total,
            percent: (self.done.saturating_mul(100))
                .checked_div(self.total)
                .unwrap_or(100)
                .min(100),
            bytes_per_second: rate,
            eta_seconds: rate.and_then(|r| left.checked_div(r)),
        }
    }
}

/// `3.0 MiB of 10.0 MiB (30 %), 1.2 MiB/s, 6s left`: the report for a person.
pub fn describe(report: &ProgressReport) -> String {
    format!(
        "{} of {} ({} %), {}, {} left",
        bytes(report.done),
        bytes(report.total),
        report.percent,
        rate_text(report.bytes_per_second),
        eta_text(report.eta_seconds)
    )
}

/// `1.2 MiB/s`, or `unknown` before there is a measure.
fn rate_text(rate: Option<u64>) -> String {
    rate.map_or_else(|| "unknown".to_string(), |r| format!("{}/s", bytes(r)))
}

/// `1m 20s`, or `unknown` without a rate.
fn eta_text(eta: Option<u64>) -> String {
    eta.map_or_else(
        || "unknown".to_string(),
        |s| humantime::format_duration(Duration::from_secs(s)).to_string(),
    )
}

/// Bytes in binary units, one decimal.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// The interval of progress log lines: [`LOG_EVERY`], or [`LOG_EVERY_ENV`].
fn log_every() -> Duration {
    std::env::var(LOG_EVERY_ENV)
        .ok()
        .and_then(|v| humantime::parse_duration(&v).ok())
        .unwrap_or(LOG_EVERY)
}

/// Reports bytes done out of a known total.
pub struct Progress {
    /// The bar, when stderr is a terminal.
    bar: Option<ProgressBar>,
    /// What is being done, for log lines.
    label: String,
    /// Done, total and rate.
    meter: Meter,
    /// When the last log line was written.
    last_log: Instant,
    /// How often log lines are written.
    every: Duration,
}

impl Progress {
    /// Starts reporting `label` over `total` bytes.
    pub fn new(label: &str, total: u64) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total);
            if let Ok(style) = ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(label.to_string());
            bar
        });
        Progress {
            bar,
            label: label.to_string(),
            meter: Meter::new(total),
            last_log: Instant::now(),
            every: log_every(),
        }
    }

    /// Records that `done` bytes are processed.
    pub fn update(&mut self, done: u64) {
        let now = Instant::now();
        self.meter.record(done, now);
        if let Some(bar) = &self.bar {
            bar.set_position(done);
        } else if now.duration_since(self.last_log) >= self.every {
            self.last_log = now;
            let r = self.meter.report();
            // Quoted (`?`) so that logfmt keeps `rate="1.2 MiB/s"` one field.
            info!(
                what = %self.label,
                done = r.done,
                total = r.total,
                percent = r.percent,
                rate = ?rate_text(r.bytes_per_second),
                eta = ?eta_text(r.eta_seconds),
                "progress"
            );
        }
    }

    /// Removes the bar.
    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_and_eta_follow_the_recent_window() {
        let start = Instant::now();
        let mut meter = Meter::new(10_000);
        meter.samples.clear();
        meter.record(0, start);
        meter.record(1_000, start + Duration::from_secs(1));
        meter.record(2_000, start + Duration::from_secs(2));
        let r = meter.report();
        assert_eq!((r.done, r.percent), (2_000, 20));
        assert_eq!(r.bytes_per_second, Some(1_000));
        assert_eq!(r.eta_seconds, Some(8));
        // Past the window the old samples fall out: the rate is the new speed.
        meter.record(2_100, start + Duration::from_secs(20));
        meter.record(2_200, start + Duration::from_secs(21));
        assert_eq!(meter.report().bytes_per_second, Some(100));
        assert_eq!(
            describe(&meter.report()),
            "2.1 KiB of 9.8 KiB (22 %), 100 B/s, 1m 18s left"
        );
    }

    #[test]
    fn nothing_measured_yet_says_unknown() {
        let r = Meter::new(0).report();
        assert_eq!(
            (r.percent, r.bytes_per_second, r.eta_seconds),
            (100, None, None)
        );
        assert!(describe(&r).ends_with("unknown, unknown left"));
    }
}
