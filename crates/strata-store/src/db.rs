//! The metadata database: one SQLite file in WAL mode shared by every strata process.
//!
//! WAL gives many readers and one writer across processes; writers use `BEGIN IMMEDIATE`
//! so they queue on the busy timeout instead of failing on lock upgrades.

use rusqlite::config::DbConfig;
use rusqlite::hooks::Wal;
use rusqlite::wal::CheckpointMode;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior};
use std::ffi::c_int;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

pub struct Db {
    conn: Mutex<Connection>,
    /// Set by a commit that left the WAL due for a checkpoint while checkpoints are held
    /// (`hold_checkpoints`).
    checkpoint_due: Arc<AtomicBool>,
}

/// WAL pages after which a commit checkpoints (SQLite's `wal_autocheckpoint`).
const CHECKPOINT_PAGES: i32 = 64;

impl Db {
    pub fn open(path: &Path) -> rusqlite::Result<Db> {
        // Built without SQLite's own directory syncs (`.cargo/config.toml`): the entries of
        // a new database and WAL are synced here instead, once.
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        let fresh = !Path::new(&wal).exists();
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(60))?;
        // WAL mode is recorded in the database file: set once, with the WAL's creation.
        if fresh {
            conn.pragma_update(None, "journal_mode", "WAL")?;
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // Each CLI command is one short-lived connection. Closing the last one would
        // checkpoint, then delete the WAL, and the next command would create it again:
        // an fsync of the database, two new files and a directory fsync per command.
        // Committed data is as durable in the WAL. The next process to open the store
        // reads the WAL back to index it (about 6 µs a page), so checkpoints keep it short:
        // 64 pages measured best against 32 and 256 (`ps -a` 3.0 against 3.2 ms).
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)?;
        conn.pragma_update(None, "wal_autocheckpoint", CHECKPOINT_PAGES)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);",
        )?;
        if fresh {
            let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
            std::fs::File::open(dir.unwrap_or(Path::new(".")))
                .and_then(|d| d.sync_all())
                .map_err(|e| {
                    rusqlite::Error::SqliteFailure(
                        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR_DIR_FSYNC),
                        Some(format!("syncing the directory of {}: {e}", path.display())),
                    )
                })?;
        }
        Ok(Db {
            conn: Mutex::new(conn),
            checkpoint_due: Arc::new(AtomicBool::new(false)),
        })
    }

    /// From now on this connection's commits leave a due checkpoint to
    /// [`Db::checkpoint_if_due`] instead of running it themselves: a checkpoint syncs the
    /// WAL and the database file, and a process with a moment to spare (a `run` while its
    /// container starts) takes those syncs off its critical path.
    pub fn hold_checkpoints(&self) -> rusqlite::Result<()> {
        let due = Arc::clone(&self.checkpoint_due);
        // Replaces the hook through which SQLite checkpoints automatically.
        self.conn().wal_hook(Some(move |_: &mut Wal, pages: c_int| {
            if pages >= CHECKPOINT_PAGES {
                due.store(true, Ordering::Relaxed);
            }
            Ok(())
        }))
    }

    /// Runs the checkpoint a commit left due while checkpoints were held; nothing when none
    /// is. Passive: it copies what no reader still needs and never waits.
    pub fn checkpoint_if_due(&self) -> rusqlite::Result<()> {
        if self.checkpoint_due.swap(false, Ordering::Relaxed) {
            self.conn()
                .wal_checkpoint_v2(None::<&str>, CheckpointMode::PASSIVE)?;
        }
        Ok(())
    }

    /// The connection, for reads and for statements that are atomic on their own.
    pub fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` in one write transaction, committed only if `f` succeeds, and synced.
    pub fn write<T, E>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T, E>) -> Result<T, E>
    where
        E: From<rusqlite::Error>,
    {
        let mut conn = self.conn();
        transaction(&mut conn, f)
    }

    /// Runs `f` in one write transaction like [`Db::write`], but its commit is not synced
    /// on its own: for records of what dies with its container (a `--rm` container's, on a
    /// volatile snapshot), which a power cut may lose along with the container. In WAL
    /// mode the commit is atomic, visible to every process at once and kept through any
    /// process crash; only an operating system crash can lose it, with every later
    /// unsynced commit, until the next synced one makes all of them durable.
    pub fn write_unsynced<T, E>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<rusqlite::Error>,
    {
        let mut conn = self.conn();
        // SQLite refuses to change the level inside a transaction: around it.
        set_synced(&conn, false)?;
        let out = transaction(&mut conn, f);
        set_synced(&conn, true)?;
        out
    }

    /// Runs `f` with commits that are not synced on their own: for bookkeeping whose loss
    /// in a power cut costs nothing lasting (the intent log). In WAL mode the commit still
    /// lands in order, and the next synced commit makes it durable.
    pub fn unsynced<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        let conn = self.conn();
        set_synced(&conn, false)?;
        let out = f(&conn);
        set_synced(&conn, true)?;
        out
    }

    pub fn get_meta(&self, key: &str) -> rusqlite::Result<Option<String>> {
        self.conn()
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
    }

    pub fn set_meta(&self, key: &str, value: &str) -> rusqlite::Result<()> {
        self.conn().execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [key, value],
        )?;
        Ok(())
    }
}

fn transaction<T, E>(
    conn: &mut Connection,
    f: impl FnOnce(&Transaction<'_>) -> Result<T, E>,
) -> Result<T, E>
where
    E: From<rusqlite::Error>,
{
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let out = f(&tx)?;
    tx.commit()?;
    Ok(out)
}

/// Switches the connection's commits between synced (`FULL`: the WAL is synced at every
/// commit) and unsynced (`NORMAL`: only checkpoints sync). Cached statements: a command
/// switches several times.
fn set_synced(conn: &Connection, synced: bool) -> rusqlite::Result<()> {
    let pragma = if synced {
        "PRAGMA synchronous = FULL"
    } else {
        "PRAGMA synchronous = NORMAL"
    };
    conn.prepare_cached(pragma)?.execute([])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db_file_len(dir: &Path) -> u64 {
        std::fs::metadata(dir.join("m.db")).unwrap().len()
    }

    /// An unsynced write commits (another connection sees it) or rolls back like a synced
    /// one, and leaves the connection synced for the next write either way.
    #[test]
    fn unsynced_writes_commit_and_restore_synced_commits() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("m.db")).unwrap();
        db.conn().execute_batch("CREATE TABLE t (v TEXT)").unwrap();
        let level = |db: &Db| -> i64 {
            db.conn()
                .pragma_query_value(None, "synchronous", |r| r.get(0))
                .unwrap()
        };
        assert_eq!(level(&db), 2, "FULL by default");
        db.write_unsynced(|tx| tx.execute("INSERT INTO t (v) VALUES ('kept')", []))
            .unwrap();
        assert_eq!(level(&db), 2);
        let failed: rusqlite::Result<()> = db.write_unsynced(|tx| {
            tx.execute("INSERT INTO t (v) VALUES ('dropped')", [])?;
            Err(rusqlite::Error::InvalidQuery)
        });
        assert!(failed.is_err());
        assert_eq!(level(&db), 2);
        let other = Connection::open(dir.path().join("m.db")).unwrap();
        let rows: Vec<String> = other
            .prepare("SELECT v FROM t")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(rows, ["kept"]);
    }

    /// Held checkpoints wait for `checkpoint_if_due`; without holding, a commit past the
    /// checkpoint size checkpoints at once.
    #[test]
    fn held_checkpoints_run_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("m.db")).unwrap();
        db.conn().execute_batch("CREATE TABLE t (v BLOB)").unwrap();
        let fill = |db: &Db| {
            for _ in 0..CHECKPOINT_PAGES {
                db.write(|tx| tx.execute("INSERT INTO t (v) VALUES (zeroblob(8000))", []))
                    .unwrap();
            }
        };
        db.hold_checkpoints().unwrap();
        let before = db_file_len(dir.path());
        // Two pages a row: well past the checkpoint size.
        fill(&db);
        assert_eq!(db_file_len(dir.path()), before, "a held checkpoint ran");
        db.checkpoint_if_due().unwrap();
        let after = db_file_len(dir.path());
        assert!(after > before + 64 * 8000, "the due checkpoint did not run");
        // Nothing due now: another call copies nothing.
        db.checkpoint_if_due().unwrap();
        assert_eq!(db_file_len(dir.path()), after);

        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("m.db")).unwrap();
        db.conn().execute_batch("CREATE TABLE t (v BLOB)").unwrap();
        let before = db_file_len(dir.path());
        fill(&db);
        assert!(
            db_file_len(dir.path()) > before,
            "no checkpoint ran on its own"
        );
    }
}
