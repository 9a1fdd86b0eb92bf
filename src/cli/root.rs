//! The flags that locate a root and its verification settings, shared by
//! `init`, `apply`, `status`, `rollback`, `check`, `restart-payload` and
//! `agent reexec`.

use std::path::PathBuf;

use clap::Args;

/// Flags that locate the root only (`status`, `rollback`, `check`).
#[derive(Debug, Args)]
pub struct RootArgs {
    /// Agent config file (its `root` is used)
    /// [default: /etc/bankswap/agent.toml, when it exists]
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
