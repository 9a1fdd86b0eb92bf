//! `bankswap console token|agents|admin-token`: enrollment tokens, enrolled
//! agents and named admin tokens, changed in a console data folder's
//! database. A running console reads these tables on every request, so a
//! revocation counts at once.

use std::path::Path;

use anyhow::Context;

use super::fleet::aligned;
use super::page::rfc3339;
use super::registry::{self, AgentRecord};
use super::store::FLEET_DB;
use crate::cli::{AdminTokenCommand, AgentsArgs, AgentsCommand, ConsoleCommand, TokenCommand};
use crate::clock;
use crate::error::UsageError;

/// Runs a `console` management command (not `serve`, `fleet` or `cert`).
pub fn manage(command: ConsoleCommand) -> anyhow::Result<()> {
    match command {
        ConsoleCommand::Token {
            command:
                TokenCommand::Create {
                    data,
                    expires,
                    uses,
                },
        } => create_token(&data, &expires, uses),
        ConsoleCommand::Agents(args) => agents(&args),
        ConsoleCommand::AdminToken { command } => admin_token(command),
        ConsoleCommand::Rollout(args) => super::rollout_cli::run(&args),
        ConsoleCommand::Channel(args) => super::rollout_cli::run_channel(&args),
        ConsoleCommand::Serve(_)
        | ConsoleCommand::Fleet(_)
        | ConsoleCommand::Cert { .. }
        | ConsoleCommand::Enroll(_)
        | ConsoleCommand::Renew(_) => Err(UsageError::new("not a management command").into()),
    }
}

/// Opens the database of an existing data folder.
fn open(data: &Path) -> anyhow::Result<rusqlite::Connection> {
    if !data.is_dir() {
        return Err(UsageError::new(format!(
            "--data {}: no such console data folder",
            data.display()
        ))
        .into());
    }
    registry::open(&data.join(FLEET_DB))
}

fn create_token(data: &Path, expires: &str, uses: u32) -> anyhow::Result<()> {
    let valid_for = humantime::parse_duration(expires)
        .map_err(|e| UsageError::new(format!("--expires {expires}: {e}")))?;
    if uses == 0 {
        return Err(UsageError::new("--uses 0: a token must allow at least one enrollment").into());
    }
    let conn = open(data)?;
    let token = registry::create_enrollment_token(&conn, clock::now_seconds(), valid_for, uses)
        .context("storing the enrollment token")?;
    println!("{token}");
    Ok(())
}

fn agents(args: &AgentsArgs) -> anyhow::Result<()> {
    let Some(data) = &args.data else {
        return Err(UsageError::new("console agents needs --data DIR").into());
    };
    let conn = open(data)?;
    let now = clock::now_seconds();
    match &args.command {
        Some(AgentsCommand::Revoke { id }) => {
            if !registry::revoke(&conn, id, now).context("revoking the agent")? {
                return Err(UsageError::new(format!("no enrolled agent {id}")).into());
            }
            println!("revoked {id}: the console refuses it from its next request on");
        }
        Some(AgentsCommand::Forget { id }) => {
            if !registry::forget(&conn, id).context("forgetting the agent")? {
                return Err(UsageError::new(format!("no enrolled agent {id}")).into());
            }
            println!("forgot {id}");
        }
        None => {
            let stale_after = humantime::parse_duration(&args.stale_after)
                .map_err(|e| UsageError::new(format!("--stale-after {}: {e}", args.stale_after)))?;
            let listed = registry::agents(&conn).context("reading the agents")?;
            if args.json {
                let rows: Vec<serde_json::Value> = listed
                    .iter()
                    .map(|a| {
                        let mut row = serde_json::to_value(a).unwrap_or_default();
                        row["state"] = a.state(now, stale_after).as_str().into();
                        row
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else if listed.is_empty() {
                println!("no agent has enrolled yet");
            } else {
                print!("{}", table(&listed, now, stale_after));
            }
        }
    }
    Ok(())
}

/// The agents as an aligned text table.
fn table(
    agents: &[AgentRecord],
    now: std::time::SystemTime,
    stale_after: std::time::Duration,
) -> String {
    let rows: Vec<[String; 6]> = agents
        .iter()
        .map(|a| {
            [
                a.agent_id.clone(),
                a.hostname.clone().unwrap_or_else(|| "-".into()),
                rfc3339(a.enrolled_at),
                rfc3339(a.cert_expiry),
                a.last_seen.map_or_else(|| "-".into(), rfc3339),
                a.state(now, stale_after).as_str().into(),
            ]
        })
        .collect();
    let headings = [
        "AGENT",
        "HOST",
        "ENROLLED",
        "CERT EXPIRES",
        "LAST SEEN",
        "STATE",
    ]
    .map(String::from);
    aligned(&headings, &rows)
}

fn admin_token(command: AdminTokenCommand) -> anyhow::Result<()> {
    match command {
        AdminTokenCommand::Create { name, data } => {
            registry::check_admin_name(&name).map_err(UsageError::new)?;
            let conn = open(&data)?;
            let Some(token) = registry::create_admin_token(&conn, &name, clock::now_seconds())
                .context("storing the admin token")?
            else {
                return Err(UsageError::new(format!(
                    "an admin token named {name} exists; revoke it first"
                ))
                .into());
            };
            println!("{token}");
        }
        AdminTokenCommand::Revoke { name, data } => {
            let conn = open(&data)?;
            if !registry::revoke_admin_token(&conn, &name).context("revoking the admin token")? {
                return Err(UsageError::new(format!("no admin token named {name}")).into());
            }
            println!("revoked admin token {name}");
        }
    }
    Ok(())
}
