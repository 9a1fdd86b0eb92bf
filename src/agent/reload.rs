//! Reload without restart (SIGHUP, `systemctl reload bankswap`; SPEC §12).
//!
//! The new config is read and checked whole first — it parses and validates,
//! its trust roots and proxy make a client, its syslog target opens — and a
//! config that fails any of it is refused with one line naming the key,
//! leaving everything as it was. A good one is applied at once where it can
//! be: the core takes the trusted keys, the console URL, delays and the
//! payload and health settings; this side swaps the HTTPS client, the log
//! format and syslog target, and the checker's console, poll interval and
//! timeouts. `[health]` judges the next trial; `[payload]` (env, user) and
//! `[[listen]]` are used when the payload next starts (the next swap, or
//! `bankswap restart-payload`); `root`, `channel`, `[self_update]` and
//! `enrollment_token_file` wait for a restart of the agent; the log and
//! `status` say which. systemd hears `RELOADING=1` before and `READY=1` after.
//!
//! A changed `[[listen]]` is bound during the reload, so a port in use refuses
//! the reload (nothing changes); an address still listed keeps its socket.
//! The sockets dropped stay open for the generations started before the
//! reload and are closed once none of those runs.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, info, warn};

use crate::agent::checker::CheckerSettings;
use crate::agent::clients::Clients;
use crate::agent::core::{Agent, Generation, Mode};
use crate::agent::fetch::ClientSetup;
use crate::clock;
use crate::config::{AgentConfig, HealthConfig, ReloadPlan};
use crate::logging::{self, Syslog};
use crate::report::ReloadReport;
use crate::sd_notify::Notifier;

/// What the reloader hands the core: the new config, or why it was refused.
pub struct ReloadRequest {
    /// The checked config, or the one-line reason it was refused.
    pub config: Result<Box<AgentConfig>, String>,
    /// What the core applied, or why it refused the config (a `[[listen]]`
    /// socket that cannot be bound).
    pub reply: oneshot::Sender<Result<ReloadPlan, String>>,
}

/// The core's memory of reloads.
#[derive(Default)]
pub struct ReloadState {
    /// The last reload, as `status` shows it.
    last: Option<ReloadReport>,
    /// `[health]` from a reload during a trial: it judges the next one.
    next_health: Option<HealthConfig>,
    /// The pids of the generations that run with `[[listen]]` sockets a
    /// reload retired: those sockets close once none of them runs.
    retired_for: Vec<u32>,
}

/// A config that passed every check, with what it was checked with.
struct Checked {
    /// The config.
    config: AgentConfig,
    /// Its trust roots and proxy.
    client: ClientSetup,
    /// Its syslog target, opened.
    syslog: Option<Syslog>,
}

/// The SIGHUP side of a reload: checks the config, hands it to the core,
/// and applies what the core does not own.
pub struct Reloader {
    /// The config file (`run --config`).
    pub path: PathBuf,
    /// systemd's notification socket.
    pub notifier: Arc<Notifier>,
    /// The HTTPS client, rebuilt from the new trust roots and proxy.
    pub clients: Arc<Clients>,
    /// The checker's and reporter's console, poll interval and timeouts.
    pub settings: watch::Sender<CheckerSettings>,
    /// The same for the agent channel's checker (`[self_update] enabled`).
    pub agent_settings: Option<watch::Sender<CheckerSettings>>,
    /// Into the core.
    pub core: mpsc::Sender<ReloadRequest>,
}

impl Reloader {
    /// Reloads once (between `RELOADING=1` and `READY=1`); never fails the agent.
    pub async fn reload(&self) {
        self.notifier.reloading();
        let config = self.path.display().to_string();
        info!(config, "SIGHUP: reload requested");
        let checked = match self.check() {
            Ok(checked) => checked,
            Err(e) => {
                error!(config, error = %e, "reload refused: the config is broken; keeping the running one");
                self.tell_core(Err(e.clone())).await;
                self.notifier
                    .send(&format!("READY=1\nSTATUS=reload refused: {}", one_line(&e)));
                return;
            }
        };
        let Checked {
            config: new,
            client,
            syslog,
        } = checked;
        let plan = match self.tell_core(Ok(Box::new(new.clone()))).await {
            Some(Ok(plan)) => plan,
            Some(Err(e)) => {
                error!(config, error = %e, "reload refused; keeping the running config");
                self.notifier
                    .send(&format!("READY=1\nSTATUS=reload refused: {}", one_line(&e)));
                return;
            }
            None => return, // the core has stopped: the agent is stopping
        };
        logging::apply(new.log.format, syslog);
        if let Err(e) = self.clients.set_setup(client) {
            // Cannot happen: `check` built this very client.
            warn!(error = %format!("{e:#}"), "reload: the HTTPS client stays as it was");
        }
        for settings in std::iter::once(&self.settings).chain(&self.agent_settings) {
            settings.send_modify(|s| {
                if let Some(console) = &new.console {
                    s.console.clone_from(console);
                }
                s.poll_interval = new.poll_interval;
                s.timeouts = new.timeouts.clone();
            });
        }
        if plan.is_empty() {
            info!(config, "reload: nothing changed");
        }
        info!(
            config,
            applied = %plan.now.join(", "),
            next_trial = %plan.next_trial.join(", "),
            next_swap = %plan.next_swap.join(", "),
            "reload applied"
        );
        if !plan.next_swap.is_empty() {
            info!(
                keys = %plan.next_swap.join(", "),
                "reload: applies at the next swap or `bankswap restart-payload` (when the payload next starts); the running payload keeps the old values"
            );
        }
        if !plan.restart.is_empty() {
            warn!(
                keys = %plan.restart.join(", "),
                "reload: applies at the next restart of the agent (systemctl restart bankswap); the running values stay"
            );
        }
        self.notifier.send("READY=1\nSTATUS=reload applied");
    }

