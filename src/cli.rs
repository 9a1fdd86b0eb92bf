//! The command line of SPEC §6, as clap types. Names and flags are a public
//! interface: users and scripts depend on them.

use std::path::PathBuf;

use clap::{ArgGroup, Args, Parser, Subcommand};

/// bankswap: a supervisor that keeps a payload service up to date from signed
/// releases, with two banks, atomic swaps and instant rollback.
#[derive(Debug, Parser)]
#[command(name = "bankswap", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// One subcommand per user story.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the data root; optionally install a first release from a bundle, offline.
    Init {
        /// Where verification settings and the root come from.
        #[command(flatten)]
        setup: SetupArgs,
        /// A release folder (a console data folder or a copy of one) to install.
        #[arg(long, value_name = "DIR")]
        bundle: Option<PathBuf>,
    },
    /// Offline update from a release folder, verified like an online one.
    Apply {
        /// Where verification settings and the root come from.
        #[command(flatten)]
        setup: SetupArgs,
        /// A release folder (a console data folder or a copy of one).
        #[arg(long, value_name = "DIR")]
        bundle: PathBuf,
    },
    /// Show the running version, both banks and the last error.
    Status {
        /// Where the root comes from.
        #[command(flatten)]
        root: RootArgs,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Swap back to the version in the other bank.
    Rollback {
        /// Where the root comes from.
        #[command(flatten)]
        root: RootArgs,
    },
    /// Write PREFIX.key (secret) and PREFIX.pub in minisign's formats.
    Keygen {
        /// Path prefix of the two files.
        #[arg(long, value_name = "PREFIX")]
        out: PathBuf,
    },
    /// Sign FILE with a minisign secret key; writes FILE.minisig.
    Sign {
        /// The secret key file.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// The file to sign.
        file: PathBuf,
    },
    /// Check FILE.minisig against a minisign public key.
    Verify {
        /// The public key file (or the bare base64 key).
        #[arg(long = "pub", value_name = "FILE")]
        public: String,
        /// The signed file.
        file: PathBuf,
    },
    /// Pack, sign and publish a release into a console data folder or up to a console.
    Publish(PublishArgs),
    /// The supervisor: runs the payload from the active bank and keeps it updated.
    Run {
        /// Agent config file.
        #[arg(long, value_name = "FILE", default_value = crate::config::DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Ask the running agent to check for a release now.
    Check {
        /// Where the root comes from.
        #[command(flatten)]
        root: RootArgs,
    },
    /// The console: serves releases, holds requests for push, records fleet reports.
    Console {
        /// What the console does.
        #[command(subcommand)]
        command: ConsoleCommand,
    },
    /// The whole story on loopback, narrated.
    Demo,
}

/// `bankswap console ...`.
#[derive(Debug, Subcommand)]
pub enum ConsoleCommand {
    /// Serve a console data folder over HTTPS.
    Serve(ServeArgs),
    /// Show the latest report of every agent.
    Fleet(FleetArgs),
    /// Make a private CA and a server certificate signed by it, for `console serve`.
    Cert {
        /// Folder for ca.pem, server.pem and server.key.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// DNS names or IP addresses of the console; repeatable.
        #[arg(long = "name", value_name = "NAME", default_values = ["localhost", "127.0.0.1"])]
        names: Vec<String>,
    },
}

/// `bankswap console serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The console data folder (what `publish --to` writes).
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:443")]
    pub listen: String,
    /// PEM certificate chain.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve plain HTTP (local tests only).
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key"])]
    pub insecure_http: bool,
    /// Accept uploads from `publish --console` by admins presenting the token
    /// in this file (its first line). Needs --trust; without both, the
    /// /v1/admin/ routes answer 404.
    #[arg(long, value_name = "FILE", requires = "trust")]
    pub admin_token_file: Option<PathBuf>,
    /// A public key whose signed releases uploads may carry; repeatable. The
    /// console re-verifies every uploaded release against these keys. Needs
    /// --admin-token-file.
    #[arg(long, value_name = "KEY.pub", requires = "admin_token_file")]
    pub trust: Vec<String>,
    /// The longest a push request (`?wait=`) is held, e.g. `5m` (the default).
    /// Agents hold again at once after a hold of 30 s or more.
    #[arg(long, value_name = "DURATION")]
    pub max_wait: Option<String>,
}

/// `bankswap console fleet`.
#[derive(Debug, Args)]
pub struct FleetArgs {
    /// Read the fleet from a console data folder.
    #[arg(
        long,
        value_name = "DIR",
        conflicts_with = "console",
        required_unless_present = "console"
    )]
    pub data: Option<PathBuf>,
    /// Ask a running console.
    #[arg(long, value_name = "URL")]
    pub console: Option<String>,
    /// Extra CA certificate (PEM) to trust for --console.
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

impl Command {
    /// Long-running commands that talk over sockets (the agent, the console, the demo).
    pub fn is_service(&self) -> bool {
        matches!(
            self,
            Command::Run { .. }
                | Command::Demo
                | Command::Console {
                    command: ConsoleCommand::Serve(_)
                }
        )
    }
}

/// Flags that locate the root only (`status`, `rollback`).
#[derive(Debug, Args)]
pub struct RootArgs {
    /// Agent config file (its `root` is used).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data root; overrides the config's.
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
}

/// Flags for commands that verify releases (`init --bundle`, `apply`).
#[derive(Debug, Args)]
pub struct SetupArgs {
    /// Agent config file: root, channel and trusted keys.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data root; overrides the config's.
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// A trusted public key file; repeatable. Stands in for a config file.
    #[arg(long, value_name = "KEY.pub")]
    pub trust: Vec<String>,
    /// The channel to accept releases from (with --trust; default "stable").
    #[arg(long, value_name = "C")]
    pub channel: Option<String>,
}

/// `bankswap publish`: into a data folder (`--to`) or up to a console
/// (`--console`, with the token from `--token`, `--token-file` or `BANKSWAP_TOKEN`).
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("target").required(true).args(["to", "console"])))]
pub struct PublishArgs {
    /// The minisign secret key that signs the release.
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// The folder to pack as the release payload.
    #[arg(long, value_name = "DIR", required_unless_present = "rollback_to")]
    pub payload: Option<PathBuf>,
    /// The payload's version (semver).
    #[arg(long, value_name = "V", required_unless_present = "rollback_to")]
    pub version: Option<String>,
    /// The command to run, relative to the bank, with its arguments split on spaces.
    #[arg(long, value_name = "CMD", required_unless_present = "rollback_to")]
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
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
