//! `bankswap`: parse the command line, run one command, map its result to an
//! exit code. Everything else lives in the modules below.

mod agent;
mod agent_id;
mod build_info;
mod channel;
mod cli;
mod clock;
mod commands;
mod config;
mod console;
mod control;
mod demo;
mod error;
mod identity;
mod keyring;
mod logging;
mod platform;
mod private_ca;
mod progress;
mod release;
mod report;
mod sd_notify;
mod setup;
mod supervisor;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == "--self-test")
    {
        return self_test();
    }
    let cli = cli::Cli::parse();
    if !cli.command.is_service() {
        restore_default_sigpipe();
    }
    logging::init_for_command(&cli.command);
    let result = commands::run(cli.command);
    // Queued log lines first (bounded: a stalled log sink does not hold up the exit).
    logging::flush();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => error::report(&err),
    }
}

/// `bankswap --self-test ...` (SPEC §9): one JSON line, no lock, no runtime.
fn self_test() -> ExitCode {
    use agent::self_update::selftest::{Target, child};
    restore_default_sigpipe();
    let args = cli::SelfTestCli::parse();
    let target = match (args.config, args.root) {
        (Some(config), _) => Target::Config(config),
        (None, Some(root)) => Target::Root(root),
        // clap requires one of them.
        (None, None) => Target::Config(config::DEFAULT_CONFIG.into()),
    };
    child(&target, args.expect_version.as_deref())
}

/// One-shot commands end quietly when their reader goes away (`status | head`), as
/// Unix tools do; Rust's runtime ignores SIGPIPE, which turns that into a panic on
/// `println!`. Services keep ignoring it: they write to sockets.
fn restore_default_sigpipe() {
    // SAFETY: called once at start, before any thread exists; SIG_DFL is a valid disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
