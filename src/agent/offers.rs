//! What the console offers: check outcomes, the channel's key rotation
//! record, the verification of the latest manifest against the current
//! state, and the schedule of a release.

use std::time::SystemTime;

use signing::{ReleaseError, VerifiedRelease};
use tracing::{error, info, warn};

use crate::agent::checker::CheckOutcome;
use crate::agent::core::{Agent, Disk, Mode};
use crate::agent::fetch::{Checked, Rotation};
use crate::agent::schedule;
use crate::agent::staging::STAGE_RETRY;
use crate::agent::status::ErrorKind;
use crate::release::{CLOCK_SKEW_WARNING, verify};
use crate::{clock, keyring};

/// The console's `Date` is written to state.json only when it moves the latest
/// known time on by this much: a check every few seconds must not mean a
/// state write every few seconds.
const DATE_RECORD_STEP: u64 = 60 * 60;

/// Whether a console `date` (unix seconds) is recorded over `latest`, with the
/// clock at `now`: not more than [`CLOCK_SKEW_WARNING`] ahead of the clock (a
/// console with a wrong clock cannot expire everything), and at least
/// [`DATE_RECORD_STEP`] past `latest`.
fn worth_recording(latest: Option<u64>, date: u64, now: u64) -> bool {
    date <= now.saturating_add(CLOCK_SKEW_WARNING.as_secs())
        && latest.is_none_or(|t| date >= t.saturating_add(DATE_RECORD_STEP))
}

impl Agent {
    pub(super) fn on_checked(&mut self, outcome: CheckOutcome) {
        self.last_check = Some(self.now());
        match outcome {
            Ok(Checked::Unchanged) => self.console_reachable(),
            Ok(Checked::Release {
                manifest,
                signature,
                rotation,
                date,
                ..
            }) => {
                self.console_reachable();
                if let Some(date) = date {
                    self.note_console_date(date);
                }
                if let Some(rotation) = rotation
                    && !self.apply_rotation(&rotation)
                {
                    return; // the manifest is not looked at under a refused record, as offline
                }
                self.latest = Some((manifest, signature));
                self.evaluate_latest();
            }
            Err(message) => {
                if self.console_up != Some(false) {
                    warn!(
                        error = message,
                        "console unreachable; the payload keeps running"
                    );
                }
                self.console_up = Some(false);
                let message = format!("checking {}: {message}", self.console);
                self.set_error(ErrorKind::Check, message);
            }
        }
    }

    /// Applies the channel's key rotation record to the root's ring before
    /// the manifest is verified (SPEC §13): a known record changes nothing, a
    /// new one that verifies is persisted in `ROOT/keys.json`. Returns false
    /// (and records the error) if the record is refused; nothing changes then.
    fn apply_rotation(&mut self, rotation: &Rotation) -> bool {
        let Some(root) = self.root() else {
            return false;
        };
        let applied = keyring::apply_rotation(
            root.dir(),
            &self.setup.channel,
            &self.setup.trusted_keys,
            &rotation.record,
            || Ok(rotation.signature.clone()),
        );
        match applied {
            Ok(_) => true,
            Err(e) => {
                let message = format!("rotation record from {}: {e:#}", self.console);
                if self.last_error.as_ref().map(|l| l.message.as_str()) != Some(&message) {
                    warn!(
                        error = format!("{e:#}"),
                        "key rotation record refused; the payload keeps running"
                    );
                }
                self.set_error(ErrorKind::Release, message);
                false
            }
        }
    }

    /// Records the console's `Date` as the latest known time, when it is not far
    /// ahead of the clock and moves that time on by at least [`DATE_RECORD_STEP`].
    fn note_console_date(&mut self, date: SystemTime) {
        let now = self.now();
        let Some(root) = self.root_mut() else { return };
        let date = clock::unix(date);
        if !worth_recording(root.state().latest_time, date, clock::unix(now)) {
            return;
        }
        if let Err(e) = root.update_state(|s| s.note_time(date)) {
            warn!(error = %e, "could not record the console's time");
        }
    }

