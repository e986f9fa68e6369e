use serde::{Deserialize, Serialize};

/// Errors of this crate's fallible helpers (not rule rejections, see [`Rejection`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid {field}: {reason}")]
    Invalid { field: String, reason: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why `decide` refused a command. It is recorded in the log as a
/// `CommandRejected` event, so it must be deterministic and serialisable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum Rejection {
    /// A field of the command is malformed; names the field.
    #[error("invalid {field}: {reason}")]
    InvalidArgument { field: String, reason: String },
    /// The object the command names does not exist.
    #[error("{kind} \"{id}\" not found")]
    NotFound { kind: String, id: String },
    /// The command is well formed but the current state forbids it.
    #[error("{reason}")]
    FailedPrecondition { reason: String },
    /// The object already exists.
    #[error("{kind} \"{id}\" already exists")]
    AlreadyExists { kind: String, id: String },
}

impl Rejection {
    pub fn invalid(field: &str, reason: impl Into<String>) -> Self {
        Rejection::InvalidArgument { field: field.to_string(), reason: reason.into() }
    }
    pub fn not_found(kind: &str, id: &str) -> Self {
        Rejection::NotFound { kind: kind.to_string(), id: id.to_string() }
    }
    pub fn precondition(reason: impl Into<String>) -> Self {
        Rejection::FailedPrecondition { reason: reason.into() }
    }
}
