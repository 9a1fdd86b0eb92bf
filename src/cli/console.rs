//! `bankswap console ...`: serving, the fleet, enrollment tokens, enrolled
//! agents, admin tokens and the hidden enroll/renew of an agent (the rollout and
//! channel commands are in `rollout.rs`).

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{ChannelArgs, RolloutArgs};

/// `bankswap console ...`.
#[derive(Debug, Subcommand)]
pub enum ConsoleCommand {
    /// Serve a console data folder over HTTPS.
    #[command(
        after_help = "Example:\n  bankswap console serve --data /srv/console-data --listen 0.0.0.0:8443 \\\n      --tls-cert tls/server.pem --tls-key tls/server.key"
    )]
    Serve(ServeArgs),
    /// Show the latest report of every agent.
    #[command(
        after_help = "Examples:\n  bankswap console fleet --data /srv/console-data\n  bankswap console fleet --console https://console.example.com --ca-cert tls/ca.pem --json"
    )]
    Fleet(FleetArgs),
    /// Make a one-time enrollment token for agents (`enrollment_token_file`).
    Token {
        /// What to do with tokens.
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// List enrolled agents, or revoke or forget one.
    #[command(
        after_help = "Examples:\n  bankswap console agents --data /srv/console-data\n  bankswap console agents --data /srv/console-data --stale-after 1h"
    )]
    Agents(AgentsArgs),
    /// Make or withdraw a named admin token.
    AdminToken {
        /// What to do with admin tokens.
        #[command(subcommand)]
        command: AdminTokenCommand,
    },
    /// Show, pause, resume or abort the rollout in waves of a channel (`publish --waves`).
    #[command(
        after_help = "Examples:\n  bankswap console rollout status --console https://console.example.com --token-file token\n  bankswap console rollout pause stable --console https://console.example.com --token-file token\n  bankswap console rollout resume stable --console https://console.example.com --token-file token\n  bankswap console rollout abort stable --rollback --console https://console.example.com --token-file token\n  bankswap console rollout status --data /srv/console-data"
    )]
    Rollout(RolloutArgs),
    /// Suspend a channel's admissions while the payload's services are reconfigured, or resume them.
    #[command(
        after_help = "Examples:\n  bankswap console channel suspend stable --console https://console.example.com --token-file token\n  bankswap console channel resume stable --console https://console.example.com --token-file token"
    )]
    Channel(ChannelArgs),
    /// Enroll this agent with a console (what `run` does with `enrollment_token_file`).
    #[command(hide = true)]
    Enroll(EnrollArgs),
    /// Renew this agent's certificate now (what `run` does when it is due).
    #[command(hide = true)]
    Renew(RenewArgs),
    /// Make a private CA and a server certificate signed by it, for `console serve`.
    /// The CA (10 years) and its key (0600) are kept in DIR; run again to renew the
    /// server certificate (1 year) with the same CA, so agents keep trusting it.
    #[command(
        after_help = "Example:\n  bankswap console cert --out tls --name console.example.com --name 10.0.0.5"
    )]
    Cert {
        /// Folder for ca.pem, server.pem and server.key.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// DNS names or IP addresses of the console; repeatable.
        #[arg(long = "name", value_name = "NAME", default_values = ["localhost", "127.0.0.1"])]
        names: Vec<String>,
    },
}

/// `bankswap console token ...`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a new enrollment token (stored hashed in the console database).
    #[command(
        after_help = "Examples:\n  bankswap console token create --data /srv/console-data > token\n  bankswap console token create --data ./data --expires 7d --uses 50"
    )]
    Create {
        /// The console data folder.
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// How long the token can be used.
        #[arg(long, value_name = "DURATION", default_value = "24h")]
        expires: String,
        /// How many agents may enroll with it.
        #[arg(long, value_name = "N", default_value_t = 1)]
        uses: u32,
    },
}

/// `bankswap console agents [revoke|forget ID]`.
#[derive(Debug, Args)]
pub struct AgentsArgs {
    /// The console data folder.
    #[arg(long, value_name = "DIR", global = true)]
    pub data: Option<PathBuf>,
    /// Agents not seen for this long are listed as stale.
    #[arg(long, value_name = "DURATION", default_value = "24h")]
    pub stale_after: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Revoke or forget an agent; without it, list them.
    #[command(subcommand)]
    pub command: Option<AgentsCommand>,
}

