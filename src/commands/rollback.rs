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
    // One state write: the rollback and the mark of the version left.
    let done = root
        .rollback_marking_bad("rolled back by an admin")
        .with_context(|| format!("rollback in {}", dir.display()))?;
    let (to, from) = (done.to, done.from);
    let now = root.state().version_of(to).unwrap_or("none").to_string();
    match done.left {
        Some(version) => {
            println!("rolled back to {now} in {to}; {version} stays in {from}, marked bad")
        }
        None => println!("rolled back to {now} in {to}"),
    }
    Ok(())
}
