//! `bankswap run`: the agent. It takes the root's lock, recovers, starts the
//! payload from the active bank, and loops: check → verify → schedule →
//! stage into the idle bank → swap → watch the trial → commit, or roll back
//! and mark the version bad (SPEC §5).

mod checker;
pub mod control;
mod core;
mod fetch;
mod schedule;

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use tracing::{info, warn};

use crate::config::AgentConfig;
use crate::error::UsageError;
use crate::logging;

/// How long shutdown waits for background work (a staging thread) to notice.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Runs the agent until SIGTERM or SIGINT.
pub fn run(config_path: &Path) -> anyhow::Result<()> {
    let config = AgentConfig::load(config_path)?;
    let console = config.console.clone().ok_or_else(|| {
        UsageError::new(format!(
            "config {}: `console` is required by run",
            config_path.display()
        ))
    })?;
    logging::init(&config.log, "info");
    // One thread: an idle agent should cost next to nothing; staging runs on a blocking thread.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(async {
        // SPEC §10: enroll once (no identity yet, a token configured); the
        // client of `Agent::start` then presents the certificate.
        if let Some(token) = config.enrollment_token_file.as_deref() {
            let http = fetch::client(&config)?;
            std::fs::create_dir_all(&config.root).context("creating the root")?;
            let id = crate::agent_id::ensure(&config.root).context("writing the agent id")?;
            // Never fatal: the payload runs whatever the console says; the
            // agent reports without a certificate (refused) until it has one.
            if let Err(e) =
                crate::identity::ensure(&http, &console, &config.root, &id, Some(token)).await
            {
                warn!(error = %format!("{e:#}"), "no agent certificate");
            }
        }
        let agent = core::Agent::start(config, console).await?;
        agent.run(shutdown_signal()).await
    });
    runtime.shutdown_timeout(SHUTDOWN_GRACE);
    info!("agent stopped");
    result
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the agent can still be stopped by SIGKILL; never return early.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: stopping"),
        _ = int.recv() => info!("SIGINT: stopping"),
    }
}
