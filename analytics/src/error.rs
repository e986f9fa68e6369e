use std::path::PathBuf;

use datafusion::error::DataFusionError;

/// Errors of the analytics layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The query could not be parsed, planned or run. The text is DataFusion's,
    /// which names the offending token and its position for parse errors.
    #[error("{0}")]
    Sql(String),
    /// The event log could not be read.
    #[error("event log: {0}")]
    Log(#[from] claw_log::Error),
    /// A seance argument or export range was not usable.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Encoding Arrow data (IPC, Parquet, JSON) failed.
    #[error("encoding failed: {0}")]
    Encode(String),
    /// Writing an export file failed.
    #[error("cannot write {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<DataFusionError> for Error {
    fn from(e: DataFusionError) -> Self {
        // A table function or scan wraps our own errors as `External`; hand
        // them back as they were so callers can tell bad input from failures.
        match e {
            DataFusionError::External(inner) => match inner.downcast::<Error>() {
                Ok(ours) => *ours,
                Err(other) => Error::Sql(other.to_string()),
            },
            other => Error::Sql(other.to_string()),
        }
    }
}

impl From<datafusion::arrow::error::ArrowError> for Error {
    fn from(e: datafusion::arrow::error::ArrowError) -> Self {
        Error::Encode(e.to_string())
    }
}

impl From<parquet::errors::ParquetError> for Error {
    fn from(e: parquet::errors::ParquetError) -> Self {
        Error::Encode(e.to_string())
    }
}

impl From<Error> for DataFusionError {
    fn from(e: Error) -> Self {
        match e {
            Error::Sql(msg) => DataFusionError::Plan(msg),
            other => DataFusionError::External(Box::new(other)),
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        match e {
            Error::Sql(_) | Error::InvalidArgument(_) => tonic::Status::invalid_argument(e.to_string()),
            Error::Log(claw_log::Error::Compacted { .. } | claw_log::Error::BeyondEnd { .. }) => {
                tonic::Status::out_of_range(e.to_string())
            }
            _ => tonic::Status::internal(e.to_string()),
        }
    }
}
