//! The new build's self-update trial: a self-probe of the control socket
//! within the grace, then commit — or, on a failed probe, a missed grace or a
//! generation it could not adopt, an exec back to the previous build.

use std::path::PathBuf;

use bank_layout::AgentSlots;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{error, info, warn};

use super::hooks;
use super::{ExecPurpose, ExecTarget};
use crate::agent::core::Agent;
use crate::agent::self_update::fault;
use crate::control::{self, Request};

/// The new image's self-update trial: commit before `deadline`, or go back.
#[derive(Debug)]
pub struct AgentTrial {
    /// The attempt's nonce.
    pub attempt: String,
    /// The end of the grace.
    pub deadline: Instant,
    /// The build to go back to.
    pub previous_exe: PathBuf,
    /// The self-probe of the control socket, while it runs.
    pub probe: Option<JoinHandle<bool>>,
    /// Why the new build already failed (a generation it could not adopt):
    /// the trial then ends at once, by going back.
    pub failed: Option<String>,
}

impl Agent {
    /// The agent slots, when self-update is on and no staging holds them.
    pub(super) fn slots(&mut self) -> Option<&mut AgentSlots> {
        self.self_update.as_mut().and_then(|su| su.slots_mut())
    }

    /// Probes the control socket the way a client would: proves the socket,
    /// the core loop and the status path of the new image. Runs on a
    /// blocking thread, which forks nothing (the PDEATHSIG rule).
    pub(super) fn start_self_probe(&mut self) {
        let Some(trial) = &mut self.agent_trial else {
            return;
        };
        if trial.failed.is_some() {
            return; // going back anyway
        }
        if fault::armed("no-commit", Some(&self.identity.version)) {
            warn!("a test switch is set: not probing the control socket");
            return;
        }
        let root = self.config.root.clone();
        trial.probe = Some(tokio::task::spawn_blocking(
            move || matches!(control::request(&root, Request::Status), Ok(Some(r)) if r.ok),
        ));
    }

    /// The self-probe answered: commit the new build, or go back.
    pub(in crate::agent) async fn on_self_probed(&mut self, ok: bool) {
        if ok {
            let Some(trial) = self.agent_trial.take() else {
                return;
            };
            hooks::commit(self.slots(), &trial.attempt);
            info!(
                version = %self.identity.version,
                previous = trial.previous_exe.display().to_string(),
                "agent committed"
            );
        } else {
            self.bounce("its control socket did not answer".to_owned())
                .await;
        }
    }

    /// The grace ended before the new build committed (or it failed at once).
    pub(in crate::agent) async fn on_agent_trial_due(&mut self) {
        let why = self
            .agent_trial
            .as_mut()
            .and_then(|t| t.failed.take())
            .unwrap_or_else(|| "missed its grace".to_owned());
        self.bounce(why).await;
    }

    /// Execs the previous build back with a fresh hand-over; if even that
    /// fails, this build keeps running (and the attempt is recorded as failed).
    async fn bounce(&mut self, why: String) {
        let Some(trial) = self.agent_trial.take() else {
            return;
        };
        if let Some(probe) = trial.probe {
            probe.abort();
        }
        let reason = format!("agent {}: {why}", self.identity.version);
        error!(reason, "agent trial failed; restoring the previous build");
        let target = ExecTarget {
            exe: trial.previous_exe.clone(),
            purpose: ExecPurpose::Bounce {
                attempt: trial.attempt.clone(),
                reason: reason.clone(),
            },
        };
        let err = self.exec_in_place(&target);
        error!(error = %format!("{err:#}"), "could not exec the previous build; this one keeps running");
        let reason = format!("{reason}; going back failed: {err:#}");
        hooks::mark_bad(self.slots(), &trial.attempt, &reason);
    }
}
