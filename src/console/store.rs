//! The fleet database: the latest report of every agent, in SQLite at
//! `DATA/fleet.sqlite` (SPEC §4 "reports").
//!
//! One dedicated thread owns the connection; request handlers send it work
//! over a bounded queue and await the answer, so SQLite never blocks the async
//! threads. Reports that arrive together are written in one transaction.
//!
//! Here: the handle ([`Store`]) and the database thread; `store/schema.rs`:
//! the tables and the columns added since; `store/reports.rs`: the `reports`
//! table ([`FleetEntry`]); `store/channel_agents.rs`: which agents follow
//! which channel (rollouts).

mod channel_agents;
mod reports;
mod schema;

use std::path::Path;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, anyhow};
use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

pub use self::channel_agents::read_members;
pub use self::reports::{FleetEntry, read};

use self::channel_agents::membership;
use self::reports::{save_all, select_all};
use self::schema::{SCHEMA, add_columns};

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

/// Work for the database thread.
enum Job {
    /// Insert or replace an agent's report.
    Save(Box<FleetEntry>, oneshot::Sender<Result<(), String>>),
    /// Read every agent's latest report.
    List(oneshot::Sender<Result<Vec<FleetEntry>, String>>),
    /// Record that agents follow channels: `(channel, agent_id)` (rollouts).
    AddMembers(Vec<(String, String)>, oneshot::Sender<Result<(), String>>),
    /// Read every `(channel, agent_id)` recorded.
    Members(oneshot::Sender<Result<Vec<(String, String)>, String>>),
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

impl Store {
    /// Records that these agents asked for these channels (rollouts count
    /// them after a restart, before they ask again).
    pub async fn add_members(&self, members: Vec<(String, String)>) -> anyhow::Result<()> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job::AddMembers(members, reply))
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?.map_err(|e| anyhow!(e))
    }

    /// Every `(channel, agent_id)` recorded.
    pub async fn members(&self) -> anyhow::Result<Vec<(String, String)>> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job::Members(reply))
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?.map_err(|e| anyhow!(e))
    }
}

fn stopped() -> anyhow::Error {
    anyhow!("the fleet database thread has stopped")
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
        let (saves, rest): (Vec<Job>, Vec<Job>) = batch
            .into_iter()
            .partition(|job| matches!(job, Job::Save(..)));
        let (lists, members): (Vec<Job>, Vec<Job>) = rest
            .into_iter()
            .partition(|job| matches!(job, Job::List(..)));
        for job in members {
            membership(&mut conn, job);
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{BadReport, RestartsReport};

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
            channel: Some("stable".into()),
            bad_versions: vec![BadReport {
                version: "1.1.0".into(),
                sequence: 6,
                reason: "1.1.0 rolled back: 2 failures during its trial".into(),
            }],
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
