//! `bankswap publish`: the flags of a release, a fleet rollback, a key rotation
//! or a rollout in waves.

use std::path::PathBuf;

use clap::{ArgGroup, Args};

/// `bankswap publish`: into a data folder (`--to`) or up to a console
/// (`--console`, with the token from `--token`, `--token-file` or `BANKSWAP_TOKEN`).
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("target").required(true).args(["to", "console"])))]
pub struct PublishArgs {
    /// The minisign secret key that signs the release.
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// The folder to pack as the release payload.
    #[arg(long, value_name = "DIR", required_unless_present_any = ["rollback_to", "rotate_key", "revoke", "agent_binary"])]
    pub payload: Option<PathBuf>,
    /// Publish a build of bankswap itself (an agent release, SPEC §9) instead of a payload.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["payload", "entrypoint", "rollback_to", "rotate_key", "revoke"])]
    pub agent_binary: Option<PathBuf>,
    /// The platform the release is built for (default for --agent-binary: read from the
    /// ELF header, e.g. linux-x86_64; a payload names none unless given).
    #[arg(long, value_name = "P")]
    pub platform: Option<String>,
    /// The payload's version (semver).
    #[arg(long, value_name = "V", required_unless_present_any = ["rollback_to", "rotate_key", "revoke"])]
    pub version: Option<String>,
    /// The command to run, relative to the bank, with its arguments split on spaces.
    #[arg(long, value_name = "CMD", required_unless_present_any = ["rollback_to", "rotate_key", "revoke", "agent_binary"])]
    pub entrypoint: Option<String>,
    /// The channel to publish on.
    #[arg(long, value_name = "C", default_value = "stable")]
    pub channel: String,
    /// The product name agents pin to (default: the channel's current one, else "payload").
    #[arg(long, value_name = "NAME")]
    pub product: Option<String>,
    /// The console data folder to write into.
    #[arg(long, value_name = "DIR")]
    pub to: Option<PathBuf>,
    /// Upload to a running console (`console serve --admin-token-file`) instead.
    #[arg(long, value_name = "URL")]
    pub console: Option<String>,
    /// The console's admin token (visible in `ps`: prefer --token-file or BANKSWAP_TOKEN).
    #[arg(
        long,
        value_name = "T",
        requires = "console",
        conflicts_with = "token_file"
    )]
    pub token: Option<String>,
    /// A file whose first line is the console's admin token.
    #[arg(long, value_name = "FILE", requires = "console")]
    pub token_file: Option<PathBuf>,
    /// Extra CA certificate (PEM) to trust for --console.
    #[arg(long, value_name = "FILE", requires = "console")]
    pub ca_cert: Option<PathBuf>,
    /// How long the signed manifest stays valid.
    #[arg(long, value_name = "DURATION", default_value = "30d")]
    pub expires: String,
    /// Spread the release over this window (each agent gets a slot).
    #[arg(long, value_name = "DURATION")]
    pub rollout: Option<String>,
    /// Allow agents to install an older version than they run.
    #[arg(long)]
    pub downgrade: bool,
    /// Re-sign the historical release of version V with a new sequence (a fleet rollback).
    #[arg(long, value_name = "V", conflicts_with_all = ["payload", "version", "entrypoint"])]
    pub rollback_to: Option<String>,
    /// Publish a key rotation record instead of a release: --key endorses
    /// this public key, and agents that trust --key trust it too.
    #[arg(
        long,
        value_name = "NEW.pub",
        conflicts_with_all = ["payload", "version", "entrypoint", "rollback_to", "rollout", "downgrade"]
    )]
    pub rotate_key: Option<PathBuf>,
    /// Roll the release out in waves (cumulative shares of the fleet, the last
    /// 100%): the console serves it only to the agents each open wave admits.
    /// Also signs a rollback to the channel's current release, for `console
    /// rollout abort --rollback`.
    #[arg(long, value_name = "LIST", conflicts_with_all = ["rotate_key", "revoke"])]
    pub waves: Option<String>,
    /// With --waves: the share of admitted agents that must commit before the next wave opens.
    #[arg(
        long,
        value_name = "PERCENT",
        default_value = "95%",
        requires = "waves"
    )]
    pub success: String,
    /// With --waves: the share of admitted agents whose rollback or failure halts the rollout.
    #[arg(long, value_name = "PERCENT", default_value = "5%", requires = "waves")]
    pub halt_on: String,
    /// With --waves: how long after the last commit the next wave waits.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "10m",
        requires = "waves"
    )]
    pub soak: String,
    /// With --waves: how long a wave's agents have to report the release; a wave
    /// short of success with silent agents past it halts the rollout.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "10m",
        requires = "waves"
    )]
    pub report_deadline: String,
    /// In a key rotation record: revoke this public key (repeatable); agents
    /// then refuse what it signs.
    #[arg(
        long,
        value_name = "OLD.pub",
        conflicts_with_all = ["payload", "version", "entrypoint", "rollback_to", "rollout", "downgrade"]
    )]
    pub revoke: Vec<PathBuf>,
}
