//! The engine's tables: layers, images and tags, in the store's one database.
//!
//! A layer row exists only once its snapshot is committed (while a layer is being applied
//! its state is the active `extract-` snapshot), an image row only once all its layers
//! exist, inserted together with its tags in one transaction. Removal marks rows
//! `removing` first, so an interrupted removal is finished on the next open.

use crate::error::Result;
use rusqlite::{params, OptionalExtension};
use strata_store::{Db, Digest};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS layers (
    chain_id    TEXT PRIMARY KEY,
    diff_id     TEXT NOT NULL,
    parent      TEXT REFERENCES layers(chain_id) ON DELETE RESTRICT,
    blob        TEXT NOT NULL,
    compression TEXT NOT NULL,
    size        INTEGER NOT NULL,
    created     TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('ready', 'removing'))
);
CREATE INDEX IF NOT EXISTS layers_parent ON layers(parent);
CREATE TABLE IF NOT EXISTS images (
    id        TEXT PRIMARY KEY,
    top_layer TEXT REFERENCES layers(chain_id) ON DELETE RESTRICT,
    created   TEXT NOT NULL,
    added     TEXT NOT NULL,
    size      INTEGER NOT NULL,
    state     TEXT NOT NULL CHECK (state IN ('ready', 'removing'))
);
CREATE INDEX IF NOT EXISTS images_top ON images(top_layer);
CREATE TABLE IF NOT EXISTS tags (
    name   TEXT PRIMARY KEY,
    image  TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    tagged TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS tags_image ON tags(image);
CREATE TABLE IF NOT EXISTS operations (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    kind    TEXT NOT NULL,
    pid     INTEGER NOT NULL,
    started TEXT NOT NULL
);
";

/// Bumped with every change to the schemas or upgrades `migrate` applies: a store marked
/// with it (SQLite's user_version) skips them, as parsing them costs every command.
const SCHEMA_VERSION: i64 = 1;

pub fn migrate(db: &Db) -> Result<()> {
    let version: i64 = db
        .conn()
        .pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version >= SCHEMA_VERSION {
        return Ok(());
    }
    db.conn().execute_batch(SCHEMA)?;
    db.conn().execute_batch(crate::containers::SCHEMA)?;
    db.conn().execute_batch(crate::volumes::SCHEMA)?;
    // Stores made before containers ran lack their host config column.
    let has_host: bool = db.conn().query_row(
        "SELECT EXISTS(SELECT 1 FROM pragma_table_info('containers') WHERE name = 'host_config')",
        [],
        |r| r.get(0),
    )?;
    if !has_host {
        db.conn().execute_batch(
            "ALTER TABLE containers ADD COLUMN host_config TEXT NOT NULL DEFAULT '{}'",
        )?;
    }
    db.conn()
        .pragma_update(None, "user_version", SCHEMA_VERSION)?;
    Ok(())
}

pub fn store_has_data(db: &Db) -> Result<bool> {
    let conn = db.conn();
    let has_layers: bool = conn
        .query_row("SELECT EXISTS(SELECT 1 FROM layers)", [], |r| r.get(0))
        .unwrap_or(false);
    let has_snaps: bool = conn
        .query_row("SELECT EXISTS(SELECT 1 FROM snapshots)", [], |r| r.get(0))
        .unwrap_or(false);
    Ok(has_layers || has_snaps)
}

#[derive(Debug, Clone)]
pub struct LayerRow {
    pub chain_id: Digest,
    pub diff_id: Digest,
    pub parent: Option<Digest>,
    pub blob: Digest,
    pub compression: String,
    pub size: u64,
}

fn digest(s: String) -> rusqlite::Result<Digest> {
    s.parse().map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn layer_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<LayerRow> {
    Ok(LayerRow {
        chain_id: digest(r.get(0)?)?,
        diff_id: digest(r.get(1)?)?,
        parent: r.get::<_, Option<String>>(2)?.map(digest).transpose()?,
        blob: digest(r.get(3)?)?,
        compression: r.get(4)?,
        size: r.get::<_, i64>(5)? as u64,
    })
}

const LAYER_COLS: &str = "chain_id, diff_id, parent, blob, compression, size";

pub fn layer(db: &Db, chain_id: &Digest) -> Result<Option<LayerRow>> {
    Ok(db
        .conn()
        .query_row(
            &format!("SELECT {LAYER_COLS} FROM layers WHERE chain_id = ?1 AND state = 'ready'"),
            [chain_id.to_string()],
            layer_row,
        )
        .optional()?)
}

pub fn all_layers(db: &Db) -> Result<Vec<LayerRow>> {
    let conn = db.conn();
    let mut st = conn.prepare(&format!("SELECT {LAYER_COLS} FROM layers"))?;
    let rows = st
        .query_map([], layer_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Records a layer whose snapshot was just committed. A concurrent process may have
/// recorded the same layer first; that is the same layer. A row an interrupted removal left
/// `removing` is ready again: its snapshot was just committed (or found committed).
pub fn insert_layer(tx: &rusqlite::Connection, l: &LayerRow) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO layers (chain_id, diff_id, parent, blob, compression, size, created, state)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'ready') ON CONFLICT(chain_id) DO UPDATE SET state = 'ready'",
        params![
            l.chain_id.to_string(),
            l.diff_id.to_string(),
            l.parent.as_ref().map(|p| p.to_string()),
            l.blob.to_string(),
            l.compression,
            l.size as i64,
            now()
        ],
    )?;
    Ok(())
}

/// Every layer by chain ID, read in one query, for listings that need many images' chains
/// (one recursive query per image would grow with the store).
pub struct LayerIndex(std::collections::HashMap<Digest, LayerRow>);

impl LayerIndex {
    pub fn load(db: &Db) -> Result<LayerIndex> {
        Ok(LayerIndex(
            all_layers(db)?
                .into_iter()
                .map(|l| (l.chain_id.clone(), l))
                .collect(),
        ))
    }

    /// The chain ending in `top`, top first.
    pub fn chain(&self, top: Option<&Digest>) -> Vec<&LayerRow> {
        let mut out = Vec::new();
        let mut next = top;
        while let Some(l) = next.and_then(|c| self.0.get(c)) {
            out.push(l);
            next = l.parent.as_ref();
        }
        out
    }

    pub fn all(&self) -> impl Iterator<Item = &LayerRow> {
        self.0.values()
    }
}

/// The chain of a layer, bottom first.
pub fn layer_chain(db: &Db, top: &Digest) -> Result<Vec<LayerRow>> {
    let conn = db.conn();
    let mut st = conn.prepare(&format!(
        "WITH RECURSIVE chain(cid, depth) AS (
             SELECT ?1, 0
             UNION ALL
             SELECT l.parent, c.depth + 1 FROM layers l JOIN chain c ON l.chain_id = c.cid WHERE l.parent IS NOT NULL
         ) SELECT {} FROM chain c JOIN layers l ON l.chain_id = c.cid ORDER BY c.depth DESC",
        LAYER_COLS.split(", ").map(|c| format!("l.{c}")).collect::<Vec<_>>().join(", ")
    ))?;
    let rows = st
        .query_map([top.to_string()], layer_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

#[derive(Debug, Clone)]
pub struct ImageRow {
    pub id: Digest,
    pub top_layer: Option<Digest>,
    pub created: String,
    pub added: String,
    pub size: u64,
}

fn image_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ImageRow> {
    Ok(ImageRow {
        id: digest(r.get(0)?)?,
        top_layer: r.get::<_, Option<String>>(1)?.map(digest).transpose()?,
        created: r.get(2)?,
        added: r.get(3)?,
        size: r.get::<_, i64>(4)? as u64,
    })
}

const IMAGE_COLS: &str = "id, top_layer, created, added, size";

pub fn image(db: &Db, id: &Digest) -> Result<Option<ImageRow>> {
    Ok(db
        .conn()
        .query_row(
            &format!("SELECT {IMAGE_COLS} FROM images WHERE id = ?1 AND state = 'ready'"),
            [id.to_string()],
            image_row,
        )
        .optional()?)
}

pub fn images(db: &Db) -> Result<Vec<ImageRow>> {
    let conn = db.conn();
    let mut st = conn.prepare(&format!(
        "SELECT {IMAGE_COLS} FROM images WHERE state = 'ready' ORDER BY added DESC, id"
    ))?;
    let rows = st
        .query_map([], image_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Image IDs starting with `hex_prefix`.
pub fn images_by_prefix(db: &Db, hex_prefix: &str) -> Result<Vec<Digest>> {
    let conn = db.conn();
    let mut st =
        conn.prepare("SELECT id FROM images WHERE state = 'ready' AND substr(id, 8, ?2) = ?1")?;
    let rows = st
        .query_map(params![hex_prefix, hex_prefix.len() as i64], |r| {
            digest(r.get(0)?)
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

pub fn tags_of(db: &Db, id: &Digest) -> Result<Vec<String>> {
    let conn = db.conn();
    let mut st = conn.prepare("SELECT name FROM tags WHERE image = ?1 ORDER BY name")?;
    let rows = st
        .query_map([id.to_string()], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    Ok(rows)
}

pub fn all_tags(db: &Db) -> Result<Vec<(String, Digest)>> {
    let conn = db.conn();
    let mut st = conn.prepare("SELECT t.name, t.image FROM tags t JOIN images i ON i.id = t.image WHERE i.state = 'ready' ORDER BY t.name")?;
    let rows = st
        .query_map([], |r| Ok((r.get(0)?, digest(r.get(1)?)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

pub fn tag_target(db: &Db, name: &str) -> Result<Option<Digest>> {
    Ok(db
        .conn()
        .query_row("SELECT image FROM tags WHERE name = ?1", [name], |r| {
            digest(r.get(0)?)
        })
        .optional()?)
}

/// Inserts an image (if new) and points `tags` at it, in one transaction. Returns, for
/// each tag that moved, the image it was taken from.
pub fn insert_image(db: &Db, img: &ImageRow, tags: &[String]) -> Result<Vec<(String, Digest)>> {
    db.write(|tx| -> Result<Vec<(String, Digest)>> {
        tx.execute(
            "INSERT INTO images (id, top_layer, created, added, size, state) VALUES (?1, ?2, ?3, ?4, ?5, 'ready')
             ON CONFLICT(id) DO UPDATE SET state = 'ready'",
            params![img.id.to_string(), img.top_layer.as_ref().map(|t| t.to_string()), img.created, img.added, img.size as i64],
        )?;
        let mut moved = Vec::new();
        for t in tags {
            let old: Option<String> = tx.query_row("SELECT image FROM tags WHERE name = ?1", [t], |r| r.get(0)).optional()?;
            if let Some(old) = old {
                if old != img.id.to_string() {
                    moved.push((t.clone(), digest(old)?));
                }
            }
            tx.execute(
                "INSERT INTO tags (name, image, tagged) VALUES (?1, ?2, ?3) ON CONFLICT(name) DO UPDATE SET image = excluded.image, tagged = excluded.tagged",
                params![t, img.id.to_string(), now()],
            )?;
        }
        Ok(moved)
    })
}

pub fn remove_tag(db: &Db, name: &str) -> Result<bool> {
    Ok(db
        .conn()
        .execute("DELETE FROM tags WHERE name = ?1", [name])?
        > 0)
}

/// Drops an image's tags and the image in one transaction.
pub fn delete_image(db: &Db, id: &Digest) -> Result<()> {
    db.write(|tx| -> Result<()> {
        tx.execute(
            "UPDATE images SET state = 'removing' WHERE id = ?1",
            [id.to_string()],
        )?;
        tx.execute("DELETE FROM tags WHERE image = ?1", [id.to_string()])?;
        tx.execute("DELETE FROM images WHERE id = ?1", [id.to_string()])?;
        Ok(())
    })
}

/// Layers no image and no other layer uses, leaves first.
pub fn unused_layers(db: &Db) -> Result<Vec<Digest>> {
    let conn = db.conn();
    let mut st = conn.prepare(
        "SELECT l.chain_id FROM layers l
         WHERE NOT EXISTS (SELECT 1 FROM images i WHERE i.top_layer = l.chain_id)
           AND NOT EXISTS (SELECT 1 FROM layers c WHERE c.parent = l.chain_id)",
    )?;
    let rows = st
        .query_map([], |r| digest(r.get(0)?))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

pub fn mark_layer_removing(db: &Db, chain_id: &Digest) -> Result<()> {
    db.conn().execute(
        "UPDATE layers SET state = 'removing' WHERE chain_id = ?1",
        [chain_id.to_string()],
    )?;
    Ok(())
}

pub fn delete_layer(db: &Db, chain_id: &Digest) -> Result<()> {
    db.conn().execute(
        "DELETE FROM layers WHERE chain_id = ?1",
        [chain_id.to_string()],
    )?;
    Ok(())
}

/// Images an interrupted `rmi` left half-removed are removed now.
pub fn finish_removals(db: &Db) -> Result<()> {
    let any: bool = db.conn().query_row(
        "SELECT EXISTS(SELECT 1 FROM images WHERE state = 'removing')",
        [],
        |r| r.get(0),
    )?;
    if !any {
        return Ok(());
    }
    db.write(|tx| -> Result<()> {
        tx.execute(
            "DELETE FROM tags WHERE image IN (SELECT id FROM images WHERE state = 'removing')",
            [],
        )?;
        tx.execute("DELETE FROM images WHERE state = 'removing'", [])?;
        Ok(())
    })
}

/// Blob digests the records point to.
pub fn referenced_blobs(db: &Db) -> Result<std::collections::HashSet<Digest>> {
    let conn = db.conn();
    let mut out = std::collections::HashSet::new();
    let mut st = conn.prepare("SELECT id FROM images UNION SELECT blob FROM layers")?;
    for d in st.query_map([], |r| digest(r.get(0)?))? {
        out.insert(d?);
    }
    Ok(out)
}

pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// Records that a mutating operation started; the row goes when it ends. A row left behind
/// names an operation whose process died, which recovery then finishes or rolls back.
pub fn begin_operation(db: &Db, kind: &str) -> Result<i64> {
    // Unsynced: if a power cut loses the row, the work it announced was not synced either,
    // and what is left of it is an orphan that `system check` finds.
    Ok(db.unsynced(|conn| {
        conn.prepare_cached("INSERT INTO operations (kind, pid, started) VALUES (?1, ?2, ?3)")?
            .execute(params![kind, std::process::id(), now()])?;
        Ok(conn.last_insert_rowid())
    })?)
}

pub fn end_operation(db: &Db, id: i64) -> Result<()> {
    // Unsynced: losing this delete only makes the next process check for leftovers.
    db.unsynced(|conn| {
        conn.prepare_cached("DELETE FROM operations WHERE id = ?1")?
            .execute([id])
    })?;
    Ok(())
}

/// Operations whose processes died (only meaningful while holding the store alone).
pub fn interrupted_operations(db: &Db) -> Result<Vec<String>> {
    let conn = db.conn();
    let mut st = conn.prepare("SELECT kind || ' (pid ' || pid || ', started ' || started || ')' FROM operations ORDER BY id")?;
    let rows = st
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    Ok(rows)
}

pub fn clear_operations(db: &Db) -> Result<()> {
    db.conn().execute("DELETE FROM operations", [])?;
    Ok(())
}
