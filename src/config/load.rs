//! Reading a config file: the TOML as written (`RawConfig`, strict) and its
//! validation into an [`AgentConfig`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::console::{RawProxy, RawTls, check_console_url, http_url};
use super::health::RawHealth;
use super::listen::RawListen;
use super::logging::RawLog;
use super::payload::RawPayload;
use super::self_update::RawSelfUpdate;
use super::timeouts::RawTimeouts;
use super::update::RawUpdate;
use super::values::{check_channel, duration, load_public_key, parse_duration};
use super::{
    AgentConfig, DEFAULT_CHANNEL, DEFAULT_MAX_DELAY, DEFAULT_POLL_INTERVAL, DEFAULT_ROOT,
    HealthConfig, ListenConfig, LogConfig, PayloadConfig, ProxyConfig, SelfUpdateConfig,
    SyslogTarget, Timeouts, UpdateConfig,
};
use crate::error::UsageError;

/// The config file as written, before validation.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    console: Option<String>,
    enrollment_token_file: Option<PathBuf>,
    allow_insecure_http: Option<bool>,
    channel: Option<String>,
    root: Option<PathBuf>,
    #[serde(default)]
    trusted_keys: Vec<String>,
    poll_interval: Option<String>,
    max_delay: Option<String>,
    #[serde(default)]
    payload: RawPayload,
    #[serde(default)]
    health: RawHealth,
    #[serde(default)]
    listen: Vec<RawListen>,
    #[serde(default)]
    tls: RawTls,
    proxy: Option<RawProxy>,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    timeouts: RawTimeouts,
    #[serde(default)]
    update: RawUpdate,
    #[serde(default)]
    self_update: RawSelfUpdate,
}

impl AgentConfig {
    /// Reads and validates a config file. Every problem is a usage error (exit 2).
    pub fn load(path: &Path) -> Result<AgentConfig, UsageError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| UsageError::new(format!("config {}: {e}", path.display())))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base)
            .map_err(|e| UsageError::new(format!("config {}: {e}", path.display())))
    }

    /// Parses config text; relative key paths are resolved against `base`.
    pub fn parse(text: &str, base: &Path) -> Result<AgentConfig, String> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| one_line(&e.to_string()))?;
        if raw.trusted_keys.is_empty() {
            return Err("`trusted_keys` is empty: add at least one minisign public key".into());
        }
        let trusted_keys = raw
            .trusted_keys
            .iter()
            .map(|k| load_public_key(k, base))
            .collect::<Result<Vec<_>, _>>()?;
        let channel = raw.channel.unwrap_or_else(|| DEFAULT_CHANNEL.to_string());
        check_channel(&channel)?;
        if let Some(console) = &raw.console {
            check_console_url(console, raw.allow_insecure_http.unwrap_or(false))?;
        }
        let listen = raw
            .listen
            .into_iter()
            .map(ListenConfig::parse)
            .collect::<Result<Vec<_>, String>>()?;
        if let Some(dup) = listen
            .iter()
            .enumerate()
            .find(|(i, l)| listen[..*i].iter().any(|o| o.name == l.name))
        {
            return Err(format!("[[listen]] name `{}` is used twice", dup.1.name));
        }
        let health_http = raw
            .health
            .http
            .as_deref()
            .map(|u| http_url("[health] http", u))
            .transpose()?;
        if let Some(proxy) = &raw.proxy {
            http_url("[proxy] url", &proxy.url)?;
        }
        let syslog = raw
            .log
            .syslog
            .as_deref()
            .map(SyslogTarget::parse)
            .transpose()?;
        Ok(AgentConfig {
            console: raw.console,
            enrollment_token_file: raw.enrollment_token_file,
            channel,
            root: raw.root.unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT)),
            trusted_keys,
            poll_interval: duration("poll_interval", raw.poll_interval, DEFAULT_POLL_INTERVAL)?,
            max_delay: duration("max_delay", raw.max_delay, DEFAULT_MAX_DELAY)?,
            payload: PayloadConfig {
                user: raw.payload.user,
                env: raw.payload.env,
                stop_timeout: duration(
                    "payload.stop_timeout",
                    raw.payload.stop_timeout,
                    Duration::from_secs(30),
                )?,
            },
            health: HealthConfig {
                grace: duration("health.grace", raw.health.grace, Duration::from_secs(30))?,
                max_failures: raw.health.max_failures.unwrap_or(3),
                http: health_http,
                watchdog: raw
                    .health
                    .watchdog
                    .map(|w| parse_duration("health.watchdog", &w))
                    .transpose()?,
                notify: raw.health.notify.unwrap_or(false),
            },
            listen,
            ca_certs: raw.tls.ca_certs,
            proxy: raw.proxy.map(|p| ProxyConfig {
                url: p.url,
                username: p.username,
                password_file: p.password_file,
            }),
            log: LogConfig {
                format: raw.log.format.unwrap_or_default(),
                syslog,
            },
            timeouts: Timeouts::parse(raw.timeouts)?,
            update: UpdateConfig::parse(raw.update)?,
            self_update: SelfUpdateConfig::parse(raw.self_update, base)?,
        })
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
