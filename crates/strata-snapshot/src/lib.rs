//! Storage drivers in the shape of containerd's snapshotter.
//!
//! A [`Snapshotter`] owns the lifecycle rules (keys, kinds, parents, labels) and keeps every
//! driver's metadata in the store's one SQLite database; a [`Driver`] only manages storage
//! for numbered snapshots and says how to mount them. Drivers return mounts as data
//! ([`Mount`]); the [`mount`] module performs them, so every mount is made and undone in
//! one place. Active snapshots come from `prepare`, read-only ones from `view`, committed
//! ones from `commit`; a committed snapshot is named by the caller (strata uses chain IDs).

pub mod aufs;
pub mod btrfs;
pub mod devicemapper;
pub mod loopdev;
pub mod metastore;
pub mod mount;
pub mod overlay;
pub mod snapshotter;
pub mod testsuite;
pub mod usage;
pub mod vfs;

pub use mount::Mount;
pub use snapshotter::{Info, Kind, Snapshotter};
pub use usage::Usage;

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use strata_archive::WhiteoutFormat;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot {0:?} does not exist")]
    NotFound(String),
    #[error("snapshot {0:?} already exists")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("storage driver: {0}")]
    Io(#[from] io::Error),
    #[error("snapshot metadata: {0}")]
    Db(#[from] rusqlite::Error),
}

pub type Result<T> = std::result::Result<T, SnapshotError>;

/// What a driver is told about one snapshot: its number, its ancestors (nearest first) and
/// its kind.
#[derive(Debug, Clone)]
pub struct Layout {
    pub id: i64,
    pub parents: Vec<i64>,
    pub kind: Kind,
    /// Labelled [`VOLATILE_LABEL`]: its data need not survive a crash (a container removed
    /// when it exits), so drivers may skip syncing it (overlay's `volatile`).
    pub volatile: bool,
}

impl Layout {
    /// The layout of snapshot `id` given its ancestors and labels.
    pub(crate) fn new(
        id: i64,
        parents: Vec<i64>,
        kind: Kind,
        labels: &std::collections::BTreeMap<String, String>,
    ) -> Layout {
        Layout {
            id,
            parents,
            kind,
            volatile: labels.contains_key(VOLATILE_LABEL),
        }
    }
}

/// Label marking a snapshot whose data dies with its container.
pub const VOLATILE_LABEL: &str = "strata.io/snapshot/volatile";

/// Options for a new snapshot.
#[derive(Debug, Clone, Default)]
pub struct PrepareOpts {
    pub labels: Vec<(String, String)>,
    /// Bytes the writable layer may hold, for drivers that enforce it (`--storage-opt size=`).
    pub size_limit: Option<u64>,
}

/// The storage side of a snapshotter. One implementation per storage driver.
pub trait Driver: Send + Sync {
    fn name(&self) -> &'static str;
    /// The lines `info` prints under "Storage Driver".
    fn status(&self) -> Vec<(String, String)>;
    /// Makes storage for a new active or view snapshot.
    fn create(&self, s: &Layout, opts: &PrepareOpts) -> io::Result<()>;
    /// The directory holding all of snapshot `id`'s storage, for a driver that keeps one
    /// per snapshot in a tree parent (`strata_store::fsutil::create_tree_parent`): the
    /// snapshotter puts a spare directory there (`SpareDirs`) before `create`, which
    /// finds it made. `None` for storage of another shape.
    fn tree_top(&self, id: i64) -> Option<PathBuf> {
        let _ = id;
        None
    }
    /// The mounts that give the snapshot's filesystem.
    fn mounts(&self, s: &Layout) -> io::Result<Vec<Mount>>;
    /// Freezes an active snapshot's storage as a committed one.
    fn commit(&self, s: &Layout) -> io::Result<()>;
    /// Removes the snapshot's storage; succeeds when there is none.
    fn remove(&self, id: i64) -> io::Result<()>;
    /// Whether there is storage for snapshot `id`. A new snapshot finds some under its
    /// number only when a power cut lost the unsynced record of a volatile snapshot that
    /// had it (see `Snapshotter::create`).
    fn holds(&self, id: i64) -> io::Result<bool>;
    /// Takes the snapshot's storage out of the driver's hands by moving it to `to` (a new
    /// path on the store's filesystem), for the caller to delete later; `false` when it
    /// was removed at once instead (storage that is no plain tree there, or none).
    fn retire(&self, id: i64, to: &Path) -> io::Result<bool> {
        let _ = to;
        self.remove(id).map(|()| false)
    }
    /// What the snapshot holds on its own, without its parents.
    fn usage(&self, s: &Layout) -> io::Result<Usage>;
    /// Bytes of regular files changed against the parent: a writable layer's size as docker
    /// reports it. Where a snapshot stores only its changes this is its usage.
    fn changes_size(&self, s: &Layout) -> io::Result<u64> {
        Ok(self.usage(s)?.size)
    }
    /// A directory where a layer can be applied without mounting, with its whiteout form.
    fn apply_dir(&self, s: &Layout) -> Option<(PathBuf, WhiteoutFormat)>;
    /// Writes the snapshot's changes against its parent as a layer tar when the driver can
    /// do so from its own storage; `None` means "mount and compare".
    fn diff(&self, s: &Layout, w: &mut dyn Write) -> Option<io::Result<()>>;
    /// Snapshot numbers that have storage on disk, for orphan checks.
    fn stored_ids(&self) -> io::Result<Vec<i64>>;
    /// Whether the driver enforces [`PrepareOpts::size_limit`].
    fn limits_size(&self) -> bool {
        false
    }
    /// Whether a mount of its snapshots that is busy may be detached and left to go away
    /// with its last user instead of failing the unmount (devicemapper's
    /// `dm.use_deferred_removal`: the loop device and its thin device go with it).
    fn deferred_removal(&self) -> bool {
        false
    }
    /// Whether a mount of a snapshot whose storage is retired (`retire`) may be left in
    /// place, set aside in the store's trash, for whoever deletes the retired storage to
    /// unmount first: the mount is the kernel's alone (overlay, a bind mount of a plain
    /// tree) and needs nothing of the driver to go away. An unmount waits for RCU grace
    /// periods (the mount's, and overlay's for its private layer mounts), which a
    /// command then need not wait for.
    fn mount_goes_with_retired_storage(&self) -> bool {
        false
    }
    /// Warnings `info` shows about how the driver is set up.
    fn warnings(&self) -> Vec<String> {
        Vec::new()
    }
    /// Releases what opening the driver set up outside the store's files (btrfs: the
    /// loop-backed filesystem's mount and loop device); the next open sets it up again.
    fn close(&self) -> io::Result<()> {
        Ok(())
    }
}

/// Opens the named driver with its storage under `home` and its options (`--storage-opt
/// KEY=VALUE`, as docker's daemon takes them).
pub fn open_driver(
    name: &str,
    home: &Path,
    opts: &[(String, String)],
) -> io::Result<Box<dyn Driver>> {
    match name {
        "overlay2" => Ok(Box::new(overlay::Overlay::open(home, opts)?)),
        "vfs" => Ok(Box::new(vfs::Vfs::open(home, opts)?)),
        "btrfs" => Ok(Box::new(btrfs::Btrfs::open(home, opts)?)),
        "aufs" => Ok(Box::new(aufs::Aufs::open(home, opts)?)),
        "devicemapper" => Ok(Box::new(devicemapper::Devicemapper::open(home, opts)?)),
        other => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "unknown storage driver {other:?}: choose one of {}",
                DRIVERS.join(", ")
            ),
        )),
    }
}