    fn console_reachable(&mut self) {
        if self.console_up == Some(false) {
            info!(console = self.console, "console reachable again");
            self.clear_error(ErrorKind::Check);
        }
        self.console_up = Some(true);
    }

    /// Verifies the last manifest seen against the current state and schedules it.
    pub(super) fn evaluate_latest(&mut self) {
        if matches!(self.mode, Mode::Trial(_)) || matches!(self.disk, Disk::Staging { .. }) {
            return; // looked at again when the trial or the staging ends
        }
        let Some((manifest, signature)) = self.latest.clone() else {
            return;
        };
        let Some(root) = self.root() else { return };
        let now = self.now();
        match verify(root, &self.setup, &manifest, &signature, now) {
            Ok(release) => self.schedule(&release, &manifest, &signature),
            Err(ReleaseError::NotNewer { version, running }) if version == running => {
                self.clear_error(ErrorKind::Release);
            }
            // The console still offers the version this agent just rolled back
            // or gave up on: the refusal follows from the failure, which stays
            // the last error (its cause is what an operator needs; the bad
            // version is listed in `bad_versions` with the same reason).
            Err(ReleaseError::MarkedBad { .. }) if self.last_error_is_a_cause() => {}
            Err(e) => {
                let message = format!("release from {}: {e}", self.console);
                if self.last_error.as_ref().map(|l| l.message.as_str()) != Some(&message) {
                    warn!(error = %e, "release rejected; the payload keeps running");
                }
                self.set_error(ErrorKind::Release, message);
            }
        }
    }

    /// Records `release` as pending, at its rollout slot plus a random delay.
    fn schedule(&mut self, release: &VerifiedRelease, manifest: &[u8], signature: &[u8]) {
        let m = &release.manifest;
        let now = self.now();
        let scheduled = self
            .root()
            .and_then(|r| r.state().pending.as_ref())
            .filter(|p| p.sequence == m.sequence)
            .map(|p| clock::from_unix(p.not_before));
        if let Some(at) = scheduled {
            let slack = STAGE_RETRY.max(self.config.poll_interval);
            let (rollout, max_delay) = (m.rollout.as_ref(), self.config.max_delay);
            if !schedule::made_under_a_clock_ahead(at, now, rollout, max_delay, slack) {
                return; // already scheduled: a restart neither re-rolls nor forgets it
            }
            warn!(version = %m.version, not_before = %clock::rfc3339(at), "the schedule was made under a clock far ahead; deriving it again");
        }
        let not_before = schedule::not_before(
            now,
            m.rollout.as_ref(),
            &self.agent_id,
            m.sequence,
            self.config.max_delay,
            self.clock.random(),
        );
        let pending = bank_layout::Pending {
            version: m.version.to_string(),
            sequence: m.sequence,
            not_before: clock::unix(not_before),
            manifest: String::from_utf8_lossy(manifest).into_owned(),
            signature: String::from_utf8_lossy(signature).into_owned(),
        };
        info!(version = %m.version, sequence = m.sequence, not_before = %clock::rfc3339(not_before), "release scheduled");
        let Some(root) = self.root_mut() else { return };
        if let Err(e) = root.update_state(|s| s.pending = Some(pending)) {
            error!(error = %e, "could not save the schedule");
        }
        self.clear_errors();
    }
}

#[cfg(test)]
mod date_tests {
    use super::*;

    #[test]
    fn a_console_date_is_recorded_when_it_moves_time_on_and_is_not_far_ahead() {
        let now = 1_000_000;
        assert!(worth_recording(None, now, now));
        assert!(
            !worth_recording(Some(now), now + 10, now),
            "too small a step"
        );
        assert!(worth_recording(Some(now), now + DATE_RECORD_STEP, now));
        let far = now + CLOCK_SKEW_WARNING.as_secs() + 1;
        assert!(!worth_recording(None, far, now), "far ahead of the clock");
    }
}
