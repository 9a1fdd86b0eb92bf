//! Progress of long work: a bar on an interactive terminal, periodic log lines otherwise.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tracing::info;

/// How often a non-interactive run logs progress.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// Reports bytes done out of a known total.
pub struct Progress {
    /// The bar, when stderr is a terminal.
    bar: Option<ProgressBar>,
    /// What is being done, for log lines.
    label: String,
    /// The total in bytes.
    total: u64,
    /// When the last log line was written.
    last_log: Instant,
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
            total,
            last_log: Instant::now(),
        }
    }

    /// Records that `done` bytes are processed.
    pub fn update(&mut self, done: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(done);
        } else if self.last_log.elapsed() >= LOG_EVERY {
            self.last_log = Instant::now();
            let percent = (done * 100).checked_div(self.total).unwrap_or(100);
            info!(what = %self.label, done, total = self.total, percent, "progress");
        }
    }

    /// Removes the bar.
    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}