    /// Everything a config must pass before any of it is applied.
    fn check(&self) -> Result<Checked, String> {
        let config = AgentConfig::load(&self.path).map_err(|e| e.to_string())?;
        if config.console.is_none() {
            return Err(format!(
                "config {}: `console` is required by run",
                self.path.display()
            ));
        }
        let client = ClientSetup::new(&config).map_err(|e| format!("{e:#}"))?;
        self.clients
            .try_with(&client)
            .map_err(|e| format!("{e:#}"))?;
        let syslog = logging::connect_syslog(&config.log)?;
        Ok(Checked {
            config,
            client,
            syslog,
        })
    }

    /// The core's answer; `None` when the core has stopped.
    async fn tell_core(
        &self,
        config: Result<Box<AgentConfig>, String>,
    ) -> Option<Result<ReloadPlan, String>> {
        let (reply, answer) = oneshot::channel();
        self.core.send(ReloadRequest { config, reply }).await.ok()?;
        answer.await.ok()
    }
}

impl Agent {
    /// Applies a reload to what the core owns, and records it for `status`.
    pub(super) fn on_reload(&mut self, request: ReloadRequest) {
        let at = clock::rfc3339(self.now());
        let previous = self.reload.last.take().unwrap_or_default();
        let applied = request.config.and_then(|new| self.apply_reload(*new));
        self.reload.last = Some(match &applied {
            Ok(plan) => {
                let names = |keys: &[&str]| keys.iter().map(|k| k.to_string()).collect();
                ReloadReport {
                    at,
                    outcome: "applied".into(),
                    error: None,
                    applied: names(&plan.now),
                    next_trial: names(&plan.next_trial),
                    next_swap: names(&plan.next_swap),
                    restart: names(&plan.restart),
                }
            }
            Err(error) => ReloadReport {
                at,
                outcome: "refused".into(),
                error: Some(error.clone()),
                ..previous
            },
        });
        if applied.is_ok() {
            // New keys may accept the manifest the old ones refused.
            self.evaluate_latest();
        }
        let _ = request.reply.send(applied);
    }

    /// Applies `new` to what the core owns; a `[[listen]]` socket that cannot
    /// be bound refuses it whole, before anything changed.
    fn apply_reload(&mut self, new: AgentConfig) -> Result<ReloadPlan, String> {
        let plan = self.config.reload_plan(&new);
        if self.config.listen != new.listen {
            let older = self.generation_pids();
            let change = self
                .listeners
                .reconfigure(&new.listen)
                .map_err(|e| format!("[[listen]]: {e}"))?;
            info!(
                kept = %change.kept.join(", "),
                added = %change.added.join(", "),
                retired = %change.retired.join(", "),
                "reload: [[listen]] sockets ready for the next payload start"
            );
            if !change.retired.is_empty() {
                self.reload.retired_for.extend(older);
            }
        }
        let mut running = self.config.reloaded(new);
        if matches!(self.mode, Mode::Trial(_)) && running.health != self.config.health {
            // The trial under way is judged by the rules it started with.
            self.reload.next_health = Some(std::mem::replace(
                &mut running.health,
                self.config.health.clone(),
            ));
        }
        self.setup.trusted_keys.clone_from(&running.trusted_keys);
        self.setup.allow_in_place = running.update.allow_in_place;
        if let Some(console) = &running.console {
            self.console.clone_from(console);
        }
        self.config = running;
        Ok(plan)
    }

    /// The pids of every running generation (the active one and any draining).
    fn generation_pids(&self) -> Vec<u32> {
        let mut pids = Vec::new();
        if let Generation::Running(p) = &self.current {
            pids.push(p.pid());
        }
        match &self.mode {
            Mode::Steady {
                draining: Some((p, _)),
            } => pids.push(p.pid()),
            Mode::Trial(trial) => pids.extend(trial.draining.as_ref().map(|p| p.pid())),
            Mode::Steady { draining: None } => {}
        }
        pids
    }

    /// After each event: `[health]` waiting for the trial's end, and the
    /// `[[listen]]` sockets a reload retired, closed once no generation
    /// started before that reload runs.
    pub(super) fn settle_reload(&mut self) {
        self.apply_next_health();
        if !self.listeners.has_retired() {
            return;
        }
        let running = self.generation_pids();
        if self.reload.retired_for.iter().any(|p| running.contains(p)) {
            return;
        }
        self.reload.retired_for.clear();
        self.listeners.release_retired();
    }

    /// Once no trial runs, `[health]` from a reload during one takes over.
    fn apply_next_health(&mut self) {
        if matches!(self.mode, Mode::Trial(_)) {
            return;
        }
        if let Some(health) = self.reload.next_health.take() {
            info!("reload: the new [health] settings apply from now on");
            self.config.health = health;
        }
    }

    /// The last reload, for `status`.
    pub(super) fn reload_report(&self) -> Option<ReloadReport> {
        self.reload.last.clone()
    }
}

/// A status value must stay on one line: a newline would start another field.
fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}
