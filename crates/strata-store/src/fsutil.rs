//! Small durable-filesystem helpers: every metadata file strata writes goes through a temp
//! file, fsync and rename, then an fsync of the directory.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes `bytes` to `path` atomically: readers see the old file or the new one, never a part.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile_in(dir)?;
    tmp.1.write_all(bytes)?;
    tmp.1.sync_all()?;
    fs::rename(&tmp.0, path)?;
    fsync_dir(dir)
}

fn tempfile_in(dir: &Path) -> io::Result<(std::path::PathBuf, File)> {
    for _ in 0..16 {
        let name = dir.join(format!(".tmp-{:016x}", rand::random::<u64>()));
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&name)
        {
            Ok(f) => return Ok((name, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other("could not create a temporary file"))
}

/// Free bytes available to root on the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> io::Result<u64> {
    let st = rustix::fs::statvfs(path)?;
    Ok(st.f_bfree.saturating_mul(st.f_frsize))
}
