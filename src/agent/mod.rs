//! `bankswap run`: the agent. It takes the root's lock, recovers, starts the
//! payload from the active bank, and loops: check → verify → schedule →
//! stage into the idle bank → swap → watch the trial → commit, or roll back
//! and mark the version bad.
//!
//! Layers, top down: this file builds the world (root, sockets, HTTP client,
//! clock, background tasks) and hands it to `core::run`; the core's transitions
//! live one file per concern; `verdict.rs` is the trial's pure decision.

mod admin;
mod checker;
mod clients;
mod control_socket;
mod core;
pub mod delta_fetch;
pub mod fetch;
mod generation;
mod handover;
mod inherit;
pub mod launch;
mod memory;
mod offers;
mod reexec;
mod reload;
mod schedule;
pub mod self_update;
mod staging;
mod status;
mod trial;
mod verdict;
mod world;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use tokio::sync::{Notify, mpsc, watch};
use tracing::{info, warn};

use bank_layout::AgentSlots;

use crate::agent::checker::CheckerSettings;
use crate::agent::clients::Clients;
use crate::agent::reload::Reloader;
use crate::agent::self_update::{Identity, SelfUpdate};
use crate::agent::world::{Links, SystemClock, World};
use crate::config::AgentConfig;
use crate::error::UsageError;
use crate::logging;
use crate::release::open_root_waiting;
use crate::sd_notify::{self, Notifier};
use crate::supervisor::Listeners;
use crate::{agent_id, clock};

/// How long `run` waits for a root locked by a short-lived command (`status`,
/// `rollback` offline); a lock held longer is another agent.
const LOCK_WAIT: Duration = Duration::from_secs(2);

/// How often the agent looks whether its certificate is due for renewal: a
/// comparison in memory, no I/O. A failed renewal is tried again this much later.
const RENEWAL_LOOK: Duration = Duration::from_secs(10);

/// How long shutdown waits for background work (a staging thread) to notice.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Runs the agent until SIGTERM or SIGINT; SIGHUP reloads the config.
///
/// A start after an in-place exec (`BANKSWAP_HANDOVER_*` set for this pid)
/// takes the hand-over first, before anything opens an fd: the inherited
/// root lock, sockets and pipes, and the payload generations to adopt. A
/// hand-over that fails any check is logged as one line, its fds are closed
/// and leftover payload groups killed, and the agent starts cold.
pub fn run(config_path: &Path) -> anyhow::Result<()> {
    memory::use_one_arena();
    let config = AgentConfig::load(config_path)?;
    let received = handover::take_from_env(&config.root, config_path);
    if received.is_err() {
        // Before anything else opens an fd: the numbers closed are the inherited ones.
        handover::abandon();
    }
    let console = config.console.clone().ok_or_else(|| {
        UsageError::new(format!(
            "config {}: `console` is required by run",
            config_path.display()
        ))
    })?;
    logging::init(&config.log, "info");
    let received = match received {
        Ok(received) => received,
        Err(e) => {
            tracing::error!("error: hand-over: {e}; starting cold");
            None
        }
    };
    let (plan, inherited) = match received {
        Some(r) => {
            let (plan, fds) = reexec::AdoptPlan::split(r);
            (Some(plan), Some(fds))
        }
        None => (None, None),
    };
    // A newer committed agent build in the root runs instead of this one (no
    // return then); only on a cold start: a hand-over names its target build.
    if plan.is_none() {
        launch::launch(&config, LOCK_WAIT);
    }
    // One thread, the main thread: an idle agent should cost next to nothing
    // (staging runs on a blocking thread), and it is the invariant of
    // `reexec.rs`: payloads are forked from the main thread and the agent
    // execs in place only from it (a child's PR_SET_PDEATHSIG fires when the
    // forking thread ends, and execve ends every other thread).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let notifier = Arc::new(Notifier::from_env());
    let result = runtime.block_on(async {
        // Enroll once (no identity yet, a token configured); the client built
        // for the world then presents the certificate.
        if let Some(token) = config.enrollment_token_file.as_deref() {
            let http = fetch::client(&config)?;
            std::fs::create_dir_all(&config.root).context("creating the root")?;
            let id = agent_id::ensure(&config.root).context("writing the agent id")?;
            // Never fatal: the payload runs whatever the console says; the
            // agent reports without a certificate (refused) until it has one.
            if let Err(e) =
                crate::identity::ensure(&http, &console, &config.root, &id, Some(token)).await
            {
                warn!(error = %format!("{e:#}"), "no agent certificate");
            }
        }
        let receiving = plan.as_ref().and_then(reexec::AdoptPlan::attempt);
        let (world, links, reloader, self_update) = production_world(
            &config,
            console,
            config_path,
            &notifier,
            inherited,
            receiving,
        )?;
        sd_notify::serve_agent(&notifier, links.report.subscribe());
        core::run_with(config, world, links, self_update, signals(reloader), plan).await
    });
    runtime.shutdown_timeout(SHUTDOWN_GRACE);
    info!("agent stopped");
    result
}

