//! The command line of SPEC §6, as clap types. Names and flags are a public
//! interface: users and scripts depend on them.

use std::path::PathBuf;

use clap::{ArgGroup, Args, Parser, Subcommand};

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
