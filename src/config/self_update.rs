//! `[self_update]`: whether and how the agent updates itself (SPEC §9).

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use signing::PublicKey;

use super::values::{check_channel, duration, load_public_key};

/// The channel agent builds are published on unless `[self_update] channel` says otherwise.
pub const DEFAULT_SELF_UPDATE_CHANNEL: &str = "bankswap";
/// How long a new agent build has to adopt the payload, answer and report.
pub const DEFAULT_SELF_UPDATE_GRACE: Duration = Duration::from_secs(30);
/// How long a staged agent build's `--self-test` may take.
pub const DEFAULT_SELF_TEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSelfUpdate {
    pub(super) enabled: Option<bool>,
    pub(super) channel: Option<String>,
    pub(super) trusted_keys: Option<Vec<String>>,
    pub(super) grace: Option<String>,
    pub(super) self_test_timeout: Option<String>,
}

/// `[self_update]`.
#[derive(Debug, Clone, PartialEq)]
pub struct SelfUpdateConfig {
    /// Whether the agent follows its own channel at all (default off).
    pub enabled: bool,
    /// The channel agent builds come from.
    pub channel: String,
    /// Keys trusted for agent builds; `None` = the agent's `trusted_keys`.
    pub trusted_keys: Option<Vec<PublicKey>>,
    /// The new build's trial: it must adopt, answer and report within this.
    pub grace: Duration,
    /// Bound of a staged build's `--self-test`.
    pub self_test_timeout: Duration,
}

impl SelfUpdateConfig {
    pub(super) fn parse(raw: RawSelfUpdate, base: &Path) -> Result<SelfUpdateConfig, String> {
        let channel = raw
            .channel
            .unwrap_or_else(|| DEFAULT_SELF_UPDATE_CHANNEL.to_string());
        check_channel(&channel).map_err(|e| format!("[self_update] {e}"))?;
        let trusted_keys = match raw.trusted_keys {
            None => None,
            Some(keys) if keys.is_empty() => {
                return Err("[self_update] trusted_keys is empty: remove it to use the agent's trusted_keys, or add a key".into());
            }
            Some(keys) => Some(
                keys.iter()
                    .map(|k| load_public_key(k, base).map_err(|e| format!("[self_update] {e}")))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        let config = SelfUpdateConfig {
            enabled: raw.enabled.unwrap_or(false),
            channel,
            trusted_keys,
            grace: duration("self_update.grace", raw.grace, DEFAULT_SELF_UPDATE_GRACE)?,
            self_test_timeout: duration(
                "self_update.self_test_timeout",
                raw.self_test_timeout,
                DEFAULT_SELF_TEST_TIMEOUT,
            )?,
        };
        for (key, value) in [
            ("self_update.grace", config.grace),
            ("self_update.self_test_timeout", config.self_test_timeout),
        ] {
            if value.is_zero() {
                return Err(format!("{key} must be longer than 0s"));
            }
        }
        Ok(config)
    }
}
