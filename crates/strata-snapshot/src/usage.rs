//! Disk usage of a tree, counted as docker counts a layer's size: apparent bytes of
//! regular files, each hard-linked inode once.

use std::collections::HashSet;
use std::io;
use std::path::Path;
use strata_archive::walk::{file_type, list_dir, lstat_at, open_dir_at};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    pub size: u64,
    pub inodes: u64,
}

pub fn tree_usage(dir: &Path) -> io::Result<Usage> {
    let fd = match rustix::fs::open(
        dir,
        rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(Usage::default()),
        Err(e) => return Err(e.into()),
    };
    let mut u = Usage::default();
    let mut seen = HashSet::new();
    walk(&fd, &mut u, &mut seen)?;
    Ok(u)
}

fn walk(
    dfd: &std::os::fd::OwnedFd,
    u: &mut Usage,
    seen: &mut HashSet<(u64, u64)>,
) -> io::Result<()> {
    for name in list_dir(dfd)? {
        let st = lstat_at(dfd, &name)?;
        if st.st_nlink > 1 && !seen.insert((st.st_dev, st.st_ino)) {
            continue;
        }
        u.inodes += 1;
        match file_type(&st) {
            rustix::fs::FileType::Directory => walk(&open_dir_at(dfd, &name)?, u, seen)?,
            rustix::fs::FileType::RegularFile => u.size += st.st_size as u64,
            _ => {}
        }
    }
    Ok(())
}
