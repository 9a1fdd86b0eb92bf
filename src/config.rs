//! The agent configuration of SPEC §5: TOML read once, strictly (unknown keys
//! are an error), and turned into validated values (durations parsed, keys
//! decoded, paths resolved) before anything else runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use signing::PublicKey;

use crate::error::UsageError;

/// Where the config lives unless `--config` says otherwise.
pub const DEFAULT_CONFIG: &str = "/etc/bankswap/agent.toml";
/// Where the data root lives unless the config or `--root` says otherwise.
pub const DEFAULT_ROOT: &str = "/var/lib/bankswap";
/// The channel an agent follows unless told otherwise.
pub const DEFAULT_CHANNEL: &str = "stable";
/// How often the agent asks the console when push is not available.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// The largest random delay before a swap (fleet members never swap together).
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(15 * 60);
/// Connecting (TCP and TLS) to the console must not hang an agent.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The whole of an ordinary request (a manifest that is not held, a signature,
/// a report): they are a few KiB, so this bounds a console that drips them.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A held push request may take its `wait` plus this before it is cut: room
/// for the console's answer to travel after the hold ends.
pub const DEFAULT_HELD_MARGIN: Duration = Duration::from_secs(30);
/// The longest hold the agent asks for: intermediaries commonly cut idle
/// requests at 5 min, and the console caps `wait` there too.
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(300);
/// The whole of one artifact request; a longer download is resumed with
/// `Range` by a new request, so this only bounds one connection's life.
pub const DEFAULT_DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(60 * 60);
/// The slowest transfer an artifact download tolerates, in bytes per second
/// over `rate_window`: 1 KiB/s still moves 100 MiB in a day, a drip does not.
pub const DEFAULT_MIN_RATE: u64 = 1024;
/// The window over which the transfer rate is measured (and the longest a
/// download may go without a byte).
pub const DEFAULT_RATE_WINDOW: Duration = Duration::from_secs(30);

/// The config file as written, before validation.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    console: Option<String>,
    enrollment_token_file: Option<PathBuf>,
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
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPayload {
    user: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    stop_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    grace: Option<String>,
    max_failures: Option<u32>,
    http: Option<String>,
    watchdog: Option<String>,
    notify: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListen {
    name: String,
    address: String,
    mode: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    #[serde(default)]
    ca_certs: Vec<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProxy {
    url: String,
    username: Option<String>,
    password_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    format: Option<LogFormat>,
    syslog: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTimeouts {
    connect: Option<String>,
    request: Option<String>,
    held_margin: Option<String>,
    max_wait: Option<String>,
    download: Option<String>,
    min_rate: Option<u64>,
    rate_window: Option<String>,
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

/// The validated agent configuration.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Base URL of the console (needed by `run` only).
    pub console: Option<String>,
    /// A one-time enrollment token (SPEC §10): used at start-up when the
    /// agent has no identity in `ROOT/identity/` yet.
    pub enrollment_token_file: Option<PathBuf>,
    /// The release channel followed.
    pub channel: String,
    /// The data root.
    pub root: PathBuf,
    /// Keys whose signatures are trusted (several allow rotation).
    pub trusted_keys: Vec<PublicKey>,
    /// Time between checks when the console does not hold requests.
    pub poll_interval: Duration,
    /// Upper bound of the random delay before a swap.
    pub max_delay: Duration,
    /// How the payload process is run.
    pub payload: PayloadConfig,
    /// How the payload's health is judged during a trial.
    pub health: HealthConfig,
    /// Sockets the supervisor binds and hands to every payload generation.
    pub listen: Vec<ListenConfig>,
    /// Extra trusted CA certificates (PEM files) for the console.
    pub ca_certs: Vec<PathBuf>,
    /// An HTTP(S) proxy towards the console.
    pub proxy: Option<ProxyConfig>,
    /// Logging.
    pub log: LogConfig,
    /// Network limits (`[timeouts]`).
    pub timeouts: Timeouts,
}

/// `[timeouts]`: every network limit of the agent. Each request has its own
/// deadline (a held push request `wait + held_margin`, an artifact request
/// `download` and a floor rate); the client has no blanket read timeout, which
/// would cut a held request that rightly sends nothing for minutes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP connect and TLS handshake.
    pub connect: Duration,
    /// The whole of a manifest (not held), signature or report request.
    pub request: Duration,
    /// What a held request may take beyond its `wait`.
    pub held_margin: Duration,
    /// The longest `wait` asked of the console.
    pub max_wait: Duration,
    /// The whole of one artifact request (the next one resumes).
    pub download: Duration,
    /// Artifact bytes per second, averaged over `rate_window`, below which the
    /// request is cut (and resumed).
    pub min_rate: u64,
    /// The window of `min_rate`.
    pub rate_window: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            connect: DEFAULT_CONNECT_TIMEOUT,
            request: DEFAULT_REQUEST_TIMEOUT,
            held_margin: DEFAULT_HELD_MARGIN,
            max_wait: DEFAULT_MAX_WAIT,
            download: DEFAULT_DOWNLOAD_TIMEOUT,
            min_rate: DEFAULT_MIN_RATE,
            rate_window: DEFAULT_RATE_WINDOW,
        }
    }
}

