use openraft::{AnyError, StorageError, StorageIOError};

/// Errors of the replicated event log.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A watch or read asked for history that retention has removed.
    #[error("seq {requested} is compacted, oldest available is {oldest}")]
    Compacted { requested: u64, oldest: u64 },
    /// A past-state query asked for a seq the history has not reached.
    #[error("seq {requested} is after the last event (seq {last})")]
    BeyondEnd { requested: u64, last: u64 },
    /// RocksDB or the file system failed.
    #[error("storage error: {0}")]
    Storage(String),
    /// Raft refused or failed an operation.
    #[error("raft error: {0}")]
    Raft(String),
    /// A stored or received record could not be decoded; `what` names where it came from.
    #[error("could not decode {what}: {reason}")]
    Decode { what: String, reason: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<rocksdb::Error> for Error {
    fn from(e: rocksdb::Error) -> Self {
        Error::Storage(e.to_string())
    }
}

impl Error {
    pub(crate) fn decode(what: impl Into<String>, reason: impl ToString) -> Self {
        Error::Decode { what: what.into(), reason: reason.to_string() }
    }

    /// As an openraft storage read error.
    pub(crate) fn into_read(self) -> StorageError<u64> {
        StorageIOError::read(AnyError::new(&self)).into()
    }

    /// As an openraft storage write error.
    pub(crate) fn into_write(self) -> StorageError<u64> {
        StorageIOError::write(AnyError::new(&self)).into()
    }
}
