//! Whole-store locks for concurrent CLI processes.
//!
//! Operations that only add to the store (import, load, creating layers) hold the lock
//! shared; operations that delete what others might be about to reuse (rmi, prune, repair,
//! crash recovery) convert it to exclusive for their duration. flock(2) locks belong to an
//! open file description, so a process keeps one and converts it (taking a second one would
//! make it wait for itself), and they die with their process, so a killed CLI never leaves
//! the store locked.

use rustix::fs::{flock, FlockOperation, Mode, OFlags};
use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    Shared,
    Exclusive,
}

pub struct StoreLock {
    file: File,
}

fn op(mode: LockMode, wait: bool) -> FlockOperation {
    match (mode, wait) {
        (LockMode::Shared, true) => FlockOperation::LockShared,
        (LockMode::Exclusive, true) => FlockOperation::LockExclusive,
        (LockMode::Shared, false) => FlockOperation::NonBlockingLockShared,
        (LockMode::Exclusive, false) => FlockOperation::NonBlockingLockExclusive,
    }
}

impl StoreLock {
    /// Opens the lock file without locking it.
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        Ok(StoreLock { file })
    }

    /// Opens a directory to lock itself: a lock file beside what it guards would be one
    /// more inode to create and delete for every container.
    pub fn open_dir(path: &Path) -> io::Result<Self> {
        let dir = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(StoreLock {
            file: File::from(dir),
        })
    }

    /// Takes (or converts to) `mode`, waiting for other processes.
    pub fn lock(&self, mode: LockMode) -> io::Result<()> {
        Ok(flock(&self.file, op(mode, true))?)
    }

    /// Takes (or converts to) `mode` if no other process is in the way.
    pub fn try_lock(&self, mode: LockMode) -> io::Result<bool> {
        match flock(&self.file, op(mode, false)) {
            Ok(()) => Ok(true),
            Err(rustix::io::Errno::WOULDBLOCK) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Lets go of the lock (a long wait must not hold other processes' deletions back).
    pub fn unlock(&self) -> io::Result<()> {
        Ok(flock(&self.file, FlockOperation::Unlock)?)
    }

    /// Holds the lock exclusively until the guard drops, then returns to shared.
    pub fn exclusive(&self) -> io::Result<ExclusiveGuard<'_>> {
        self.lock(LockMode::Exclusive)?;
        Ok(ExclusiveGuard { lock: self })
    }
}

pub struct ExclusiveGuard<'a> {
    lock: &'a StoreLock,
}

impl Drop for ExclusiveGuard<'_> {
    fn drop(&mut self) {
        let _ = self.lock.lock(LockMode::Shared);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_locked_itself_excludes_a_second_opener() {
        let tmp = tempfile::tempdir().unwrap();
        let first = StoreLock::open_dir(tmp.path()).unwrap();
        let second = StoreLock::open_dir(tmp.path()).unwrap();
        first.lock(LockMode::Exclusive).unwrap();
        assert!(!second.try_lock(LockMode::Shared).unwrap());
        first.unlock().unwrap();
        assert!(second.try_lock(LockMode::Exclusive).unwrap());
        // Nothing was created in the directory.
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
        assert!(StoreLock::open_dir(&tmp.path().join("missing")).is_err());
    }
}
