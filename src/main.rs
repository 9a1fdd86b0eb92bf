//! `bankswap`: parse the command line, run one command, map its result to an
//! exit code. Everything else lives in the modules below.

mod agent;
mod agent_id;
mod channel;
mod cli;
mod clock;
mod commands;
mod config;
mod console;
mod demo;
mod error;
mod logging;
mod private_ca;
mod progress;
mod setup;
mod supervisor;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    logging::init_for_command(&cli.command);
    match commands::run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => error::report(&err),
    }
}
