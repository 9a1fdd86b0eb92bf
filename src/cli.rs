//! The command line of SPEC §6, as clap types. Names and flags are a public
//! interface: users and scripts depend on them. The top level is here (`Cli`,
//! `SelfTestCli`, `Command`); each command family's flags are in a submodule.

mod agent;
mod console;
mod publish;
mod rollout;
mod root;
mod simulate;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

pub use self::agent::AgentCommand;
pub use self::console::{
    AdminTokenCommand, AgentsArgs, AgentsCommand, ConsoleCommand, EnrollArgs, FleetArgs, RenewArgs,
    ServeArgs, TokenCommand,
};
pub use self::publish::PublishArgs;
pub use self::rollout::{AdminAccess, ChannelArgs, ChannelCommand, RolloutArgs, RolloutCommand};
pub use self::root::{RootArgs, SetupArgs};
pub use self::simulate::SimulateArgs;

/// bankswap: a supervisor that keeps a payload service up to date from signed
/// releases, with two banks, atomic swaps and instant rollback.
#[derive(Debug, Parser)]
#[command(name = "bankswap", version = crate::build_info::VERSION, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// `bankswap --self-test --config FILE [--expect-version V]` (SPEC §9): what a
/// running agent asks a staged build of itself before it hands over to it. Parsed
/// on its own (before [`Cli`]) when `--self-test` is the first argument.
#[derive(Debug, Parser)]
#[command(name = "bankswap", version = crate::build_info::VERSION)]
pub struct SelfTestCli {
    /// Check that this build can run here: print its version and the hand-over
    /// schemas it reads, parse the config, read the root without its lock.
    #[arg(long, required = true)]
    pub self_test: bool,
    /// The agent config to parse (its root is read).
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "root",
        conflicts_with = "root"
    )]
    pub config: Option<PathBuf>,
    /// A root to read, without a config (offline `apply`).
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// The release version this build is published as (echoed in the answer).
    #[arg(long, value_name = "V")]
    pub expect_version: Option<String>,
}

