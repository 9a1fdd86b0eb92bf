//! One `run` per command of SPEC §6.

mod control;
mod doctor;
mod generate;
mod install;
mod keys;
mod publish;
mod rollback;
mod simulate;
mod status;

use crate::cli::{AgentCommand, Command, ConsoleCommand};

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
        Command::Console {
            command: ConsoleCommand::Cert { out, names },
        } => make_cert(&out, &names),
        Command::Console {
            command: ConsoleCommand::Enroll(args),
        } => crate::identity::enroll_command(&args),
        Command::Console {
            command: ConsoleCommand::Renew(args),
        } => crate::identity::renew_command(&args),
        Command::Console { command } => crate::console::manage(command),
        Command::Run { config } => crate::agent::run(&config),
        Command::Check { root } => control::check(&root),
        Command::RestartPayload { root } => control::restart_payload(&root),
        Command::Agent {
            command:
                AgentCommand::Reexec {
                    root,
                    binary,
                    self_update_grace,
                },
        } => control::reexec(&root, binary.as_deref(), self_update_grace),
        Command::Demo => crate::demo::run(),
        Command::Doctor { config } => doctor::run(&config),
        Command::Generate { what } => generate::run(&what),
        // main runs it before anything else (it must be the only thread).
        Command::HelloPayload { .. } => Ok(()),
        Command::SimulateAgents(args) => simulate::run(&args),
    }
}

/// `bankswap console cert`: a private CA and a server certificate for `console serve`.
fn make_cert(out: &std::path::Path, names: &[String]) -> anyhow::Result<()> {
    let files = crate::private_ca::make_ca(out, names)?;
    if files.renewed {
        println!(
            "renewed the server certificate with the CA kept in {}",
            files.ca_key.display()
        );
    }
    println!(
        "CA certificate (agents: [tls] ca_certs): {}",
        files.ca_pem.display()
    );
    println!(
        "CA key (keep it; renews the server certificate): {}",
        files.ca_key.display()
    );
    println!(
        "server certificate (--tls-cert): {}",
        files.cert_pem.display()
    );
    println!("server key (--tls-key): {}", files.key_pem.display());
    Ok(())
}
