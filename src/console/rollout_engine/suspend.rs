//! Suspended channels (`console channel suspend|resume CHANNEL`, SPEC §11):
//! a channel admits nobody while the payload's own services are
//! reconfigured, as the connector docs ask admins to do first.
//!
//! A suspension stops *admissions*: an agent not yet admitted keeps getting
//! the previous release; so does an admitted agent that has not taken the
//! release yet (it would otherwise start a swap in the middle of the
//! reconfiguration, which is what the admin asked to avoid). Agents whose
//! reports say they took the release are not affected: serving them the
//! older manifest would change nothing (they refuse it as not newer), and
//! their trial and commit go on as usual. The gate holds the rollout as if
//! paused (no wave opens), but failures still halt it. A complete rollout,
//! or a release without a plan, is served as usual: there is nobody left to
//! admit. The suspension is kept in `DATA/rollouts/suspended-channels.json`
//! and survives a restart of the console; `resume` lifts it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use tracing::{info, warn};

use super::{ActionError, Rollouts, STATE_DIR, SUSPENDED_FILE, Suspension, now_ms, rfc3339_ms};
use crate::channel::read_capped;

/// The largest suspension file read: a line per channel.
const MAX_SUSPENDED_BYTES: u64 = 1024 * 1024;

impl Rollouts {
    /// Suspends `channel` (`on`) or lifts its suspension; `by` names the
    /// admin. Saved before it returns. Refused when there is nothing to do.
    pub fn suspend(&self, channel: &str, on: bool, by: &str) -> Result<(), ActionError> {
        let now = now_ms();
        let snapshot = {
            let mut inner = self.lock();
            let was = inner.suspended.contains_key(channel);
            if was == on {
                return Err(ActionError::Suspension(format!(
                    "channel {channel} is {}suspended",
                    if was { "already " } else { "not " }
                )));
            }
            let text = if on {
                inner.suspended.insert(
                    channel.to_string(),
                    Suspension {
                        by: by.to_string(),
                        at: rfc3339_ms(now),
                    },
                );
                format!("channel suspended by {by}: nobody new is admitted")
            } else {
                inner.suspended.remove(channel);
                format!("channel resumed by {by}")
            };
            info!(channel, by, suspended = on, "channel suspension");
            if let Some(rollout) = inner
                .channels
                .get_mut(channel)
                .and_then(|c| c.rollout.as_mut())
            {
                rollout.event(channel, now, text);
            }
            inner.suspended.clone()
        };
        self.bump();
        self.save_suspended(&snapshot)
            .map_err(|e| ActionError::Suspension(format!("cannot save the suspension: {e:#}")))
    }

    /// `DATA/rollouts/suspended-channels.json`.
    fn suspended_file(&self) -> PathBuf {
        self.data.join(STATE_DIR).join(SUSPENDED_FILE)
    }

    /// Writes the suspended channels (crash-safe).
    fn save_suspended(&self, suspended: &BTreeMap<String, Suspension>) -> anyhow::Result<()> {
        std::fs::create_dir_all(self.data.join(STATE_DIR))?;
        let bytes = serde_json::to_vec_pretty(suspended)?;
        bank_layout::write_atomic(&self.suspended_file(), &bytes)?;
        Ok(())
    }

    /// Reads the suspended channels saved before (none if there is no file;
    /// an unreadable one is logged and kept on disk, and suspends nothing).
    pub(super) fn load_suspended(&self) {
        let path = self.suspended_file();
        let bytes = match read_capped(&path, MAX_SUSPENDED_BYTES) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                warn!(path = %path.display(), error = %e, "cannot read the suspended channels");
                return;
            }
        };
        match serde_json::from_slice(&bytes) {
            Ok(suspended) => self.lock().suspended = suspended,
            Err(e) => {
                warn!(path = %path.display(), error = %e, "suspended channels unreadable")
            }
        }
    }
}
