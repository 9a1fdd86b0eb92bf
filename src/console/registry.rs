//! Who may talk to the console (SPEC §10): enrollment tokens, enrolled
//! agents and named admin tokens, in the console's SQLite database
//! (`DATA/fleet.sqlite`, next to the reports).
//!
//! Tokens are stored as SHA-256 digests, never in clear. The functions here
//! take a [`Connection`], so `console token create`, `console agents revoke`
//! and the running console share them; the console reads the tables on every
//! request, so a revocation from the command line counts at once.

use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::Serialize;
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::clock;

/// How long a writer waits for another process's lock (the console and a
/// `console agents revoke` share the file).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Random bytes in a token: 256 bits, far beyond guessing.
const TOKEN_BYTES: usize = 32;

/// The longest name of an admin token.
const MAX_ADMIN_NAME: usize = 64;

const SCHEMA: &str = "
    PRAGMA journal_mode = WAL;
    CREATE TABLE IF NOT EXISTS enrollment_tokens (
        digest     TEXT PRIMARY KEY NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        uses_left  INTEGER NOT NULL
    );
    CREATE TABLE IF NOT EXISTS agents (
        agent_id    TEXT PRIMARY KEY NOT NULL,
        hostname    TEXT,
        enrolled_at INTEGER NOT NULL,
        cert_serial TEXT NOT NULL,
        prev_serial TEXT,
        cert_expiry INTEGER NOT NULL,
        last_seen   INTEGER,
        revoked_at  INTEGER
    );
    CREATE TABLE IF NOT EXISTS admin_tokens (
        name       TEXT PRIMARY KEY NOT NULL,
        digest     BLOB NOT NULL,
        created_at INTEGER NOT NULL
    );
";

/// Opens (creating if needed) the identity tables of a console database.
pub fn open(path: &Path) -> anyhow::Result<Connection> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let conn = Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.execute_batch(SCHEMA)
        .with_context(|| format!("setting up {}", path.display()))?;
    Ok(conn)
}

/// SHA-256 of a token: what is stored and compared.
pub fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.trim().as_bytes()).into()
}

/// A fresh random token with a prefix saying what it is for.
fn new_token(prefix: &str) -> String {
    let bytes: [u8; TOKEN_BYTES] = rand::random();
    format!("{prefix}{}", hex::encode(bytes))
}

fn unix(time: SystemTime) -> i64 {
    i64::try_from(clock::unix(time)).unwrap_or(i64::MAX)
}

/// Makes an enrollment token valid for `valid_for` and `uses` enrollments;
/// returns it (the only time it exists in clear).
pub fn create_enrollment_token(
    conn: &Connection,
    now: SystemTime,
    valid_for: Duration,
    uses: u32,
) -> rusqlite::Result<String> {
    let token = new_token("bsenroll-");
    conn.execute(
        "INSERT INTO enrollment_tokens (digest, created_at, expires_at, uses_left) VALUES (?1, ?2, ?3, ?4)",
        params![
            hex::encode(digest(&token)),
            unix(now),
            unix(now + valid_for),
            uses
        ],
    )?;
    Ok(token)
}

/// Why an enrollment was refused: the reason both the HTTP answer and the
/// agent's error line give.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum EnrollRefusal {
    /// No such token: mistyped, forged, or from another console.
    #[error("the enrollment token is not one this console issued")]
    Unknown,
    /// The token expired.
    #[error("the enrollment token expired; ask an admin for a new one (`console token create`)")]
    Expired,
    /// Every use of the token is spent.
    #[error("the enrollment token was already used; ask an admin for a new one")]
    Used,
    /// The agent id was revoked: an admin must `console agents forget` it first.
    #[error(
        "agent {0} is revoked; an admin must `console agents forget {0}` before it enrolls again"
    )]
    Revoked(String),
}

/// Spends one use of an enrollment token, inside `tx`.
pub fn spend_enrollment_token(
    tx: &Transaction<'_>,
    token: &str,
    now: SystemTime,
) -> rusqlite::Result<Result<(), EnrollRefusal>> {
    let key = hex::encode(digest(token));
    let row: Option<(i64, i64)> = tx
        .query_row(
            "SELECT expires_at, uses_left FROM enrollment_tokens WHERE digest = ?1",
            params![key],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?;
    let Some((expires_at, uses_left)) = row else {
        return Ok(Err(EnrollRefusal::Unknown));
    };
    if uses_left <= 0 {
        return Ok(Err(EnrollRefusal::Used));
    }
    if expires_at <= unix(now) {
        return Ok(Err(EnrollRefusal::Expired));
    }
    tx.execute(
        "UPDATE enrollment_tokens SET uses_left = uses_left - 1 WHERE digest = ?1",
        params![key],
    )?;
    Ok(Ok(()))
}

/// One enrolled agent, as `console agents` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentRecord {
    /// The agent id its certificate names.
    pub agent_id: String,
    /// The host name it gave when enrolling.
    pub hostname: Option<String>,
    /// When it enrolled (unix seconds).
    pub enrolled_at: u64,
    /// The serial of its newest certificate (hex).
    pub cert_serial: String,
    /// The serial of the certificate before it, still accepted until it expires.
    pub prev_serial: Option<String>,
    /// When its newest certificate expires (unix seconds).
    pub cert_expiry: u64,
    /// When it last reported (unix seconds).
    pub last_seen: Option<u64>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<u64>,
}