/// One subcommand per user story.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the data root; optionally install a first release from a bundle, offline.
    #[command(
        after_help = "Examples:\n  bankswap init --config /etc/bankswap/agent.toml\n  bankswap init --root /var/lib/bankswap --trust release.pub --bundle /media/usb/releases"
    )]
    Init {
        /// Where verification settings and the root come from.
        #[command(flatten)]
        setup: SetupArgs,
        /// A release folder (a console data folder or a copy of one) to install.
        #[arg(long, value_name = "DIR")]
        bundle: Option<PathBuf>,
    },
    /// Offline update from a release folder, verified like an online one.
    #[command(
        after_help = "Examples:\n  bankswap apply --bundle /media/usb/releases\n  bankswap apply --root ./root --trust release.pub --channel beta --bundle ./releases"
    )]
    Apply {
        /// Where verification settings and the root come from.
        #[command(flatten)]
        setup: SetupArgs,
        /// A release folder (a console data folder or a copy of one).
        #[arg(long, value_name = "DIR")]
        bundle: PathBuf,
    },
    /// Show the running version, both banks and the last error.
    #[command(
        after_help = "Examples:\n  bankswap status\n  bankswap status --json | jq .active_version\n  bankswap status --root ./root"
    )]
    Status {
        /// Where the root comes from.
        #[command(flatten)]
        root: RootArgs,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Swap back to the version in the other bank.
    #[command(after_help = "Examples:\n  bankswap rollback\n  bankswap rollback --root ./root")]
    Rollback {
        /// Where the root comes from.
        #[command(flatten)]
        root: RootArgs,
    },
    /// Write PREFIX.key (secret) and PREFIX.pub in minisign's formats.
    #[command(
        after_help = "Example:\n  bankswap keygen --out keys/release   # keys/release.key (0600), keys/release.pub"
    )]
    Keygen {
        /// Path prefix of the two files.
        #[arg(long, value_name = "PREFIX")]
        out: PathBuf,
    },
    /// Sign FILE with a minisign secret key; writes FILE.minisig.
    #[command(after_help = "Example:\n  bankswap sign --key keys/release.key release.json")]
    Sign {
        /// The secret key file.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// The file to sign.
        file: PathBuf,
    },
    /// Check FILE.minisig against a minisign public key.
    #[command(after_help = "Example:\n  bankswap verify --pub keys/release.pub release.json")]
    Verify {
        /// The public key file (or the bare base64 key).
        #[arg(long = "pub", value_name = "FILE")]
        public: String,
        /// The signed file.
        file: PathBuf,
    },
    /// Pack, sign and publish a release into a console data folder or up to a console.
    #[command(
        after_help = "Examples:\n  bankswap publish --key keys/release.key --payload ./build --version 1.4.2 \\\n      --entrypoint 'bin/app --serve' --to /srv/console-data\n  bankswap publish --key keys/release.key --rollback-to 1.4.1 --console https://console.example.com --token-file token"
    )]
    Publish(Box<PublishArgs>),
    /// The supervisor: runs the payload from the active bank and keeps it updated.
    #[command(
        after_help = "Examples:\n  bankswap run                       # /etc/bankswap/agent.toml\n  systemctl start bankswap           # the same, as a service (Type=notify)"
    )]
    Run {
        /// Agent config file.
        #[arg(long, value_name = "FILE", default_value = crate::config::DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Talk to the running agent itself.
    Agent {
        /// What to ask.
        #[command(subcommand)]
        command: AgentCommand,
    },
    /// Ask the running agent to check for a release now.
    #[command(after_help = "Examples:\n  bankswap check\n  bankswap check --root ./root")]
    Check {
        /// Where the root comes from.
        #[command(flatten)]
        root: RootArgs,
    },
    /// Start the payload again from the active bank with the running config:
    /// a reloaded `[payload]` env and user and `[[listen]]` sockets apply.
    /// With sockets the old generation serves until the new one is ready.
    #[command(
        name = "restart-payload",
        after_help = "Examples:\n  systemctl reload bankswap && bankswap restart-payload\n  bankswap restart-payload --root ./root"
    )]
    RestartPayload {
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
    #[command(after_help = "Example:\n  bankswap demo")]
    Demo,
    /// Check the config, keys, root, network path to the console, TLS trust,
    /// the signed manifest, the clock and syslog: one line per check.
    #[command(
        after_help = "Exit status: 0 when every check passes, 1 when one fails.\n\nExamples:\n  bankswap doctor\n  bankswap doctor --config ./agent.toml"
    )]
    Doctor {
        /// Agent config file.
        #[arg(long, value_name = "FILE", default_value = crate::config::DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Many lightweight simulated agents against a console (tests and benchmarks).
    #[command(hide = true)]
    SimulateAgents(SimulateArgs),
    /// Write the man pages or shell completions (used to build the package).
    #[command(hide = true)]
    Generate {
        /// What to write.
        #[command(subcommand)]
        what: GenerateCommand,
    },
    /// The example payload (examples/hello-payload), built in so that `demo`
    /// needs nothing but this binary: HTTP on the `LISTEN_FDS` socket,
    /// `READY=1`, a drain on SIGTERM.
    #[command(hide = true)]
    HelloPayload {
        /// Its own arguments (`--listen ADDR` when run by hand).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// `bankswap generate ...` (hidden): files made from this command line.
#[derive(Debug, Subcommand)]
pub enum GenerateCommand {
    /// bankswap.1 and one bankswap-COMMAND.1 per subcommand, into DIR.
    Man {
        /// The output folder.
        dir: PathBuf,
    },
    /// bankswap.bash, _bankswap (zsh) and bankswap.fish, into DIR.
    Completions {
        /// The output folder.
        dir: PathBuf,
    },
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

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    /// Every command an operator can run shows usage examples in its `--help`,
    /// or its parent's examples show it (a command that only groups others has
    /// none of its own).
    #[test]
    fn every_visible_command_has_examples() {
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            let parent_help = command
                .get_after_help()
                .map(|h| h.to_string())
                .unwrap_or_default();
            for sub in command.get_subcommands() {
                if sub.is_hide_set() || sub.get_name() == "help" {
                    continue;
                }
                let path = format!("{path} {}", sub.get_name());
                let runs_itself = sub.get_subcommands().all(|s| s.get_name() == "help")
                    || sub
                        .get_arguments()
                        .any(|a| !a.is_global_set() && a.get_id() != "help");
                let examples = sub
                    .get_after_help()
                    .is_some_and(|h| h.to_string().contains("Example"))
                    || parent_help.contains(&format!("{path} "));
                if runs_itself && !examples {
                    missing.push(path.clone());
                }
                walk(sub, &path, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "bankswap", &mut missing);
        assert!(missing.is_empty(), "no examples in --help: {missing:?}");
    }

    #[test]
    fn version_names_the_commit_and_the_target() {
        let version = Cli::command().render_version();
        assert!(
            version.starts_with(&format!("bankswap {} (commit ", env!("CARGO_PKG_VERSION"))),
            "{version}"
        );
        assert!(version.contains(env!("BANKSWAP_BUILD_TARGET")), "{version}");
        let commit = env!("BANKSWAP_GIT_COMMIT");
        assert!(!commit.is_empty() && version.contains(commit), "{version}");
    }

    #[test]
    fn root_flags_name_the_default_config() {
        let mut command = Cli::command();
        for name in ["status", "check", "rollback", "restart-payload"] {
            let sub = command.find_subcommand_mut(name).expect(name);
            let help = sub.render_long_help().to_string();
            assert!(
                help.contains(&format!("[default: {}", crate::config::DEFAULT_CONFIG)),
                "{name}: {help}"
            );
        }
    }
}
