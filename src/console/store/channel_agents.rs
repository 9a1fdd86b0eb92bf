//! The `channel_agents` table: which agents follow which channel, recorded
//! for rollouts so they are counted after a restart, before they ask again.

use std::path::Path;

use anyhow::Context;
use rusqlite::{Connection, OpenFlags, params};

use super::{BUSY_TIMEOUT, Job};

/// Reads every `(channel, agent_id)` from a database file, for `console
/// rollout status --data` (empty if the console has not recorded any yet).
pub fn read_members(path: &Path) -> anyhow::Result<Vec<(String, String)>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .with_context(|| format!("opening {}", path.display()))?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let read = (|| {
        let mut select = conn.prepare("SELECT channel, agent_id FROM channel_agents")?;
        let rows = select.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
        rows.collect::<rusqlite::Result<Vec<(String, String)>>>()
    })();
    match read {
        Ok(members) => Ok(members),
        // A console of an older version has no such table yet.
        Err(rusqlite::Error::SqliteFailure(_, Some(ref m))) if m.contains("no such table") => {
            Ok(Vec::new())
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Runs a membership job (rollouts): one transaction for a list of new members.
pub(super) fn membership(conn: &mut Connection, job: Job) {
    match job {
        Job::AddMembers(members, reply) => {
            let written = (|| {
                let tx = conn.transaction()?;
                {
                    let mut insert = tx.prepare_cached(
                        "INSERT OR IGNORE INTO channel_agents (channel, agent_id) VALUES (?1, ?2)",
                    )?;
                    for (channel, agent) in &members {
                        insert.execute(params![channel, agent])?;
                    }
                }
                tx.commit()
            })();
            let _ = reply.send(written.map_err(|e| e.to_string()));
        }
        Job::Members(reply) => {
            let read = (|| {
                let mut select =
                    conn.prepare_cached("SELECT channel, agent_id FROM channel_agents")?;
                let rows = select.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
                rows.collect::<rusqlite::Result<Vec<(String, String)>>>()
            })();
            let _ = reply.send(read.map_err(|e| e.to_string()));
        }
        Job::Save(..) | Job::List(..) => {}
    }
}
