//! btrfs: every layer a subvolume, every child a snapshot of its parent.
//!
//! A committed layer is a read-only subvolume; a layer being applied and a container's
//! writable layer are writable snapshots of their parent, so creating one is a metadata
//! step (no copy) and a write copies only the blocks it touches (no copy-up). Commit sets
//! the read-only flag; remove deletes the subvolume.
//!
//! When the store root is itself on btrfs, subvolumes live there. Otherwise the driver
//! keeps a loop-backed btrfs filesystem in a sparse file under its home, as docker's
//! devicemapper loop-lvm mode did (see [`LoopPool`]): formatted once, attached and mounted
//! whenever the store is opened and found unmounted, detached on `system reset`.
//!
//! ```text
//! HOME/fs/                   the btrfs filesystem (the pool's mount point in loop mode)
//! HOME/fs/subvolumes/<n>     one subvolume per snapshot number
//! HOME/loop/data             the pool's sparse backing file (loop mode only)
//! ```

pub mod ioctl;

use crate::mount::Mount;
use crate::usage::{tree_usage, Usage};
use crate::{numeric_dirs, remove_tree, tree_mounts, Driver, Kind, Layout, PrepareOpts};
use rustix::fs::{Mode, OFlags};
use std::collections::HashSet;
use std::ffi::CString;
use std::fs;
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use strata_archive::WhiteoutFormat;

pub use pool::LoopPool;

mod pool;

/// The default size of a loop-backed pool's sparse file, as docker's loop-lvm data file.
pub const DEFAULT_LOOP_SIZE: u64 = 100 << 30;

pub struct Btrfs {
    home: PathBuf,
    subvolumes: PathBuf,
    /// The loop-backed filesystem, when the root is not on btrfs.
    pool: Option<LoopPool>,
}

fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        path,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

impl Btrfs {
    /// Opens the driver under `home`, taking `btrfs.loopsize` from `opts`.
    pub fn open(home: &Path, opts: &[(String, String)]) -> io::Result<Btrfs> {
        let mut loop_size = DEFAULT_LOOP_SIZE;
        for (k, v) in opts {
            match k.as_str() {
                "btrfs.loopsize" => {
                    loop_size = strata_store::units::parse_bytes(v)
                        .filter(|n| *n >= 256 << 20)
                        .ok_or_else(|| {
                            invalid(format!(
                                "invalid btrfs.loopsize {v:?}: give a size of at least 256MiB, e.g. btrfs.loopsize=100G"
                            ))
                        })? as u64;
                }
                other => {
                    return Err(invalid(format!(
                        "unknown storage option {other:?} for btrfs: the btrfs driver takes btrfs.loopsize=SIZE (and size=SIZE per container)"
                    )))
                }
            }
        }
        fs::create_dir_all(home)?;
        let fs_dir = home.join("fs");
        fs::create_dir_all(&fs_dir)?;
        let pool = if crate::overlay::backing_fs(home) == "btrfs" {
            None
        } else {
            Some(LoopPool::open(
                &home.join("loop").join("data"),
                &fs_dir,
                loop_size,
            )?)
        };
        let subvolumes = fs_dir.join("subvolumes");
        fs::create_dir_all(&subvolumes)?;
        Ok(Btrfs {
            home: home.to_path_buf(),
            subvolumes,
            pool,
        })
    }

    fn subvol(&self, id: i64) -> PathBuf {
        self.subvolumes.join(id.to_string())
    }

    fn name(id: i64) -> CString {
        CString::new(id.to_string()).expect("a number has no NUL")
    }

    /// Turns quotas on (once per filesystem: they cost time on every snapshot, so they
    /// stay off until a size limit asks for them, as docker's driver did).
    fn enable_quota(&self, dir: &OwnedFd) -> io::Result<()> {
        if !ioctl::quota_enabled(dir.as_fd())? {
            ioctl::quota_enable(dir.as_fd())?;
        }
        Ok(())
    }

