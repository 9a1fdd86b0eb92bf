//! `bankswap check`, and the client side shared by `status` and `rollback`
//! when an agent is running on the root.

use std::path::Path;

use anyhow::anyhow;

use crate::cli::RootArgs;
use crate::control::{self, Request, Response};
use crate::setup;

/// `bankswap check`: asks the running agent to check for a release now.
pub fn check(args: &RootArgs) -> anyhow::Result<()> {
    let dir = setup::root_only(args)?;
    match control::request(&dir, Request::Check)? {
        Some(response) => print_response(&dir, &response),
        None => crate::commands::status::require_initialised(&dir).and_then(|()| {
            Err(anyhow!(
                "root {}: no agent is running (no {})",
                dir.display(),
                control::socket_path(&dir).display()
            ))
        }),
    }
}

/// Prints an agent's answer, or turns a refusal into the command's error.
pub fn print_response(dir: &Path, response: &Response) -> anyhow::Result<()> {
    if response.ok {
        println!("{}", response.message);
        Ok(())
    } else {
        Err(anyhow!("agent on {}: {}", dir.display(), response.message))
    }
}
