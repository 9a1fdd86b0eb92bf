//! The `reports` table: the latest report of every agent ([`FleetEntry`]),
//! written in batches by the database thread and read back by it or, for
//! `console fleet --data`, from the file.

use std::path::Path;

use anyhow::Context;
use rusqlite::{Connection, OpenFlags, params};
use serde::{Deserialize, Serialize};

use super::{BUSY_TIMEOUT, Job};
use crate::report::{BadReport, RestartsReport};

const UPSERT: &str = "
    INSERT INTO reports (agent_id, version, bank, phase, pending, last_error, reported_at, remote,
                         previous_version, sequence, last_error_kind, restarts, channel,
                         bad_versions, agent_version)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)
    ON CONFLICT(agent_id) DO UPDATE SET
        version = excluded.version, bank = excluded.bank, phase = excluded.phase,
        pending = excluded.pending, last_error = excluded.last_error,
        reported_at = excluded.reported_at, remote = excluded.remote,
        previous_version = excluded.previous_version, sequence = excluded.sequence,
        last_error_kind = excluded.last_error_kind, restarts = excluded.restarts,
        channel = excluded.channel, bad_versions = excluded.bad_versions,
        agent_version = excluded.agent_version";

const SELECT: &str = "
    SELECT agent_id, version, bank, phase, pending, last_error, reported_at, remote,
           previous_version, sequence, last_error_kind, restarts, channel, bad_versions,
           agent_version
    FROM reports ORDER BY agent_id";

/// The latest report of one agent, as stored and as `GET /v1/fleet` lists it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FleetEntry {
    /// The agent's stable identity (`ROOT/agent-id`).
    pub agent_id: String,
    /// The version it runs.
    pub version: Option<String>,
    /// The bank it runs from (`Bank1`/`Bank2`).
    pub bank: Option<String>,
    /// `committed` or `trial`.
    pub phase: Option<String>,
    /// A release being staged or scheduled, as the agent sent it.
    pub pending: Option<serde_json::Value>,
    /// The agent's last error.
    pub last_error: Option<String>,
    /// When the console received the report (unix seconds).
    pub reported_at: u64,
    /// The address the report came from.
    pub remote: Option<String>,
    /// The version kept for rollback.
    #[serde(default)]
    pub previous_version: Option<String>,
    /// The highest release sequence the agent accepted.
    #[serde(default)]
    pub sequence: Option<u64>,
    /// The kind of the last error (`check`, `release`, `staging`, `trial`, `payload`).
    #[serde(default)]
    pub last_error_kind: Option<String>,
    /// The payload's current streak of failures.
    #[serde(default)]
    pub restarts: Option<RestartsReport>,
    /// The channel the agent follows.
    #[serde(default)]
    pub channel: Option<String>,
    /// The versions the agent refuses, with why.
    #[serde(default)]
    pub bad_versions: Vec<BadReport>,
    /// The version of the agent (bankswap) build itself (SPEC §9).
    #[serde(default)]
    pub agent_version: Option<String>,
}

/// Reads the fleet from a database file, for `console fleet --data` (empty if
/// the console has not created it yet).
pub fn read(path: &Path) -> anyhow::Result<Vec<FleetEntry>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .with_context(|| format!("opening {}", path.display()))?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    select_all(&conn).with_context(|| format!("reading {}", path.display()))
}

/// Writes a batch of reports in one transaction.
pub(super) fn save_all(conn: &mut Connection, saves: &[Job]) -> rusqlite::Result<()> {
    if saves.is_empty() {
        return Ok(());
    }
    let tx = conn.transaction()?;
    {
        let mut upsert = tx.prepare_cached(UPSERT)?;
        for job in saves {
            let Job::Save(e, _) = job else { continue };
            let pending = e.pending.as_ref().map(serde_json::Value::to_string);
            let reported_at = i64::try_from(e.reported_at).unwrap_or(i64::MAX);
            let sequence = e.sequence.map(|s| i64::try_from(s).unwrap_or(i64::MAX));
            let restarts = e
                .restarts
                .as_ref()
                .and_then(|r| serde_json::to_string(r).ok());
            let bad_versions = (!e.bad_versions.is_empty())
                .then(|| serde_json::to_string(&e.bad_versions).ok())
                .flatten();
            upsert.execute(params![
                e.agent_id,
                e.version,
                e.bank,
                e.phase,
                pending,
                e.last_error,
                reported_at,
                e.remote,
                e.previous_version,
                sequence,
                e.last_error_kind,
                restarts,
                e.channel,
                bad_versions,
                e.agent_version
            ])?;
        }
    }
    tx.commit()
}

/// Every row, by agent id.
pub(super) fn select_all(conn: &Connection) -> rusqlite::Result<Vec<FleetEntry>> {
    let mut select = conn.prepare_cached(SELECT)?;
    let rows = select.query_map([], |row| {
        let pending: Option<String> = row.get(4)?;
        let reported_at: i64 = row.get(6)?;
        Ok(FleetEntry {
            agent_id: row.get(0)?,
            version: row.get(1)?,
            bank: row.get(2)?,
            phase: row.get(3)?,
            // Stored by us from a parsed value; text that no longer parses is kept as a string.
            pending: pending
                .map(|p| serde_json::from_str(&p).unwrap_or(serde_json::Value::String(p))),
            last_error: row.get(5)?,
            reported_at: u64::try_from(reported_at).unwrap_or(0),
            remote: row.get(7)?,
            previous_version: row.get(8)?,
            sequence: row
                .get::<_, Option<i64>>(9)?
                .map(|s| u64::try_from(s).unwrap_or(0)),
            last_error_kind: row.get(10)?,
            // Stored by us from a parsed value; text that no longer parses is dropped.
            restarts: row
                .get::<_, Option<String>>(11)?
                .and_then(|r| serde_json::from_str(&r).ok()),
            channel: row.get(12)?,
            // Stored by us from a parsed value; text that no longer parses is dropped.
            bad_versions: row
                .get::<_, Option<String>>(13)?
                .and_then(|b| serde_json::from_str(&b).ok())
                .unwrap_or_default(),
            agent_version: row.get(14)?,
        })
    })?;
    rows.collect()
}
