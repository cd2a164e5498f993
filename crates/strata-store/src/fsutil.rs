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
/// an error leaves it unmarked.
pub fn create_tree_parent(dir: &Path) -> io::Result<()> {
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
        return Ok(());
    };
    if !flags.contains(IFlags::TOPDIR) && on_ext4_without_journal(&fd) {
        let _ = rustix::fs::ioctl_setflags(&fd, flags | IFlags::TOPDIR);
    }
    Ok(())
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
}