/// An agent's state, as `console agents` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentState {
    /// Enrolled and reporting.
    Active,
    /// Refused by the console.
    Revoked,
    /// Has not reported for longer than the stale limit (kept, not deleted).
    Stale,
}

impl AgentState {
    /// The word shown.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentState::Active => "active",
            AgentState::Revoked => "revoked",
            AgentState::Stale => "stale",
        }
    }
}

impl AgentRecord {
    /// Active, revoked, or stale when not seen (or enrolled) within `stale_after`.
    pub fn state(&self, now: SystemTime, stale_after: Duration) -> AgentState {
        if self.revoked_at.is_some() {
            return AgentState::Revoked;
        }
        let seen = self.last_seen.unwrap_or(self.enrolled_at);
        if clock::unix(now).saturating_sub(seen) > stale_after.as_secs() {
            AgentState::Stale
        } else {
            AgentState::Active
        }
    }
}

const AGENT_COLUMNS: &str =
    "agent_id, hostname, enrolled_at, cert_serial, prev_serial, cert_expiry, last_seen, revoked_at";

fn agent_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<AgentRecord> {
    let seconds = |v: i64| u64::try_from(v).unwrap_or(0);
    Ok(AgentRecord {
        agent_id: row.get(0)?,
        hostname: row.get(1)?,
        enrolled_at: seconds(row.get(2)?),
        cert_serial: row.get(3)?,
        prev_serial: row.get(4)?,
        cert_expiry: seconds(row.get(5)?),
        last_seen: row.get::<_, Option<i64>>(6)?.map(seconds),
        revoked_at: row.get::<_, Option<i64>>(7)?.map(seconds),
    })
}

/// One agent, if enrolled (and not forgotten).
pub fn agent(conn: &Connection, agent_id: &str) -> rusqlite::Result<Option<AgentRecord>> {
    conn.query_row(
        &format!("SELECT {AGENT_COLUMNS} FROM agents WHERE agent_id = ?1"),
        params![agent_id],
        agent_row,
    )
    .optional()
}

/// Every enrolled agent, by id.
pub fn agents(conn: &Connection) -> rusqlite::Result<Vec<AgentRecord>> {
    let mut select = conn.prepare(&format!(
        "SELECT {AGENT_COLUMNS} FROM agents ORDER BY agent_id"
    ))?;
    let rows = select.query_map([], agent_row)?;
    rows.collect()
}

/// Whether any agent enrolled (then anonymous reports are never accepted
/// for an enrolled id).
pub fn is_enrolled(conn: &Connection, agent_id: &str) -> rusqlite::Result<bool> {
    Ok(agent(conn, agent_id)?.is_some())
}

/// Records a new enrollment (or a re-enrollment with a new token), inside `tx`.
pub fn record_enrollment(
    tx: &Transaction<'_>,
    agent_id: &str,
    hostname: Option<&str>,
    serial: &str,
    cert_expiry: u64,
    now: SystemTime,
) -> rusqlite::Result<Result<(), EnrollRefusal>> {
    if let Some(existing) = agent(tx, agent_id)?
        && existing.revoked_at.is_some()
    {
        return Ok(Err(EnrollRefusal::Revoked(agent_id.to_string())));
    }
    tx.execute(
        "INSERT INTO agents (agent_id, hostname, enrolled_at, cert_serial, prev_serial, cert_expiry)
         VALUES (?1, ?2, ?3, ?4, NULL, ?5)
         ON CONFLICT(agent_id) DO UPDATE SET hostname = excluded.hostname,
             enrolled_at = excluded.enrolled_at, cert_serial = excluded.cert_serial,
             prev_serial = NULL, cert_expiry = excluded.cert_expiry",
        params![
            agent_id,
            hostname,
            unix(now),
            serial,
            i64::try_from(cert_expiry).unwrap_or(i64::MAX)
        ],
    )?;
    Ok(Ok(()))
}

/// Records a renewed certificate: the one it replaces stays accepted (until
/// it expires), so an agent keeps working until the new one is in place.
pub fn record_renewal(
    conn: &Connection,
    agent_id: &str,
    serial: &str,
    cert_expiry: u64,
) -> rusqlite::Result<bool> {
    let changed = conn.execute(
        "UPDATE agents SET prev_serial = cert_serial, cert_serial = ?2, cert_expiry = ?3
         WHERE agent_id = ?1 AND revoked_at IS NULL",
        params![
            agent_id,
            serial,
            i64::try_from(cert_expiry).unwrap_or(i64::MAX)
        ],
    )?;
    Ok(changed == 1)
}

