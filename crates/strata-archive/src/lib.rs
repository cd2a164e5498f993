//! Layer archives: applying a layer tar into a directory and writing the tar of a tree or of
//! the difference between two trees, with whiteouts in each storage driver's on-disk form.
//!
//! The `tar` crate is used as a parser and writer only: its `unpack` treats devices as
//! regular files, resolves paths with `canonicalize()` and knows nothing of whiteouts, so
//! applying entries is done here, every path resolved inside the target root by the kernel
//! (openat2 `RESOLVE_IN_ROOT`) and every change made through a directory fd.

pub mod apply;
pub mod compression;
pub mod copy;
pub mod diff;
pub mod root;
pub mod walk;
pub mod whiteout;
pub mod write;

pub use apply::{apply_layer, ApplyError, ApplyOptions, ApplyStats};
pub use compression::{decompress, Compression};
pub use copy::copy_tree;
pub use diff::{changes_size, changes_size_pruned, diff_trees, diff_trees_pruned};
pub use root::Root;
pub use whiteout::WhiteoutFormat;
pub use write::{write_tree, TreeWriter};
