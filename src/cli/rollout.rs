//! `bankswap console rollout ...` and `bankswap console channel ...`: the admin
//! commands that steer a channel's rollout on a running console.

use std::path::PathBuf;

use clap::{Args, Subcommand};

/// `bankswap console rollout ...`.
#[derive(Debug, Args)]
pub struct RolloutArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: RolloutCommand,
    /// The running console (needed by pause, resume and abort).
    #[arg(long, value_name = "URL", global = true, conflicts_with = "data")]
    pub console: Option<String>,
    /// For status only: read a console data folder instead.
    #[arg(long, value_name = "DIR", global = true)]
    pub data: Option<PathBuf>,
    /// How to reach --console.
    #[command(flatten)]
    pub access: AdminAccess,
    /// Print JSON (the objects of `GET /v1/rollouts`).
    #[arg(long, global = true)]
    pub json: bool,
}

/// The admin token and trust for a running console (`console rollout`,
/// `console channel`).
#[derive(Debug, Args)]
pub struct AdminAccess {
    /// A file whose first line is an admin token, for --console (else BANKSWAP_TOKEN).
    #[arg(long, value_name = "FILE", global = true)]
    pub token_file: Option<PathBuf>,
    /// Extra CA certificate (PEM) to trust for --console.
    #[arg(long, value_name = "FILE", global = true)]
    pub ca_cert: Option<PathBuf>,
}

/// `bankswap console channel ...`.
#[derive(Debug, Args)]
pub struct ChannelArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: ChannelCommand,
    /// The running console.
    #[arg(long, value_name = "URL", global = true)]
    pub console: Option<String>,
    /// How to reach --console.
    #[command(flatten)]
    pub access: AdminAccess,
    /// Print JSON (the object of `GET /v1/rollouts`).
    #[arg(long, global = true)]
    pub json: bool,
}

/// `bankswap console channel suspend|resume`.
#[derive(Debug, Subcommand)]
pub enum ChannelCommand {
    /// Admit nobody new on the channel (agents that took the release keep it) until resumed.
    Suspend {
        /// The channel.
        channel: String,
    },
    /// Lift the suspension: the rollout admits again.
    Resume {
        /// The channel.
        channel: String,
    },
}

/// `bankswap console rollout status|pause|resume|abort`.
#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Each wave's progress, the state, why it halted, and what happened.
    Status {
        /// Only this channel.
        channel: Option<String>,
    },
    /// Admit nobody new until resumed.
    Pause {
        /// The channel.
        channel: String,
    },
    /// Admit again after a pause or a halt (the failures so far are excused).
    Resume {
        /// The channel.
        channel: String,
    },
    /// Stop: only agents that already took the release keep getting it.
    Abort {
        /// The channel.
        channel: String,
        /// Also publish the rollback `publish --waves` prepared (signed on the admin's machine).
        #[arg(long)]
        rollback: bool,
    },
}
