//! The agent configuration of SPEC §5: TOML read once, strictly (unknown keys
//! are an error), and turned into validated values (durations parsed, keys
//! decoded, paths resolved) before anything else runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Url;
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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSelfUpdate {
    enabled: Option<bool>,
    channel: Option<String>,
    trusted_keys: Option<Vec<String>>,
    grace: Option<String>,
    self_test_timeout: Option<String>,
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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpdate {
    allow_in_place: Option<bool>,
    delta_max_ratio: Option<f64>,
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
#[derive(Debug, Clone, PartialEq)]
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
    /// How releases are staged and fetched (`[update]`).
    pub update: UpdateConfig,
    /// Updating the agent itself (`[self_update]`, SPEC §9).
    pub self_update: SelfUpdateConfig,
}

/// Above this share of the full artifact's size, the objects a delta update
/// would fetch are not worth it and the full artifact is downloaded instead:
/// past about 60 % the many small requests and the copy of the running bank
/// cost more than the bytes they save.
pub const DEFAULT_DELTA_MAX_RATIO: f64 = 0.6;

/// `[update]`: how a release is staged and fetched.
#[derive(Debug, Clone, PartialEq)]
pub struct UpdateConfig {
    /// Stage over the idle bank (giving up the rollback target first) when the
    /// file system has room only for that, not for a scratch copy beside both
    /// banks. Off by default: such a staging is refused, and `status` says why.
    pub allow_in_place: bool,
    /// `delta_max_ratio`: a delta update is taken only while its objects add up
    /// to at most this share of the full artifact (0 turns delta updates off).
    pub delta_max_ratio: f64,
}

impl Default for UpdateConfig {
    fn default() -> UpdateConfig {
        UpdateConfig {
            allow_in_place: false,
            delta_max_ratio: DEFAULT_DELTA_MAX_RATIO,
        }
    }
}

impl UpdateConfig {
    fn parse(raw: RawUpdate) -> Result<UpdateConfig, String> {
        let delta_max_ratio = raw.delta_max_ratio.unwrap_or(DEFAULT_DELTA_MAX_RATIO);
        if !(0.0..=1.0).contains(&delta_max_ratio) {
            return Err(format!(
                "update.delta_max_ratio = {delta_max_ratio}: must be between 0 and 1"
            ));
        }
        Ok(UpdateConfig {
            allow_in_place: raw.allow_in_place.unwrap_or(false),
            delta_max_ratio,
        })
    }
}

/// The channel agent builds are published on unless `[self_update] channel` says otherwise.
pub const DEFAULT_SELF_UPDATE_CHANNEL: &str = "bankswap";
/// How long a new agent build has to adopt the payload, answer and report.
pub const DEFAULT_SELF_UPDATE_GRACE: Duration = Duration::from_secs(30);
/// How long a staged agent build's `--self-test` may take.
pub const DEFAULT_SELF_TEST_TIMEOUT: Duration = Duration::from_secs(10);

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
    fn parse(raw: RawSelfUpdate, base: &Path) -> Result<SelfUpdateConfig, String> {
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
#[derive(Debug, Clone, PartialEq)]
pub struct PayloadConfig {
    /// User to run the payload as (root only).
    pub user: Option<String>,
    /// Extra environment.
    pub env: BTreeMap<String, String>,
    /// Time between SIGTERM and SIGKILL when stopping.
    pub stop_timeout: Duration,
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

/// One `[[listen]]` socket.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenConfig {
    /// The name given in `LISTEN_FDNAMES`.
    pub name: String,
    /// `host:port` for TCP, or a path for a Unix stream socket.
    pub address: String,
    /// File mode of a Unix socket, octal.
    pub mode: Option<u32>,
}

/// `[proxy]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyConfig {
    /// Proxy URL.
    pub url: String,
    /// Basic-auth user.
    pub username: Option<String>,
    /// File holding the basic-auth password.
    pub password_file: Option<PathBuf>,
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

/// What a reload (SIGHUP, SPEC §12) changes, grouped by when it takes effect.
/// Each entry is the config key as an operator writes it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReloadPlan {
    /// Applied at once: the console and how it is reached (proxy, TLS roots,
    /// timeouts), trusted keys, poll and delay settings, logging.
    pub now: Vec<&'static str>,
    /// `[health]`: judges the next trial (a trial under way keeps its rules).
    pub next_trial: Vec<&'static str>,
    /// `[payload]` and `[[listen]]`: used when the payload next starts (the
    /// next swap, or `bankswap restart-payload`); the running generation keeps
    /// its environment, user and sockets until then.
    pub next_swap: Vec<&'static str>,
    /// Kept until the agent restarts: the root and the channel are its
    /// identity, and the token and self-update settings are read at start.
    pub restart: Vec<&'static str>,
}

impl ReloadPlan {
    /// True when the new config changes nothing.
    pub fn is_empty(&self) -> bool {
        self.now.is_empty()
            && self.next_trial.is_empty()
            && self.next_swap.is_empty()
            && self.restart.is_empty()
    }
}

impl AgentConfig {
    /// What reloading from `self` to `new` changes, and when each change applies.
    pub fn reload_plan(&self, new: &AgentConfig) -> ReloadPlan {
        fn note(list: &mut Vec<&'static str>, changed: bool, key: &'static str) {
            if changed {
                list.push(key);
            }
        }
        let mut plan = ReloadPlan::default();
        let now = &mut plan.now;
        note(now, self.console != new.console, "console");
        note(now, self.trusted_keys != new.trusted_keys, "trusted_keys");
        note(
            now,
            self.poll_interval != new.poll_interval,
            "poll_interval",
        );
        note(now, self.max_delay != new.max_delay, "max_delay");
        note(now, self.ca_certs != new.ca_certs, "[tls] ca_certs");
        note(now, self.proxy != new.proxy, "[proxy]");
        note(now, self.log != new.log, "[log]");
        note(now, self.timeouts != new.timeouts, "[timeouts]");
        note(now, self.update != new.update, "[update]");
        note(&mut plan.next_trial, self.health != new.health, "[health]");
        let next_swap = &mut plan.next_swap;
        note(next_swap, self.payload != new.payload, "[payload]");
        note(next_swap, self.listen != new.listen, "[[listen]]");
        let restart = &mut plan.restart;
        note(restart, self.root != new.root, "root");
        note(restart, self.channel != new.channel, "channel");
        note(
            restart,
            self.self_update != new.self_update,
            "[self_update]",
        );
        let token = &self.enrollment_token_file;
        note(
            restart,
            *token != new.enrollment_token_file,
            "enrollment_token_file",
        );
        plan
    }

    /// The config an agent runs after reloading to `new`: `new`, except what
    /// waits for a restart of the agent (see [`ReloadPlan::restart`]).
    pub fn reloaded(&self, new: AgentConfig) -> AgentConfig {
        AgentConfig {
            root: self.root.clone(),
            channel: self.channel.clone(),
            enrollment_token_file: self.enrollment_token_file.clone(),
            self_update: self.self_update.clone(),
            ..new
        }
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

/// `console` must be https: the manifest is signed, but push, reports and the
/// artifact's availability are not, so plain http needs an explicit
/// `allow_insecure_http = true` (as `console serve --insecure-http` does).
fn check_console_url(url: &str, allow_insecure_http: bool) -> Result<(), String> {
    let parsed = http_url("console", url)?;
    if parsed.scheme() == "http" && !allow_insecure_http {
        return Err(format!(
            "console `{}`: must be an https:// URL (plain http:// needs allow_insecure_http = true)",
            redact_url(url)
        ));
    }
    Ok(())
}

/// Parses an absolute http(s) URL with a host; errors name `key` and never
/// print credentials.
fn http_url(key: &str, text: &str) -> Result<Url, String> {
    let bad = |why: String| format!("{key} `{}`: {why}", redact_url(text));
    let url = Url::parse(text).map_err(|e| bad(format!("not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("must be an http:// or https:// URL".into()));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("has no host".into()));
    }
    Ok(url)
}

/// systemd's rule for `LISTEN_FDNAMES` entries: 1–255 printable ASCII, no `:`.
const MAX_LISTEN_NAME: usize = 255;

/// The largest Unix socket mode (permission bits only).
const MAX_SOCKET_MODE: u32 = 0o777;

impl ListenConfig {
    fn parse(raw: RawListen) -> Result<ListenConfig, String> {
        let name = &raw.name;
        if name.is_empty()
            || name.len() > MAX_LISTEN_NAME
            || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
        {
            return Err(format!(
                "[[listen]] name `{name}`: must be 1-255 printable ASCII characters without `:` (LISTEN_FDNAMES)"
            ));
        }
        let address = &raw.address;
        let bad = |why: &str| format!("[[listen]] {name} address `{address}`: {why}");
        let is_path = address.starts_with('/');
        if is_path {
            if address.contains('\0') {
                return Err(bad("a socket path cannot hold a NUL byte"));
            }
        } else if address.starts_with("./") {
            return Err(bad("a Unix socket path must be absolute"));
        } else {
            let (host, port) = address
                .rsplit_once(':')
                .ok_or_else(|| bad("must be host:port or an absolute Unix socket path"))?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if host.is_empty() || host.contains(['/', ' ', '@']) {
                return Err(bad("the host is missing or malformed"));
            }
            port.parse::<u16>()
                .map_err(|_| bad("the port must be 0-65535"))?;
        }
        let mode = match &raw.mode {
            None => None,
            Some(_) if !is_path => return Err(bad("mode applies to Unix sockets only")),
            Some(m) => match u32::from_str_radix(m, 8) {
                Ok(mode) if mode <= MAX_SOCKET_MODE => Some(mode),
                _ => {
                    return Err(format!(
                        "[[listen]] {name} mode `{m}`: must be octal permission bits, 0-777"
                    ));
                }
            },
        };
        Ok(ListenConfig {
            name: raw.name,
            address: raw.address,
            mode,
        })
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
        assert!(!cfg.update.allow_in_place, "in-place staging is opt-in");
    }

    #[test]
    fn update_allow_in_place_is_read_and_strict() {
        let cfg = AgentConfig::parse(
            &format!("trusted_keys = [\"{KEY}\"]\n[update]\nallow_in_place = true"),
            Path::new("."),
        )
        .expect("valid config");
        assert!(cfg.update.allow_in_place);
        let err = AgentConfig::parse(
            &format!("trusted_keys = [\"{KEY}\"]\n[update]\nallow_inplace = true"),
            Path::new("."),
        )
        .expect_err("typo must not pass");
        assert!(err.contains("allow_inplace"), "{err}");
    }

    #[test]
    fn delta_max_ratio_defaults_and_is_bounded() {
        let config = |extra: &str| {
            AgentConfig::parse(
                &format!("trusted_keys = [\"{KEY}\"]\n{extra}"),
                Path::new("."),
            )
        };
        assert_eq!(
            config("").unwrap().update.delta_max_ratio,
            DEFAULT_DELTA_MAX_RATIO
        );
        let off = config("[update]\ndelta_max_ratio = 0.0").unwrap();
        assert_eq!(off.update.delta_max_ratio, 0.0);
        let err = config("[update]\ndelta_max_ratio = 1.5").unwrap_err();
        assert!(err.contains("update.delta_max_ratio"), "{err}");
        assert!(config("[update]\ndelta = 1").is_err());
    }

    #[test]
    fn self_update_is_off_by_default_and_validated() {
        let cfg = AgentConfig::parse(&format!("trusted_keys = [\"{KEY}\"]"), Path::new("."))
            .expect("valid config");
        assert!(!cfg.self_update.enabled);
        assert_eq!(cfg.self_update.channel, DEFAULT_SELF_UPDATE_CHANNEL);
        assert!(cfg.self_update.trusted_keys.is_none());
        assert_eq!(cfg.self_update.grace, DEFAULT_SELF_UPDATE_GRACE);
        assert_eq!(cfg.self_update.self_test_timeout, DEFAULT_SELF_TEST_TIMEOUT);
        let cfg = AgentConfig::parse(
            &format!(
                "trusted_keys = [\"{KEY}\"]\n[self_update]\nenabled = true\nchannel = \"agents\"\ntrusted_keys = [\"{KEY}\"]\ngrace = \"5s\"\nself_test_timeout = \"2s\""
            ),
            Path::new("."),
        )
        .expect("valid config");
        assert!(cfg.self_update.enabled);
        assert_eq!(cfg.self_update.channel, "agents");
        assert_eq!(cfg.self_update.trusted_keys.map(|k| k.len()), Some(1));
        assert_eq!(cfg.self_update.grace, Duration::from_secs(5));
        for (bad, named) in [
            ("[self_update]\nenable = true", "enable"),
            ("[self_update]\nchannel = \"a b\"", "[self_update] channel"),
            (
                "[self_update]\ntrusted_keys = []",
                "[self_update] trusted_keys",
            ),
            ("[self_update]\ngrace = \"0s\"", "self_update.grace"),
            (
                "[self_update]\nself_test_timeout = \"soon\"",
                "self_update.self_test_timeout",
            ),
        ] {
            let err = AgentConfig::parse(
                &format!("trusted_keys = [\"{KEY}\"]\n{bad}"),
                Path::new("."),
            )
            .expect_err(bad);
            assert!(err.contains(named), "{bad}: {err}");
            assert!(!err.contains('\n'), "{err}");
        }
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
    fn plain_http_console_needs_the_explicit_allowance() {
        let config = |extra: &str| {
            AgentConfig::parse(
                &format!("trusted_keys = [\"{KEY}\"]\nconsole = \"http://c.example\"\n{extra}"),
                Path::new("."),
            )
        };
        assert!(config("").is_err());
        assert!(config("allow_insecure_http = true").is_ok());
    }

    #[test]
    fn redaction_hides_userinfo_even_in_malformed_urls() {
        assert_eq!(
            redact_url("http://u:p@proxy host:3128/x"),
            "http://***@proxy host:3128/x"
        );
        assert_eq!(redact_url("u:p@proxy:3128"), "***@proxy:3128");
        assert_eq!(redact_url("http://proxy:3128"), "http://proxy:3128");
    }

    #[test]
    fn valid_listen_health_and_syslog_values_pass() {
        let cfg = AgentConfig::parse(
            &format!(
                "trusted_keys = [\"{KEY}\"]\n[health]\nhttp = \"http://127.0.0.1:8080/health\"\n\
                 [[listen]]\nname = \"http\"\naddress = \"[::1]:8080\"\n\
                 [[listen]]\nname = \"unix\"\naddress = \"/run/x.sock\"\nmode = \"660\"\n\
                 [log]\nsyslog = \"tcp://loghost:514\""
            ),
            Path::new("."),
        )
        .expect("valid");
        assert_eq!(cfg.listen[1].mode, Some(0o660));
        assert_eq!(cfg.log.syslog.as_deref(), Some("tcp://loghost:514"));
    }

    #[test]
    fn a_reload_plan_sorts_changes_by_when_they_apply() {
        let old = AgentConfig::parse(&format!("trusted_keys = [\"{KEY}\"]"), Path::new("."))
            .expect("old");
        let new = AgentConfig::parse(
            &format!(
                "trusted_keys = [\"{KEY}\"]\npoll_interval = \"1s\"\nchannel = \"beta\"\n\
                 [payload]\nenv = {{ A = \"1\" }}\n[health]\ngrace = \"1s\"\n\
                 [[listen]]\nname = \"http\"\naddress = \"127.0.0.1:0\""
            ),
            Path::new("."),
        )
        .expect("new");
        assert!(old.reload_plan(&old).is_empty());
        let plan = old.reload_plan(&new);
        assert_eq!(plan.now, ["poll_interval"]);
        assert_eq!(plan.next_trial, ["[health]"]);
        assert_eq!(plan.next_swap, ["[payload]", "[[listen]]"]);
        assert_eq!(plan.restart, ["channel"]);
        let running = old.reloaded(new);
        assert_eq!(running.poll_interval, Duration::from_secs(1));
        assert_eq!(running.channel, "stable");
        assert_eq!(running.listen.len(), 1);
        assert_eq!(running.payload.env.len(), 1);
    }

    #[test]
    fn channel_must_be_plain() {
        assert!(check_channel("../x").is_err());
        assert!(check_channel("stable").is_ok());
    }
}