/// The real world: the locked root, the `[[listen]]` sockets, the HTTPS client,
/// the system clock, and the checker, reporter, renewal and control socket as
/// tasks; the reloader that SIGHUP drives; and self-update, when enabled.
fn production_world(
    config: &AgentConfig,
    console: String,
    config_path: &Path,
    notifier: &Arc<Notifier>,
    inherited: Option<reexec::WorldFds>,
    receiving: Option<String>,
) -> anyhow::Result<(World, Links, Reloader, Option<SelfUpdate>)> {
    let (root, listeners, control_fd) = match inherited {
        Some(fds) => {
            let (root, recoveries) = bank_layout::Root::adopt(&config.root, fds.lock)
                .with_context(|| format!("root {}", config.root.display()))?;
            for note in recoveries {
                warn!(root = %config.root.display(), "recovered: {note}");
            }
            let listeners = Listeners::from_inherited(fds.listeners, &config.listen)
                .context("taking over the inherited [[listen]] sockets")?;
            (root, listeners, Some(fds.control))
        }
        None => {
            let root = open_root_waiting(&config.root, LOCK_WAIT)?;
            let listeners =
                Listeners::bind(&config.listen).context("binding [[listen]] sockets")?;
            (root, listeners, None)
        }
    };
    let identity = Identity::of_self(root.dir());
    let agent_id = agent_id::ensure(root.dir()).context("writing the agent id")?;
    let stored = crate::identity::load(root.dir())?;
    // Every request takes the latest client: after a renewal or a reload, the
    // new certificate and settings are used from the next request on.
    let clients = Arc::new(Clients::new(
        fetch::ClientSetup::new(config)?,
        stored.clone(),
    )?);
    let (settings, settings_rx) = watch::channel(CheckerSettings {
        console: console.clone(),
        channel: config.channel.clone(),
        agent_id: agent_id.clone(),
        poll_interval: config.poll_interval,
        timeouts: config.timeouts.clone(),
    });
    if let Some(stored) = stored {
        tokio::spawn(renew_when_due(
            clients.clone(),
            settings_rx.clone(),
            root.dir().to_path_buf(),
            stored,
        ));
    }
    let (report, report_rx) = watch::channel(None);
    let (check_tx, checks) = mpsc::channel(4);
    let (control_tx, control) = mpsc::channel(8);
    let (reload_tx, reloads) = mpsc::channel(1);
    let check_now = Arc::new(Notify::new());
    let control_fd = match control_fd {
        Some(fd) => control_socket::serve_inherited(fd, control_tx)?,
        None => control_socket::serve(root.dir(), control_tx)?,
    };
    tokio::spawn(checker::run_checker(
        clients.subscribe(),
        settings_rx.clone(),
        check_now.clone(),
        check_tx,
    ));
    // The agent channel's checker follows reloads of the console, poll and timeouts too.
    let mut agent_settings = None;
    let self_update = if config.self_update.enabled {
        let (mut slots, notes) =
            AgentSlots::open(&root, receiving.as_deref()).context("opening the agent slots")?;
        for note in notes {
            warn!(root = %root.dir().display(), "recovered: {note}");
        }
        launch::launched_build_serves(&mut slots, &identity);
        let (agent_tx, agent_checks) = mpsc::channel(4);
        // Its own: one permit per checker, both woken by `bankswap check`.
        let agent_check_now = Arc::new(Notify::new());
        let (sender, agent_settings_rx) = watch::channel(CheckerSettings {
            channel: config.self_update.channel.clone(),
            ..settings.borrow().clone()
        });
        agent_settings = Some(sender);
        tokio::spawn(checker::run_checker(
            clients.subscribe(),
            agent_settings_rx,
            agent_check_now.clone(),
            agent_tx,
        ));
        Some(SelfUpdate::new(
            config_path.to_path_buf(),
            config.self_update.clone(),
            &config.trusted_keys,
            slots,
            identity,
            agent_checks,
            agent_check_now,
        ))
    } else {
        if identity.slot.is_some()
            && let Ok((mut slots, _)) = AgentSlots::open(&root, None)
        {
            launch::launched_build_serves(&mut slots, &identity);
        }
        None
    };
    tokio::spawn(checker::run_reporter(
        clients.subscribe(),
        settings_rx,
        agent_id.clone(),
        report_rx,
    ));
    tokio::spawn(async {
        tokio::time::sleep(memory::COLD_CODE_AFTER_START).await;
        memory::release_cold_code();
    });
    info!(agent_id, root = %config.root.display(), console, channel = config.channel, "agent starting");
    let world = World {
        root,
        agent_id,
        console,
        listeners,
        http: clients.subscribe(),
        clock: Arc::new(SystemClock),
        exec: reexec::ExecContext {
            config_path: config_path.to_path_buf(),
            control_fd: Some(control_fd),
        },
    };
    let links = Links {
        checks,
        control,
        check_now,
        report,
        reloads,
    };
    let reloader = Reloader {
        path: config_path.to_path_buf(),
        notifier: notifier.clone(),
        clients,
        settings,
        agent_settings,
        core: reload_tx,
    };
    Ok((world, links, reloader, self_update))
}

