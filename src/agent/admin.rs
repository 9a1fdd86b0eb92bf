//! Requests from the control socket: status, check now, an admin's rollback
//! (which never waits for a download and keeps serving throughout), and a
//! restart of the payload with the running config (`restart-payload`).

use anyhow::anyhow;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::info;

use crate::agent::core::{Agent, Disk, Generation, Mode};
use crate::control::{Request, Response};
use crate::release::{self, ADMIN_REASON};
use crate::supervisor::Payload;

impl Agent {
    /// Answers a control request; an admin rollback during a staging cancels
    /// the staging and is answered when the staging thread hands the root back.
    pub(super) async fn on_control_request(
        &mut self,
        request: Request,
        reply: oneshot::Sender<Response>,
    ) {
        if let (Request::Rollback, Disk::Staging { cancel, .. }) = (&request, &self.disk) {
            if self.held_rollback.is_some() {
                let _ = reply.send(Response {
                    ok: false,
                    message: "an admin rollback is already under way".to_string(),
                    status: self.report.borrow().clone(),
                });
                return;
            }
            info!("cancelling the staging for an admin rollback");
            cancel.cancel();
            self.held_rollback = Some(reply);
            return;
        }
        let response = self.on_control(request).await;
        let _ = reply.send(response);
    }

    pub(super) async fn on_control(&mut self, request: Request) -> Response {
        let (ok, message) = match request {
            Request::Status => (true, String::new()),
            Request::Check => {
                self.check_now.notify_one();
                if let Some(su) = &self.self_update {
                    su.check_now();
                }
                (true, "checking now".to_string())
            }
            Request::Rollback => match self.admin_rollback().await {
                Ok(m) => (true, m),
                Err(e) => (false, format!("{e:#}")),
            },
            Request::RestartPayload => match self.restart_payload().await {
                Ok(m) => (true, m),
                Err(e) => (false, format!("restart-payload: {e:#}")),
            },
            Request::Reexec { binary, grace_ms } => match self.reexec_request(binary, grace_ms) {
                Ok(m) => (true, m),
                Err(e) => (false, format!("reexec: {e:#}")),
            },
        };
        self.save_last_error();
        self.publish_status();
        Response {
            ok,
            message,
            status: self.report.borrow().clone(),
        }
    }

    /// Starts a new generation of the active bank's payload with the running
    /// config, so that a reloaded `[payload]` env and user and `[[listen]]`
    /// sockets apply. With sockets it overlaps like a swap: the old generation
    /// serves until the new one is ready (or `[health] grace` passes); without,
    /// the old one stops first (the payload binds its own ports).
    async fn restart_payload(&mut self) -> anyhow::Result<String> {
        if matches!(self.mode, Mode::Trial(_)) {
            return Err(anyhow!(
                "a new version is on trial; it applies the running config already"
            ));
        }
        match &self.disk {
            Disk::Idle(root) if root.bank_record(root.active_bank()).is_none() => {
                return Err(anyhow!("no version is active"));
            }
            Disk::Idle(_) => {}
            Disk::Staging { .. } | Disk::Handover => {
                return Err(anyhow!(
                    "a release is being staged into the other bank; try again after it"
                ));
            }
        }
        // An older generation still draining goes now: only one overlaps.
        self.finish_draining().await;
        let old = match self.take_current() {
            Generation::Running(p) => Some(p),
            Generation::Down { .. } => None,
        };
        let overlap = !self.listeners.is_empty();
        let old = match old {
            Some(p) if !overlap => {
                p.stop().await;
                None
            }
            old => old,
        };
        self.restarts.reset();
        self.start_payload();
        let Generation::Running(new) = &self.current else {
            // It did not start: the old one keeps serving, the failure is in last_error.
            if let Some(p) = old {
                self.current = Generation::Running(p);
            }
            return Err(anyhow!("the payload did not start; see last_error"));
        };
        let bank = self.root().map(|r| r.active_bank().to_string());
        let message = format!(
            "restarted the payload: {} in {}, pid {}",
            new.version(),
            bank.unwrap_or_default(),
            new.pid()
        );
        info!(
            version = new.version(),
            pid = new.pid(),
            old_pid = old.as_ref().map(Payload::pid),
            "payload restarted by an admin"
        );
        if let Some(p) = old {
            let due = Instant::now() + self.config.health.grace;
            self.mode = Mode::Steady {
                draining: Some((p, due)),
            };
        }
        Ok(message)
    }

    async fn admin_rollback(&mut self) -> anyhow::Result<String> {
        let root = match &mut self.disk {
            Disk::Idle(root) => root,
            Disk::Staging { .. } => {
                // on_control_request cancels the staging first and comes back here after it.
                return Err(anyhow!("a release is being staged into the other bank"));
            }
            Disk::Handover => return Err(anyhow!("the root is busy")),
        };
        if root.bank_record(root.active_bank()).is_none() {
            return Err(anyhow!("no version is active"));
        }
        // The state flips first: when it is refused (nothing good to go back to),
        // nothing else changes, the trial included.
        let done = release::roll_back(root, ADMIN_REASON)?;
        self.restarts.reset();
        let draining = match std::mem::replace(&mut self.mode, Mode::Steady { draining: None }) {
            Mode::Trial(trial) => trial.draining,
            Mode::Steady { draining } => draining.map(|(old, _)| old),
        };
        let current = match self.take_current() {
            Generation::Running(p) => Some(p),
            Generation::Down { .. } => None,
        };
        match draining {
            // The previous generation still serves: it is the version rolled back
            // to, so it simply stays.
            Some(previous) => {
                self.current = Generation::Running(previous);
                if let Some(p) = current {
                    p.stop().await;
                }
            }
            None if self.listeners.is_empty() => {
                if let Some(p) = current {
                    p.stop().await;
                }
                self.start_payload();
            }
            None => {
                self.start_payload();
                if let Some(p) = current {
                    let due = Instant::now() + self.config.health.grace;
                    self.mode = Mode::Steady {
                        draining: Some((p, due)),
                    };
                }
            }
        }
        info!(from = done.left, to = done.running, bank = %done.to, "rolled back by an admin");
        Ok(done.to_string())
    }
}