/// Notes that an agent reported.
pub fn touch(conn: &Connection, agent_id: &str, now: SystemTime) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE agents SET last_seen = ?2 WHERE agent_id = ?1",
        params![agent_id, unix(now)],
    )?;
    Ok(())
}

/// Revokes an agent: the console refuses its certificates from the next
/// request on. `false` if no such agent.
pub fn revoke(conn: &Connection, agent_id: &str, now: SystemTime) -> rusqlite::Result<bool> {
    let changed = conn.execute(
        "UPDATE agents SET revoked_at = COALESCE(revoked_at, ?2) WHERE agent_id = ?1",
        params![agent_id, unix(now)],
    )?;
    Ok(changed == 1)
}

/// Removes an agent (its certificates are refused as unknown; it may enroll
/// again with a new token). `false` if no such agent.
pub fn forget(conn: &Connection, agent_id: &str) -> rusqlite::Result<bool> {
    let changed = conn.execute("DELETE FROM agents WHERE agent_id = ?1", params![agent_id])?;
    conn.execute("DELETE FROM reports WHERE agent_id = ?1", params![agent_id])
        .or_else(|e| match e {
            // A console that never stored a report has no reports table yet.
            rusqlite::Error::SqliteFailure(_, Some(ref m)) if m.contains("no such table") => Ok(0),
            e => Err(e),
        })?;
    Ok(changed == 1)
}

/// Checks an admin token name: a plain word.
pub fn check_admin_name(name: &str) -> Result<(), String> {
    if (1..=MAX_ADMIN_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
    {
        Ok(())
    } else {
        Err(format!(
            "admin token name `{name}`: use 1-{MAX_ADMIN_NAME} of [A-Za-z0-9._-]"
        ))
    }
}

/// Makes a named admin token; `None` if the name is taken.
pub fn create_admin_token(
    conn: &Connection,
    name: &str,
    now: SystemTime,
) -> rusqlite::Result<Option<String>> {
    let token = new_token("bsadmin-");
    let inserted = conn.execute(
        "INSERT OR IGNORE INTO admin_tokens (name, digest, created_at) VALUES (?1, ?2, ?3)",
        params![name, digest(&token).to_vec(), unix(now)],
    )?;
    Ok((inserted == 1).then_some(token))
}

/// Withdraws a named admin token. `false` if no such name.
pub fn revoke_admin_token(conn: &Connection, name: &str) -> rusqlite::Result<bool> {
    Ok(conn.execute("DELETE FROM admin_tokens WHERE name = ?1", params![name])? == 1)
}

/// Every named admin token's digest.
pub fn admin_tokens(conn: &Connection) -> rusqlite::Result<Vec<(String, Vec<u8>)>> {
    let mut select = conn.prepare_cached("SELECT name, digest FROM admin_tokens ORDER BY name")?;
    let rows = select.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
    rows.collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_enrollment_token_is_spent_once_and_expires() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open(&dir.path().join("db.sqlite")).unwrap();
        let now = clock::from_unix(1_000_000);
        let token = create_enrollment_token(&conn, now, Duration::from_secs(60), 1).unwrap();
        let spend = |conn: &mut Connection, token: &str, at| {
            let tx = conn.transaction().unwrap();
            let r = spend_enrollment_token(&tx, token, at).unwrap();
            tx.commit().unwrap();
            r
        };
        let later = now + Duration::from_secs(61);
        assert_eq!(spend(&mut conn, &token, later), Err(EnrollRefusal::Expired));
        assert_eq!(spend(&mut conn, &token, now), Ok(()));
        assert_eq!(spend(&mut conn, &token, now), Err(EnrollRefusal::Used));
        assert_eq!(
            spend(&mut conn, "bsenroll-forged", now),
            Err(EnrollRefusal::Unknown)
        );
    }

    #[test]
    fn agents_turn_stale_and_revoked() {
        let record = AgentRecord {
            agent_id: "a".into(),
            hostname: None,
            enrolled_at: 100,
            cert_serial: "01".into(),
            prev_serial: None,
            cert_expiry: 1000,
            last_seen: Some(200),
            revoked_at: None,
        };
        let hour = Duration::from_secs(3600);
        assert_eq!(
            record.state(clock::from_unix(300), hour),
            AgentState::Active
        );
        assert_eq!(
            record.state(clock::from_unix(4000), hour),
            AgentState::Stale
        );
        let revoked = AgentRecord {
            revoked_at: Some(250),
            ..record
        };
        assert_eq!(
            revoked.state(clock::from_unix(300), hour),
            AgentState::Revoked
        );
    }
}
