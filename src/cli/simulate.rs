//! `bankswap simulate-agents` (hidden): the flags of the simulated fleet used by
//! tests and benchmarks.

use std::path::PathBuf;

use clap::Args;

/// `bankswap simulate-agents` (hidden).
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// The console.
    #[arg(long, value_name = "URL")]
    pub console: String,
    /// Extra CA certificate (PEM) to trust for --console.
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// The channel the agents follow.
    #[arg(long, value_name = "C", default_value = "stable")]
    pub channel: String,
    /// A trusted public key; repeatable.
    #[arg(long, value_name = "KEY.pub", required = true)]
    pub trust: Vec<String>,
    /// How many agents.
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub agents: u32,
    /// Their ids are PREFIX-00000, PREFIX-00001, ...
    #[arg(long, value_name = "PREFIX", default_value = "sim")]
    pub prefix: String,
    /// The version they run at start.
    #[arg(long, value_name = "V")]
    pub version: String,
    /// The sequence they accepted at start.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub sequence: u64,
    /// A version whose trial fails (rolled back and marked bad); repeatable.
    #[arg(long, value_name = "V")]
    pub fail: Vec<String>,
    /// How long a release stays on trial.
    #[arg(long, value_name = "DURATION", default_value = "100ms")]
    pub trial: String,
    /// The push wait asked of the console.
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    pub wait: String,
    /// Stop after this long (default: at SIGTERM).
    #[arg(long = "for", value_name = "DURATION")]
    pub r#for: Option<String>,
}
