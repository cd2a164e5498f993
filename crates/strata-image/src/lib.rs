//! The image model: references, diff and chain IDs, OCI and Docker manifests and configs.
//!
//! Image objects are kept as the exact bytes they arrived in (an image ID is the digest of
//! the config bytes); the types here parse them for reading and build new ones.

pub mod changes;
pub mod config;
pub mod ids;
pub mod manifest;
pub mod reference;

pub use config::{HistoryEntry, ImageConfig};
pub use ids::chain_ids;
pub use reference::{Reference, ReferenceError};
pub use strata_store::Digest;
