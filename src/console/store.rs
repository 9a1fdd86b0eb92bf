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

const UPSERT: &str = "
    INSERT INTO reports (agent_id, version, bank, phase, pending, last_error, reported_at, remote)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
    ON CONFLICT(agent_id) DO UPDATE SET
        version = excluded.version, bank = excluded.bank, phase = excluded.phase,
        pending = excluded.pending, last_error = excluded.last_error,
        reported_at = excluded.reported_at, remote = excluded.remote";

const SELECT: &str = "
    SELECT agent_id, version, bank, phase, pending, last_error, reported_at, remote
    FROM reports ORDER BY agent_id";

/// The latest report of one agent, as stored and as `GET /v1/fleet` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
}

/// Work for the database thread.
enum Job {
    /// Insert or replace an agent's report.
    Save(FleetEntry, oneshot::Sender<Result<(), String>>),
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
            .send(Job::Save(entry, reply))
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
            upsert.execute(params![
                e.agent_id,
                e.version,
                e.bank,
                e.phase,
                pending,
                e.last_error,
                reported_at,
                e.remote
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
}
