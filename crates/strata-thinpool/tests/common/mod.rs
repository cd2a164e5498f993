//! Shared by the pool's tests.

use std::fs::{File, OpenOptions};
use std::path::Path;

/// The pool's metadata and data files in `dir` (made if missing).
pub fn files(dir: &Path) -> (File, File) {
    let o = |p: &str| {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(p))
            .unwrap()
    };
    (o("meta"), o("data"))
}
