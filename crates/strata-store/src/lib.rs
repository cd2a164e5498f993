//! The bottom of strata: content-addressed blobs, the SQLite metadata database and the
//! locks that let many daemonless CLI processes share one store.

pub mod content;
pub mod db;
pub mod digest;
pub mod fsutil;
pub mod lock;
pub mod units;

pub use content::{BlobWriter, Committed, ContentStore};
pub use db::Db;
pub use digest::{Digest, DigestError, DigestReader, DigestWriter};
pub use lock::{ExclusiveGuard, LockMode, StoreLock};
