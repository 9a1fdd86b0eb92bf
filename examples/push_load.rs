//! Push load for `scripts/bench/push.sh`: many agents held on the console at
//! once, then a publish; when does each learn of it?
//!
//! ```text
//! push_load ADDR CA_PEM AGENTS WAIT_S HOLD_S CONSOLE_PID PUBLISH_CMD [ARG ...]
//! ```
//!
//! Reads the current ETag of `/v1/channels/stable/release.json` from the
//! console at ADDR (`127.0.0.1:PORT`, certificate for `localhost` signed by
//! CA_PEM), then opens AGENTS TLS connections (100 every 50 ms), each sending
//! one raw HTTP/1.1 `GET /v1/channels/stable/release.json?wait=WAIT_S` with
//! `If-None-Match: ETAG`: what a held agent sends. A 304 (the console ended
//! the hold at its max wait) is answered at once with the same request on the
//! same connection, as an agent does. Once every request is written it holds
//! them HOLD_S seconds (longer than every timeout, so a publish finds agents
//! that have been idle through all of them), reads the
//! console's memory (`/proc/CONSOLE_PID/status`), runs PUBLISH_CMD, and records
//! when each connection receives its response's status line, relative to the
//! moment PUBLISH_CMD returned (the manifest is in place then). It prints one
//! summary line per figure; `within 1 s` is the share of all AGENTS that got a
//! 200 within 1 s. The client is deliberately lean (no HTTP library, 4 KiB
//! reads, one task per connection) because it shares the machine's cores with
//! the console. `CLIENT_THREADS` sets its tokio worker threads (default 1).
//!
//! mTLS (SPEC §10): with `ENROLL_TOKEN_FILE` (a token made with `console
//! token create --uses AGENTS`), every agent first enrolls as a real one does
//! (its own key, a CSR, `POST /v1/enroll`) and then holds with its client
//! certificate, so a console run with `--require-client-cert` serves it.
//! Either way it prints the handshake cost: the client's TCP + TLS connect
//! time and the console's CPU time per connection during the ramp (session
//! resumption off in both modes: full handshakes, as after a fleet restart).
//!
//! Here: the arguments, the ramp, the publish and the figures; in
//! `push_load/`: `tls.rs` (connectors), `enroll.rs` (mTLS enrollment),
//! `hold.rs` (one held request) and `proc_stats.rs` (the console's memory and CPU).

#[path = "push_load/enroll.rs"]
mod enroll;
#[path = "push_load/hold.rs"]
mod hold;
#[path = "push_load/proc_stats.rs"]
mod proc_stats;
#[path = "push_load/tls.rs"]
mod tls;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};

use self::enroll::enroll_all;
use self::hold::{exchange, hold};
use self::proc_stats::{cpu_ticks, memory};
use self::tls::{connector, roots};

/// Connections opened per step of the ramp, and the pause between steps.
const RAMP_STEP: usize = 100;
const RAMP_PAUSE: Duration = Duration::from_millis(50);

/// How long to wait for every request to be written before giving up on the stragglers.
const CONNECT_DEADLINE: Duration = Duration::from_secs(60);

/// How long after the publish responses are awaited.
const AFTER_PUBLISH: Duration = Duration::from_secs(30);

