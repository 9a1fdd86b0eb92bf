//! `[log]`: the log format and the syslog address.

use serde::Deserialize;

use super::console::redact_url;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    pub(super) format: Option<LogFormat>,
    pub(super) syslog: Option<String>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogConfig {
    /// Text or JSON lines.
    pub format: LogFormat,
    /// `udp://host:port` or `tcp://host:port` for RFC 5424 syslog.
    pub syslog: Option<SyslogTarget>,
}

/// A validated `[log] syslog` address: `udp://host:port` or `tcp://host:port`.
/// It reads as its text (`&*target`), which is what the log writer connects to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogTarget(String);

impl SyslogTarget {
    /// Checks the form (the host is resolved when the log writer connects).
    pub fn parse(text: &str) -> Result<SyslogTarget, String> {
        let bad = |why: &str| format!("[log] syslog `{}`: {why}", redact_url(text));
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| bad("must be udp://host:port or tcp://host:port"))?;
        if scheme != "udp" && scheme != "tcp" {
            return Err(bad("the scheme must be udp or tcp"));
        }
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| bad("must be udp://host:port or tcp://host:port"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.contains(['/', '@', ' ']) {
            return Err(bad("the host is missing or malformed"));
        }
        match port.parse::<u16>() {
            Ok(p) if p > 0 => Ok(SyslogTarget(text.to_string())),
            _ => Err(bad("the port must be 1-65535")),
        }
    }
}

impl std::ops::Deref for SyslogTarget {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}
