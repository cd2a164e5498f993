//! Small filesystem helpers.

use rustix::fs::{IFlags, Mode, OFlags};
use std::fs::File;
use std::io;
use std::path::Path;

pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Free bytes available to root on the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> io::Result<u64> {
    let st = rustix::fs::statvfs(path)?;
    Ok(st.f_bfree.saturating_mul(st.f_frsize))
}

/// Creates `dir` (with its parents) as a parent of unrelated directory trees, one per
/// container or snapshot; on ext2/3/4 without a journal it is marked so (`FS_TOPDIR_FL`,
/// `chattr +T`).
///
/// Why: ext4 puts a new directory in its parent's block group and a new file in its
/// directory's, so every container's and layer's files were allocated in one group.
/// Without a journal, ext4 checks each new inode there against every inode freed in that
/// group in the last 60 to 300 seconds (`recently_deleted`, a buffer lookup each): with
/// every `run --rm` freeing about thirty, each new file cost 0.24 ms, 8 ms of allocation
/// per run (traced). Below a marked directory each new tree starts in a group of the Orlov
/// allocator's choosing, anywhere on the disk, and the churn spreads out. That first
/// allocation weighs every group of the disk, and often reads the chosen one's bitmaps from
/// disk (0.25-1.3 ms here), so only parents of trees of many files are marked, and only
/// where the check exists: with a journal, ext4 reuses freed inodes at once. Best effort:
/// an error leaves it unmarked. Returns whether it is marked.
pub fn create_tree_parent(dir: &Path) -> io::Result<bool> {
    // Opened first: every store open comes here, and the directory is there but once.
    let open = || {
        rustix::fs::open(
            dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
    };
    let fd = match open() {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => {
            std::fs::create_dir_all(dir)?;
            open()?
        }
        Err(e) => return Err(e.into()),
    };
    let Ok(flags) = rustix::fs::ioctl_getflags(&fd) else {
        return Ok(false);
    };
    if flags.contains(IFlags::TOPDIR) {
        return Ok(true);
    }
    Ok(on_ext4_without_journal(&fd)
        && rustix::fs::ioctl_setflags(&fd, flags | IFlags::TOPDIR).is_ok())
}

/// Empty directories made ahead of need, to become tree tops (see [`create_tree_parent`])
/// by a rename: a container's run directory, its mount point, a snapshot's directory.
///
/// Why: where tree parents are marked, each new tree top is placed by the Orlov allocator,
/// which weighs every block group of the disk and often reads the chosen one's bitmaps
/// first: 0.25-0.45 ms a directory here, three per `run`. Made in the pool, itself a marked
/// tree parent, a spare gets the same placement where nothing waits for it (a shim makes
/// them as its last act); taking one is a rename. Spares have random names, as the trees
/// they become have: Orlov starts its search from a hash of the name, and fixed names
/// would put every run's tree in the group the last run's deletions had just left full of
/// recently freed inodes. Only where the pool is marked: elsewhere making a directory
/// costs no more than the rename.
#[derive(Clone)]
pub struct SpareDirs {
    pool: std::path::PathBuf,
}

/// How many spares the pool keeps: a `run` takes three.
const SPARES: usize = 4;

impl SpareDirs {
    /// The pool at `pool` (made if need be), or `None` where tree tops are not costly.
    pub fn open(pool: &Path) -> io::Result<Option<SpareDirs>> {
        Ok(create_tree_parent(pool)?.then(|| SpareDirs {
            pool: pool.to_path_buf(),
        }))
    }

    /// The spares there are now.
    fn spares(&self) -> Vec<std::path::PathBuf> {
        std::fs::read_dir(&self.pool)
            .map(|entries| entries.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    }

    /// Moves a spare to `dir`, which must not exist yet, whose parent must; whether one
    /// was there to take. On `false` the caller makes `dir` itself.
    pub fn take(&self, dir: &Path) -> bool {
        for spare in self.spares() {
            let taken = rustix::fs::renameat_with(
                rustix::fs::CWD,
                &spare,
                rustix::fs::CWD,
                dir,
                rustix::fs::RenameFlags::NOREPLACE,
            );
            match taken {
                Ok(()) => return true,
                // Taken by another process meanwhile: the next one.
                Err(rustix::io::Errno::NOENT) if !spare.exists() => continue,
                Err(_) => return false,
            }
        }
        false
    }

    /// Fresh paths in the pool for the spares it lacks, to be made (`create_dir`) by
    /// whoever has a moment: [`SpareDirs::replenish`], or a shim as its last act.
    pub fn wanted(&self) -> Vec<std::path::PathBuf> {
        let missing = SPARES.saturating_sub(self.spares().len());
        (0..missing)
            .map(|_| self.pool.join(format!("{:016x}", rand::random::<u64>())))
            .collect()
    }

    /// Makes the spares the pool lacks, now. Best effort: a spare not made is a directory
    /// made where it is needed instead.
    pub fn replenish(&self) {
        for dir in self.wanted() {
            let _ = std::fs::create_dir(dir);
        }
    }
}

/// ext2/3/4's superblock magic, as statfs reports it.
const EXT4_SUPER_MAGIC: u64 = 0xEF53;

/// Whether `fd` is on an ext2/3/4 filesystem that runs without a journal. The kernel lists
/// every journal it runs in /proc/fs/jbd2/ as DEVICE-INODE, the device named as in
/// /sys/dev/block/MAJOR:MINOR/uevent.
fn on_ext4_without_journal(fd: &rustix::fd::OwnedFd) -> bool {
    if !rustix::fs::fstatfs(fd).is_ok_and(|fs| fs.f_type as u64 == EXT4_SUPER_MAGIC) {
        return false;
    }
    let Ok(st) = rustix::fs::fstat(fd) else {
        return false;
    };
    let (major, minor) = (rustix::fs::major(st.st_dev), rustix::fs::minor(st.st_dev));
    let Ok(uevent) = std::fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/uevent"))
    else {
        return false;
    };
    let Some(device) = uevent.lines().find_map(|l| l.strip_prefix("DEVNAME=")) else {
        return false;
    };
    let prefix = format!("{}-", device.replace('/', "!"));
    let journaled = std::fs::read_dir("/proc/fs/jbd2").is_ok_and(|journals| {
        journals
            .flatten()
            .any(|j| j.file_name().to_string_lossy().starts_with(&prefix))
    });
    !journaled
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn topdir(dir: &Path) -> bool {
        let fd = rustix::fs::open(dir, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
        rustix::fs::ioctl_getflags(&fd)
            .unwrap()
            .contains(IFlags::TOPDIR)
    }

    /// A small ext4 made with `mkfs_args`, loop-mounted at `at` until the guard drops.
    struct Ext4 {
        at: std::path::PathBuf,
    }

    impl Ext4 {
        fn new(tmp: &Path, name: &str, mkfs_args: &[&str]) -> Ext4 {
            let image = tmp.join(format!("{name}.img"));
            File::create(&image).unwrap().set_len(64 << 20).unwrap();
            let mkfs = Command::new("mkfs.ext4")
                .args(["-q", "-F"])
                .args(mkfs_args)
                .arg(&image)
                .status();
            assert!(mkfs.unwrap().success(), "mkfs.ext4 {mkfs_args:?}");
            let at = tmp.join(name);
            std::fs::create_dir(&at).unwrap();
            let mount = Command::new("mount")
                .args(["-o", "loop"])
                .arg(&image)
                .arg(&at)
                .status();
            assert!(mount.unwrap().success(), "mounting {}", image.display());
            Ext4 { at }
        }
    }

    impl Drop for Ext4 {
        fn drop(&mut self) {
            // A loop mount's device is released with it (autoclear).
            let _ = Command::new("umount").arg(&self.at).status();
        }
    }

    #[test]
    fn a_tree_parent_is_marked_on_ext4_without_a_journal_only() {
        let tmp = tempfile::tempdir().unwrap();
        let plain = Ext4::new(tmp.path(), "nojournal", &["-O", "^has_journal"]);
        let journaled = Ext4::new(tmp.path(), "journal", &[]);

        let parent = plain.at.join("a/containers");
        create_tree_parent(&parent).unwrap();
        assert!(topdir(&parent));
        // Again on an existing directory: nothing to do, no error.
        create_tree_parent(&parent).unwrap();
        // Not inherited: a tree below it is an ordinary directory.
        std::fs::create_dir(parent.join("c1")).unwrap();
        assert!(!topdir(&parent.join("c1")));

        let parent = journaled.at.join("containers");
        create_tree_parent(&parent).unwrap();
        assert!(parent.is_dir() && !topdir(&parent));
    }

    fn inode(p: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(p).unwrap().ino()
    }

    #[test]
    fn spare_directories_are_kept_where_tree_tops_are_costly_and_taken_by_rename() {
        let tmp = tempfile::tempdir().unwrap();
        let plain = Ext4::new(tmp.path(), "nojournal", &["-O", "^has_journal"]);
        let journaled = Ext4::new(tmp.path(), "journal", &[]);

        // With a journal there is no pool: callers make their directories.
        assert!(SpareDirs::open(&journaled.at.join("spares"))
            .unwrap()
            .is_none());

        let pool = plain.at.join("spares");
        let spares = SpareDirs::open(&pool)
            .unwrap()
            .expect("a pool without a journal");
        assert!(topdir(&pool));
        let parent = plain.at.join("containers");
        std::fs::create_dir(&parent).unwrap();
        // Nothing made yet: nothing to take, and nothing is made in its place.
        assert!(!spares.take(&parent.join("c0")));
        assert!(!parent.join("c0").exists());

        let wanted = spares.wanted();
        assert_eq!(wanted.len(), SPARES);
        assert!(wanted.iter().all(|w| w.parent() == Some(pool.as_path())));
        spares.replenish();
        let made: Vec<u64> = spares.spares().iter().map(|p| inode(p)).collect();
        assert_eq!(made.len(), SPARES);
        assert!(spares.wanted().is_empty(), "a full pool wants none");
        for n in 0..SPARES {
            let dir = parent.join(format!("c{n}"));
            assert!(spares.take(&dir));
            assert!(made.contains(&inode(&dir)), "c{n} is one of the spares");
            assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        }
        assert!(!spares.take(&parent.join("more")));
        assert_eq!(std::fs::read_dir(&pool).unwrap().count(), 0);

        // An existing directory is left alone, and so is the spare.
        spares.replenish();
        assert!(!spares.take(&parent.join("c0")));
        assert_eq!(spares.spares().len(), SPARES);
        // So is a directory whose parent is missing.
        assert!(!spares.take(&plain.at.join("missing/c9")));
        assert_eq!(spares.spares().len(), SPARES);
        assert_eq!(spares.wanted().len(), 0);
    }
}
