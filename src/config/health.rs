//! `[health]`: how a payload on trial is judged.

use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHealth {
    pub(super) grace: Option<String>,
    pub(super) max_failures: Option<u32>,
    pub(super) http: Option<String>,
    pub(super) watchdog: Option<String>,
    pub(super) notify: Option<bool>,
}

/// `[health]`.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthConfig {
    /// How long a new version must stay healthy before it is committed.
    pub grace: Duration,
    /// Failed probes (or exits) tolerated during the trial.
    pub max_failures: u32,
    /// An http(s) URL that must answer 2xx.
    pub http: Option<Url>,
    /// A payload that sends `WATCHDOG=1` must do so at least this often.
    pub watchdog: Option<Duration>,
    /// The payload must send `READY=1` within `grace` (recommended with `[[listen]]`
    /// sockets, where an HTTP probe may reach the previous generation).
    pub notify: bool,
}
