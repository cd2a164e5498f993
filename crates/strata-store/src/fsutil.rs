//! Small filesystem helpers.

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