/// `bankswap console agents revoke|forget ID`.
#[derive(Debug, Subcommand)]
pub enum AgentsCommand {
    /// Refuse the agent's certificates from its next request on.
    #[command(
        after_help = "Example:\n  bankswap console agents --data /srv/console-data revoke 3f2a9c"
    )]
    Revoke {
        /// The agent id.
        id: String,
    },
    /// Remove the agent (and its latest report); it may enroll again with a new token.
    #[command(
        after_help = "Example:\n  bankswap console agents --data /srv/console-data forget 3f2a9c"
    )]
    Forget {
        /// The agent id.
        id: String,
    },
}

/// `bankswap console admin-token create|revoke NAME`.
#[derive(Debug, Subcommand)]
pub enum AdminTokenCommand {
    /// Print a new admin token named NAME (stored hashed).
    #[command(
        after_help = "Example:\n  bankswap console admin-token create --data /srv/console-data alice > alice.token"
    )]
    Create {
        /// The token's name (who holds it).
        name: String,
        /// The console data folder.
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
    },
    /// Withdraw the admin token named NAME.
    #[command(
        after_help = "Example:\n  bankswap console admin-token revoke --data /srv/console-data alice"
    )]
    Revoke {
        /// The token's name.
        name: String,
        /// The console data folder.
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
    },
}

/// `bankswap console enroll` (hidden): what the agent does on start-up.
#[derive(Debug, Args)]
pub struct EnrollArgs {
    /// The agent's data root (its `agent-id` and `identity/`).
    #[arg(long, value_name = "DIR")]
    pub root: PathBuf,
    /// The console.
    #[arg(long, value_name = "URL")]
    pub console: String,
    /// The file holding the enrollment token.
    #[arg(long, value_name = "FILE")]
    pub token_file: PathBuf,
    /// Extra CA certificate (PEM) to trust for --console.
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
}

/// `bankswap console renew` (hidden).
#[derive(Debug, Args)]
pub struct RenewArgs {
    /// The agent's data root.
    #[arg(long, value_name = "DIR")]
    pub root: PathBuf,
    /// The console.
    #[arg(long, value_name = "URL")]
    pub console: String,
    /// Extra CA certificate (PEM) to trust for --console.
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// Renew even if less than two thirds of the lifetime passed.
    #[arg(long)]
    pub force: bool,
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
    /// An admin token (the file's first line), besides those of `console
    /// admin-token create`: for the fleet page, /v1/fleet and uploads.
    #[arg(long, value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// A public key whose signed releases uploads may carry; repeatable. The
    /// console re-verifies every uploaded release against these keys.
    /// Without it, the /v1/admin/ routes answer 404.
    #[arg(long, value_name = "KEY.pub")]
    pub trust: Vec<String>,
    /// The longest a push request (`?wait=`) is held, e.g. `5m` (the default).
    /// Agents hold again at once after a hold of 30 s or more.
    #[arg(long, value_name = "DURATION")]
    pub max_wait: Option<String>,
    /// Serve channel files and artifacts only to enrolled agents presenting
    /// their client certificate.
    #[arg(long)]
    pub require_client_cert: bool,
    /// Store reports sent without a client certificate (agents that never
    /// enrolled); reports for an enrolled agent always need its certificate.
    #[arg(long)]
    pub allow_anonymous_reports: bool,
    /// How long the agent certificates the console issues live.
    #[arg(long, value_name = "DURATION", default_value = "30d")]
    pub cert_lifetime: String,
    /// The fleet page marks an agent stale when its last report is older
    /// than this, e.g. `15m` (the default: three polls of an agent on the
    /// default 5 min interval, or of a push hold of the default --max-wait).
    #[arg(long, value_name = "DURATION")]
    pub stale_after: Option<String>,
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
    /// A file whose first line is an admin token, for --console.
    #[arg(long, value_name = "FILE", requires = "console")]
    pub token_file: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}
