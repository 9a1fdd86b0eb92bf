//! `bankswap run`: the agent. It takes the root's lock, recovers, starts the
//! payload from the active bank, and loops: check → verify → schedule →
//! stage into the idle bank → swap → watch the trial → commit, or roll back
//! and mark the version bad (SPEC §5).

mod checker;
mod control_socket;
mod core;
mod fetch;
mod schedule;

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use tracing::info;

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
