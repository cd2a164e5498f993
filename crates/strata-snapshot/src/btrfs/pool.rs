//! A btrfs filesystem in a sparse file, attached to a loop device and mounted: the btrfs
//! driver's storage when the store root is not on btrfs (docker's loop-lvm mode, for
//! btrfs). Usable on its own: tests make btrfs filesystems with it.

use crate::loopdev::LoopDevice;
use crate::mount::{self, Mount};
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct LoopPool {
    file: PathBuf,
    mountpoint: PathBuf,
}

/// `btrfs-progs vX.Y` from `mkfs.btrfs --version`, if it is installed.
pub fn progs_version() -> Option<String> {
    let out = Command::new("mkfs.btrfs").arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v = text.split_whitespace().find(|w| w.starts_with('v'))?;
    Some(format!("Btrfs {v}"))
}

impl LoopPool {
    /// Opens the pool in `file` mounted at `mountpoint`: formats a new sparse file of
    /// `size` bytes if there is none, and attaches and mounts it if it is not mounted
    /// (also after it was unmounted or detached behind strata's back).
    pub fn open(file: &Path, mountpoint: &Path, size: u64) -> io::Result<LoopPool> {
        let pool = LoopPool {
            file: file.to_path_buf(),
            mountpoint: mountpoint.to_path_buf(),
        };
        if pool.is_mounted()? {
            return Ok(pool);
        }
        if !file.exists() {
            pool.format(size)?;
        }
        fs::create_dir_all(mountpoint)?;
        let dev = LoopDevice::attach(file)?;
        let mnt = Mount {
            kind: "btrfs".into(),
            source: dev.path().display().to_string(),
            // Deleted subvolumes give their space back to the sparse file. No atime: a
            // read would otherwise rewrite (and unshare) the metadata of a snapshotted
            // file, and make it look changed to the diff. Bind mounts of it inherit this.
            options: vec!["discard=async".into(), "noatime".into()],
        };
        mount::mount_all(&[mnt], mountpoint).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "mounting the btrfs pool {} on {}: {e}",
                    file.display(),
                    mountpoint.display()
                ),
            )
        })?;
        // The mount holds the device now; with autoclear it goes when the mount does.
        drop(dev);
        Ok(pool)
    }

    /// Makes the sparse file and a btrfs filesystem in it, atomically: a crash leaves
    /// either no pool or a formatted one.
    fn format(&self, size: u64) -> io::Result<()> {
        let dir = self.file.parent().expect("the pool file has a directory");
        fs::create_dir_all(dir)?;
        let tmp = self.file.with_extension("new");
        File::create(&tmp)?.set_len(size)?;
        // Metadata is not duplicated: a file on one disk gains nothing from two copies.
        let out = Command::new("mkfs.btrfs")
            .args(["-q", "-f", "-m", "single", "-d", "single"])
            .arg(&tmp)
            .output()
            .map_err(|e| {
                let _ = fs::remove_file(&tmp);
                if e.kind() == io::ErrorKind::NotFound {
                    io::Error::new(
                        io::ErrorKind::NotFound,
                        "mkfs.btrfs not found: the btrfs driver formats a loop-backed pool with it when the store root is not on btrfs; \
                         install btrfs-progs (apt-get install btrfs-progs)",
                    )
                } else {
                    e
                }
            })?;
        if !out.status.success() {
            let _ = fs::remove_file(&tmp);
            return Err(io::Error::other(format!(
                "mkfs.btrfs {} failed: {}",
                tmp.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        File::open(&tmp)?.sync_all()?;
        fs::rename(&tmp, &self.file)?;
        File::open(dir)?.sync_all()
    }

    /// Whether the pool's filesystem is mounted at its mount point. In loop mode the mount
    /// point's parent is not on btrfs, so btrfs there means our mount.
    pub fn is_mounted(&self) -> io::Result<bool> {
        Ok(crate::overlay::backing_fs(&self.mountpoint) == "btrfs")
    }

    /// The backing file.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Where the filesystem is mounted.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// The loop device the pool is attached to, if any.
    pub fn loop_device(&self) -> Option<PathBuf> {
        LoopDevice::find(&self.file).ok()?.into_iter().next()
    }

    /// Unmounts the pool; the kernel then detaches its loop device (autoclear).
    pub fn close(&self) -> io::Result<()> {
        // Stacked mounts (two processes that raced an old strata) come off one by one.
        for _ in 0..8 {
            if !self.is_mounted()? {
                return Ok(());
            }
            mount::unmount(&self.mountpoint)?;
        }
        Err(io::Error::other(format!(
            "{} stays mounted after 8 unmounts",
            self.mountpoint.display()
        )))
    }
}
