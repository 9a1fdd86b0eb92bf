//! The fleet database's tables, and the columns added to `reports` since
//! the first schema (added to an older database when it is opened).

use rusqlite::Connection;

/// The tables, created where absent (WAL: readers do not block the writer).
pub(super) const SCHEMA: &str = "
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
    CREATE TABLE IF NOT EXISTS channel_agents (
        channel  TEXT NOT NULL,
        agent_id TEXT NOT NULL,
        PRIMARY KEY (channel, agent_id)
    );
";

/// Columns added after the first schema: `(name, type)`, added to an older
/// database at open.
const ADDED_COLUMNS: [(&str, &str); 7] = [
    ("previous_version", "TEXT"),
    ("sequence", "INTEGER"),
    ("last_error_kind", "TEXT"),
    ("restarts", "TEXT"),
    ("channel", "TEXT"),
    ("bad_versions", "TEXT"),
    ("agent_version", "TEXT"),
];

/// Adds the [`ADDED_COLUMNS`] an older database lacks.
pub(super) fn add_columns(conn: &Connection) -> rusqlite::Result<()> {
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