impl Timeouts {
    fn parse(raw: RawTimeouts) -> Result<Timeouts, String> {
        let timeouts = Timeouts {
            connect: duration("timeouts.connect", raw.connect, DEFAULT_CONNECT_TIMEOUT)?,
            request: duration("timeouts.request", raw.request, DEFAULT_REQUEST_TIMEOUT)?,
            held_margin: duration("timeouts.held_margin", raw.held_margin, DEFAULT_HELD_MARGIN)?,
            max_wait: duration("timeouts.max_wait", raw.max_wait, DEFAULT_MAX_WAIT)?,
            download: duration("timeouts.download", raw.download, DEFAULT_DOWNLOAD_TIMEOUT)?,
            min_rate: raw.min_rate.unwrap_or(DEFAULT_MIN_RATE),
            rate_window: duration("timeouts.rate_window", raw.rate_window, DEFAULT_RATE_WINDOW)?,
        };
        for (key, value) in [
            ("timeouts.connect", timeouts.connect),
            ("timeouts.request", timeouts.request),
            ("timeouts.download", timeouts.download),
            ("timeouts.rate_window", timeouts.rate_window),
        ] {
            if value.is_zero() {
                return Err(format!("{key} must be longer than 0s"));
            }
        }
        Ok(timeouts)
    }
}

/// `[payload]`.
#[derive(Debug, Clone)]
pub struct PayloadConfig {
    /// User to run the payload as (root only).
    pub user: Option<String>,
    /// Extra environment.
    pub env: BTreeMap<String, String>,
    /// Time between SIGTERM and SIGKILL when stopping.
    pub stop_timeout: Duration,
}

/// `[health]`.
#[derive(Debug, Clone)]
pub struct HealthConfig {
    /// How long a new version must stay healthy before it is committed.
    pub grace: Duration,
    /// Failed probes (or exits) tolerated during the trial.
    pub max_failures: u32,
    /// An HTTP URL that must answer 2xx.
    pub http: Option<String>,
    /// A payload that sends `WATCHDOG=1` must do so at least this often.
    pub watchdog: Option<Duration>,
    /// The payload must send `READY=1` within `grace` (recommended with `[[listen]]`
    /// sockets, where an HTTP probe may reach the previous generation).
    pub notify: bool,
}

/// One `[[listen]]` socket.
#[derive(Debug, Clone)]
pub struct ListenConfig {
    /// The name given in `LISTEN_FDNAMES`.
    pub name: String,
    /// `host:port` for TCP, or a path for a Unix stream socket.
    pub address: String,
    /// File mode of a Unix socket, octal.
    pub mode: Option<u32>,
}

/// `[proxy]`.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Proxy URL.
    pub url: String,
    /// Basic-auth user.
    pub username: Option<String>,
    /// File holding the basic-auth password.
    pub password_file: Option<PathBuf>,
}

/// `[log]`.
#[derive(Debug, Clone, Default)]
pub struct LogConfig {
    /// Text or JSON lines.
    pub format: LogFormat,
    /// `udp://host:port` or `tcp://host:port` for RFC 5424 syslog.
    pub syslog: Option<String>,
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
            check_console_url(console)?;
        }
        let listen = raw
            .listen
            .into_iter()
            .map(|l| {
                let mode = l
                    .mode
                    .map(|m| {
                        u32::from_str_radix(&m, 8)
                            .map_err(|_| format!("listen.mode `{m}` is not octal"))
                    })
                    .transpose()?;
                Ok(ListenConfig {
                    name: l.name,
                    address: l.address,
                    mode,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
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
                http: raw.health.http,
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
                syslog: raw.log.syslog,
            },
            timeouts: Timeouts::parse(raw.timeouts)?,
        })
    }
}