/// The driver used when none is chosen: overlay2 where the kernel has overlayfs.
pub fn default_driver() -> &'static str {
    if overlay::supported() {
        "overlay2"
    } else {
        "vfs"
    }
}

pub const DRIVERS: &[&str] = &["overlay2", "vfs", "btrfs", "aufs", "devicemapper"];

/// Helper for drivers that keep a whole tree per snapshot (vfs, btrfs), with `tree(id)`
/// its directory: a view of a committed snapshot reads the parent's own tree read-only
/// (it has no storage of its own); anything else binds its own tree.
pub(crate) fn tree_mounts(s: &Layout, tree: impl Fn(i64) -> PathBuf) -> Vec<Mount> {
    match (s.kind, s.parents.first()) {
        (Kind::View, Some(parent)) => vec![Mount::bind(&tree(*parent), true)],
        (kind, _) => vec![Mount::bind(&tree(s.id), kind == Kind::View)],
    }
}

/// Helper for drivers that take no options: refuses any, naming it.
pub(crate) fn no_options(driver: &str, opts: &[(String, String)]) -> io::Result<()> {
    match opts.first() {
        Some((k, _)) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("unknown storage option {k:?} for {driver}: {driver} takes no options"),
        )),
        None => Ok(()),
    }
}

/// Helper for drivers: removes a directory tree; one that is already gone is fine.
pub(crate) fn remove_tree(dir: &Path) -> io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Helper for drivers whose storage is a directory tree: moves `dir` to `to`, or removes
/// it when it cannot be moved there (another filesystem).
pub(crate) fn retire_tree(dir: &Path, to: &Path) -> io::Result<bool> {
    match std::fs::rename(dir, to) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(_) => remove_tree(dir).map(|()| false),
    }
}

/// Helper for drivers: numeric directory names under `dir`.
pub(crate) fn numeric_dirs(dir: &Path) -> io::Result<Vec<i64>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        if let Some(id) = e?.file_name().to_str().and_then(|n| n.parse().ok()) {
            out.push(id);
        }
    }
    out.sort();
    Ok(out)
}
