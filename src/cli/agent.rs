//! `bankswap agent ...`: the commands that talk to the running agent itself.

use std::path::PathBuf;

use clap::Subcommand;

use super::RootArgs;

/// `bankswap agent ...`: the running agent itself.
#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Exec a binary in place of the running agent (same pid): the payload
    /// keeps running and serving, handed over to the new image.
    #[command(
        after_help = "Examples:\n  bankswap agent reexec\n  bankswap agent reexec --binary /usr/local/bin/bankswap --root ./root"
    )]
    Reexec {
        /// Where the root comes from.
        #[command(flatten)]
        root: RootArgs,
        /// The executable to become [default: the running agent's own].
        #[arg(long, value_name = "PATH")]
        binary: Option<PathBuf>,
        /// As a self-update: the new image must commit within this grace, or
        /// exec the previous build back (for tests and the bench).
        #[arg(long, hide = true, value_name = "DURATION", value_parser = humantime::parse_duration)]
        self_update_grace: Option<std::time::Duration>,
    },
}
