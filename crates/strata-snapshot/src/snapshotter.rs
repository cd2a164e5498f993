//! The lifecycle rules every driver shares.

use crate::metastore::{self, Row};
use crate::mount::{Mount, MountGuard};
use crate::usage::Usage;
use crate::{Driver, Layout, PrepareOpts, Result, SnapshotError, VOLATILE_LABEL};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use strata_store::fsutil::SpareDirs;
use strata_store::Db;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Kind {
    Active,
    View,
    Committed,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Active => "active",
            Kind::View => "view",
            Kind::Committed => "committed",
        }
    }
    pub(crate) fn parse(s: &str) -> Kind {
        match s {
            "active" => Kind::Active,
            "view" => Kind::View,
            _ => Kind::Committed,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Info {
    pub kind: Kind,
    pub name: String,
    pub parent: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub created: String,
    pub updated: String,
}

impl From<&Row> for Info {
    fn from(r: &Row) -> Info {
        Info {
            kind: r.kind,
            name: r.key.clone(),
            parent: r.parent_key.clone(),
            labels: r.labels.clone(),
            created: r.created.clone(),
            updated: r.updated.clone(),
        }
    }
}

pub struct Snapshotter {
    db: Arc<Db>,
    driver: Box<dyn Driver>,
    /// Where the snapshotter mounts trees it needs to read (naive diffs).
    scratch: PathBuf,
    /// Directories made ahead, to become the driver's tree tops (`Driver::tree_top`).
    spares: Option<SpareDirs>,
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

impl Snapshotter {
    pub fn new(
        db: Arc<Db>,
        driver: Box<dyn Driver>,
        scratch: &Path,
        spares: Option<SpareDirs>,
    ) -> Result<Snapshotter> {
        db.conn().execute_batch(metastore::SCHEMA)?;
        std::fs::create_dir_all(scratch)?;
        Ok(Snapshotter {
            db,
            driver,
            scratch: scratch.to_path_buf(),
            spares,
        })
    }

    pub fn driver(&self) -> &dyn Driver {
        self.driver.as_ref()
    }

    fn row(&self, key: &str) -> Result<Row> {
        metastore::get(&self.db.conn(), key)?
            .ok_or_else(|| SnapshotError::NotFound(key.to_string()))
    }

    fn layout(&self, r: &Row) -> Result<Layout> {
        Ok(Layout::new(
            r.id,
            metastore::ancestors(&self.db.conn(), r.id)?,
            r.kind,
            &r.labels,
        ))
    }

    pub fn stat(&self, key: &str) -> Result<Info> {
        Ok(Info::from(&self.row(key)?))
    }

    pub fn exists(&self, key: &str) -> Result<bool> {
        Ok(metastore::get(&self.db.conn(), key)?.is_some())
    }

    /// A new writable snapshot on `parent` (a committed snapshot).
    pub fn prepare(
        &self,
        key: &str,
        parent: Option<&str>,
        opts: &PrepareOpts,
    ) -> Result<Vec<Mount>> {
        self.create(Kind::Active, key, parent, opts, |_| Ok(()))
    }

    /// Prepares like `prepare`, running `record` in the transaction that records the
    /// snapshot: one commit (and one sync) for both, and the caller's record exists
    /// exactly when the snapshot's does. If the storage cannot be made afterwards, the
    /// snapshot's record goes again and the caller's is the caller's to remove.
    pub fn prepare_with(
        &self,
        key: &str,
        parent: Option<&str>,
        opts: &PrepareOpts,
        record: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<()>,
    ) -> Result<Vec<Mount>> {
        self.create(Kind::Active, key, parent, opts, record)
    }

    /// A new read-only snapshot on `parent`.
    pub fn view(&self, key: &str, parent: Option<&str>) -> Result<Vec<Mount>> {
        self.create(Kind::View, key, parent, &PrepareOpts::default(), |_| Ok(()))
    }

    fn create(
        &self,
        kind: Kind,
        key: &str,
        parent: Option<&str>,
        opts: &PrepareOpts,
        record: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<()>,
    ) -> Result<Vec<Mount>> {
        if key.is_empty() {
            return Err(SnapshotError::InvalidArgument(
                "snapshot key must not be empty".into(),
            ));
        }
        if opts.size_limit.is_some() && !self.driver.limits_size() {
            return Err(SnapshotError::InvalidArgument(format!(
                "--storage-opt size is not supported by the {} storage driver: use btrfs",
                self.driver.name()
            )));
        }
        let labels: BTreeMap<_, _> = opts.labels.iter().cloned().collect();
        // The record first: storage without a record could not be found again, a record
        // without complete storage is repaired by removing it.
        let insert = |tx: &rusqlite::Transaction<'_>| -> Result<i64> {
            if metastore::get(tx, key)?.is_some() {
                return Err(SnapshotError::AlreadyExists(key.to_string()));
            }
            let parent_id = match parent {
                None => None,
                Some(p) => {
                    let pr = metastore::get(tx, p)?
                        .ok_or_else(|| SnapshotError::NotFound(p.to_string()))?;
                    if pr.kind != Kind::Committed {
                        return Err(SnapshotError::FailedPrecondition(format!("parent {p:?} is not committed: only committed snapshots can be parents")));
                    }
                    Some(pr.id)
                }
            };
            let id = metastore::insert(tx, key, kind, parent_id, &labels, &now())?;
            record(tx)?;
            Ok(id)
        };
        let id = self.write_for(&labels, insert)?;
        let parents = metastore::ancestors(&self.db.conn(), id)?;
        let layout = Layout::new(id, parents, kind, &labels);
        // A lost unsynced record gives its number again (see `write_for`): what the lost
        // snapshot stored under it is stale, removed before the new snapshot's is made.
        let made = (|| {
            if self.driver.holds(id)? {
                self.driver.remove(id)?;
            }
            if let (Some(spares), Some(top)) = (&self.spares, self.driver.tree_top(id)) {
                spares.take(&top);
            }
            self.driver.create(&layout, opts)?;
            self.driver.mounts(&layout)
        })();
        match made {
            Ok(m) => Ok(m),
            Err(e) => {
                let _ = self.driver.remove(id);
                let _ = self
                    .db
                    .conn()
                    .execute("DELETE FROM snapshots WHERE id = ?1", [id]);
                Err(e.into())
            }
        }
    }

    pub fn mounts(&self, key: &str) -> Result<Vec<Mount>> {
        let r = self.row(key)?;
        if r.kind == Kind::Committed {
            return Err(SnapshotError::FailedPrecondition(format!(
                "snapshot {key:?} is committed: mount a view of it instead"
            )));
        }
        Ok(self.driver.mounts(&self.layout(&r)?)?)
    }

    /// Freezes active snapshot `key` as committed snapshot `name`.
    pub fn commit(&self, name: &str, key: &str) -> Result<()> {
        self.commit_with(name, key, |_| Ok(()))
    }

    /// Commits like `commit`, running `record` in the same database transaction, so what
    /// the caller records about the snapshot exists exactly when the commit does.
    pub fn commit_with(
        &self,
        name: &str,
        key: &str,
        record: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<()>,
    ) -> Result<()> {
        let r = self.row(key)?;
        if r.kind != Kind::Active {
            return Err(SnapshotError::FailedPrecondition(format!(
                "snapshot {key:?} is not active: only active snapshots can be committed"
            )));
        }
        if self.exists(name)? {
            return Err(SnapshotError::AlreadyExists(name.to_string()));
        }
        let layout = self.layout(&r)?;
        self.driver.commit(&layout)?;
        self.db.write(|tx| -> Result<()> {
            if metastore::get(tx, name)?.is_some() {
                return Err(SnapshotError::AlreadyExists(name.to_string()));
            }
            let n = tx.execute(
                "UPDATE snapshots SET key = ?1, kind = 'committed', size = -1, inodes = -1, updated = ?2 WHERE id = ?3 AND kind = 'active'",
                rusqlite::params![name, now(), r.id],
            )?;
            if n != 1 {
                return Err(SnapshotError::NotFound(key.to_string()));
            }
            record(tx)?;
            Ok(())
        })
    }

    pub fn remove(&self, key: &str) -> Result<()> {
        self.remove_with(key, |_| Ok(()))
    }

    /// Removes like `remove`, running `record` in the transaction that deletes the
    /// snapshot's record: one commit (and one sync) for both.
    pub fn remove_with(
        &self,
        key: &str,
        record: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<()>,
    ) -> Result<()> {
        let r = self.row(key)?;
        refuse_parent(&self.db.conn().transaction()?, key, r.id)?;
        self.driver.remove(r.id)?;
        self.delete_record(key, &r, record)
    }

    /// Runs `f` in one write transaction, synced unless `labels` make the snapshot
    /// volatile. A volatile snapshot dies with its container, and so may its records: a
    /// power cut that loses an unsynced commit loses the snapshot's creation with the
    /// container (as docker drops a `--rm` container on restart), its number with it, or
    /// its deletion, bringing the record back without its storage.
    fn write_for<T>(
        &self,
        labels: &BTreeMap<String, String>,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T>,
    ) -> Result<T> {
        if labels.contains_key(VOLATILE_LABEL) {
            self.db.write_unsynced(f)
        } else {
            self.db.write(f)
        }
    }

    /// Deletes snapshot `r`'s record (refused while it has children), running `record` in
    /// the same transaction, committed as its creation was (`write_for`).
    fn delete_record(
        &self,
        key: &str,
        r: &Row,
        record: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<()>,
    ) -> Result<()> {
        self.write_for(&r.labels, |tx| {
            refuse_parent(tx, key, r.id)?;
            tx.execute("DELETE FROM snapshots WHERE id = ?1", [r.id])?;
            record(tx)?;
            Ok(())
        })
    }

    /// Removes like `remove_with`, the record first: its transaction (with `record`) is the
    /// one synced commit, and the storage goes after it. A crash in between, or a failed
    /// removal of the storage (returned, the record already gone), leaves storage that no
    /// record owns: [`Snapshotter::remove_orphans`] takes it, run by recovery while the
    /// caller's intent-log entry is still there.
    ///
    /// With `retire_to`, storage the driver can move is moved there for the caller to
    /// delete later ([`Driver::retire`]); whether it was is returned.
    pub fn remove_record_first_with(
        &self,
        key: &str,
        retire_to: Option<&Path>,
        record: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<()>,
    ) -> Result<bool> {
        let r = self.row(key)?;
        self.delete_record(key, &r, record)?;
        Ok(match retire_to {
            Some(to) => self.driver.retire(r.id, to)?,
            None => {
                self.driver.remove(r.id)?;
                false
            }
        })
    }

    /// Replaces the labels (field paths empty or `labels`) or single labels (`labels.KEY`).
    pub fn update(&self, info: &Info, fieldpaths: &[&str]) -> Result<Info> {
        let r = self.row(&info.name)?;
        let mut labels = r.labels.clone();
        if fieldpaths.is_empty() {
            labels = info.labels.clone();
        }
        for fp in fieldpaths {
            if *fp == "labels" {
                labels = info.labels.clone();
            } else if let Some(k) = fp.strip_prefix("labels.") {
                match info.labels.get(k) {
                    Some(v) => labels.insert(k.to_string(), v.clone()),
                    None => labels.remove(k),
                };
            } else {
                return Err(SnapshotError::InvalidArgument(format!(
                    "cannot update field {fp:?}: only labels can change"
                )));
            }
        }
        self.db.conn().execute(
            "UPDATE snapshots SET labels = ?1, updated = ?2 WHERE id = ?3",
            rusqlite::params![
                serde_json::to_string(&labels).expect("labels serialise"),
                now(),
                r.id
            ],
        )?;
        self.stat(&info.name)
    }

    /// What the snapshot holds on its own: recorded at commit for committed snapshots,
    /// measured for active ones.
    pub fn usage(&self, key: &str) -> Result<Usage> {
        let r = self.row(key)?;
        match (r.kind, r.usage) {
            (Kind::Committed, Some(u)) => Ok(u),
            (Kind::Committed, None) => {
                // Measured once, then kept: a committed snapshot never changes.
                let u = self.driver.usage(&self.layout(&r)?)?;
                self.db.conn().execute(
                    "UPDATE snapshots SET size = ?1, inodes = ?2 WHERE id = ?3",
                    rusqlite::params![u.size as i64, u.inodes as i64, r.id],
                )?;
                Ok(u)
            }
            _ => Ok(self.driver.usage(&self.layout(&r)?)?),
        }
    }

    /// Bytes each snapshot changed against its parent (a writable layer's size, as `ps -s`
    /// shows it) for many snapshots, reading the records once (for `ps -s` over
    /// thousands of containers). Unknown keys give `None`.
    pub fn changes_sizes(&self, keys: &[&str]) -> Result<Vec<Option<u64>>> {
        let rows = metastore::all(&self.db.conn())?;
        let parent_of: std::collections::HashMap<i64, Option<i64>> =
            rows.iter().map(|r| (r.id, r.parent)).collect();
        let by_key: std::collections::HashMap<&str, &Row> =
            rows.iter().map(|r| (r.key.as_str(), r)).collect();
        keys.iter()
            .map(|k| {
                let Some(r) = by_key.get(k) else {
                    return Ok(None);
                };
                let mut parents = Vec::new();
                let mut next = r.parent;
                while let Some(p) = next {
                    parents.push(p);
                    next = parent_of.get(&p).copied().flatten();
                }
                let layout = Layout::new(r.id, parents, r.kind, &r.labels);
                match self.driver.changes_size(&layout) {
                    // Recorded but not yet made (a snapshot's row comes first): nothing
                    // changed in it yet.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Some(0)),
                    other => Ok(Some(other?)),
                }
            })
            .collect()
    }

    /// Calls `f` for every snapshot. The records are read first, so `f` may call back in.
    pub fn walk(&self, f: &mut dyn FnMut(&Info) -> Result<()>) -> Result<()> {
        let rows = metastore::all(&self.db.conn())?;
        for r in &rows {
            f(&Info::from(r))?;
        }
        Ok(())
    }

    /// Where a layer can be applied to active snapshot `key` without mounting.
    pub fn apply_dir(
        &self,
        key: &str,
    ) -> Result<Option<(PathBuf, strata_archive::WhiteoutFormat)>> {
        let r = self.row(key)?;
        Ok(self.driver.apply_dir(&self.layout(&r)?))
    }

    /// Writes the changes of snapshot `key` against its parent as a layer tar.
    pub fn diff(&self, key: &str, w: &mut dyn Write) -> Result<()> {
        let r = self.row(key)?;
        let layout = self.layout(&r)?;
        if let Some(res) = self.driver.diff(&layout, w) {
            return Ok(res?);
        }
        // Naive diff: mount the parent read-only and the snapshot itself, and compare.
        let tag = format!("{:016x}", rand::random::<u64>());
        let mut temp_views = Vec::new();
        let res = (|| -> Result<()> {
            let upper_mounts = match r.kind {
                Kind::Committed => {
                    let vkey = format!("diff-view-{tag}");
                    temp_views.push(vkey.clone());
                    self.view(&vkey, Some(&r.key))?
                }
                _ => self.driver.mounts(&layout)?,
            };
            let upper = MountGuard::new(&upper_mounts, &self.scratch.join(format!("upper-{tag}")))?;
            match &r.parent_key {
                Some(pk) => {
                    let vkey = format!("diff-parent-{tag}");
                    temp_views.push(vkey.clone());
                    let pm = self.view(&vkey, Some(pk))?;
                    let lower = MountGuard::new(&pm, &self.scratch.join(format!("lower-{tag}")))?;
                    strata_archive::diff_trees(lower.path(), upper.path(), w)?;
                }
                None => {
                    strata_archive::write_tree(
                        upper.path(),
                        w,
                        strata_archive::WhiteoutFormat::Apply,
                    )?;
                }
            }
            Ok(())
        })();
        for v in temp_views {
            let _ = self.remove(&v);
        }
        res
    }

    /// Removes the non-committed snapshots whose keys start with `prefix` (leftovers of
    /// interrupted work), newest first. Returns their keys.
    pub fn remove_prefixed(&self, prefix: &str) -> Result<Vec<String>> {
        let keys: Vec<String> = {
            let conn = self.db.conn();
            let mut st = conn.prepare("SELECT key FROM snapshots WHERE kind != 'committed' AND substr(key, 1, length(?1)) = ?1 ORDER BY id DESC")?;
            let rows = st
                .query_map([prefix], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<String>>>()?;
            rows
        };
        let mut removed = Vec::new();
        for k in keys {
            if self.remove(&k).is_ok() {
                removed.push(k);
            }
        }
        Ok(removed)
    }

    /// Removes storage that no record owns. Returns the snapshot numbers.
    pub fn remove_orphans(&self) -> Result<Vec<i64>> {
        let orphans = self.orphans()?;
        for id in &orphans {
            self.driver.remove(*id)?;
        }
        Ok(orphans)
    }

    /// Storage on disk that no record owns.
    pub fn orphans(&self) -> Result<Vec<i64>> {
        let known: std::collections::HashSet<i64> = metastore::all(&self.db.conn())?
            .iter()
            .map(|r| r.id)
            .collect();
        Ok(self
            .driver
            .stored_ids()?
            .into_iter()
            .filter(|id| !known.contains(id))
            .collect())
    }

    /// Releases what the driver set up outside the store's files (every operation is
    /// complete when it returns, so nothing else). Safe to call twice.
    pub fn close(&self) -> Result<()> {
        Ok(self.driver.close()?)
    }
}

/// Refuses removing snapshot `id` (`key`) while others are made on it.
fn refuse_parent(tx: &rusqlite::Transaction<'_>, key: &str, id: i64) -> Result<()> {
    if metastore::has_children(tx, id)? {
        return Err(SnapshotError::FailedPrecondition(format!(
            "snapshot {key:?} has children: remove them first"
        )));
    }
    Ok(())
}
