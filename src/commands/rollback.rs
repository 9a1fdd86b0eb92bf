//! `bankswap rollback`: swap back to the version kept in the other bank. No
//! network, instant; the version left is marked bad so that it is not
//! re-installed until a higher sequence re-publishes it.

use anyhow::Context;

use crate::cli::RootArgs;
use crate::commands::control::print_response;
use crate::control::{self, Request};
use crate::release::{self, ADMIN_REASON, open_root};
use crate::setup;

/// Runs `rollback`: through the running agent if there is one, else on the root under its lock.
pub fn run(args: &RootArgs) -> anyhow::Result<()> {
    let dir = setup::root_only(args)?;
    if let Some(response) = control::request(&dir, Request::Rollback)? {
        return print_response(&dir, &response);
    }
    crate::commands::status::require_initialised(&dir)?;
    let mut root = open_root(&dir)?;
    let rolled_back = release::roll_back(&mut root, ADMIN_REASON)
        .with_context(|| format!("rollback in {}", dir.display()))?;
    println!("{rolled_back}");
    Ok(())
}