/// What one held connection saw.
enum Outcome {
    /// A status line arrived at this instant.
    Status(Instant, String),
    /// The connection failed (before or after the publish).
    Failed(String),
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 7 {
        bail!(
            "usage: push_load ADDR CA_PEM AGENTS WAIT_S HOLD_S CONSOLE_PID PUBLISH_CMD [ARG ...]"
        );
    }
    let threads = std::env::var("CLIENT_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(1usize)
        .max(1);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?
        .block_on(run(&args))
}

async fn run(args: &[String]) -> anyhow::Result<()> {
    let addr: Arc<str> = args[0].as_str().into();
    let agents: usize = args[2].parse().context("AGENTS")?;
    let wait: u64 = args[3].parse().context("WAIT_S")?;
    let settle = Duration::from_secs(args[4].parse().context("HOLD_S")?);
    let console_pid = args[5].clone();
    let publish = &args[6..];
    let roots = roots(&args[1])?;
    let anonymous = connector(roots.clone())?;
    let connectors = match std::env::var("ENROLL_TOKEN_FILE") {
        Ok(file) => {
            let token =
                std::fs::read_to_string(&file).with_context(|| format!("reading {file}"))?;
            enroll_all(&anonymous, &roots, &addr, token.trim(), agents).await?
        }
        Err(_) => vec![anonymous],
    };
    let mode = if connectors.len() > 1 { "mTLS" } else { "TLS" };
    let connector_of = |i: usize| connectors[i % connectors.len()].clone();

    let head = exchange(
        &connector_of(0),
        &addr,
        b"GET /v1/channels/stable/release.json HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        || {},
    )
    .await
    .context("reading the current manifest")?;
    let etag = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("etag")
                .then(|| value.trim().to_string())
        })
        .ok_or_else(|| anyhow!("no ETag on the manifest: {head}"))?;
    let request: Arc<[u8]> = format!(
        "GET /v1/channels/stable/release.json?wait={wait} HTTP/1.1\r\nHost: localhost\r\nIf-None-Match: {etag}\r\n\r\n"
    )
    .into_bytes()
    .into();

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let written = Arc::new(AtomicUsize::new(0));
    let reheld = Arc::new(AtomicUsize::new(0));
    let handshakes = Arc::new(std::sync::Mutex::new(Vec::with_capacity(agents)));
    let console_ramp0 = cpu_ticks(&console_pid);
    let ramp = Instant::now();
    for i in 0..agents {
        if i > 0 && i % RAMP_STEP == 0 {
            tokio::time::sleep(RAMP_PAUSE).await;
        }
        let (connector, addr, request, tx, written, reheld, handshakes) = (
            connector_of(i),
            addr.clone(),
            request.clone(),
            tx.clone(),
            written.clone(),
            reheld.clone(),
            handshakes.clone(),
        );
        tokio::spawn(async move {
            let connected = |took: Duration| {
                if let Ok(mut h) = handshakes.lock() {
                    h.push(took.as_secs_f64() * 1000.0);
                }
            };
            let done = || {
                written.fetch_add(1, Ordering::Relaxed);
            };
            let again = |n| {
                reheld.fetch_add(n, Ordering::Relaxed);
            };
            let outcome = match hold(&connector, &addr, &request, connected, done, again).await {
                Ok((at, head)) => {
                    Outcome::Status(at, head.lines().next().unwrap_or("").to_string())
                }
                Err(e) => Outcome::Failed(format!("{e:#}")),
            };
            let _ = tx.send(outcome);
        });
    }
    drop(tx);
    while written.load(Ordering::Relaxed) < agents && ramp.elapsed() < CONNECT_DEADLINE {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let held = written.load(Ordering::Relaxed);
    let console_ramp = cpu_ticks(&console_pid) - console_ramp0;
    println!(
        "ramp: {held} of {agents} held requests written in {:.1} s ({mode}, one connection each); holding {} s",
        ramp.elapsed().as_secs_f64(),
        settle.as_secs()
    );
    let mut times = handshakes.lock().map(|h| h.clone()).unwrap_or_default();
    times.sort_by(f64::total_cmp);
    let at = |p: f64| {
        times
            .get(((times.len() as f64 * p) as usize).min(times.len().saturating_sub(1)))
            .copied()
            .unwrap_or(f64::NAN)
    };
    println!(
        "handshake ({mode}): p50 {:.2} ms, p99 {:.2} ms (TCP + TLS connect, client side, ramp of {RAMP_STEP} per {RAMP_PAUSE:?})",
        at(0.5),
        at(0.99)
    );
    println!(
        "console CPU during the ramp ({mode}): {console_ramp} ticks = {:.2} ms per connection",
        10.0 * console_ramp as f64 / held.max(1) as f64
    );
    tokio::time::sleep(settle).await;
    println!(
        "held {} s: {} holds ended by the console's max wait (304) and were held again at once",
        settle.as_secs(),
        reheld.load(Ordering::Relaxed)
    );

    let mut early = Vec::new();
    while let Ok(outcome) = rx.try_recv() {
        early.push(outcome);
    }
    let (rss_held, _) = memory(&console_pid);
    let (console0, client0) = (cpu_ticks(&console_pid), cpu_ticks("self"));
    let publish_start = Instant::now();
    let out = Command::new(&publish[0])
        .args(&publish[1..])
        .output()
        .context("running the publish command")?;
    let published = Instant::now();
    if !out.status.success() {
        bail!(
            "the publish command failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let mut latencies = Vec::with_capacity(agents);
    let mut failures: std::collections::BTreeMap<String, usize> = Default::default();
    let deadline = tokio::time::Instant::now() + AFTER_PUBLISH;
    let mut received = early.len();
    loop {
        received += 1;
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(Outcome::Status(at, line))) if line.contains(" 200 ") => {
                latencies.push(at.saturating_duration_since(published).as_secs_f64());
            }
            Ok(Some(Outcome::Status(_, line))) => *failures.entry(line).or_default() += 1,
            Ok(Some(Outcome::Failed(e))) => *failures.entry(e).or_default() += 1,
            Ok(None) => break,
            Err(_) => {
                let missing = agents.saturating_sub(received - 1);
                *failures
                    .entry(format!(
                        "no response within {AFTER_PUBLISH:?} of the publish"
                    ))
                    .or_default() += missing;
                break;
            }
        }
    }
    let (console1, client1) = (cpu_ticks(&console_pid), cpu_ticks("self"));
    let (rss_after, hwm) = memory(&console_pid);
    latencies.sort_by(f64::total_cmp);
    let within = latencies.iter().filter(|&&l| l <= 1.0).count();
    let q = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(f64::NAN)
    };
    for outcome in &early {
        let what = match outcome {
            Outcome::Status(_, line) => line.clone(),
            Outcome::Failed(e) => e.clone(),
        };
        *failures
            .entry(format!("before the publish: {what}"))
            .or_default() += 1;
    }
    println!(
        "publish command took {:.3} s; times below are from its return (manifest in place)",
        (published - publish_start).as_secs_f64()
    );
    println!(
        "agents {agents}: learned (200) {}, within 1 s {within} = {:.2} %, failed or early {}",
        latencies.len(),
        100.0 * within as f64 / agents as f64,
        agents - latencies.len()
    );
    println!(
        "latency: p50 {:.3} s, p90 {:.3} s, p99 {:.3} s, max {:.3} s",
        q(0.5),
        q(0.9),
        q(0.99),
        q(1.0)
    );
    for (what, n) in failures.iter().take(5) {
        println!("failure: {n} x {what}");
    }
    println!(
        "console RSS: {rss_held:.1} MiB while holding, {rss_after:.1} MiB after, peak (VmHWM) {hwm:.1} MiB"
    );
    println!(
        "CPU during the burst (clock ticks, 100/s): console {}, this client {}",
        console1 - console0,
        client1 - client0
    );
    Ok(())
}
