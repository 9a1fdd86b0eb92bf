//! The agent configuration of SPEC §5: TOML read once, strictly (unknown keys
//! are an error), and turned into validated values (durations parsed, keys
//! decoded, paths resolved) before anything else runs.

mod console;
mod health;
mod listen;
mod load;
mod logging;
mod payload;
mod reload;
mod self_update;
mod timeouts;
mod update;
mod values;

use std::path::PathBuf;
use std::time::Duration;

use signing::PublicKey;

pub use self::console::{ProxyConfig, redact_url};
pub use self::health::HealthConfig;
pub use self::listen::ListenConfig;
pub use self::logging::{LogConfig, LogFormat, SyslogTarget};
pub use self::payload::PayloadConfig;
pub use self::reload::ReloadPlan;
pub use self::self_update::{
    DEFAULT_SELF_TEST_TIMEOUT, DEFAULT_SELF_UPDATE_CHANNEL, SelfUpdateConfig,
};
pub use self::timeouts::Timeouts;
pub use self::update::UpdateConfig;
pub use self::values::{check_channel, load_public_key, parse_duration};

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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::self_update::DEFAULT_SELF_UPDATE_GRACE;
    use super::update::DEFAULT_DELTA_MAX_RATIO;
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
