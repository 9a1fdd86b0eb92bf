//! The fleet database: the latest report of every agent, in SQLite at
//! `DATA/fleet.sqlite` (SPEC §4 "reports").
//!
//! One dedicated thread owns the connection; request handlers send it work
//! over a bounded queue and await the answer, so SQLite never blocks the async
//! threads. Reports that arrive together are written in one transaction.

use std::path::Path;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, anyhow};
use rusqlite::{Connection, OpenFlags, params};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use crate::report::RestartsReport;

/// The database's file name inside the console data folder.
pub const FLEET_DB: &str = "fleet.sqlite";

/// Requests waiting for the database thread; when full, handlers wait, which
/// slows reporting agents instead of growing memory.
const QUEUE_LEN: usize = 1024;

/// Most reports written in one transaction: one fsync for a burst of reports,
/// while a single batch stays short.
const BATCH_LEN: usize = 256;

/// How long a reader (`console fleet --data`) waits for the console's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const SCHEMA: &str = "
    PRAGMA journal_mode = WAL;
    PRAGMA synchronous = NORMAL;
    CREATE TABLE IF NOT EXISTS reports (
        agent_id    TEXT PRIMARY KEY NOT NULL,
        version     TEXT,
        bank        TEXT,
        phase       TEXT,
        pending     TEXT,
        last_error  TEXT,
        reported_at INTEGER NOT NULL,
        remote      TEXT
    );
";

/// Columns added after the first schema: `(name, type)`, added to an older
/// database at open.
const ADDED_COLUMNS: [(&str, &str); 5] = [
    ("previous_version", "TEXT"),
    ("sequence", "INTEGER"),
    ("last_error_kind", "TEXT"),
    ("restarts", "TEXT"),
    ("agent_version", "TEXT"),
];

const UPSERT: &str = "
    INSERT INTO reports (agent_id, version, bank, phase, pending, last_error, reported_at, remote,
                         previous_version, sequence, last_error_kind, restarts, agent_version)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
    ON CONFLICT(agent_id) DO UPDATE SET
        version = excluded.version, bank = excluded.bank, phase = excluded.phase,
        pending = excluded.pending, last_error = excluded.last_error,
        reported_at = excluded.reported_at, remote = excluded.remote,
        previous_version = excluded.previous_version, sequence = excluded.sequence,
        last_error_kind = excluded.last_error_kind, restarts = excluded.restarts,
        agent_version = excluded.agent_version";

const SELECT: &str = "
    SELECT agent_id, version, bank, phase, pending, last_error, reported_at, remote,
           previous_version, sequence, last_error_kind, restarts, agent_version
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
    /// The version of the agent (bankswap) build itself (SPEC §9).
    #[serde(default)]
    pub agent_version: Option<String>,
}

/// Work for the database thread.
enum Job {
    /// Insert or replace an agent's report.
    Save(Box<FleetEntry>, oneshot::Sender<Result<(), String>>),
    /// Read every agent's latest report.
    List(oneshot::Sender<Result<Vec<FleetEntry>, String>>),
}

/// A handle on the database thread; cheap to clone.
#[derive(Clone)]
pub struct Store {
    /// The queue into the database thread; the thread ends when every handle is gone.
    jobs: mpsc::Sender<Job>,
}

impl Store {
    /// Opens (creating if needed) the database and starts its thread.
    pub fn open(path: &Path) -> anyhow::Result<(Store, JoinHandle<()>)> {
        let conn = Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
        // The identity tables (registry.rs) share the file: wait for their writes.
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.execute_batch(SCHEMA)
            .and_then(|()| add_columns(&conn))
            .with_context(|| format!("setting up {}", path.display()))?;
        let (jobs, receiver) = mpsc::channel(QUEUE_LEN);
        let path = path.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("fleet-db".into())
            .spawn(move || run(conn, &path, receiver))
            .context("starting the fleet database thread")?;
        Ok((Store { jobs }, thread))
    }

    /// Stores `entry` as its agent's latest report.
    pub async fn save(&self, entry: FleetEntry) -> anyhow::Result<()> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job::Save(Box::new(entry), reply))
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?.map_err(|e| anyhow!(e))
    }

    /// Every agent's latest report, by agent id.
    pub async fn list(&self) -> anyhow::Result<Vec<FleetEntry>> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job::List(reply))
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?.map_err(|e| anyhow!(e))
    }
}

fn stopped() -> anyhow::Error {
    anyhow!("the fleet database thread has stopped")
}

