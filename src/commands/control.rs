//! `bankswap check`, `bankswap restart-payload`, and the client side shared by `status` and `rollback`
//! when an agent is running on the root.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow};

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

/// `bankswap restart-payload`: asks the running agent to start the payload
/// again with its running config (overlapped like a swap).
pub fn restart_payload(args: &RootArgs) -> anyhow::Result<()> {
    let dir = setup::root_only(args)?;
    match control::request(&dir, Request::RestartPayload)? {
        Some(response) => print_response(&dir, &response),
        None => {
            crate::commands::status::require_initialised(&dir).and_then(|()| Err(no_agent(&dir)))
        }
    }
}

/// `bankswap agent reexec`: asks the running agent to exec `binary` (default:
/// its own executable) in place, handing over the running payload; then asks
/// the new image for its status, which proves it serves.
pub fn reexec(
    args: &RootArgs,
    binary: Option<&Path>,
    self_update_grace: Option<Duration>,
) -> anyhow::Result<()> {
    let dir = setup::root_only(args)?;
    // The agent runs elsewhere: a relative path means the one from here.
    let binary: Option<PathBuf> = binary
        .map(std::path::absolute)
        .transpose()
        .context("the --binary path")?;
    let request = Request::Reexec {
        binary,
        grace_ms: self_update_grace.map(|g| u64::try_from(g.as_millis()).unwrap_or(u64::MAX)),
    };
    match control::request_or_hangup(&dir, &request)? {
        control::Answer::NoAgent => Err(no_agent(&dir)),
        control::Answer::Response(response) => print_response(&dir, &response),
        control::Answer::HungUp => match control::request(&dir, Request::Status)? {
            Some(response) if response.ok => {
                println!("the agent re-executed in place and answers again");
                Ok(())
            }
            Some(response) => print_response(&dir, &response),
            None => Err(anyhow!(
                "root {}: the agent went away during the exec",
                dir.display()
            )),
        },
    }
}

fn no_agent(dir: &Path) -> anyhow::Error {
    anyhow!(
        "root {}: no agent is running (no {})",
        dir.display(),
        control::socket_path(dir).display()
    )
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
