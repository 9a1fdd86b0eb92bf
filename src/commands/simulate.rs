//! `bankswap simulate-agents` (hidden, for tests and `scripts/bench/rollout.sh`):
//! many lightweight agents in one process, each speaking to a console exactly
//! as `bankswap run` does — the agent's own check (`agent::fetch::check`:
//! held requests with `If-None-Match`, `wait` and `agent_id`), the signing
//! crate's `verify_release`, and `WireReport`s POSTed to the report route —
//! but with the payload pretended: a release "installs" at once, stays on
//! trial for `--trial`, then commits, or rolls back if its version is listed
//! in `--fail`. A fleet of hundreds fits on a small machine, where hundreds of
//! real agents (each a supervisor with its root and payload) do not.
//!
//! Each step is one JSON line on stdout, `{"t_ms", "agent", "event",
//! "version", "sequence"}` with `event` one of `received`, `committed`,
//! `failed`: what tests and the benchmark measure.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use bank_layout::BadVersion;
use semver::Version;
use signing::{Expectations, PublicKey, ReleaseError, verify_release};
use tokio_util::sync::CancellationToken;

use crate::agent::fetch::{self, Checked};
use crate::cli::SimulateArgs;
use crate::config::{Timeouts, load_public_key};
use crate::console::admin_client::https_client_builder;
use crate::error::UsageError;
use crate::report::WireReport;

/// First pause after a failed check; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);

/// The longest pause between failed checks or reports.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Agents started together, every [`STARTUP_PAUSE`]: a thousand TLS
/// handshakes at the same instant overflow the console's listen backlog,
/// which real fleets (started at different times) never do.
const STARTUP_BATCH: u32 = 50;

/// The pause between two batches of agents starting.
const STARTUP_PAUSE: Duration = Duration::from_millis(50);

