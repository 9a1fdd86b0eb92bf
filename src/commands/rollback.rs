//! `bankswap rollback`: swap back to the version kept in the other bank. No
//! network, instant; the version left is marked bad so that it is not
//! re-installed until a higher sequence re-publishes it.

use anyhow::Context;

use crate::agent::control::Request;
use crate::cli::RootArgs;
use crate::commands::control;
use crate::commands::install::open_root;
use crate::setup;

/// Runs `rollback`: through the running agent if there is one, else on the root under its lock.
pub fn run(args: &RootArgs) -> anyhow::Result<()> {
    let dir = setup::root_only(args)?;
    if let Some(response) = crate::agent::control::request(&dir, Request::Rollback)? {
        return control::print_response(&dir, &response);
    }
    let mut root = open_root(&dir)?;
    let from = root.active_bank();
    let left = root
        .bank_record(from)
        .map(|r| (r.version.clone(), r.sequence));
    let to = root
        .rollback()
        .with_context(|| format!("rollback in {}", dir.display()))?;
    if let Some((version, sequence)) = &left {
        root.mark_bad(version, *sequence, "rolled back by an admin")
            .with_context(|| format!("marking {version} bad"))?;
    }
    let now = root.state().version_of(to).unwrap_or("none").to_string();
    match left {
        Some((version, _)) => {
            println!("rolled back to {now} in {to}; {version} stays in {from}, marked bad")
        }
        None => println!("rolled back to {now} in {to}"),
    }
    Ok(())
}
