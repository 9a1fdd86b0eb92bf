//! One `run` per command of SPEC §6.

mod control;
pub mod install;
mod keys;
mod publish;
mod rollback;
mod status;

pub use status::StatusReport;

use crate::cli::{Command, ConsoleCommand};

/// Runs one command to completion.
pub fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Init { setup, bundle } => install::init(&setup, bundle.as_deref()),
        Command::Apply { setup, bundle } => install::apply(&setup, &bundle),
        Command::Status { root, json } => status::run(&root, json),
        Command::Rollback { root } => rollback::run(&root),
        Command::Keygen { out } => keys::keygen(&out),
        Command::Sign { key, file } => keys::sign(&key, &file),
        Command::Verify { public, file } => keys::verify(&public, &file),
        Command::Publish(args) => publish::run(&args),
        Command::Console {
            command: ConsoleCommand::Serve(args),
        } => crate::console::serve(&args),
        Command::Console {
            command: ConsoleCommand::Fleet(args),
        } => crate::console::fleet(&args),
        Command::Run { config } => crate::agent::run(&config),
        Command::Check { root } => control::check(&root),
        Command::Demo => Err(anyhow::anyhow!(
            "the demo is being built; run scripts/demo.sh"
        )),
    }
}