/// Runs the simulated fleet until SIGTERM/SIGINT (or `--for`).
pub fn run(args: &SimulateArgs) -> anyhow::Result<()> {
    let keys = args
        .trust
        .iter()
        .map(|k| load_public_key(k, std::path::Path::new(".")))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| UsageError::new(format!("--trust: {e}")))?;
    let version = Version::parse(&args.version)
        .map_err(|e| UsageError::new(format!("--version {}: {e}", args.version)))?;
    let fail = args
        .fail
        .iter()
        .map(|v| Version::parse(v).map_err(|e| UsageError::new(format!("--fail {v}: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let trial = humantime::parse_duration(&args.trial)
        .map_err(|e| UsageError::new(format!("--trial {}: {e}", args.trial)))?;
    let wait = humantime::parse_duration(&args.wait)
        .map_err(|e| UsageError::new(format!("--wait {}: {e}", args.wait)))?;
    let http = https_client_builder(args.ca_cert.as_deref())?
        .connect_timeout(Timeouts::default().connect)
        .build()
        .context("building the HTTPS client")?;
    let fleet = Arc::new(Fleet {
        http,
        console: args.console.clone(),
        channel: args.channel.clone(),
        keys,
        fail,
        trial,
        wait,
        timeouts: Timeouts::default(),
        stop: CancellationToken::new(),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let stop = fleet.stop.clone();
        let mut agents = Vec::new();
        for n in 0..args.agents {
            if n > 0 && n % STARTUP_BATCH == 0 {
                tokio::time::sleep(STARTUP_PAUSE).await;
            }
            let agent = Agent {
                id: format!("{}-{n:05}", args.prefix),
                version: version.clone(),
                sequence: args.sequence,
                bad: Vec::new(),
                etag: None,
            };
            agents.push(tokio::spawn(agent.run(fleet.clone(), stop.clone())));
        }
        let limit = args
            .r#for
            .as_deref()
            .map(humantime::parse_duration)
            .transpose()
            .map_err(|e| UsageError::new(format!("--for: {e}")))?;
        tokio::select! {
            () = shutdown() => {}
            () = async {
                match limit {
                    Some(limit) => tokio::time::sleep(limit).await,
                    None => std::future::pending().await,
                }
            } => {}
        }
        stop.cancel();
        for agent in agents {
            let _ = agent.await;
        }
        Ok::<_, anyhow::Error>(())
    })
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// What every simulated agent shares.
struct Fleet {
    /// The HTTPS client (one connection pool for all).
    http: reqwest::Client,
    /// The console's base URL.
    console: String,
    /// The channel followed.
    channel: String,
    /// Trusted keys.
    keys: Vec<PublicKey>,
    /// Versions whose trial fails.
    fail: Vec<Version>,
    /// Time on trial before the verdict.
    trial: Duration,
    /// The push wait asked of the console.
    wait: Duration,
    /// Request deadlines (the agent's defaults).
    timeouts: Timeouts,
    /// Cancelled when the fleet stops.
    stop: CancellationToken,
}

/// One simulated agent.
struct Agent {
    /// Its id.
    id: String,
    /// The version it runs.
    version: Version,
    /// The highest sequence it accepted.
    sequence: u64,
    /// Versions it marked bad.
    bad: Vec<BadVersion>,
    /// The ETag of the last manifest.
    etag: Option<String>,
}

impl Agent {
    async fn run(mut self, fleet: Arc<Fleet>, stop: CancellationToken) {
        self.report(&fleet, "committed", None).await;
        let mut backoff = FIRST_BACKOFF;
        loop {
            let checked = tokio::select! {
                () = stop.cancelled() => return,
                c = fetch::check(&fleet.http, &fleet.console, &fleet.channel, Some(&self.id),
                                 self.etag.as_deref(), fleet.wait, &fleet.timeouts) => c,
            };
            match checked {
                Ok(Checked::Unchanged) => backoff = FIRST_BACKOFF,
                Ok(Checked::Release {
                    manifest,
                    signature,
                    etag,
                    ..
                }) => {
                    backoff = FIRST_BACKOFF;
                    self.etag = etag;
                    self.offered(&fleet, &manifest, &signature).await;
                }
                Err(_) => {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// A manifest came: verified as the agent does, then "installed".
    async fn offered(&mut self, fleet: &Fleet, manifest: &[u8], signature: &[u8]) {
        // Verified in a block: the expectations (a non-Send closure) end before any await.
        let verified = {
            let expect = Expectations {
                trusted_keys: &fleet.keys,
                revoked_keys: &[],
                product: None,
                channel: &fleet.channel,
                highest_sequence: self.sequence,
                running_version: Some(&self.version),
                marked_bad: &crate::release::marks(&self.bad),
                now: SystemTime::now(),
            };
            verify_release(manifest, signature, &expect)
        };
        let release = match verified {
            Ok(release) => release.manifest,
            Err(ReleaseError::NotNewer { .. } | ReleaseError::MarkedBad { .. }) => return,
            Err(e) => {
                self.emit("refused", &e.to_string(), 0);
                return;
            }
        };
        let (version, sequence) = (release.version.clone(), release.sequence);
        self.emit("received", &version.to_string(), sequence);
        self.sequence = sequence;
        let old = std::mem::replace(&mut self.version, version.clone());
        self.report(fleet, "trial", None).await;
        tokio::time::sleep(fleet.trial).await;
        if fleet.fail.contains(&version) {
            self.version = old;
            self.bad.push(BadVersion {
                version: version.to_string(),
                sequence,
                reason: "simulated payload exited at once".into(),
            });
            let cause =
                format!("{version} rolled back: simulated payload exited at once (exit status: 1)");
            self.report(fleet, "committed", Some(cause)).await;
            self.emit("failed", &version.to_string(), sequence);
        } else {
            self.report(fleet, "committed", None).await;
            self.emit("committed", &version.to_string(), sequence);
        }
    }

    /// POSTs the agent's report, retried with backoff until the console
    /// takes it (the gate needs it), as long as the fleet runs.
    async fn report(&self, fleet: &Fleet, phase: &str, trial_error: Option<String>) {
        let url = fetch::url(&fleet.console, &format!("agents/{}/report", self.id));
        let body = WireReport {
            version: Some(self.version.to_string()),
            bank: Some("Bank1".into()),
            phase: Some(phase.into()),
            pending: None,
            last_error_kind: trial_error.as_ref().map(|_| "trial".to_string()),
            last_error: trial_error,
            previous_version: None,
            sequence: Some(self.sequence),
            restarts: None,
            channel: Some(fleet.channel.clone()),
            ..WireReport::default()
        };
        let mut backoff = FIRST_BACKOFF;
        loop {
            let sent = fleet
                .http
                .post(&url)
                .timeout(fleet.timeouts.request)
                .json(&body)
                .send()
                .await;
            if sent.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            if fleet.stop.is_cancelled() {
                return;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// One JSON line on stdout.
    fn emit(&self, event: &str, version: &str, sequence: u64) {
        let t_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let line = serde_json::json!({
            "t_ms": t_ms, "agent": self.id, "event": event,
            "version": version, "sequence": sequence,
        });
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}