    /// The directories of snapshot `id` (by inode number) that changed since it was made
    /// from its parent, or hold something that did: every changed inode and the
    /// directories up to the root above it. `None` when btrfs cannot tell (an old root
    /// item format), and the caller then compares everything.
    fn touched_dirs(&self, id: i64) -> io::Result<Option<HashSet<u64>>> {
        let fd = open_dir(&self.subvol(id))?;
        let tree = ioctl::subvol_id(fd.as_fd())?;
        let Some(created) = ioctl::created_transid(fd.as_fd(), tree)? else {
            return Ok(None);
        };
        ioctl::commit_transaction(fd.as_fd())?;
        let mut touched = HashSet::new();
        let mut todo = ioctl::changed_inodes(fd.as_fd(), tree, created)?;
        while let Some(ino) = todo.pop() {
            if touched.insert(ino) && ino != ioctl::FIRST_FREE_OBJECTID {
                todo.extend(ioctl::parent_dirs(fd.as_fd(), tree, ino)?);
            }
        }
        Ok(Some(touched))
    }

    /// Which directories of snapshot `id` (by inode number) the generic walk may skip:
    /// those [`Self::touched_dirs`] does not name, or none when btrfs cannot tell.
    fn untouched(&self, id: i64) -> io::Result<impl Fn(u64) -> bool> {
        let touched = self.touched_dirs(id)?;
        Ok(move |ino| touched.as_ref().is_some_and(|t| !t.contains(&ino)))
    }

    /// Deletes the subvolume at `path` (named `name` in directory `parent`) after every
    /// subvolume nested in it: a container may have made some in its writable layer.
    fn destroy(parent: &OwnedFd, name: &CString, path: &Path) -> io::Result<()> {
        let fd = open_dir(path)?;
        let children = ioctl::child_subvolumes(fd.as_fd(), ioctl::subvol_id(fd.as_fd())?)?;
        if !children.is_empty() {
            // A read-only subvolume's directories cannot lose entries.
            ioctl::set_readonly(fd.as_fd(), false)?;
            for child in children {
                let child_path = path.join(child.trim_end_matches('/'));
                let (Some(dir), Some(leaf)) = (child_path.parent(), child_path.file_name()) else {
                    continue;
                };
                let leaf = CString::new(leaf.as_encoded_bytes()).map_err(io::Error::other)?;
                Self::destroy(&open_dir(dir)?, &leaf, &child_path)?;
            }
        }
        drop(fd);
        ioctl::subvol_destroy(parent.as_fd(), name)
    }
}