/// Renews the agent certificate once it is due (two thirds of its lifetime,
/// [`crate::identity::renewal_due`]) and switches every user of the HTTPS
/// client to one presenting the new certificate (staging included). A failed
/// renewal is logged and tried again at the next look; the old certificate
/// stays until a new one is accepted.
async fn renew_when_due(
    clients: Arc<Clients>,
    settings: watch::Receiver<CheckerSettings>,
    root: PathBuf,
    mut stored: crate::identity::Stored,
) {
    loop {
        tokio::time::sleep(RENEWAL_LOOK).await;
        if !stored.is_renewal_due(SystemTime::now()) {
            continue;
        }
        let console = settings.borrow().console.clone();
        let renewed = crate::identity::renew(|| clients.builder(), &console, &root, &stored).await;
        let fresh = match renewed {
            Ok(fresh) => fresh,
            Err(e) => {
                warn!(error = %format!("{e:#}"), "renewing the agent certificate failed; trying again");
                continue;
            }
        };
        if let Err(e) = clients.set_identity(fresh.clone()) {
            warn!(error = %format!("{e:#}"), "the renewed certificate is used from the next start");
        }
        info!(
            not_after = %clock::rfc3339(clock::from_unix(fresh.not_after)),
            "agent certificate renewed"
        );
        stored = fresh;
    }
}

/// Resolves on SIGTERM or SIGINT (and tells systemd it is stopping). SIGHUP
/// reloads the config ([`Reloader`]), without stopping.
async fn signals(reloader: Reloader) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        // Without signal handlers the agent can still be stopped by SIGKILL; never return early.
        return std::future::pending().await;
    };
    // The handlers exist: a stop signal blocked across an in-place exec is delivered now.
    reexec::watch_stop_signals();
    reexec::unblock_stop_signals();
    loop {
        tokio::select! {
            _ = term.recv() => info!("SIGTERM: stopping"),
            _ = int.recv() => info!("SIGINT: stopping"),
            _ = hup.recv() => {
                reloader.reload().await;
                continue;
            }
        }
        reloader.notifier.stopping();
        return;
    }
}
