//! strata's use cases: the only crate that knows the store, the image model, archives and
//! the storage drivers together. The CLI (and later the API server) call in here.

mod check;
mod container_fs;
mod containers;
mod copy;
mod error;
mod exec;
mod images;
mod import;
mod layers;
mod lifecycle;
mod load;
mod mounts;
mod names;
mod records;
mod recovery;
mod runspec;
mod save;
mod system;
mod trash;
mod volume_plugin;
mod volumes;

pub use check::CheckReport;
pub use container_fs::{Change, CommitOptions};
pub use containers::{
    Container, ContainerConfig, ContainerSize, CreateOptions, HostConfig, RestartPolicyConfig,
};
pub use copy::{extract_on_host, CopyOptions};
pub use error::{EngineError, Result};
pub use exec::{ExecHandle, ExecOptions};
pub use images::{HistoryRow, ImageDetails, ImageSummary, RemoveReport};
pub use import::ImportOptions;
pub use lifecycle::{parse_signal, PendingShim, Started};
pub use load::LoadReport;
pub use system::{ContainerUsage, DiskUsage, ImageUsage, SystemInfo, VolumeUsage};
pub use volumes::{
    parse_mount_flag, parse_volume_flag, MountPoint, ParsedMount, Volume, VolumeOptions,
};

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use strata_snapshot::Snapshotter;
use strata_store::fsutil::SpareDirs;
use strata_store::{ContentStore, Db, ExclusiveGuard, LockMode, StoreLock};

/// The on-disk format this build reads and writes; a store stamped newer is refused.
pub const FORMAT_VERSION: u32 = 1;
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Keys of snapshots a layer is being applied into; leftovers are removed on recovery.
pub(crate) const EXTRACT_PREFIX: &str = "extract-";

pub struct Engine {
    root: PathBuf,
    db: Arc<Db>,
    content: ContentStore,
    snapshots: Snapshotter,
    driver: String,
    lock: StoreLock,
    runtimes: Vec<(String, PathBuf)>,
    default_runtime: String,
    /// Trees set aside for later deletion, while deferring (see `trash`).
    retired: Mutex<Option<Vec<PathBuf>>>,
    /// Directories made ahead for new tree tops, where those are costly (`ROOT/spares`).
    spares: Option<SpareDirs>,
}

/// How to open a store.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub root: PathBuf,
    /// The driver asked for; `None` keeps the recorded one or picks the default.
    pub storage_driver: Option<String>,
    /// The driver's options (`--storage-opt KEY=VALUE`).
    pub storage_opts: Vec<(String, String)>,
    /// OCI runtimes beyond `native` and `runc` (`--add-runtime NAME=PATH`).
    pub runtimes: Vec<(String, PathBuf)>,
    /// The runtime containers get unless `--runtime` says otherwise (default `native`).
    pub default_runtime: Option<String>,
}

