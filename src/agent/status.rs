//! The agent's status: the last error with its kind (cleared by a later
//! success of that kind, never by matching text), and the report handed to the
//! reporter and the control socket after every event.

use tracing::{error, warn};

use crate::agent::core::{Agent, Disk};
use crate::clock;
use crate::release;
use crate::report::StatusReport;

/// What kind of work failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Asking the console (cleared when it answers again).
    Check,
    /// A release the console offers was refused (cleared when the console offers the running one).
    Release,
    /// Staging or activating a release (cleared by a later schedule or commit).
    Staging,
    /// A trial failed and was rolled back (cleared by a later schedule or commit).
    Trial,
    /// The committed payload keeps failing (cleared once it runs long enough).
    Payload,
    /// Recorded by an earlier run of the agent, whose kind `state.json` does not keep.
    Earlier,
}

impl ErrorKind {
    /// The name in `status --json` (`last_error_kind`) and reports.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Check => "check",
            ErrorKind::Release => "release",
            ErrorKind::Staging => "staging",
            ErrorKind::Trial => "trial",
            ErrorKind::Payload => "payload",
            ErrorKind::Earlier => "earlier",
        }
    }
}

/// The last error: what failed and how it was said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastError {
    /// What kind of work failed.
    pub kind: ErrorKind,
    /// One line, as `status` shows it.
    pub message: String,
}

impl LastError {
    /// An error found in `state.json` at start.
    pub fn earlier(message: String) -> LastError {
        LastError {
            kind: ErrorKind::Earlier,
            message,
        }
    }
}

impl Agent {
    /// While a staging thread holds the root: the last report, with the
    /// download's progress and the last reload brought up to date.
    fn publish_staging_progress(&mut self) {
        let Disk::Staging { cancel, .. } = &self.disk else {
            return;
        };
        let progress = cancel.progress();
        let reload = self.reload_report();
        self.report.send_if_modified(|current| {
            let Some(report) = current else { return false };
            let before = report.clone();
            if let Some(pending) = &mut report.pending {
                pending.progress.clone_from(&progress);
            }
            report.reload = reload;
            *report != before
        });
    }

    /// Records an error of `kind` (saved to `state.json` after the event).
    pub(super) fn set_error(&mut self, kind: ErrorKind, message: String) {
        self.last_error = Some(LastError { kind, message });
    }

    /// A success of `kind`: clears the last error if it is of that kind.
    pub(super) fn clear_error(&mut self, kind: ErrorKind) {
        if self.last_error.as_ref().is_some_and(|e| e.kind == kind) {
            self.last_error = None;
        }
    }

    /// Whether the last error is a failure of this agent's own work (a trial,
    /// a staging, the payload, or one recorded by an earlier run): the cause
    /// that a later "marked bad" refusal must not hide.
    pub(super) fn last_error_is_a_cause(&self) -> bool {
        self.last_error.as_ref().is_some_and(|e| {
            matches!(
                e.kind,
                ErrorKind::Trial | ErrorKind::Staging | ErrorKind::Payload | ErrorKind::Earlier
            )
        })
    }

    /// A success of the whole cycle (a schedule, a commit): clears any error.
    pub(super) fn clear_errors(&mut self) {
        self.last_error = None;
    }

    /// Keeps the last error in `state.json` (written only when it changes, and
    /// only while the core holds the root: a staging's end saves it).
    pub(super) fn save_last_error(&mut self) {
        let message = self.last_error.as_ref().map(|e| e.message.clone());
        let Some(root) = self.root_mut() else { return };
        if root.state().last_error == message {
            return;
        }
        if let Err(e) = root.update_state(|s| s.last_error = message) {
            error!(error = %e, "could not save the last error");
        }
    }

    /// Recomputes the status (when the root is here) and hands it to the reporter.
    pub(super) fn publish_status(&mut self) {
        let Some(root) = self.root() else {
            self.publish_staging_progress();
            return;
        };
        let mut report = StatusReport::new(
            &root.dir().display().to_string(),
            Some(self.agent_id.clone()),
            root.state(),
        );
        report.channel = Some(self.setup.channel.clone());
        report.last_check = self.last_check.map(clock::rfc3339);
        report.last_error = self.last_error.as_ref().map(|e| e.message.clone());
        report.last_error_kind = self.last_error.as_ref().map(|e| e.kind.name().to_string());
        report.restarts = self.restarts.report().cloned();
        report.clock_warning = release::clock_warning(root.state(), self.now());
        report.reload = self.reload_report();
        report.last_staging = crate::agent::delta_fetch::last_staging(root.dir());
        self.fill_agent_status(&mut report);
        self.report.send_if_modified(|current| {
            if let Some(warning) = &report.clock_warning
                && current.as_ref().is_none_or(|c| c.clock_warning.is_none())
            {
                warn!("{warning}");
            }
            let changed = current.as_ref() != Some(&report);
            *current = Some(report);
            changed
        });
    }
}
