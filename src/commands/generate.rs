//! `bankswap generate man|completions DIR` (hidden): the man pages and shell
//! completions the Debian package ships, rendered from the same clap
//! definition the binary parses with, so they never drift from `--help`.

use std::path::Path;

use anyhow::Context;
use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::{Cli, GenerateCommand};

/// Writes what `what` names.
pub fn run(what: &GenerateCommand) -> anyhow::Result<()> {
    match what {
        GenerateCommand::Man { dir } => man(dir),
        GenerateCommand::Completions { dir } => completions(dir),
    }
}

/// bankswap.1 and bankswap-SUBCOMMAND.1 for every visible subcommand.
fn man(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let command = Cli::command().version(crate::build_info::VERSION);
    // Hidden commands (the generator itself, the built-in example payload) are not for users.
    let hidden: Vec<String> = command
        .get_subcommands()
        .filter(|c| c.is_hide_set())
        .map(|c| format!("bankswap-{}", c.get_name()))
        .collect();
    clap_mangen::generate_to(command, dir)
        .with_context(|| format!("writing man pages into {}", dir.display()))?;
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.file_name().is_some_and(|n| {
            let name = n.to_string_lossy();
            hidden.iter().any(|h| name.starts_with(h.as_str()))
        }) {
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    Ok(())
}

/// bankswap.bash, _bankswap and bankswap.fish.
fn completions(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let mut command = Cli::command();
        clap_complete::generate_to(shell, &mut command, "bankswap", dir)
            .with_context(|| format!("writing {shell} completions into {}", dir.display()))?;
    }
    Ok(())
}
