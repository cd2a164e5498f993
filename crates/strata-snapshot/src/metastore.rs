//! Snapshot records, shared by every driver, in the store's SQLite database.
//!
//! Numbers come from AUTOINCREMENT, so a number is not given twice once its commit is
//! synced; a volatile snapshot's unsynced record can be lost in a power cut with its number,
//! which is why `Snapshotter::create` clears storage it finds under a new number. `parent`
//! references the parent's row, so the database itself refuses to drop a snapshot that
//! still has children.

use crate::snapshotter::Kind;
use rusqlite::{params, OptionalExtension, Transaction};
use std::collections::BTreeMap;

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS snapshots (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    key     TEXT NOT NULL UNIQUE,
    kind    TEXT NOT NULL CHECK (kind IN ('active', 'view', 'committed')),
    parent  INTEGER REFERENCES snapshots(id) ON DELETE RESTRICT,
    labels  TEXT NOT NULL DEFAULT '{}',
    created TEXT NOT NULL,
    updated TEXT NOT NULL,
    size    INTEGER NOT NULL DEFAULT 0,
    inodes  INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS snapshots_parent ON snapshots(parent);
";

#[derive(Debug, Clone)]
pub struct Row {
    pub id: i64,
    pub key: String,
    pub kind: Kind,
    pub parent: Option<i64>,
    pub parent_key: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub created: String,
    pub updated: String,
    /// What a committed snapshot holds; `None` until first asked for (commit does not walk
    /// the tree: its cost stays with the changes).
    pub usage: Option<crate::Usage>,
}

const SELECT: &str =
    "SELECT s.id, s.key, s.kind, s.parent, p.key, s.labels, s.created, s.updated, s.size, s.inodes
                      FROM snapshots s LEFT JOIN snapshots p ON p.id = s.parent";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    let kind: String = r.get(2)?;
    let labels: String = r.get(5)?;
    Ok(Row {
        id: r.get(0)?,
        key: r.get(1)?,
        kind: Kind::parse(&kind),
        parent: r.get(3)?,
        parent_key: r.get(4)?,
        labels: serde_json::from_str(&labels).unwrap_or_default(),
        created: r.get(6)?,
        updated: r.get(7)?,
        usage: match (r.get::<_, i64>(8)?, r.get::<_, i64>(9)?) {
            (size, inodes) if size >= 0 && inodes >= 0 => Some(crate::Usage {
                size: size as u64,
                inodes: inodes as u64,
            }),
            _ => None,
        },
    })
}

pub fn get(conn: &rusqlite::Connection, key: &str) -> rusqlite::Result<Option<Row>> {
    // Cached: one command looks a snapshot up several times.
    conn.prepare_cached(&format!("{SELECT} WHERE s.key = ?1"))?
        .query_row([key], row)
        .optional()
}

pub fn all(conn: &rusqlite::Connection) -> rusqlite::Result<Vec<Row>> {
    let mut st = conn.prepare(&format!("{SELECT} ORDER BY s.id"))?;
    let rows = st.query_map([], row)?.collect();
    rows
}

/// The ancestors of snapshot `id`, nearest first.
pub fn ancestors(conn: &rusqlite::Connection, id: i64) -> rusqlite::Result<Vec<i64>> {
    let mut st = conn.prepare_cached(
        "WITH RECURSIVE chain(id, depth) AS (
             SELECT parent, 1 FROM snapshots WHERE id = ?1 AND parent IS NOT NULL
             UNION ALL
             SELECT s.parent, c.depth + 1 FROM snapshots s JOIN chain c ON s.id = c.id WHERE s.parent IS NOT NULL
         ) SELECT id FROM chain ORDER BY depth",
    )?;
    let ids = st.query_map([id], |r| r.get(0))?.collect();
    ids
}

pub fn has_children(tx: &Transaction<'_>, id: i64) -> rusqlite::Result<bool> {
    tx.query_row(
        "SELECT EXISTS(SELECT 1 FROM snapshots WHERE parent = ?1)",
        [id],
        |r| r.get(0),
    )
}

pub fn insert(
    tx: &Transaction<'_>,
    key: &str,
    kind: Kind,
    parent: Option<i64>,
    labels: &BTreeMap<String, String>,
    now: &str,
) -> rusqlite::Result<i64> {
    tx.execute(
        "INSERT INTO snapshots (key, kind, parent, labels, created, updated) VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
        params![key, kind.as_str(), parent, serde_json::to_string(labels).expect("labels serialise"), now],
    )?;
    Ok(tx.last_insert_rowid())
}