impl Engine {
    pub fn open(opts: &Options) -> Result<Engine> {
        let root = &opts.root;
        std::fs::create_dir_all(root)
            .map_err(|e| EngineError::io(format!("creating store root {}", root.display()), e))?;
        // Run directories: a tree of a dozen files per container.
        let run_dirs = root.join("containers");
        strata_store::fsutil::create_tree_parent(&run_dirs)
            .map_err(|e| EngineError::io(format!("creating {}", run_dirs.display()), e))?;
        let spare_pool = root.join("spares");
        let spares = SpareDirs::open(&spare_pool)
            .map_err(|e| EngineError::io(format!("creating {}", spare_pool.display()), e))?;
        let lock = StoreLock::open(&root.join("strata.lock"))
            .map_err(|e| EngineError::io("opening the store lock", e))?;
        // Recovery needs the store to itself; while other strata processes work, it is
        // left to a later open.
        let alone = lock
            .try_lock(LockMode::Exclusive)
            .map_err(|e| EngineError::io("locking the store", e))?;
        // Opening is serialised between processes: switching a new database to WAL and
        // creating its tables can fail at once with "database is locked" (SQLite does not
        // wait on its busy timeout there) when processes race through them. Held briefly.
        let init = StoreLock::open(&root.join("strata.init.lock"))
            .map_err(|e| EngineError::io("opening the store lock", e))?;
        init.lock(LockMode::Exclusive)
            .map_err(|e| EngineError::io("locking the store", e))?;
        let db = Arc::new(Db::open(&root.join("strata.db"))?);
        records::migrate(&db)?;
        let driver = Self::choose_driver(&db, opts)?;
        let content = ContentStore::open(&root.join("content"))
            .map_err(|e| EngineError::io("opening the content store", e))?;
        let drv = strata_snapshot::open_driver(&driver, &root.join(&driver), &opts.storage_opts)
            .map_err(|e| EngineError::io(format!("opening storage driver {driver}"), e))?;
        let snapshots = Snapshotter::new(
            db.clone(),
            drv,
            &root.join("tmp").join("mounts"),
            spares.clone(),
        )?;
        drop(init);
        let engine = Engine {
            root: root.clone(),
            db,
            content,
            snapshots,
            driver,
            lock,
            runtimes: opts.runtimes.clone(),
            default_runtime: opts
                .default_runtime
                .clone()
                .unwrap_or_else(|| strata_exec::runtime::NATIVE.to_string()),
            retired: Mutex::new(None),
            spares,
        };
        if alone {
            // Best effort: what cannot be finished now stays in the intent log, is tried
            // again by the next process, and is reported by `system check`.
            let _ = engine.recover();
        }
        engine
            .lock
            .lock(LockMode::Shared)
            .map_err(|e| EngineError::io("locking the store", e))?;
        Ok(engine)
    }

    fn choose_driver(db: &Db, opts: &Options) -> Result<String> {
        if let Some(v) = db.get_meta("format_version")? {
            let v: u32 = v.parse().unwrap_or(u32::MAX);
            if v > FORMAT_VERSION {
                return Err(EngineError::Store(format!(
                    "the store at {} has format version {v}, newer than this strata understands ({FORMAT_VERSION}): upgrade strata",
                    opts.root.display()
                )));
            }
        } else {
            db.set_meta("format_version", &FORMAT_VERSION.to_string())?;
        }
        let recorded = db.get_meta("storage_driver")?;
        let chosen = match (&opts.storage_driver, &recorded) {
            (Some(want), Some(have)) if want != have => {
                if records::store_has_data(db)? {
                    return Err(EngineError::Usage(format!(
                        "the store at {} uses storage driver {have}; it holds data, so --storage-driver {want} is refused: \
                         use --storage-driver {have}, or another --root for {want}",
                        opts.root.display()
                    )));
                }
                want.clone()
            }
            (Some(want), _) => want.clone(),
            (None, Some(have)) => have.clone(),
            (None, None) => strata_snapshot::default_driver().to_string(),
        };
        if !strata_snapshot::DRIVERS.contains(&chosen.as_str()) {
            return Err(EngineError::Usage(format!(
                "unknown storage driver {chosen:?}: choose one of {}",
                strata_snapshot::DRIVERS.join(", ")
            )));
        }
        if recorded.as_deref() != Some(chosen.as_str()) {
            db.set_meta("storage_driver", &chosen)?;
        }
        Ok(chosen)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn driver_name(&self) -> &str {
        &self.driver
    }

    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Takes the store to itself for an operation that deletes what others may reuse.
    pub(crate) fn exclusive(&self) -> Result<ExclusiveGuard<'_>> {
        self.lock
            .exclusive()
            .map_err(|e| EngineError::io("locking the store", e))
    }

    /// Runs `f` as a mutating operation recorded in the intent log (see `recover`).
    pub(crate) fn operation<T>(&self, kind: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let id = records::begin_operation(&self.db, kind)?;
        let out = f();
        records::end_operation(&self.db, id)?;
        out
    }
}
