//! Whole-store locks for concurrent CLI processes.
//!
//! Operations that only add to the store (import, load, creating layers) hold the lock
//! shared; operations that delete what others might be about to reuse (rmi, prune, repair,
//! crash recovery) hold it exclusively. flock(2) locks die with their process, so a killed
//! CLI never leaves the store locked.

use rustix::fs::{flock, FlockOperation};
use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    Shared,
    Exclusive,
}

pub struct StoreLock {
    _file: File,
}

impl StoreLock {
    pub fn acquire(path: &Path, mode: LockMode) -> io::Result<Self> {
        let file = open(path)?;
        let op = match mode {
            LockMode::Shared => FlockOperation::LockShared,
            LockMode::Exclusive => FlockOperation::LockExclusive,
        };
        flock(&file, op)?;
        Ok(StoreLock { _file: file })
    }

    /// Returns `None` when another process holds the lock.
    pub fn try_acquire(path: &Path, mode: LockMode) -> io::Result<Option<Self>> {
        let file = open(path)?;
        let op = match mode {
            LockMode::Shared => FlockOperation::NonBlockingLockShared,
            LockMode::Exclusive => FlockOperation::NonBlockingLockExclusive,
        };
        match flock(&file, op) {
            Ok(()) => Ok(Some(StoreLock { _file: file })),
            Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)
}
