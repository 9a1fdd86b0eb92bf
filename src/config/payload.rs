//! `[payload]`: how the payload process is run.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPayload {
    pub(super) user: Option<String>,
    #[serde(default)]
    pub(super) env: BTreeMap<String, String>,
    pub(super) stop_timeout: Option<String>,
}

/// `[payload]`.
#[derive(Debug, Clone, PartialEq)]
pub struct PayloadConfig {
    /// User to run the payload as (root only).
    pub user: Option<String>,
    /// Extra environment.
    pub env: BTreeMap<String, String>,
    /// Time between SIGTERM and SIGKILL when stopping.
    pub stop_timeout: Duration,
}