/// Adds the [`ADDED_COLUMNS`] an older database lacks.
fn add_columns(conn: &Connection) -> rusqlite::Result<()> {
    let mut info = conn.prepare("SELECT name FROM pragma_table_info('reports')")?;
    let present: Vec<String> = info
        .query_map([], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    for (name, kind) in ADDED_COLUMNS {
        if !present.iter().any(|p| p == name) {
            conn.execute_batch(&format!("ALTER TABLE reports ADD COLUMN {name} {kind}"))?;
        }
    }
    Ok(())
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

/// The database thread: batches of jobs until every `Store` is dropped.
fn run(mut conn: Connection, path: &Path, mut receiver: mpsc::Receiver<Job>) {
    while let Some(first) = receiver.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < BATCH_LEN {
            match receiver.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let (saves, lists): (Vec<Job>, Vec<Job>) = batch
            .into_iter()
            .partition(|job| matches!(job, Job::Save(..)));
        let written = save_all(&mut conn, &saves).map_err(|e| {
            warn!(path = %path.display(), error = %e, "cannot store reports");
            e.to_string()
        });
        for job in saves {
            if let Job::Save(_, reply) = job {
                let _ = reply.send(written.clone());
            }
        }
        if !lists.is_empty() {
            let listed = select_all(&conn).map_err(|e| e.to_string());
            for job in lists {
                if let Job::List(reply) = job {
                    let _ = reply.send(listed.clone());
                }
            }
        }
    }
}

/// Writes a batch of reports in one transaction.
fn save_all(conn: &mut Connection, saves: &[Job]) -> rusqlite::Result<()> {
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
                e.agent_version
            ])?;
        }
    }
    tx.commit()
}

/// Every row, by agent id.
fn select_all(conn: &Connection) -> rusqlite::Result<Vec<FleetEntry>> {
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
            agent_version: row.get(12)?,
        })
    })?;
    rows.collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(agent: &str, version: &str) -> FleetEntry {
        FleetEntry {
            agent_id: agent.into(),
            version: Some(version.into()),
            bank: Some("Bank1".into()),
            phase: Some("committed".into()),
            pending: Some(serde_json::json!({"version": "2.0.0"})),
            last_error: None,
            reported_at: 1_700_000_000,
            remote: Some("127.0.0.1:4000".into()),
            previous_version: Some("0.9.0".into()),
            sequence: Some(7),
            last_error_kind: None,
            restarts: Some(RestartsReport {
                count: 2,
                last_exit: "1.0.0 exited (exit status: 3)".into(),
                since: "2026-12-01T10:00:00Z".into(),
            }),
            agent_version: Some("0.2.0".into()),
        }
    }

    #[tokio::test]
    async fn the_latest_report_per_agent_is_kept_and_readable_from_another_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FLEET_DB);
        let (store, thread) = Store::open(&path).unwrap();
        store.save(entry("b", "1.0.0")).await.unwrap();
        store.save(entry("a", "1.0.0")).await.unwrap();
        store.save(entry("b", "1.1.0")).await.unwrap();
        let listed = store.list().await.unwrap();
        assert_eq!(listed, vec![entry("a", "1.0.0"), entry("b", "1.1.0")]);
        assert_eq!(read(&path).unwrap(), listed);
        drop(store);
        thread.join().unwrap();
        assert_eq!(read(&dir.path().join("absent.sqlite")).unwrap(), vec![]);
    }

    #[tokio::test]
    async fn a_database_of_the_first_schema_gains_the_new_columns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FLEET_DB);
        let old = Connection::open(&path).unwrap();
        old.execute_batch(
            "CREATE TABLE reports (agent_id TEXT PRIMARY KEY NOT NULL, version TEXT, bank TEXT,
             phase TEXT, pending TEXT, last_error TEXT, reported_at INTEGER NOT NULL, remote TEXT);
             INSERT INTO reports (agent_id, reported_at) VALUES ('old', 1);",
        )
        .unwrap();
        drop(old);
        let (store, thread) = Store::open(&path).unwrap();
        store.save(entry("new", "1.0.0")).await.unwrap();
        let listed = store.list().await.unwrap();
        assert_eq!(listed[0].agent_id, "new");
        assert_eq!(listed[0], entry("new", "1.0.0"));
        assert_eq!(listed[1].agent_id, "old");
        assert!(listed[1].sequence.is_none() && listed[1].restarts.is_none());
        drop(store);
        thread.join().unwrap();
    }
}