impl Driver for Btrfs {
    fn name(&self) -> &'static str {
        "btrfs"
    }

    fn status(&self) -> Vec<(String, String)> {
        let mut out = vec![(
            "Build Version".to_string(),
            pool::progs_version().unwrap_or_else(|| "btrfs-progs not installed".into()),
        )];
        out.push((
            "Backing Filesystem".into(),
            crate::overlay::backing_fs(&self.home).into(),
        ));
        if let Some(pool) = &self.pool {
            out.push(("Data file".into(), pool.file().display().to_string()));
            out.push((
                "Loop Device".into(),
                pool.loop_device()
                    .map(|d| d.display().to_string())
                    .unwrap_or_else(|| "none (not attached)".into()),
            ));
        }
        if let Ok(st) = rustix::fs::statvfs(&self.subvolumes) {
            let total = st.f_blocks * st.f_frsize;
            let avail = st.f_bavail * st.f_frsize;
            let used = total.saturating_sub(st.f_bfree * st.f_frsize);
            for (k, v) in [
                ("Data Space Used", used),
                ("Data Space Total", total),
                ("Data Space Available", avail),
            ] {
                out.push((k.into(), format!("{:.4} GB", v as f64 / 1e9)));
            }
        }
        let quotas = open_dir(&self.subvolumes)
            .and_then(|d| ioctl::quota_enabled(d.as_fd()))
            .map(|on| if on { "enabled" } else { "disabled" })
            .unwrap_or("unknown");
        out.push(("Quotas".into(), quotas.into()));
        out
    }

    fn limits_size(&self) -> bool {
        true
    }

    fn warnings(&self) -> Vec<String> {
        match &self.pool {
            Some(_) => vec![
                "btrfs: the store root is not on btrfs, so a loop-backed filesystem in a sparse file is used. \
                 Usage of loopback devices is strongly discouraged for production use: put the store root on btrfs."
                    .into(),
            ],
            None => vec![],
        }
    }

    fn create(&self, s: &Layout, opts: &PrepareOpts) -> io::Result<()> {
        let dir = open_dir(&self.subvolumes)?;
        let name = Self::name(s.id);
        match (s.kind, s.parents.first()) {
            // A view of a committed snapshot reads the parent itself (read-only already).
            (Kind::View, Some(_)) => return Ok(()),
            (_, Some(parent)) => {
                let src = open_dir(&self.subvol(*parent))?;
                ioctl::snapshot(src.as_fd(), dir.as_fd(), &name)?;
            }
            (_, None) => ioctl::subvol_create(dir.as_fd(), &name)?,
        }
        if let Some(bytes) = opts.size_limit {
            self.enable_quota(&dir)?;
            ioctl::qgroup_limit(open_dir(&self.subvol(s.id))?.as_fd(), bytes)?;
        }
        Ok(())
    }

    fn mounts(&self, s: &Layout) -> io::Result<Vec<Mount>> {
        Ok(tree_mounts(s, |id| self.subvol(id)))
    }

    fn commit(&self, s: &Layout) -> io::Result<()> {
        ioctl::set_readonly(open_dir(&self.subvol(s.id))?.as_fd(), true)
    }

    fn holds(&self, id: i64) -> io::Result<bool> {
        self.subvol(id).try_exists()
    }

    fn remove(&self, id: i64) -> io::Result<()> {
        let path = self.subvol(id);
        let st = match fs::symlink_metadata(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            other => other?,
        };
        if st.ino() != ioctl::FIRST_FREE_OBJECTID {
            // Not a subvolume: a directory left by something else.
            return remove_tree(&path);
        }
        Self::destroy(&open_dir(&self.subvolumes)?, &Self::name(id), &path)
    }

    fn usage(&self, s: &Layout) -> io::Result<Usage> {
        if s.kind == Kind::View && !s.parents.is_empty() {
            return Ok(Usage::default());
        }
        tree_usage(&self.subvol(s.id))
    }

    /// With quotas on, the subvolume's exclusive bytes (what only this container holds);
    /// otherwise the generic comparison with the parent, as docker's naive diff size,
    /// reading only the directories that changed.
    fn changes_size(&self, s: &Layout) -> io::Result<u64> {
        let path = self.subvol(s.id);
        let fd = open_dir(&path)?;
        if ioctl::quota_enabled(fd.as_fd())? {
            // Qgroup numbers count written extents and are settled when a transaction
            // commits: write back and commit first.
            rustix::fs::syncfs(&fd)?;
            let id = ioctl::subvol_id(fd.as_fd())?;
            if let Some(excl) = ioctl::qgroup_exclusive(fd.as_fd(), id)? {
                return Ok(excl);
            }
        }
        match s.parents.first() {
            Some(p) => {
                let untouched = self.untouched(s.id)?;
                strata_archive::changes_size_pruned(&self.subvol(*p), &path, &untouched)
            }
            None => Ok(tree_usage(&path)?.size),
        }
    }

    fn apply_dir(&self, s: &Layout) -> Option<(PathBuf, WhiteoutFormat)> {
        (s.kind == Kind::Active).then(|| (self.subvol(s.id), WhiteoutFormat::Apply))
    }

    fn diff(&self, s: &Layout, w: &mut dyn Write) -> Option<io::Result<()>> {
        if s.kind == Kind::View {
            return None;
        }
        let upper = self.subvol(s.id);
        let Some(parent) = s.parents.first() else {
            return Some(strata_archive::write_tree(&upper, w, WhiteoutFormat::Apply).map(|_| ()));
        };
        let lower = self.subvol(*parent);
        // The generic comparison, told which directories cannot differ: the same tar,
        // with the cost of the changes rather than of the image.
        Some(self.untouched(s.id).and_then(|untouched| {
            strata_archive::diff_trees_pruned(&lower, &upper, w, &untouched).map(|_| ())
        }))
    }

    fn stored_ids(&self) -> io::Result<Vec<i64>> {
        numeric_dirs(&self.subvolumes)
    }

    fn close(&self) -> io::Result<()> {
        match &self.pool {
            Some(pool) => pool.close(),
            None => Ok(()),
        }
    }
}
