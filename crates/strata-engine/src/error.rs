//! Engine errors. Each says what was wrong with what, and how to fix it where there is a fix.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The user asked for something that does not exist.
    #[error("No such image: {0}")]
    NoSuchImage(String),
    #[error("No such container: {0}")]
    NoSuchContainer(String),
    #[error("get {0}: no such volume")]
    NoSuchVolume(String),
    /// Bad input: a reference, flag value, archive or config.
    #[error("{0}")]
    Invalid(String),
    /// The request conflicts with the store's state.
    #[error("{0}")]
    Conflict(String),
    /// A usage mistake (driver choice, flag combination).
    #[error("{0}")]
    Usage(String),
    /// The store itself is in a state strata cannot work with.
    #[error("{0}")]
    Store(String),
    /// The container's process could not be started; `code` is docker's exit code for
    /// it (125, 126 cannot execute, 127 not found).
    #[error("{message}")]
    StartFailed { code: i32, message: String },
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
    #[error("metadata database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error(transparent)]
    Snapshot(#[from] strata_snapshot::SnapshotError),
    #[error(transparent)]
    Content(#[from] strata_store::content::ContentError),
    #[error(transparent)]
    Reference(#[from] strata_image::ReferenceError),
}

pub type Result<T> = std::result::Result<T, EngineError>;

impl EngineError {
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        EngineError::Io {
            context: context.into(),
            source,
        }
    }

    /// docker's exit codes: 1 for everything the engine refuses (`125` is the CLI's own).
    pub fn exit_code(&self) -> i32 {
        match self {
            EngineError::Usage(_) => 125,
            EngineError::StartFailed { code, .. } => *code,
            _ => 1,
        }
    }
}
