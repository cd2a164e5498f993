//! A thin-provisioning pool in userspace: dm-thin's design, and its on-disk metadata
//! format, without device-mapper.
//!
//! A pool keeps data in fixed-size blocks of a data file (or device) and its metadata in a
//! metadata file: a superblock, a btree of device details, a two-level btree mapping
//! (device, virtual block) to (data block, time), and reference-counted space maps for
//! both files. Thin devices allocate data blocks on first write; a snapshot shares its
//! origin's mapping tree (one reference count more: O(1)), and a write to a block both
//! share copies it first. Changes are transactions: [`Pool::commit`] writes every new
//! metadata block, syncs, and writes the superblock last, so a crash at any instant
//! reopens to the last commit. Debian's `thin_check` and `thin_dump` read the metadata.

mod block;
mod btree;
mod pool;
mod serve;
mod sizes;
mod sm;

pub use pool::{size_of, Details, Pool, PoolConfig, Usage};
pub use serve::serve;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("thin pool I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("thin pool metadata is damaged: {0}")]
    Corrupt(String),
    #[error("thin pool metadata is full: make the pool with a larger metadata file")]
    MetadataFull,
    #[error("{0}")]
    NoSpace(String),
    #[error("thin device {0} does not exist")]
    NoDevice(u64),
    #[error("thin device {0} already exists")]
    DeviceExists(u64),
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, Error>;
