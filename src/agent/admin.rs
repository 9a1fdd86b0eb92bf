//! Requests from the control socket: status, check now, and an admin's
//! rollback (which never waits for a download and keeps serving throughout).

use anyhow::anyhow;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::info;

use crate::agent::core::{Agent, Disk, Generation, Mode};
use crate::control::{Request, Response};
use crate::release::{self, ADMIN_REASON};

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
