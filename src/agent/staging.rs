//! Staging: when the pending release is due, re-verify it and stream its
//! archive into the idle bank on a blocking thread that holds the root
//! meanwhile; when the thread hands the root back, swap or retry later.

use std::time::Duration;

use bank_layout::LayoutError;
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::agent::core::{Agent, Disk, Mode, Staged, wall_wait};
use crate::agent::delta_fetch::Download;
use crate::agent::fetch;
use crate::agent::memory::{release_cold_code, release_freed_memory};
use crate::agent::status::ErrorKind;
use crate::clock;
use crate::control::Request;
use crate::release::{StagePlan, verify};

/// A failed staging is tried again after this (or the poll interval, if longer).
pub(super) const STAGE_RETRY: Duration = Duration::from_secs(10);

impl Agent {
    /// When the pending release may be staged (never during a trial or another staging).
    pub(super) fn pending_due(&self) -> Option<Instant> {
        if let Mode::Trial(_) = self.mode {
            return None;
        }
        if self.agent_update_busy() {
            return None; // an agent build is staged or self-tested: never two updates at once
        }
        let pending = self.root()?.state().pending.as_ref()?;
        let wait = wall_wait(self.now(), clock::from_unix(pending.not_before));
        Instant::now().checked_add(wait) // None: beyond what the clock holds, never due
    }

    /// Re-verifies the pending release and hands the root to a staging thread.
    pub(super) fn start_staging(&mut self) {
        let Some(root) = self.root() else { return };
        let Some(pending) = root.state().pending.clone() else {
            return;
        };
        let now = self.now();
        let release = match verify(
            root,
            &self.setup,
            pending.manifest.as_bytes(),
            pending.signature.as_bytes(),
            now,
        ) {
            Ok(r) => r,
            Err(e) => {
                warn!(version = pending.version, sequence = pending.sequence, error = %e, "pending release no longer valid");
                if let Some(root) = self.root_mut() {
                    let _ = root.update_state(|s| s.pending = None);
                }
                let message = format!(
                    "release {} (sequence {}): {e}",
                    pending.version, pending.sequence
                );
                self.set_error(ErrorKind::Release, message);
                return;
            }
        };
        let plan = StagePlan::new(
            &self.setup,
            &release,
            pending.manifest.as_bytes(),
            pending.signature.as_bytes(),
            now,
        );
        if let Some(notice) = plan.space_notice(root) {
            // The core answers status from the last report while the staging thread
            // holds the root: say it before the bank is given up.
            self.publish_status();
            self.report.send_modify(|r| {
                if let Some(r) = r {
                    r.space_notice = Some(notice);
                }
            });
        }
        let Some(root) = self.root() else { return };
        let m = &release.manifest;
        let url = if m.artifact.path.starts_with("https://") {
            m.artifact.path.clone()
        } else {
            fetch::url(&self.console, &m.artifact.path)
        };
        info!(version = %m.version, sequence = m.sequence, url, size = m.artifact.size, bank = %root.idle_bank(), "staging");
        // The full artifact, or (with a file index) a delta: delta_fetch.rs chooses.
        let (download, cancel) = Download::open(
            self.http.clone(),
            &self.console,
            m,
            url,
            self.config.timeouts.clone(),
            self.config.update.delta_max_ratio,
        );
        self.disk = match std::mem::replace(&mut self.disk, Disk::Handover) {
            Disk::Idle(mut root) => Disk::Staging {
                thread: tokio::task::spawn_blocking(move || {
                    let result = download.stage(&mut root, plan);
                    (root, result)
                }),
                release: Box::new(release),
                cancel,
            },
            other => other,
        };
    }

    /// The staging thread handed the root back: swap to the new bank, or keep
    /// the release pending and try again later.
    pub(super) async fn on_staged(&mut self, (root, result): Staged) {
        let release = match std::mem::replace(&mut self.disk, Disk::Idle(root)) {
            Disk::Staging { release, .. } => Some(release),
            _ => None,
        };
        release_freed_memory();
        release_cold_code();
        let (version, sequence) = release
            .as_ref()
            .map(|r| (r.manifest.version.to_string(), r.manifest.sequence))
            .unwrap_or_default();
        if let Some(reply) = self.held_rollback.take() {
            // An admin rollback cancelled this staging: it comes first, and the
            // release stays pending (re-staged when due, unless marked bad).
            match result {
                Ok(bank) => {
                    info!(version, sequence, bank = %bank, "staged, but an admin rollback came first; not swapping");
                }
                Err(e) => self.staging_failed(&version, sequence, &e),
            }
            let response = self.on_control(Request::Rollback).await;
            let _ = reply.send(response);
            return;
        }
        match result {
            Ok(bank) => {
                info!(version, sequence, bank = %bank, "staged and verified");
                self.swap_to(bank).await;
            }
            Err(e) => self.staging_failed(&version, sequence, &e),
        }
    }

    fn staging_failed(&mut self, version: &str, sequence: u64, e: &LayoutError) {
        // With its causes: "reading the artifact failed" alone hides why.
        let e = with_causes(e);
        error!(version, sequence, error = %e, "staging failed; the active bank is untouched");
        let retry = self.now() + STAGE_RETRY.max(self.config.poll_interval);
        if let Some(root) = self.root_mut() {
            let _ = root.update_state(|s| {
                if let Some(p) = &mut s.pending {
                    p.not_before = clock::unix(retry);
                }
            });
        }
        self.set_error(
            ErrorKind::Staging,
            format!("staging {version} (sequence {sequence}): {e}"),
        );
    }
}

/// `error: cause: cause …`, one line: what a staging error says with everything under it.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // Some errors repeat their cause in their own text already.
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
