//! `swap_load startup`: the payload run by hand, its start time (spawn to
//! first answer) and stop time (SIGTERM to exit), each run and the median.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::request;

/// The median of `values` (sorted in place).
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// `swap_load startup`: the payload's start and stop times, run by hand.
pub async fn startup(bin: &Path, runs: usize) -> anyhow::Result<()> {
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