/// Reads a trusted key given as the base64 line itself or as a path to a `.pub` file.
pub fn load_public_key(spec: &str, base: &Path) -> Result<PublicKey, String> {
    if let Ok(key) = PublicKey::parse(spec) {
        return Ok(key);
    }
    let path = base.join(spec);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!("trusted key `{spec}` is neither a minisign public key nor a readable file: {e}")
    })?;
    PublicKey::parse(&text).map_err(|e| format!("trusted key file {}: {e}", path.display()))
}

/// A channel name becomes a URL path segment and a folder name: keep it plain.
pub fn check_channel(channel: &str) -> Result<(), String> {
    let plain = !channel.is_empty()
        && channel.len() <= 64
        && channel
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && !channel.starts_with('.');
    if plain {
        Ok(())
    } else {
        Err(format!(
            "channel `{channel}` must be 1-64 of [A-Za-z0-9._-], not starting with a dot"
        ))
    }
}

fn check_console_url(url: &str) -> Result<(), String> {
    if url.starts_with("https://") || url.starts_with("http://") {
        Ok(())
    } else {
        Err(format!("console `{url}` must be an https:// URL"))
    }
}

/// A URL fit for an error message: any `user:password@` is replaced by `***@`,
/// even in a URL too malformed to parse, so no error ever prints a secret.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), url),
    };
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    match authority.rfind('@') {
        Some(at) => format!("{scheme}***@{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

fn duration(key: &str, value: Option<String>, default: Duration) -> Result<Duration, String> {
    value.map_or(Ok(default), |v| parse_duration(key, &v))
}

/// The longest duration any setting (or `publish --rollout`/`--expires`) takes:
/// far beyond any sensible interval, and small enough that adding it to any
/// time the clock can hold stays inside year 9999 arithmetic.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 86_400);

/// Parses a human duration such as `30s`, `5m` or `6h` (at most [`MAX_DURATION`]).
pub fn parse_duration(key: &str, value: &str) -> Result<Duration, String> {
    let parsed =
        humantime::parse_duration(value).map_err(|e| format!("{key} = \"{value}\": {e}"))?;
    if parsed > MAX_DURATION {
        return Err(format!("{key} = \"{value}\": longer than 100 years"));
    }
    Ok(parsed)
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3";

    #[test]
    fn minimal_config_gets_defaults() {
        let cfg = AgentConfig::parse(&format!("trusted_keys = [\"{KEY}\"]"), Path::new("."))
            .expect("valid config");
        assert_eq!(cfg.channel, "stable");
        assert_eq!(cfg.root, PathBuf::from(DEFAULT_ROOT));
        assert_eq!(cfg.poll_interval, DEFAULT_POLL_INTERVAL);
        assert_eq!(cfg.health.max_failures, 3);
    }

    #[test]
    fn unknown_key_is_an_error() {
        let err = AgentConfig::parse(
            &format!("trusted_keys = [\"{KEY}\"]\npoll_intervall = \"1m\""),
            Path::new("."),
        )
        .expect_err("typo must not pass");
        assert!(err.contains("poll_intervall"), "{err}");
    }

    #[test]
    fn bad_duration_names_the_key() {
        let err = AgentConfig::parse(
            &format!("trusted_keys = [\"{KEY}\"]\nmax_delay = \"soon\""),
            Path::new("."),
        )
        .expect_err("bad duration");
        assert!(err.contains("max_delay"), "{err}");
    }

    #[test]
    fn durations_are_bounded() {
        let err = parse_duration("--rollout", "10000y").expect_err("too long");
        assert!(err.contains("100 years"), "{err}");
        assert!(parse_duration("--rollout", "500000000000y").is_err());
        assert_eq!(parse_duration("x", "6h"), Ok(Duration::from_secs(6 * 3600)));
    }

    #[test]
    fn missing_keys_is_an_error() {
        let err = AgentConfig::parse("channel = \"beta\"", Path::new(".")).expect_err("no keys");
        assert!(err.contains("trusted_keys"), "{err}");
    }

    #[test]
    fn channel_must_be_plain() {
        assert!(check_channel("../x").is_err());
        assert!(check_channel("stable").is_ok());
    }
}
